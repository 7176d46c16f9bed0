/**
 * The direct dialer: a TCP connection to the destination as the client named it. Names are
 * resolved by `options.lookup` (the router passes net/dns.ts's bounded cache) or else the OS
 * resolver; dual-stack names are raced with Happy Eyeballs (Node's `autoSelectFamily`). Failures
 * become `ProxyError`s with stable codes so each front door can answer in its own protocol.
 */
import net, { type LookupFunction, type Socket } from 'node:net';
import type { HostPort } from '../config/types.js';
import { awaitConnect } from '../net/connect.js';

export interface DialOptions {
  /** Give up after this long (the SOCKS4 document's two minutes by default). */
  timeoutMs: number;
  signal?: AbortSignal;
  /** Name lookup for net.connect (net/dns.ts `NameCache.lookupFunction()`); default the OS resolver. */
  lookup?: LookupFunction;
  /** SRCIF=: the source address to bind, and its family (only that family's addresses are tried). */
  localAddress?: string;
  family?: 4 | 6;
}

export function dialDirect(dst: HostPort, options: DialOptions): Promise<Socket> {
  // allowHalfOpen: the relay forwards a FIN instead of closing both directions at once.
  // autoSelectFamily: RFC 8305 Happy Eyeballs across every address the lookup returns.
  const socket = net.connect({
    host: dst.host,
    port: dst.port,
    allowHalfOpen: true,
    noDelay: true,
    autoSelectFamily: options.family === undefined,
    ...(options.lookup ? { lookup: options.lookup } : {}),
    ...(options.localAddress ? { localAddress: options.localAddress, family: options.family } : {}),
  });
  return awaitConnect(socket, `connect to ${dst.host}:${dst.port}`, options);
}
