/**
 * Where an intercepted connection was really going, and the socket option that lets a socket use
 * addresses that are not the host's own: the small N-API addon `native/sockstap_native.c`
 * (`npm ci` builds it with node-gyp into build/Release; Linux only).
 *
 * - REDIRECT (iptables/nft NAT): the kernel rewrote the destination; the original one is kept by
 *   conntrack and read with getsockopt(SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST).
 * - TPROXY: nothing was rewritten; the accepted socket's local address *is* the original
 *   destination, but the listener must carry IP_TRANSPARENT for the kernel to hand it such
 *   connections (which needs CAP_NET_ADMIN).
 *
 * The file descriptor of a Node socket is only reachable through the private `socket._handle.fd`
 * (a libuv TCP handle's fd on Unix). It is read here and nowhere else; it is -1 on Windows and
 * for a socket whose handle is gone.
 */
import { socketFd } from './internals.js';
import { createRequire } from 'node:module';
import type { Server, Socket } from 'node:net';

export interface OriginalDst {
  address: string;
  port: number;
  family: 4 | 6;
}

/** The addon's exports (native/sockstap_native.c). */
export interface NativeAddon {
  originalDst(fd: number): OriginalDst;
  setTransparent(fd: number): void;
  /** A new non-blocking TCP socket with IP_TRANSPARENT, bound to `address` port 0, not connected. */
  bindTransparent(address: string): number;
}

/** Why the addon is not there, for the one start-up log line; null when it loaded. */
export let nativeUnavailable: string | null = null;

function loadAddon(): NativeAddon | null {
  if (process.platform !== 'linux') {
    nativeUnavailable = `not on Linux (${process.platform})`;
    return null;
  }
  const require = createRequire(import.meta.url);
  // src/native/ and dist/native/ are both two levels under the package root, where node-gyp builds.
  const path = new URL('../../build/Release/sockstap_native.node', import.meta.url).pathname;
  try {
    return require(path) as NativeAddon;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    nativeUnavailable =
      code === 'MODULE_NOT_FOUND'
        ? `native addon not built (${path} missing; run npm install / node-gyp rebuild)`
        : `native addon failed to load: ${err instanceof Error ? err.message : String(err)}`;
    return null;
  }
}

/** The addon, or null (see `nativeUnavailable`). */
export const native: NativeAddon | null = loadAddon();

/** A failure of the addon: `code` is the errno name (EPERM, ENOENT, ENOPROTOOPT, ...). */
export class NativeSocketError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'NativeSocketError';
  }
}

function asNativeError(err: unknown): NativeSocketError {
  const code = (err as { code?: unknown }).code;
  return new NativeSocketError(typeof code === 'string' ? code : 'ENATIVE', err instanceof Error ? err.message : String(err));
}

export { socketFd };

/**
 * The destination the client's connection had before iptables/nft REDIRECT rewrote it (for a
 * TPROXYed or untouched connection that conntrack tracks, the local address itself). Throws
 * NativeSocketError: 'ENOADDON' without the addon, ENOENT when conntrack has no entry.
 */
export function originalDst(socket: Socket): OriginalDst {
  if (!native) throw new NativeSocketError('ENOADDON', nativeUnavailable ?? 'native addon unavailable');
  const fd = socketFd(socket);
  if (fd < 0) throw new NativeSocketError('EBADF', 'the socket has no file descriptor');
  try {
    return native.originalDst(fd);
  } catch (err) {
    throw asNativeError(err);
  }
}

/**
 * IP_TRANSPARENT (and IPV6_TRANSPARENT on an IPv6 socket) on a listening server or a socket: a
 * TPROXY listener must have it, or the kernel never diverts connections to it. Needs
 * CAP_NET_ADMIN (EPERM otherwise).
 */
export function setTransparent(target: Socket | Server): void {
  if (!native) throw new NativeSocketError('ENOADDON', nativeUnavailable ?? 'native addon unavailable');
  const fd = socketFd(target);
  if (fd < 0) throw new NativeSocketError('EBADF', 'the socket has no file descriptor');
  try {
    native.setTransparent(fd);
  } catch (err) {
    throw asNativeError(err);
  }
}

/** A bound, unconnected transparent socket's fd (net/spoof.ts wraps and connects it). */
export function bindTransparent(address: string): number {
  if (!native) throw new NativeSocketError('ENOADDON', nativeUnavailable ?? 'native addon unavailable');
  try {
    return native.bindTransparent(address);
  } catch (err) {
    throw asNativeError(err);
  }
}
