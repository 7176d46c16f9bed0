/**
 * PROXYPROTOCOL=hostList at accept (docs/proxy-protocol.md): before a connection becomes a
 * session, a source in the list must send a PROXY protocol header (v1 or v2, parsed by
 * net/proxy-protocol.ts) within TIMEOUT=handshake, and the header's source address is the client
 * from then on (RELIABLE, PERMIT/REJECT, MAXIMA, IDENT, logs, records, dashboard). A connection
 * from any other source that starts with a header is refused.
 *
 * The socket is read in the door's way (paused, one chunk at a time, bounded), the header taken
 * off, and what followed it put back with unshift(), so the door reads the client's first bytes as
 * if the header had never been there.
 *
 * An unlisted source's first bytes are looked at too, once it is a session (after RELIABLE and
 * MAXIMA): a header from it ends the session (`screenFirstBytes`). They are waited for no longer
 * than TIMEOUT=sniff, after which the door takes the connection as it is (a server that speaks
 * first greets a silent client that much later while PROXYPROTOCOL is set).
 *
 * It also keeps, per session, the endpoints an upstream hop's own PROXY header names
 * (`clientEndpoints`, upstream/chain.ts).
 */
import type { Socket } from 'node:net';
import type { Config, DoorKind } from '../config/types.js';
import { formatHostPort, normalizeAddress, type Session } from '../core/session.js';
import type { Logger } from '../observe/log.js';
import { parseProxyHeader, PROXY_V2_MAX, sniffProxyHeader, type ProxyEndpoint, type ProxyHeader } from './proxy-protocol.js';

/** What the gate needs of the proxy (sockstap.ts): its log and the refusal count and event. */
export interface GateHost {
  log: Logger;
  /** A connection refused before it became a session: count it, emit 'refused' (the gate logs). */
  refused(door: DoorKind, client: string, code: string, by: string): void;
}

/** The header read at accept, per client socket; `null`: checked, no header (an unlisted source). */
const gatedSockets = new WeakMap<Socket, ProxyHeader | null>();
/** Bytes of the header taken off each proxied socket (not the client's traffic: HTTP-door byte counts). */
const headerBytes = new WeakMap<Socket, number>();

/** How many of `socket.bytesRead` were the balancer's PROXY header (0 for any other socket). */
export function proxyHeaderBytes(socket: Socket): number {
  return headerBytes.get(socket) ?? 0;
}

/** The endpoints a proxied session's header named. */
const proxiedSessions = new WeakMap<Session, { source: ProxyEndpoint; destination: ProxyEndpoint | null }>();

export function isProxyProtocolSource(config: Config, address: string): boolean {
  const a = normalizeAddress(address);
  return config.proxyProtocol?.matches({ host: a, addresses: [a] }) ?? false;
}

/**
 * The client a session should name, from the header read at accept: its source address and port,
 * or null to keep the connection's own (no PROXYPROTOCOL, an unlisted source, LOCAL, UNKNOWN).
 */
export function proxiedClient(socket: Socket): ProxyEndpoint | null {
  return gatedSockets.get(socket)?.source ?? null;
}

/** Remember, for the session made from `socket`, what its header said (IDENT, upstream headers). */
export function adoptProxyHeader(session: Session, socket: Socket): void {
  const h = gatedSockets.get(socket);
  if (h?.source) proxiedSessions.set(session, { source: h.source, destination: h.destination });
}

/**
 * The client end and the address it reached, as an upstream hop's PROXY header names them: the
 * balancer's header for a proxied session, otherwise the client's connection.
 */
export function clientEndpoints(session: Session): { source: ProxyEndpoint; destination: ProxyEndpoint | null } {
  const p = proxiedSessions.get(session);
  if (p) return p;
  const first = session.sockets.values().next().value as Socket | undefined;
  const local = first?.localAddress ? { address: normalizeAddress(first.localAddress), port: first.localPort ?? 0 } : null;
  return { source: { address: session.clientAddress, port: session.clientPort }, destination: local };
}

/**
 * The endpoints an identd query (RFC 1413) is about: for a proxied session, the client's address
 * and port and the port it connected to on the balancer; otherwise the socket's.
 */
export function identEndpoints(session: Session, socket: Socket): { clientAddress: string; clientPort: number; localAddress: string; localPort: number } {
  const p = proxiedSessions.get(session);
  return {
    clientAddress: p ? p.source.address : normalizeAddress(socket.remoteAddress ?? ''),
    clientPort: p ? p.source.port : socket.remotePort ?? 0,
    localAddress: normalizeAddress(socket.localAddress ?? ''),
    localPort: p?.destination ? p.destination.port : socket.localPort ?? 0,
  };
}

/**
 * Checkpoint 0, before RELIABLE: with PROXYPROTOCOL set, take the socket of a listed source until
 * its header is read (true: `proceed` runs then, and accept starts again with the header known; or
 * the connection is refused, logged and closed). False: go on now (not set, not listed, done).
 */
export function gateProxyProtocol(socket: Socket, config: Config, door: DoorKind, host: GateHost, proceed: () => void): boolean {
  if (!config.proxyProtocol || gatedSockets.has(socket)) return false;
  const remote = normalizeAddress(socket.remoteAddress ?? '');
  const label = formatHostPort(remote, socket.remotePort ?? 0);
  const timeoutMs = config.timeouts.handshake;
  const refuse = (msg: string, code: string, fields: Record<string, string | number>): void => {
    host.refused(door, label, code, 'PROXYPROTOCOL');
    host.log.info(msg, { client: label, door, ...fields });
    socket.destroy();
  };
  if (isProxyProtocolSource(config, remote)) {
    void readFirst(socket, timeoutMs, PROXY_V2_MAX, (buf) => {
      const r = parseProxyHeader(buf);
      return r.status === 'need-more' ? null : r;
    }).then((out) => {
      if (out.status === 'closed') return refuse('proxy protocol: no header', 'EPROTO', { reason: out.reason, source: 'PROXYPROTOCOL' });
      const r = out.value;
      if (r.status === 'error') return refuse('proxy protocol: bad header', 'EPROTO', { reason: r.reason });
      gatedSockets.set(socket, r.value);
      headerBytes.set(socket, r.consumed);
      putBack(socket, out.buffer.subarray(r.consumed));
      if (r.value.source) {
        host.log.debug('proxy protocol', {
          from: label,
          client: formatHostPort(r.value.source.address, r.value.source.port),
          version: r.value.version,
          tlvs: r.value.tlvs,
        });
      }
      proceed();
    });
    return true;
  }
  gatedSockets.set(socket, null);
  return false;
}

/**
 * After RELIABLE and MAXIMA, before the door: with PROXYPROTOCOL set, the first bytes of a source
 * not in the list (read for up to TIMEOUT=sniff) must not be a PROXY header; one that is ends the
 * session (EDENIED, logged). Then, or at once when there is nothing to check, `door()`.
 */
export function screenFirstBytes(socket: Socket, session: Session, config: Config, log: Logger, door: () => void): void {
  if (!config.proxyProtocol || gatedSockets.get(socket) !== null) return door();
  void readFirst(socket, Math.min(config.timeouts.handshake, config.timeouts.sniff), 16, (buf) => {
    const v = sniffProxyHeader(buf);
    return v === 'maybe' ? null : v;
  }).then((out) => {
    if (socket.destroyed) return;
    if (out.status === 'ok' && out.value === 'yes') {
      log.info('proxy protocol header from a source not in PROXYPROTOCOL; closed', { session: session.id, client: session.clientLabel, door: session.door });
      session.settle('EDENIED');
      socket.destroy();
      return;
    }
    // Not a header, or silent for the sniff window (a server that speaks first, a slow client): the door's.
    putBack(socket, out.buffer);
    door();
  });
}

/** Put bytes back in front of the socket's stream, leaving it paused for its door. */
function putBack(socket: Socket, rest: Buffer): void {
  socket.pause();
  if (rest.length > 0 && !socket.destroyed) {
    if (socket.readableEnded) socket.destroy();
    else socket.unshift(rest);
  }
}

type ReadOutcome<T> = { status: 'ok'; value: T; buffer: Buffer } | { status: 'closed'; reason: 'timeout' | 'ended' | 'too-long'; buffer: Buffer };

/**
 * Read chunks until `decide` answers (not null), the byte cap, the deadline or the end. One chunk
 * at a time (the socket is paused after each), so at most a chunk beyond what was asked for.
 */
function readFirst<T>(socket: Socket, timeoutMs: number, maxBytes: number, decide: (buf: Buffer) => T | null): Promise<ReadOutcome<T>> {
  return new Promise((resolve) => {
    let buffer: Buffer = Buffer.alloc(0);
    let done = false;
    const finish = (out: ReadOutcome<T>): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.pause();
      resolve(out);
    };
    const onData = (chunk: Buffer): void => {
      socket.pause();
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      const v = decide(buffer);
      if (v !== null) return finish({ status: 'ok', value: v, buffer });
      if (buffer.length >= maxBytes) return finish({ status: 'closed', reason: 'too-long', buffer });
      socket.resume();
    };
    const onEnd = (): void => finish({ status: 'closed', reason: 'ended', buffer });
    const timer = setTimeout(() => finish({ status: 'closed', reason: 'timeout', buffer }), timeoutMs);
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    socket.resume();
  });
}
