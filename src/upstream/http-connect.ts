/**
 * The HTTP CONNECT dialer (RFC 9110 §9.3.6): on a socket already connected to an upstream HTTP
 * proxy, ask it for a tunnel to the next address, with `Proxy-Authorization: Basic` when the hop
 * has credentials. A 2xx makes the socket the tunnel (bytes that came after the response head are
 * put back, STYLE practice 6); anything else becomes a typed `ProxyError`.
 */
import type { Socket } from 'node:net';
import type { HostPort } from '../config/types.js';
import { ProxyError, type ProxyErrorCode } from '../core/errors.js';
import { hopLabel, type Hop } from './hop.js';

/** The most a CONNECT response head may take. */
const MAX_HEAD_BYTES = 16 * 1024;

/** `host:port` as an HTTP authority (IPv6 in brackets). */
export function authorityOf(dst: HostPort): string {
  return `${dst.host.includes(':') ? `[${dst.host}]` : dst.host}:${dst.port}`;
}

/** `Basic base64(user:pass)` for a hop with credentials, else undefined. */
export function basicCredentials(hop: Hop): string | undefined {
  if (hop.user === undefined) return undefined;
  return `Basic ${Buffer.from(`${hop.user}:${hop.password ?? ''}`, 'utf8').toString('base64')}`;
}

/** Squid names why it failed in X-Squid-Error: `ERR_CONNECT_FAIL 111`, `ERR_DNS_FAIL 0`. */
function codeForStatus(status: number, squidError: string | undefined): ProxyErrorCode {
  if (squidError) {
    if (/^ERR_DNS_FAIL/.test(squidError)) return 'ENOTFOUND';
    if (/^ERR_CONNECT_FAIL 111\b/.test(squidError)) return 'ECONNREFUSED';
    if (/^ERR_CONNECT_FAIL 113\b/.test(squidError)) return 'EHOSTUNREACH';
    if (/^ERR_CONNECT_FAIL 101\b/.test(squidError)) return 'ENETUNREACH';
    if (/^ERR_CONNECT_FAIL 110\b/.test(squidError) || /^ERR_READ_TIMEOUT/.test(squidError)) return 'ETIMEDOUT';
    if (/^ERR_ACCESS_DENIED/.test(squidError)) return 'EDENIED';
  }
  if (status === 403) return 'EDENIED';
  if (status === 407) return 'EUPSTREAMAUTH';
  if (status === 504) return 'ETIMEDOUT';
  return 'EUPSTREAM';
}

/** Negotiate a CONNECT tunnel to `next` on `socket` (connected to `hop`). */
export function httpConnect(socket: Socket, hop: Hop, next: HostPort): Promise<Socket> {
  const label = hopLabel(hop);
  return new Promise((resolve, reject) => {
    const authority = authorityOf(next);
    let head = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n`;
    const auth = basicCredentials(hop);
    if (auth) head += `Proxy-Authorization: ${auth}\r\n`;
    head += '\r\n';
    let received: Buffer = Buffer.alloc(0);
    const done = (): void => {
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    const fail = (err: ProxyError): void => {
      done();
      socket.on('error', () => {});
      socket.destroy();
      reject(err);
    };
    const onError = (err: Error): void => fail(new ProxyError('EUPSTREAM', `${label}: ${err.message}`, { cause: err }));
    const onClose = (): void => fail(new ProxyError('EUPSTREAM', `${label} closed the connection during CONNECT`));
    const onData = (chunk: Buffer): void => {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      const end = received.indexOf('\r\n\r\n');
      if (end < 0) {
        if (received.length > MAX_HEAD_BYTES) fail(new ProxyError('EUPSTREAM', `${label}: CONNECT response head over ${MAX_HEAD_BYTES} bytes`));
        return;
      }
      const lines = received.subarray(0, end).toString('latin1').split('\r\n');
      const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0] ?? '');
      if (!m) {
        fail(new ProxyError('EUPSTREAM', `${label}: not an HTTP response to CONNECT`));
        return;
      }
      const status = Number(m[1]);
      if (status >= 200 && status < 300) {
        done();
        socket.pause();
        const rest = received.subarray(end + 4);
        if (rest.length > 0) socket.unshift(rest);
        resolve(socket);
        return;
      }
      const squidError = lines
        .find((l) => /^x-squid-error:/i.test(l))
        ?.slice('x-squid-error:'.length)
        .trim();
      const code = codeForStatus(status, squidError);
      fail(new ProxyError(code, `${label} answered CONNECT ${authority} with ${status}${m[2] ? ' ' + m[2] : ''}${squidError ? ` (${squidError})` : ''}`));
    };
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.write(head);
    socket.resume();
  });
}
