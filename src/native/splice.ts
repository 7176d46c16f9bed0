/**
 * The splice relay's JavaScript side: hands an untapped, unshaped tunnel's two sockets to the
 * addon's relay thread (native/splice.c), which moves the bytes with splice(2) so they never
 * enter JavaScript. relay() (net/relay.ts) tries it first and falls back to its own fast path.
 *
 * The hand-over keeps every JavaScript socket object but closes its libuv handle: the thread works
 * on duplicates of the descriptors (F_DUPFD_CLOEXEC), so a tunnel holds two descriptors, as in
 * the JavaScript relay, and libuv never polls a socket the thread owns. The socket objects stay
 * open to the rest of the proxy (no 'close' yet: the session, MAXIMA and the dashboard go on as
 * for any tunnel); when the thread reports the tunnel's end both are destroyed here, which emits
 * their 'close'. A socket destroyed from outside meanwhile (admin close, shutdown) aborts the
 * native tunnel.
 *
 * A socket qualifies when it is a plain TCP socket (no TLS), connected, with nothing buffered in
 * JavaScript either way and not ended by us: bytes a door unshifted after a handshake, or a
 * server's banner already read, send the tunnel to the JavaScript relay, which writes them first.
 * Private API: `_handle` (the libuv TCP handle: `fd`, `writeQueueSize`, `close()`), as in
 * native/addon.ts and the fast path of net/relay.ts.
 */
import type { Socket } from 'node:net';
import { native } from './addon.js';

export interface SpliceResult {
  up: number;
  down: number;
  result: string;
}

interface SpliceAddon {
  spliceInit(onDone: (id: number, up: number, down: number, result: string) => void): void;
  spliceStart(clientFd: number, serverFd: number, idleMs: number, counts: Float64Array): number;
  spliceAbort(id: number): void;
  spliceStats(): { tunnels: number; pipes: number; started: number; ended: number };
}

interface TcpHandle {
  fd?: number;
  writeQueueSize?: number;
  close?: () => void;
}

interface Running {
  client: Socket;
  server: Socket;
  resolve: (r: SpliceResult) => void;
  abort: () => void;
  /** [up, down] as the thread delivers them; the thread writes here until onDone. */
  counts: Float64Array;
}

/** Bytes the thread moved for a socket: [read, written] from that socket's point of view. */
const spliced = new WeakMap<Socket, { counts: Float64Array; client: boolean; read: number; written: number }>();

const addon: SpliceAddon | null =
  native && typeof (native as unknown as Partial<SpliceAddon>).spliceStart === 'function'
    ? (native as unknown as SpliceAddon)
    : null;

let initialised = false;
const running = new Map<number, Running>();
/** Tunnels the native accept path (native/door.ts) made, by id: told of their end. */
const adopted = new Map<number, (r: SpliceResult) => void>();
/**
 * Keeps the process alive while the thread relays a tunnel, as the tunnel's sockets did before the
 * hand-over closed their handles (the thread's callback queue itself never does): without it a
 * process whose last handles were those sockets would exit before their tunnel's end came.
 */
let hold: NodeJS.Timeout | null = null;

function holdWhileRunning(): void {
  if (running.size + adopted.size > 0) {
    if (hold) hold.ref();
    else hold = setInterval(() => {}, 1 << 30);
  } else {
    hold?.unref();
  }
}

/** Whether the addon has the splice relay (Linux, built). */
export function spliceAvailable(): boolean {
  return addon !== null;
}

/** The thread's figures: tunnels it holds, pipes open (pooled or in use), tunnels started/ended. */
export function spliceStats(): { tunnels: number; pipes: number; started: number; ended: number } {
  return addon ? addon.spliceStats() : { tunnels: 0, pipes: 0, started: 0, ended: 0 };
}

function handleOf(s: Socket): TcpHandle | null {
  return ((s as unknown as { _handle?: TcpHandle | null })._handle ?? null) as TcpHandle | null;
}

function qualifies(s: Socket): boolean {
  if (s.destroyed || s.connecting || s.writableEnded) return false;
  if ((s as { encrypted?: boolean }).encrypted) return false;
  if (s.readableLength > 0 || s.writableLength > 0) return false;
  const h = handleOf(s);
  return (
    h !== null &&
    typeof h.fd === 'number' &&
    h.fd >= 0 &&
    typeof h.close === 'function' &&
    (h.writeQueueSize ?? 0) === 0
  );
}

function noRead(): void {}

/**
 * libuv lets go of this socket: its handle is closed (the thread holds a duplicate of the fd) and
 * detached, so the Socket object stays open without a descriptor until destroy() (Node's destroy
 * of a handle-less socket just emits 'close').
 */
function release(s: Socket, counts: Float64Array, client: boolean): void {
  spliced.set(s, { counts, client, read: s.bytesRead, written: s.bytesWritten });
  s.setTimeout(0);
  s.pause();
  // Nothing may start reading again through the stream machinery (a late resume() or read()).
  (s as unknown as { _read: () => void })._read = noRead;
  const h = handleOf(s);
  (s as unknown as { _handle: unknown })._handle = null;
  h?.close?.();
}

function onDone(id: number, up: number, down: number, result: string): void {
  const r = running.get(id);
  if (!r) {
    const end = adopted.get(id);
    if (end) {
      adopted.delete(id);
      holdWhileRunning();
      end({ up, down, result: result === 'aborted' ? 'ok' : result });
    }
    return;
  }
  running.delete(id);
  holdWhileRunning();
  r.counts[0] = up;
  r.counts[1] = down;
  r.client.off('close', r.abort);
  r.server.off('close', r.abort);
  // The thread closed the last descriptors (after an error with SO_LINGER 0: a reset rather than
  // a FIN, so a client can tell a cut-off reply from a complete one); this emits the sockets' 'close'.
  r.client.destroy();
  r.server.destroy();
  // Like the JavaScript relay, a tunnel ended from outside is not an error of its own.
  r.resolve({ up, down, result: result === 'aborted' ? 'ok' : result });
}

/** Start the relay thread once (the first spliced tunnel or the native accept path does). */
export function initSplice(): boolean {
  if (!addon) return false;
  if (!initialised) {
    addon.spliceInit(onDone);
    initialised = true;
  }
  return true;
}

/** The end of a tunnel the thread made by itself (native/door_*.c), reported like any other. */
export function watchSplicedTunnel(id: number, end: (r: SpliceResult) => void): void {
  adopted.set(id, end);
  holdWhileRunning();
}

/**
 * Hand the tunnel to the splice thread; null when it does not qualify (the caller relays it in
 * JavaScript) or the descriptors cannot be duplicated (EMFILE).
 */
export function spliceRelay(client: Socket, server: Socket, idleMs: number): Promise<SpliceResult> | null {
  if (!addon || !qualifies(client) || !qualifies(server)) return null;
  initSplice();
  let id: number;
  const counts = new Float64Array(2);
  try {
    id = addon.spliceStart(handleOf(client)!.fd!, handleOf(server)!.fd!, idleMs > 0 ? idleMs : 0, counts);
  } catch {
    return null;
  }
  release(client, counts, true);
  release(server, counts, false);
  return new Promise((resolve) => {
    const abort = (): void => addon.spliceAbort(id);
    running.set(id, { client, server, resolve, abort, counts });
    holdWhileRunning();
    client.once('close', abort);
    server.once('close', abort);
  });
}

/**
 * What crossed a socket, the splice thread's bytes included: Node's own `bytesRead` and
 * `bytesWritten` stop at the hand-over. Live while the thread relays, final after it.
 */
export function socketBytes(s: Socket): { read: number; written: number } {
  const sp = spliced.get(s);
  if (!sp) return { read: s.bytesRead, written: s.bytesWritten };
  // Node's counters went with the handle: what it had counted before the hand-over, plus the thread's.
  const [up, down] = sp.counts as unknown as [number, number];
  return sp.client ? { read: sp.read + up, written: sp.written + down } : { read: sp.read + down, written: sp.written + up };
}
