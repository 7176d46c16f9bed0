/**
 * UDP ASSOCIATE through upstream SOCKS5 proxies (and chains of them): the datagrams of a client's
 * association whose destination routes through SOCKS5 hops (PROXY/SOCKS parameters, YAML routes;
 * the first route of the plan, as for TCP) leave through the upstreams' own UDP relays instead of
 * directly. For a chain h1..hn:
 *
 *   - a control connection per hop: hop i is reached through h1..h(i-1) with CONNECT (dialChain)
 *     and asked for UDP ASSOCIATE (RFC 1928 §7; DST 0.0.0.0:0, with the hop's user/password);
 *     BND.ADDR 0.0.0.0 means the address the hop was reached at;
 *   - each datagram goes to h1's relay wrapped once per hop: a header naming h2's relay, ...,
 *     then one naming the destination (a name goes as DOMAINNAME to the last hop);
 *   - an answer from h1's relay is unwrapped hop by hop; what names its real source comes back
 *     to the client in the client's header, only from a destination the client sent to.
 *
 * A chain with an HTTP or SOCKS4 hop cannot carry UDP: those datagrams are dropped. Per-datagram
 * policy (PERMIT/REJECT) is checked before any of this (net/udp-relay.ts). The association through
 * a chain is opened at its first datagram (bounded by TIMEOUT=connect), lives as long as the
 * client's, and is dropped (to be opened again) when an upstream ends it.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { isIP, type Socket } from 'node:net';
import { SocksClient } from 'socks';
import type { Config, HostPort } from '../config/types.js';
import type { Session } from '../core/session.js';
import { ProxyError } from '../core/errors.js';
import { encodeUdpHeader, parseUdpHeader } from '../wire/socks.js';
import type { NameCache } from '../net/dns.js';
import type { UpstreamHealthTable } from './pool.js';
import { dialChain } from './chain.js';
import { chainLabel, hopLabel, type Chain, type Hop } from './hop.js';
import { dialPlan, queryFor } from './router.js';
import { codeForSocksError } from './socks.js';

export interface UdpChainRelay {
  readonly label: string;
  /** Send DATA to host:port through the chain. */
  send(data: Buffer, host: string, port: number): void;
  /** Answers: their data and real source. */
  onAnswer(cb: (data: Buffer, host: string, port: number) => void): void;
  /** Called once when an upstream ended the association (or it failed). */
  onClose(cb: () => void): void;
  close(): void;
}

/** How a client's association reaches upstreams: what the router says per destination. */
export interface UdpUpstream {
  /** The chain for this destination: [] direct, null when the route cannot carry UDP. */
  chainFor(host: string, port: number): Chain | null;
  open(chain: Chain): Promise<UdpChainRelay>;
}

/**
 * The association's options for upstream chains (net/udp-relay.ts runUdpAssociate): none when no
 * upstream is configured (every datagram goes direct, as before); a chain that cannot be opened
 * is logged with the session.
 */
export function udpUpstreamOptions(
  config: Config,
  session: Session,
  log: { warn(msg: string, f?: Record<string, unknown>): void },
  names: NameCache,
  upstreams: UpstreamHealthTable,
): { upstream?: UdpUpstream; onChainError?(label: string, err: unknown): void } {
  const upstream = udpUpstream(config, session, names, upstreams);
  if (!upstream) return {};
  return {
    upstream,
    onChainError: (route, err) =>
      log.warn('udp route failed', { session: session.id, client: session.clientLabel, route, error: err instanceof Error ? err.message : String(err) }),
  };
}

/** The association's upstream hooks, or undefined when no upstream is configured (all direct). */
export function udpUpstream(config: Config, session: Session, names: NameCache, upstreams: UpstreamHealthTable): UdpUpstream | undefined {
  if (config.upstreams.length === 0 && !(config.routes ?? []).some((r) => r.via.some((c) => c.length > 0))) return undefined;
  return {
    chainFor(host, port) {
      const plan = dialPlan(config, queryFor(session, { host, port }), upstreams);
      const chain = plan.chains[0] ?? [];
      return chain.every((h) => h.kind === 'socks5' && !h.tls) ? chain : null;
    },
    open(chain) {
      return openUdpChain(chain, { names, timeoutMs: config.timeouts.connect });
    },
  };
}

/** UDP ASSOCIATE on `socket` (connected to `hop`): the relay address. */
async function associate(socket: Socket, hop: Hop, timeoutMs: number): Promise<HostPort> {
  const proxy = { host: hop.host, port: hop.port, type: 5 as const, ...(hop.user !== undefined ? { userId: hop.user, password: hop.password ?? '' } : {}) };
  try {
    // SocksClient.createConnection() is for CONNECT only; an instance speaks ASSOCIATE.
    const client = new SocksClient({
      command: 'associate',
      destination: { host: '0.0.0.0', port: 0 },
      proxy,
      timeout: timeoutMs > 0 ? timeoutMs : undefined,
      existing_socket: socket,
    });
    const pending = new Promise<{ remoteHost?: { host: string; port: number } }>((resolve, reject) => {
      client.once('established', resolve);
      client.once('error', reject);
    });
    client.connect(socket);
    socket.resume();
    const info = await pending;
    const bnd = info.remoteHost ?? { host: '0.0.0.0', port: 0 };
    const host = bnd.host === '0.0.0.0' || bnd.host === '::' ? hop.host : bnd.host;
    return { host, port: bnd.port };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    socket.destroy();
    throw new ProxyError(codeForSocksError(message), `${hopLabel(hop)}: UDP ASSOCIATE: ${message}`, { cause: err });
  }
}

export async function openUdpChain(chain: Chain, opts: { names: NameCache; timeoutMs: number }): Promise<UdpChainRelay> {
  if (chain.length === 0 || chain.some((h) => h.kind !== 'socks5')) throw new ProxyError('EUPSTREAM', 'UDP goes only through SOCKS5 hops');
  const controls: Socket[] = [];
  const relays: HostPort[] = [];
  const label = chainLabel(chain);
  try {
    for (let i = 0; i < chain.length; i++) {
      const hop = chain[i]!;
      const control = await dialChain(chain.slice(0, i), { host: hop.host, port: hop.port }, { timeoutMs: opts.timeoutMs, names: opts.names });
      controls.push(control);
      relays.push(await associate(control, hop, opts.timeoutMs));
    }
  } catch (err) {
    for (const c of controls) c.destroy();
    throw err;
  }
  const first = relays[0]!;
  const firstAddress = isIP(first.host) ? first.host : await opts.names.resolveOne(first.host);
  const socket: UdpSocket = createSocket(isIP(firstAddress) === 6 ? 'udp6' : 'udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, isIP(firstAddress) === 6 ? '::' : '0.0.0.0', () => {
      socket.off('error', reject);
      resolve();
    });
  });
  // The headers naming each later hop's relay, outermost first.
  const inner = relays.slice(1).map((r) => encodeUdpHeader(r.host, r.port));
  let answer: (data: Buffer, host: string, port: number) => void = () => {};
  let closeCb: () => void = () => {};
  let open = true;
  const close = (): void => {
    if (!open) return;
    open = false;
    for (const c of controls) c.destroy();
    try {
      socket.close();
    } catch {
      // closed already
    }
    closeCb();
  };
  socket.on('error', close);
  for (const c of controls) {
    c.on('error', () => {});
    c.on('close', close);
    c.on('end', close);
    c.resume();
  }
  socket.on('message', (msg, rinfo) => {
    if (rinfo.port !== first.port) return;
    let rest = msg;
    let src: { host: string; port: number } | null = null;
    for (let i = 0; i < relays.length; i++) {
      const h = parseUdpHeader(rest);
      if (h.status !== 'ok' || h.value.frag !== 0) return;
      src = { host: h.value.host, port: h.value.port };
      rest = rest.subarray(h.value.dataOffset);
    }
    if (src) answer(rest, src.host, src.port);
  });
  return {
    label,
    send(data, host, port) {
      if (!open) return;
      socket.send([...inner, encodeUdpHeader(host, port), data], first.port, firstAddress);
    },
    onAnswer(cb) {
      answer = cb;
    },
    onClose(cb) {
      closeCb = cb;
    },
    close,
  };
}
