/**
 * SOCKS BIND (SOCKS4 document "BIND", RFC 1928 §4): listen on the proxy's address for one
 * incoming connection from the application server, tell the client where (first reply), accept
 * one connection from the expected host (second reply), then relay. An incoming connection from
 * another host gets the failure reply and both connections close.
 */
import { createServer, isIP, type Server, type Socket } from 'node:net';
import { ProxyError, toProxyError } from '../core/errors.js';
import { normalizeAddress } from '../core/session.js';
import type { BoundAddress, Tunnel } from '../core/tunnel.js';
import { relay, type RelayMode, type RelayResult, type RelayShape } from './relay.js';

export interface BindListener {
  address: BoundAddress;
  /**
   * Accept one connection. When `expected.host` is not 0.0.0.0 or ::, its remote address must be
   * one of `expected.addresses`, else EBINDPEER (that socket is destroyed); ETIMEDOUT after
   * `timeoutMs`; ESHUTDOWN when the listener is closed meanwhile.
   */
  waitForPeer(expected: { host: string; addresses: string[] }, timeoutMs: number): Promise<Socket>;
  close(): void;
}

/** The unspecified address: "any host may connect in". */
function isUnspecified(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '0:0:0:0:0:0:0:0';
}

/** Listen on `localAddress` (the address the client reached the proxy on), port 0. */
export function openBindListener(localAddress: string): Promise<BindListener> {
  return new Promise((resolve, reject) => {
    const server: Server = createServer({ pauseOnConnect: true });
    const onListenError = (err: Error): void => reject(toProxyError(err));
    server.once('error', onListenError);
    server.listen({ host: localAddress, port: 0, exclusive: true }, () => {
      server.off('error', onListenError);
      server.on('error', () => {});
      const a = server.address();
      if (!a || typeof a === 'string') {
        server.close();
        reject(new ProxyError('EUPSTREAM', 'BIND listener has no address'));
        return;
      }
      let waiter: { onPeer(peer: Socket): void; abort(err: ProxyError): void } | null = null;
      let closed = false;
      server.on('connection', (peer: Socket) => {
        peer.on('error', () => {});
        // One connection per BIND: anything arriving when nobody waits is refused.
        if (waiter) waiter.onPeer(peer);
        else peer.destroy();
      });
      resolve({
        address: { address: a.address, port: a.port },
        waitForPeer(expected, timeoutMs) {
          return new Promise<Socket>((resolvePeer, rejectPeer) => {
            if (closed || waiter) {
              rejectPeer(new ProxyError('ESHUTDOWN', 'BIND listener closed or already waiting'));
              return;
            }
            const any = isUnspecified(expected.host);
            const allowed = new Set(expected.addresses.map(normalizeAddress));
            const timer = setTimeout(() => {
              waiter = null;
              rejectPeer(new ProxyError('ETIMEDOUT', `BIND: no connection from ${expected.host} in ${timeoutMs} ms`));
            }, timeoutMs);
            waiter = {
              onPeer(peer) {
                clearTimeout(timer);
                waiter = null;
                const from = normalizeAddress(peer.remoteAddress ?? '');
                if (!any && !allowed.has(from)) {
                  peer.destroy();
                  rejectPeer(new ProxyError('EBINDPEER', `BIND: connection from ${from}, expected ${expected.host}`));
                  return;
                }
                resolvePeer(peer);
              },
              abort(err) {
                clearTimeout(timer);
                waiter = null;
                rejectPeer(err);
              },
            };
          });
        },
        close() {
          if (closed) return;
          closed = true;
          waiter?.abort(new ProxyError('ESHUTDOWN', 'BIND listener closed'));
          server.close();
        },
      });
    });
  });
}

export interface BindOptions {
  /** How long to wait for the incoming connection (the SOCKS4 document suggests 2 minutes). */
  timeoutMs: number;
  /** Relay idle timeout. */
  idleMs: number;
  /** Who moves the bytes once the peer is in (RELAY=); default splice. */
  mode?: RelayMode;
  /** BANDWIDTH=/QUOTA= of the relayed bytes (an active-mode FTP transfer, say); absent = none. */
  shape?: RelayShape;
  /** Addresses of a named expected host (SOCKS4a, SOCKS5 DOMAINNAME). */
  resolve(host: string): Promise<string[]>;
}

/**
 * Watch a paused client socket while it waits for BIND's second reply: read (and keep, bounded)
 * anything it sends so that its FIN or reset is seen; `stop()` puts the kept bytes back.
 */
function watchClient(client: Socket, onGone: () => void): { stop(): void } {
  const kept: Buffer[] = [];
  let size = 0;
  const onData = (chunk: Buffer): void => {
    kept.push(chunk);
    size += chunk.length;
    if (size >= 64 * 1024) client.pause(); // the client talks before the peer exists; hold, don't grow
  };
  client.on('data', onData);
  client.once('end', onGone);
  client.once('close', onGone);
  client.resume();
  return {
    stop() {
      client.off('data', onData);
      client.off('end', onGone);
      client.off('close', onGone);
      client.pause();
      if (kept.length > 0 && !client.destroyed) client.unshift(Buffer.concat(kept));
    },
  };
}

/** The whole BIND after policy passed: both replies, then the relay. */
export async function runBind(tunnel: Tunnel, opts: BindOptions): Promise<RelayResult> {
  const failed = (err: unknown): RelayResult => {
    const e = toProxyError(err);
    tunnel.replyFailure(e.code, e.message);
    return { up: 0, down: 0, result: e.code };
  };
  const host = tunnel.dst.host;
  let addresses: string[] = [];
  if (!isUnspecified(host)) {
    try {
      addresses = isIP(host) ? [host] : await opts.resolve(host);
    } catch (err) {
      return failed(err);
    }
  }
  let listener: BindListener;
  try {
    listener = await openBindListener(normalizeAddress(tunnel.socket.localAddress ?? '0.0.0.0'));
  } catch (err) {
    return failed(err);
  }
  let clientGone = false;
  const watch = watchClient(tunnel.socket, () => {
    clientGone = true;
    listener.close();
  });
  let peer: Socket;
  try {
    tunnel.replySuccess(listener.address);
    peer = await listener.waitForPeer({ host, addresses }, opts.timeoutMs);
  } catch (err) {
    watch.stop();
    listener.close();
    if (clientGone) {
      tunnel.socket.destroy();
      return { up: 0, down: 0, result: 'client-gone' };
    }
    return failed(err);
  }
  watch.stop();
  listener.close();
  tunnel.session.adopt(peer);
  if (tunnel.socket.destroyed) {
    peer.destroy();
    return { up: 0, down: 0, result: 'client-gone' };
  }
  tunnel.replyBindPeer?.({ address: normalizeAddress(peer.remoteAddress ?? '0.0.0.0'), port: peer.remotePort ?? 0 });
  return relay(tunnel.socket, peer, { idleMs: opts.idleMs, ...(opts.mode ? { mode: opts.mode } : {}), ...(opts.shape ? { shape: opts.shape } : {}) });
}
