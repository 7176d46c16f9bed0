/**
 * Chains: reach the first hop directly, then ask each hop for a tunnel to the next one, the last
 * for the destination (STYLE practice 7: reaching the next hop is separate from talking to it).
 * One deadline (TIMEOUT=connect) covers the whole chain; the shutdown signal aborts it.
 */
import type { LookupFunction, Socket } from 'node:net';
import type { HostPort } from '../config/types.js';
import { ProxyError, toProxyError } from '../core/errors.js';
import { NameCache } from '../net/dns.js';
import { dialDirect } from './direct.js';
import { srcifFor, type SrcifRule } from './srcif.js';
import { hopLabel, needsLocalResolution, type Chain, type Hop } from './hop.js';
import { httpConnect } from './http-connect.js';
import { socksConnect } from './socks.js';
import { encodeProxyHeader, type ProxyEndpoint } from '../net/proxy-protocol.js';
import { tlsToHop } from './tls-hop.js';

export interface ChainOptions {
  /** For the whole chain, ms; 0 = none. */
  timeoutMs: number;
  signal?: AbortSignal;
  /** Names sockstap resolves itself (direct connections, SOCKS4 hops, `names: local`). */
  names: NameCache;
  /** The lookup for the direct connection (default `names.lookupFunction()`): the pipeline pins answers per connection. */
  lookup?: LookupFunction;
  /** SRCIF= rules for a direct dial (an empty chain), with who is dialing. */
  srcif?: { rules: readonly SrcifRule[]; clientAddress: string; user: string | null };
  /** Told whether the first hop could be reached (upstream health, upstream/pool.ts). */
  onFirstHop?: (ok: boolean) => void;
  /** Who the PROXY protocol header of a `/proxy-v1|/proxy-v2` hop names (net/proxy-accept.ts clientEndpoints). */
  client?: { source: ProxyEndpoint; destination: ProxyEndpoint | null };
}

/** Ask `hop` (reached through `socket`) for a tunnel to `next`. */
export function hopDialer(hop: Hop): (socket: Socket, next: HostPort, timeoutMs: number) => Promise<Socket> {
  if (hop.kind === 'http' && hop.tls) return (socket, next) => tlsToHop(socket, hop).then((s) => httpConnect(s, hop, next));
  if (hop.kind === 'http') return (socket, next) => httpConnect(socket, hop, next);
  return (socket, next, timeoutMs) => socksConnect(socket, hop, next, timeoutMs);
}

/** `dst` through every hop of `chain` in order; an empty chain dials directly. */
export async function dialChain(chain: Chain, dst: HostPort, options: ChainOptions): Promise<Socket> {
  const deadline = options.timeoutMs > 0 ? Date.now() + options.timeoutMs : 0;
  const left = (): number => (deadline === 0 ? 0 : Math.max(1, deadline - Date.now()));
  const lookup = options.lookup ?? options.names.lookupFunction();
  const first = chain[0];
  if (!first) {
    const s = options.srcif;
    if (s && s.rules.length > 0) {
      const rule = srcifFor(s.rules, { dst, addresses: await options.names.resolve(dst.host), clientAddress: s.clientAddress, user: s.user });
      if (rule) return dialDirect(dst, { timeoutMs: options.timeoutMs, signal: options.signal, lookup, localAddress: rule.address, family: rule.family });
    }
    return dialDirect(dst, { timeoutMs: options.timeoutMs, signal: options.signal, lookup });
  }
  let socket: Socket;
  try {
    socket = await dialDirect({ host: first.host, port: first.port }, { timeoutMs: left(), signal: options.signal, lookup });
  } catch (err) {
    if (!options.signal?.aborted) options.onFirstHop?.(false);
    throw err;
  }
  options.onFirstHop?.(true);
  for (let i = 0; i < chain.length; i++) {
    const hop = chain[i]!;
    let next: HostPort = chain[i + 1] ?? dst;
    try {
      // A hop that takes the PROXY protocol reads the header before its own handshake.
      if (hop.proxyProtocol) socket.write(encodeProxyHeader(hop.proxyProtocol, options.client?.source ?? null, options.client?.destination ?? null));
      if (needsLocalResolution(hop, next)) {
        next = { host: await options.names.resolveOne(next.host, hop.kind === 'socks4' ? 4 : undefined), port: next.port };
      }
      socket = await bounded(hopDialer(hop)(socket, next, left()), socket, hop, left(), options.signal);
    } catch (err) {
      socket.on('error', () => {});
      socket.destroy();
      throw toProxyError(err);
    }
  }
  return socket;
}

/** A handshake that the deadline or the shutdown signal cuts short by destroying its socket. */
function bounded(work: Promise<Socket>, socket: Socket, hop: Hop, timeoutMs: number, signal?: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | null = null;
    const settle = (): void => {
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const cut = (err: ProxyError): void => {
      settle();
      socket.on('error', () => {});
      socket.destroy();
      reject(err);
    };
    const onAbort = (): void => cut(new ProxyError('ESHUTDOWN', `handshake with ${hopLabel(hop)} aborted`));
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    if (timeoutMs > 0) {
      timer = setTimeout(() => cut(new ProxyError('ETIMEDOUT', `handshake with ${hopLabel(hop)} timed out`)), timeoutMs);
    }
    work.then(
      (s) => {
        settle();
        resolve(s);
      },
      (err: unknown) => {
        settle();
        reject(err);
      },
    );
  });
}
