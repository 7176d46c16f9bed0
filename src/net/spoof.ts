/**
 * SPOOF=client: an outgoing TCP connection whose source address is the client's own, so the
 * server sees the real client (full transparency, as Squid's TPROXY "spoof" mode). Linux only;
 * needs the native addon and CAP_NET_ADMIN, and the server's replies must be routed back through
 * this host and delivered to the transparent socket (docs/transparent.md: `-m socket` mark,
 * `ip rule fwmark`, `ip route local ... table`).
 *
 * Node cannot set a socket option between socket() and bind(), and IP_TRANSPARENT has to be set
 * before bind() for the kernel to accept a non-local address. So the addon makes the socket
 * (socket + IP_TRANSPARENT + bind(client, port 0)) and Node takes it over: `new net.Socket({ fd })`
 * opens a libuv TCP handle on it, and `connect()` reuses that handle (libuv connects an fd it was
 * given instead of making a new one), so the connect is Node's own, with its 'connect'/'error'
 * events. `manualStart` keeps Node from reading the not-yet-connected socket (a read there would
 * see a hang-up and end the stream).
 */
import { closeSync } from 'node:fs';
import net, { type Socket } from 'node:net';
import type { HostPort } from '../config/types.js';
import { ProxyError, toProxyError } from '../core/errors.js';
import { awaitConnect } from './connect.js';
import { bindTransparent, NativeSocketError } from '../native/addon.js';
import type { NameCache } from './dns.js';

export interface SpoofOptions {
  signal?: AbortSignal;
  /** The running instance's name cache (HOSTS=, YAML `dns:`), for a named destination. */
  names: NameCache;
}

/** An IPv4-mapped IPv6 spelling ("::ffff:10.0.0.2") becomes the IPv4 address. */
function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
}

/** The destination's address in the client's family (a spoofed source cannot change family). */
async function destinationAddress(dst: HostPort, family: 4 | 6, names: NameCache): Promise<string> {
  const host = plainAddress(dst.host.replace(/^\[(.*)\]$/, '$1'));
  const literal = net.isIP(host);
  if (literal !== 0) {
    if (literal !== family) {
      throw new ProxyError('EATYPNOTSUP', `SPOOF=client: client address is IPv${family} but ${host} is IPv${literal}`);
    }
    return host;
  }
  try {
    return await names.resolveOne(host, family);
  } catch (err) {
    const e = toProxyError(err);
    throw new ProxyError(e.code === 'EUPSTREAM' ? 'ENOTFOUND' : e.code, `SPOOF=client: ${host} has no IPv${family} address`, { cause: err });
  }
}

/**
 * Connect to `dst` with `clientAddress` as the source address (port chosen by the kernel).
 * Resolves with the connected socket (allowHalfOpen, noDelay, like the direct dialer); rejects
 * with a ProxyError (EDENIED with the reason when the addon or the privilege is missing).
 */
export async function dialSpoofed(dst: HostPort, clientAddress: string, timeoutMs: number, options: SpoofOptions): Promise<Socket> {
  const source = plainAddress(clientAddress);
  const family = net.isIP(source);
  if (family === 0) throw new ProxyError('EATYPNOTSUP', `SPOOF=client: client address ${clientAddress} is not an IP address`);
  const address = await destinationAddress(dst, family === 6 ? 6 : 4, options.names);
  let fd: number;
  try {
    fd = bindTransparent(source);
  } catch (err) {
    const e = err instanceof NativeSocketError ? err : new NativeSocketError('ENATIVE', String(err));
    const why = e.code === 'EPERM' ? 'IP_TRANSPARENT needs CAP_NET_ADMIN' : e.message;
    throw new ProxyError('EUPSTREAM', `SPOOF=client: cannot bind ${source} as the source: ${why}`, { cause: err });
  }
  // `manualStart` is an internal net.Socket option (used by child_process); not in the typings.
  const socketOptions = { fd, allowHalfOpen: true, manualStart: true } as net.SocketConstructorOpts;
  let socket: Socket;
  try {
    socket = new net.Socket(socketOptions);
  } catch (err) {
    closeFd(fd);
    throw new ProxyError('EUPSTREAM', `SPOOF=client: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const connected = await awaitConnect(socket, `connect to ${address}:${dst.port} from ${source}`, { timeoutMs, signal: options.signal }, () =>
    socket.connect({ host: address, port: dst.port }),
  );
  connected.setNoDelay(true);
  return connected;
}

/** Close a descriptor Node never took over (close(2) through fs works on a socket fd too). */
function closeFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}
