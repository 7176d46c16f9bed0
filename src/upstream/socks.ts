/**
 * The SOCKS dialer: on a socket already connected to an upstream SOCKS4, SOCKS4a or SOCKS5 proxy,
 * negotiate a CONNECT to the next address through the `socks` package (RFC 1928 and RFC 1929
 * user/password for SOCKS5; a user id for SOCKS4/4a). The proxy's refusals become typed
 * `ProxyError`s: REP 5 → ECONNREFUSED, REP 2 → EDENIED, an auth failure → EUPSTREAMAUTH, ...
 */
import type { Socket } from 'node:net';
import { SocksClient, type SocksProxy } from 'socks';
import type { HostPort } from '../config/types.js';
import { ProxyError, type ProxyErrorCode } from '../core/errors.js';
import { hopLabel, type Hop } from './hop.js';

/** The `socks` package's reply names (its Socks5Response enum) → our codes. */
const SOCKS5_REPLIES: Readonly<Record<string, ProxyErrorCode>> = {
  Failure: 'EUPSTREAM',
  NotAllowed: 'EDENIED',
  NetworkUnreachable: 'ENETUNREACH',
  HostUnreachable: 'EHOSTUNREACH',
  ConnectionRefused: 'ECONNREFUSED',
  TTLExpired: 'ETIMEDOUT',
  CommandNotSupported: 'EUPSTREAM',
  AddressNotSupported: 'EATYPNOTSUP',
};

/** Classify one of the `socks` package's error messages. */
export function codeForSocksError(message: string): ProxyErrorCode {
  const rep = /Socks5 proxy rejected connection - (\w+)/.exec(message);
  if (rep) return SOCKS5_REPLIES[rep[1]!] ?? 'EUPSTREAM';
  if (/Authentication failed|no accepted authentication type/i.test(message)) return 'EUPSTREAMAUTH';
  if (/timed out/i.test(message)) return 'ETIMEDOUT';
  // SOCKS4 91 "request rejected or failed" says nothing more; 92/93 are identd failures.
  if (/Socks4 Proxy rejected connection - \(RejectedIdent|Rejected\)/.test(message)) return 'EUPSTREAMAUTH';
  return 'EUPSTREAM';
}

/** Negotiate a SOCKS CONNECT to `next` on `socket` (connected to `hop`). */
export async function socksConnect(socket: Socket, hop: Hop, next: HostPort, timeoutMs: number): Promise<Socket> {
  const proxy: SocksProxy = { host: hop.host, port: hop.port, type: hop.kind === 'socks5' ? 5 : 4 };
  if (hop.user !== undefined) {
    proxy.userId = hop.user;
    if (hop.kind === 'socks5') proxy.password = hop.password ?? '';
  }
  let established: Socket;
  try {
    const pending = SocksClient.createConnection({
      command: 'connect',
      // The package sends a name as SOCKS4a (0.0.0.x) or SOCKS5 DOMAINNAME; the chain resolved it
      // beforehand when the hop must not see it (SOCKS4, names: local).
      destination: { host: next.host, port: next.port },
      proxy,
      timeout: timeoutMs > 0 ? timeoutMs : undefined,
      existing_socket: socket,
    });
    // A socket that an earlier hop paused (after its own handshake) must flow for the package's
    // 'data' listener, which it attached synchronously above.
    socket.resume();
    const info = await pending;
    established = info.socket as Socket;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    socket.on('error', () => {});
    socket.destroy();
    throw new ProxyError(codeForSocksError(message), `${hopLabel(hop)}: ${message}`, { cause: err });
  }
  return keepExcess(established);
}

/**
 * The package re-emits bytes that arrived with the final reply as a 'data' event on the next
 * turn and then resumes the socket, before anyone listens: a server-first banner would be lost.
 * Catch what it emits (and what resume() flows), then pause and put it back.
 */
function keepExcess(socket: Socket): Promise<Socket> {
  return new Promise((resolve) => {
    const caught: Buffer[] = [];
    const onData = (chunk: Buffer): void => {
      caught.push(chunk);
    };
    socket.on('data', onData);
    // Runs after the package's own setImmediate (scheduled while 'established' was emitted).
    setImmediate(() => {
      socket.off('data', onData);
      socket.pause();
      if (caught.length > 0) socket.unshift(Buffer.concat(caught));
      resolve(socket);
    });
  });
}
