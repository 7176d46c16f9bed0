/**
 * The direct dialer: a TCP connection to the destination as the client named it. Names are
 * resolved by `options.lookup` (the router passes net/dns.ts's bounded cache) or else the OS
 * resolver; dual-stack names are raced with Happy Eyeballs (Node's `autoSelectFamily`). Failures
 * become `ProxyError`s with stable codes so each front door can answer in its own protocol.
 */
import net, { type LookupFunction, type Socket } from 'node:net';
import type { HostPort } from '../config/types.js';
import { ProxyError, toProxyError } from '../core/errors.js';

export interface DialOptions {
  /** Give up after this long (the SOCKS4 document's two minutes by default). */
  timeoutMs: number;
  signal?: AbortSignal;
  /** Name lookup for net.connect (net/dns.ts `NameCache.lookupFunction()`); default the OS resolver. */
  lookup?: LookupFunction;
}

export function dialDirect(dst: HostPort, options: DialOptions): Promise<Socket> {
  return new Promise((resolve, reject) => {
    // allowHalfOpen: the relay forwards a FIN instead of closing both directions at once.
    // autoSelectFamily: RFC 8305 Happy Eyeballs across every address the lookup returns.
    const socket = net.connect({
      host: dst.host,
      port: dst.port,
      allowHalfOpen: true,
      noDelay: true,
      autoSelectFamily: true,
      ...(options.lookup ? { lookup: options.lookup } : {}),
    });
    let timer: NodeJS.Timeout | null = null;
    const cleanup = (): void => {
      if (timer) clearTimeout(timer);
      timer = null;
      socket.off('connect', onConnect);
      socket.off('error', onError);
      options.signal?.removeEventListener('abort', onAbort);
    };
    const fail = (err: ProxyError): void => {
      cleanup();
      // Keep a listener: a late error on a destroyed socket must not crash the process.
      socket.on('error', () => {});
      socket.destroy();
      reject(err);
    };
    const onConnect = (): void => {
      cleanup();
      resolve(socket);
    };
    const onError = (err: Error): void => {
      const e = toProxyError(err);
      // Happy Eyeballs reports an AggregateError with a code but an empty message.
      fail(e.message ? e : new ProxyError(e.code, `connect to ${dst.host}:${dst.port} failed: ${e.code}`, { cause: err }));
    };
    const onAbort = (): void => fail(new ProxyError('ESHUTDOWN', `dial to ${dst.host}:${dst.port} aborted`));
    socket.once('connect', onConnect);
    socket.once('error', onError);
    if (options.signal) {
      if (options.signal.aborted) return onAbort();
      options.signal.addEventListener('abort', onAbort, { once: true });
    }
    if (options.timeoutMs > 0) {
      timer = setTimeout(
        () => fail(new ProxyError('ETIMEDOUT', `connect to ${dst.host}:${dst.port} timed out after ${options.timeoutMs} ms`)),
        options.timeoutMs,
      );
    }
  });
}
