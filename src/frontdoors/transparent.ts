/**
 * The transparent door (`-PPORT/transparent`): clients that know nothing of a proxy, whose
 * connections the kernel diverted to this port. The door learns where each connection was going
 * and hands the pipeline a Tunnel to there, so the tap decision, routing, caching and logging
 * apply as for any other door. The client expects no proxy reply: success says nothing, failure
 * closes.
 *
 * Where the destination comes from, in order (DESIGN.md "Transparent interception"):
 * 1. iptables/nft REDIRECT: conntrack's original destination (SO_ORIGINAL_DST, native addon).
 * 2. TPROXY: the accepted socket's local address (the listener carries IP_TRANSPARENT, set by
 *    `prepareTransparentListener`).
 * 3. Fallback, when neither applies (no addon, no privilege, a connection that was not diverted):
 *    the HTTP `Host` header or the TLS SNI in the client's first bytes, peeked and put back; port
 *    from the Host header, else 80 for HTTP and 443 for TLS.
 */
import type { Server, Socket } from 'node:net';
import type { HostPort } from '../config/types.js';
import { normalizeAddress } from '../core/session.js';
import type { Logger } from '../observe/log.js';
import { native, nativeUnavailable, NativeSocketError, originalDst, setTransparent } from '../native/addon.js';
import { sniffClient } from '../sniff/index.js';
import { requestHeadAuthority } from '../http1/authority.js';
import type { DoorHandler } from './door.js';
import type { Runtime } from '../runtime.js';

/** How the door found the destination; recorded in sessions.jsonl as `transparent: { via }`. */
export type TransparentVia = 'redirect' | 'tproxy' | 'host' | 'sni';

export interface TransparentDestination {
  dst: HostPort;
  via: TransparentVia;
}

/** The most the fallback reads from the client: a ClientHello or a request head. */
const FALLBACK_MAX_BYTES = 17 * 1024;

/**
 * What this process can do for transparent doors, said once by each running instance (at its first
 * listener, or at the first connection when the wiring did not call prepareTransparentListener).
 */
function logCapability(log: Logger, runtime: Runtime, tproxy: { ok: true } | { ok: false; why: string } | null): void {
  if (!runtime.once('transparent capability')) return;
  if (!native) {
    log.warn(`transparent: ${nativeUnavailable ?? 'native addon unavailable'}; destinations come from the HTTP Host header / TLS SNI only`);
  } else if (tproxy && !tproxy.ok) {
    log.warn(`transparent: ${tproxy.why}; REDIRECT works (SO_ORIGINAL_DST), TPROXY does not; other connections fall back to Host/SNI`);
  } else if (tproxy) {
    log.info('transparent: REDIRECT (SO_ORIGINAL_DST) and TPROXY (IP_TRANSPARENT) available; Host/SNI is the fallback');
  } else {
    log.info('transparent: REDIRECT (SO_ORIGINAL_DST) available; Host/SNI is the fallback');
  }
}

/**
 * Call once a transparent listener is listening: sets IP_TRANSPARENT on it so TPROXY can divert
 * connections to it (the kernel only hands TPROXYed connections to transparent sockets), and
 * logs, once per instance, what works (addon missing, CAP_NET_ADMIN missing). Never throws: a
 * listener without the option still serves REDIRECT and the Host/SNI fallback.
 */
export function prepareTransparentListener(server: Server, log: Logger, runtime: Runtime, label = ''): boolean {
  if (!native) {
    logCapability(log, runtime, null);
    log.info('transparent listener', { addr: label, tproxy: false });
    return false;
  }
  try {
    setTransparent(server);
    logCapability(log, runtime, { ok: true });
    log.info('transparent listener', { addr: label, tproxy: true });
    return true;
  } catch (err) {
    const e = err instanceof NativeSocketError ? err : new NativeSocketError('ENATIVE', String(err));
    const why = e.code === 'EPERM' ? 'IP_TRANSPARENT refused (EPERM: needs CAP_NET_ADMIN)' : `IP_TRANSPARENT failed (${e.message})`;
    logCapability(log, runtime, { ok: false, why });
    log.info('transparent listener', { addr: label, tproxy: false });
    return false;
  }
}

/** "host:port" / "[v6]:port" → port. */
function portOfLabel(label: string): number {
  const i = label.lastIndexOf(':');
  const n = i < 0 ? NaN : Number(label.slice(i + 1));
  return Number.isInteger(n) ? n : -1;
}

/**
 * The destination the kernel knows for a diverted connection, or null for one that came to the
 * listener directly. `listenPort` is the port the listener is bound to.
 */
export function kernelDestination(socket: Socket, listenPort: number): TransparentDestination | null {
  const local = socket.localAddress ? normalizeAddress(socket.localAddress) : '';
  const localPort = socket.localPort ?? -1;
  if (native) {
    try {
      const od = originalDst(socket);
      const address = normalizeAddress(od.address);
      const rewritten = address !== local || od.port !== localPort;
      if (rewritten) return { dst: { host: address, port: od.port }, via: 'redirect' };
    } catch (err) {
      // ENOENT: conntrack has no entry (not NATed, or conntrack not loaded). Anything else is
      // unexpected but the local address below is still right for TPROXY.
      if (!(err instanceof NativeSocketError)) throw err;
    }
  }
  // TPROXY leaves the packet alone: the connection's local end is the original destination. A
  // local port other than the listener's can only come from TPROXY --on-port.
  if (local && localPort > 0 && localPort !== listenPort) return { dst: { host: local, port: localPort }, via: 'tproxy' };
  return null;
}

/**
 * Fallback: read the client's first bytes until they name a server (TLS SNI, HTTP Host) or
 * cannot, then put every byte back in front of the stream. Resolves null when nothing names one,
 * the client ends or the time is up; the caller closes then.
 */
export function peekServerName(socket: Socket, timeoutMs: number): Promise<TransparentDestination | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let length = 0;
    let finished = false;
    const finish = (result: TransparentDestination | null): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('end', onGone);
      socket.off('close', onGone);
      // Back in front, in one piece; synchronously after the last read(), so a FIN that came with
      // them cannot have emitted 'end' yet (it waits for the buffer to drain).
      if (length > 0 && !socket.destroyed) socket.unshift(Buffer.concat(chunks, length));
      resolve(result);
    };
    const decide = (): TransparentDestination | null | 'more' => {
      const bytes = Buffer.concat(chunks, length);
      const v = sniffClient(bytes, 0);
      if (v.verdict === 'need-more') return length >= FALLBACK_MAX_BYTES ? null : 'more';
      if (v.verdict === 'no-match') return null;
      if (v.proto === 'tls') return v.info.sni ? { dst: { host: v.info.sni.toLowerCase(), port: 443 }, via: 'sni' } : null;
      if (v.proto !== 'http') return null;
      const end = bytes.indexOf('\r\n\r\n');
      if (end < 0) return length >= FALLBACK_MAX_BYTES ? null : 'more';
      const dst = requestHeadAuthority(bytes.subarray(0, end).toString('latin1'));
      return dst ? { dst, via: 'host' } : null;
    };
    const onReadable = (): void => {
      for (;;) {
        const chunk = socket.read() as Buffer | null;
        if (chunk === null) return;
        chunks.push(chunk);
        length += chunk.length;
        const d = decide();
        if (d !== 'more') return finish(d);
      }
    };
    const onGone = (): void => finish(null);
    const timer = setTimeout(() => finish(null), timeoutMs);
    socket.on('readable', onReadable);
    socket.once('end', onGone);
    socket.once('close', onGone);
    onReadable();
  });
}

export const transparentDoor: DoorHandler = (socket, session, ctx) => {
  session.frontProtocol = 'transparent';
  logCapability(ctx.log, ctx.runtime, null);
  const listenPort = portOfLabel(session.listen);
  const local = socket.localAddress ? normalizeAddress(socket.localAddress) : '';
  let found: TransparentDestination | null;
  try {
    found = kernelDestination(socket, listenPort);
  } catch (err) {
    ctx.log.warn('transparent: original destination unreadable', { session: session.id, error: err instanceof Error ? err.message : String(err) });
    found = null;
  }
  const proceed = (d: TransparentDestination | null): void => {
    if (socket.destroyed) return;
    if (!d) {
      session.settle('EPROTO');
      ctx.log.info('transparent: no destination (not redirected, and no Host header or TLS SNI)', { session: session.id, client: session.clientLabel });
      socket.destroy();
      return;
    }
    // A name that leads back to this listener would make the proxy dial itself forever.
    const dstHost = normalizeAddress(d.dst.host);
    if (d.dst.port === listenPort && (dstHost === local || isLoopbackName(dstHost))) {
      session.settle('EDENIED');
      ctx.log.info('transparent: destination is this listener; refused', { session: session.id, client: session.clientLabel, dst: `${d.dst.host}:${d.dst.port}` });
      socket.destroy();
      return;
    }
    session.sections.transparent = { via: d.via };
    void ctx.sink.handle({
      session,
      socket,
      command: 'connect',
      dst: d.dst,
      tags: ['transparent'],
      replySuccess: () => {},
      replyFailure: () => socket.destroy(),
    });
  };
  if (found) {
    proceed(found);
    return;
  }
  void peekServerName(socket, ctx.config().timeouts.handshake).then(proceed);
};

function isLoopbackName(host: string): boolean {
  return host === 'localhost' || host.endsWith('.localhost');
}
