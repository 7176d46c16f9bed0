/**
 * Wait for a socket that is connecting (or about to be) to connect, with the dial's time limit and
 * the proxy's shutdown signal; every failure becomes a `ProxyError` with a stable code and a
 * message naming `what` (e.g. "connect to example.test:80"). Shared by every dialer.
 */
import type { Socket } from 'node:net';
import { ProxyError, toProxyError } from '../core/errors.js';

export interface ConnectWait {
  timeoutMs: number;
  signal?: AbortSignal;
}

export function awaitConnect(socket: Socket, what: string, options: ConnectWait, start?: () => void): Promise<Socket> {
  return new Promise((resolve, reject) => {
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
      fail(new ProxyError(e.code, `${what} failed: ${e.message || e.code}`, { cause: err }));
    };
    const onAbort = (): void => fail(new ProxyError('ESHUTDOWN', `${what} aborted: the proxy is stopping`));
    socket.once('connect', onConnect);
    socket.once('error', onError);
    if (options.signal) {
      if (options.signal.aborted) return onAbort();
      options.signal.addEventListener('abort', onAbort, { once: true });
    }
    if (options.timeoutMs > 0) {
      timer = setTimeout(() => fail(new ProxyError('ETIMEDOUT', `${what} timed out after ${options.timeoutMs} ms`)), options.timeoutMs);
    }
    start?.();
  });
}
