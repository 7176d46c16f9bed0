/**
 * SOCKS5 UDP ASSOCIATE (RFC 1928 §7): a UDP port on the proxy's address for one client. Datagrams
 * from the client carry RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA; the relay checks the
 * destination, sends DATA there, and wraps what comes back in the same header naming the source.
 * The association lives as long as its TCP control connection (and not past an idle timeout).
 */
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { isIP, isIPv4, type Socket } from 'node:net';
import { toProxyError } from '../core/errors.js';
import { normalizeAddress } from '../core/session.js';
import type { BoundAddress, Tunnel } from '../core/tunnel.js';
import { encodeUdpHeader, parseUdpHeader } from '../wire/socks.js';
import type { NameCache } from './dns.js';
import { chainLabel } from '../upstream/hop.js';
import type { UdpChainRelay, UdpUpstream } from '../upstream/udp-chain.js';

export interface UdpAssociationOptions {
  /** The SOCKS5 TCP connection that asked for the association. */
  controlSocket: Socket;
  /** DST.ADDR/DST.PORT of the UDP ASSOCIATE request: where the client will send from, or zeros. */
  clientHint: { host: string; port: number };
  /** Policy for each datagram's destination, as the client named it. */
  checkDestination(host: string, port: number): boolean;
  /** Close after this long with no datagram in either direction; 0 = never. */
  idleMs: number;
  /** The running instance's name cache (HOSTS=, YAML `dns:`) for named destinations. */
  names: NameCache;
  /** Routes through upstream SOCKS5 proxies (upstream/udp-chain.ts); absent: every datagram goes direct. */
  upstream?: UdpUpstream;
  /** A chain that could not be opened (for the log). */
  onChainError?(label: string, err: unknown): void;
}

export interface UdpAssociation {
  /** Where the client sends its datagrams (the BND.ADDR/BND.PORT of the reply). */
  readonly address: BoundAddress;
  /** DATA bytes sent to destinations. */
  readonly bytesUp: number;
  /** DATA bytes relayed back to the client. */
  readonly bytesDown: number;
  /** Datagrams dropped (wrong source, fragment, malformed, refused, unresolvable). */
  readonly dropped: number;
  /** Resolves once closed, with 'ok' (control connection closed), 'idle', or an error code. */
  readonly closed: Promise<string>;
  close(result?: string): void;
}

/** Destinations a client may have answers from at once; the oldest is forgotten first. */
const MAX_PEERS = 4096;
/** Names resolved per association, kept for its lifetime. */
const MAX_NAMES = 256;
/** Upstream chains one association sends through at once. */
const MAX_CHAINS = 16;

function bindUdp(type: 'udp4' | 'udp6', address: string): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({ type, ipv6Only: type === 'udp6' });
    socket.once('error', reject);
    socket.bind({ address, port: 0, exclusive: true }, () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

export async function openUdpAssociation(opts: UdpAssociationOptions): Promise<UdpAssociation> {
  const control = opts.controlSocket;
  const localAddress = normalizeAddress(control.localAddress ?? '0.0.0.0');
  const clientAddress = normalizeAddress(control.remoteAddress ?? '');
  const clientSide = await bindUdp(isIPv4(localAddress) ? 'udp4' : 'udp6', localAddress);
  const bound = clientSide.address();

  // Outgoing sockets per family, made when first needed.
  const outgoing: { udp4: Promise<UdpSocket> | null; udp6: Promise<UdpSocket> | null } = { udp4: null, udp6: null };
  // "address|port" of destinations we sent to → the header to put before their answers.
  const peers = new Map<string, Buffer>();
  const names = new Map<string, string>();
  // A hinted port is the only one accepted; with port 0 the first datagram's source port is learnt.
  let clientPort = opts.clientHint.port;
  let up = 0;
  let down = 0;
  let dropped = 0;
  let active = true;
  let closedResult = 'ok';
  let resolveClosed!: (r: string) => void;
  const closed = new Promise<string>((r) => (resolveClosed = r));
  let lastActivity = Date.now();
  let idleTimer: NodeJS.Timeout | null = null;

  const close = (result = 'ok'): void => {
    if (!active) return;
    active = false;
    closedResult = result;
    if (idleTimer) clearInterval(idleTimer);
    for (const r of chains.values()) void r.then((c) => c.close(), () => undefined);
    chains.clear();
    control.off('end', onControlEnd);
    control.off('close', onControlEnd);
    clientSide.close();
    const pending: Promise<void>[] = [];
    for (const s of [outgoing.udp4, outgoing.udp6]) {
      if (s) pending.push(s.then((u) => void u.close(), () => undefined));
    }
    void Promise.all(pending).then(() => resolveClosed(closedResult));
  };

  const outgoingFor = (type: 'udp4' | 'udp6'): Promise<UdpSocket> => {
    let p = outgoing[type];
    if (!p) {
      p = bindUdp(type, type === 'udp4' ? '0.0.0.0' : '::').then((s) => {
        s.on('message', onAnswer);
        s.on('error', () => {});
        if (!active) s.close();
        return s;
      });
      p.catch(() => undefined);
      outgoing[type] = p;
    }
    return p;
  };

  const resolveName = async (host: string): Promise<string> => {
    if (isIP(host)) return host;
    const known = names.get(host);
    if (known) return known;
    const address = await opts.names.resolveOne(host);
    if (names.size >= MAX_NAMES) names.delete(names.keys().next().value!);
    names.set(host, address);
    return address;
  };

  const drop = (): void => {
    dropped++;
  };

  // Associations through upstream chains, by chain (with its users), opened at the first datagram.
  const chains = new Map<string, Promise<UdpChainRelay>>();
  // "chain|address|port" (or "chain|name|port" for a name sent to the last hop) the client sent to.
  const sentVia = new Set<string>();
  const namedVia = new Set<string>();
  const viaChain = (chain: Parameters<UdpUpstream['open']>[0], host: string, port: number, data: Buffer): void => {
    const key = `${chainLabel(chain)}|${chain.map((h) => h.user ?? '').join(',')}`;
    let relay = chains.get(key);
    if (!relay) {
      if (chains.size >= MAX_CHAINS) return drop();
      relay = opts.upstream!.open(chain).then((r) => {
        if (!active) r.close();
        r.onClose(() => chains.delete(key));
        r.onAnswer((answer, srcHost, srcPort) => {
          if (!active || clientPort === 0) return;
          const src = normalizeAddress(srcHost);
          if (!sentVia.has(`${key}|${src}|${srcPort}`) && !namedVia.has(`${key}|${srcPort}`)) return drop();
          lastActivity = Date.now();
          down += answer.length;
          clientSide.send([encodeUdpHeader(src, srcPort), answer], clientPort, clientAddress);
        });
        return r;
      });
      relay.catch((err: unknown) => {
        chains.delete(key);
        opts.onChainError?.(chainLabel(chain), err);
      });
      chains.set(key, relay);
    }
    const mark = isIP(host) ? `${key}|${normalizeAddress(host)}|${port}` : `${key}|${port}`;
    const set = isIP(host) ? sentVia : namedVia;
    if (!set.has(mark)) {
      if (set.size >= MAX_PEERS) set.delete(set.values().next().value!);
      set.add(mark);
    }
    relay.then((r) => {
      if (!active) return;
      up += data.length;
      r.send(data, host, port);
    }, drop);
  };

  const onClientDatagram = (msg: Buffer, rinfo: RemoteInfo): void => {
    if (!active) return;
    // RFC 1928 §7: only datagrams from the client that asked for the association.
    if (normalizeAddress(rinfo.address) !== clientAddress) return drop();
    if (clientPort === 0) clientPort = rinfo.port;
    else if (rinfo.port !== clientPort) return drop();
    const h = parseUdpHeader(msg);
    if (h.status !== 'ok') return drop();
    // RFC 1928 §7: an implementation that does not support fragmentation drops FRAG ≠ 0.
    if (h.value.frag !== 0) return drop();
    const { host, port, dataOffset } = h.value;
    if (port === 0 || !opts.checkDestination(host, port)) return drop();
    lastActivity = Date.now();
    const data = msg.subarray(dataOffset);
    const chain = opts.upstream ? opts.upstream.chainFor(host, port) : [];
    if (chain === null) return drop();
    if (chain.length > 0) return viaChain(chain, host, port, data);
    resolveName(host).then(
      async (address) => {
        const socket = await outgoingFor(isIPv4(address) ? 'udp4' : 'udp6');
        if (!active) return;
        const key = `${address}|${port}`;
        if (!peers.has(key)) {
          if (peers.size >= MAX_PEERS) peers.delete(peers.keys().next().value!);
          peers.set(key, encodeUdpHeader(address, port));
        }
        up += data.length;
        socket.send(data, port, address);
      },
      drop,
    );
  };

  const onAnswer = (msg: Buffer, rinfo: RemoteInfo): void => {
    if (!active || clientPort === 0) return;
    // Answers only from where the client sent to: the relay is not an open door into the client.
    const header = peers.get(`${normalizeAddress(rinfo.address)}|${rinfo.port}`);
    if (!header) return drop();
    lastActivity = Date.now();
    down += msg.length;
    clientSide.send([header, msg], clientPort, clientAddress);
  };

  const onControlEnd = (): void => close('ok');

  clientSide.on('message', onClientDatagram);
  clientSide.on('error', (err: NodeJS.ErrnoException) => close(err.code ?? 'EUPSTREAM'));
  // RFC 1928 §7: the association ends when its TCP connection ends. Read (and discard) from the
  // control connection so its FIN is seen at all.
  control.on('end', onControlEnd);
  control.on('close', onControlEnd);
  control.resume();
  if (control.destroyed) close('ok');

  if (opts.idleMs > 0) {
    const tick = Math.max(250, Math.min(opts.idleMs / 4, 30_000));
    idleTimer = setInterval(() => {
      if (Date.now() - lastActivity >= opts.idleMs) close('idle');
    }, tick);
    idleTimer.unref();
  }

  return {
    address: { address: bound.address, port: bound.port },
    get bytesUp() {
      return up;
    },
    get bytesDown() {
      return down;
    },
    get dropped() {
      return dropped;
    },
    closed,
    close,
  };
}

/** The whole UDP ASSOCIATE after policy: open, reply with the UDP address, live until the end. */
export async function runUdpAssociate(
  tunnel: Tunnel,
  opts: {
    idleMs: number;
    names: NameCache;
    checkDestination(host: string, port: number): boolean;
    upstream?: UdpUpstream;
    onChainError?(label: string, err: unknown): void;
  },
): Promise<{ up: number; down: number; result: string }> {
  let association: UdpAssociation;
  try {
    association = await openUdpAssociation({
      controlSocket: tunnel.socket,
      clientHint: tunnel.dst,
      checkDestination: opts.checkDestination,
      idleMs: opts.idleMs,
      names: opts.names,
      ...(opts.upstream ? { upstream: opts.upstream } : {}),
      ...(opts.onChainError ? { onChainError: opts.onChainError } : {}),
    });
  } catch (err) {
    const e = toProxyError(err);
    tunnel.replyFailure(e.code, e.message);
    return { up: 0, down: 0, result: e.code };
  }
  tunnel.replySuccess(association.address);
  const result = await association.closed;
  tunnel.socket.destroy();
  return { up: association.bytesUp, down: association.bytesDown, result };
}
