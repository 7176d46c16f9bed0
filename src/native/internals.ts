/**
 * Every access to Node's internals in one place (docs/architecture.md says why they are used):
 *   - a socket's or server's libuv handle (`_handle`): its file descriptor, for the addon;
 *   - the handle's `_consumed` mark, set when a stream is read by something other than libuv's
 *     own onread (net/shaped-socket.ts), as Node's TLS does;
 *   - the Socket's `kBuffer`, `kBufferCb` and `kBufferGen` slots and the handle's
 *     `useUserBuffer()`, which let the JavaScript relay read into buffers it owns (net/relay.ts).
 * Each is checked before use and falls back to the public API when a Node version lacks it.
 */
import type { Server, Socket } from 'node:net';

/**
 * The file descriptor behind a net.Socket or net.Server, or -1. Private API: Node keeps the libuv
 * handle in `_handle`, whose `fd` getter is the descriptor on Unix.
 */
export function socketFd(s: Socket | Server): number {
  const handle = (s as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}

/** Mark the socket's handle as read by someone else than libuv's onread (as Node's TLS does). */
export function markHandleConsumed(socket: Socket): void {
  const h = (socket as unknown as { _handle?: { _consumed?: boolean } | null })._handle;
  if (h && !h._consumed) h._consumed = true;
}

export interface UserBufferSlots {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

/** The libuv stream handle's methods the fast path uses (TCPWrap / PipeWrap). */
export interface StreamHandle {
  reading: boolean;
  useUserBuffer(buf: Uint8Array): void;
}

let slots: UserBufferSlots | null | undefined;

/** Finds the Socket's `kBuffer`, `kBufferCb`, `kBufferGen` symbols by their descriptions. */
export function userBufferSlots(socket: Socket): UserBufferSlots | null {
  if (slots !== undefined) return slots;
  const found = new Map<string, symbol>();
  for (const sym of Object.getOwnPropertySymbols(socket)) {
    if (sym.description) found.set(sym.description, sym);
  }
  const buffer = found.get('kBuffer');
  const callback = found.get('kBufferCb');
  const generator = found.get('kBufferGen');
  slots = buffer && callback && generator ? { buffer, callback, generator } : null;
  return slots;
}

/** The socket's handle when the user-buffer fast path can read from it, else null. */
export function fastHandle(socket: Socket): StreamHandle | null {
  // `_handle` is not in the typings; it is the libuv wrap every net.Socket has while open.
  const handle = (socket as unknown as { _handle?: unknown })._handle as Partial<StreamHandle> | null | undefined;
  if (!handle || typeof handle.useUserBuffer !== 'function') return null;
  // A TLSSocket's handle is a TLSWrap: its reads are decrypted bytes with their own buffering.
  if ('encrypted' in socket) return null;
  const name = (handle as object).constructor?.name;
  if (name !== 'TCP' && name !== 'Pipe') return null;
  if (!userBufferSlots(socket)) return null;
  // Somebody else already reads this socket through onread: leave it alone.
  const own = socket as unknown as Record<symbol, unknown>;
  if (own[slots!.buffer]) return null;
  return handle as StreamHandle;
}

