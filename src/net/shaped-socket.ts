/**
 * BANDWIDTH= and QUOTA= at the client socket of a session that a tap or the HTTP door serves
 * itself (HTTP bodies both ways, cache hits, FTP data, mail and news lines, ftp:// fetches): the
 * same token buckets and quota counts as the relay's metered path (net/relay.ts), applied where
 * every one of those writers and readers passes, so no tap needs to know about policy.
 *
 *  - writes to the client (down): every chunk is counted and taken from the buckets before it is
 *    handed to the socket, and handed over only once the debt it made is paid, so the socket's
 *    write queue fills and the writer (a pipe, Node's http response) feels the usual
 *    back-pressure;
 *  - reads from the client (up): every chunk the socket reads is counted and taken; a chunk that
 *    leaves a bucket in debt is held (one chunk, at most 64 KiB) until the debt is paid while the
 *    socket stops reading (the handle's readStop, as Node itself does when a stream's buffer is
 *    full), then passed on.
 *  - a count that says a quota is used up lets that chunk through and then cuts the connection
 *    (`onCut`), as the relay does: the overshoot is at most one chunk.
 *
 * Node's HTTP server reads a socket's handle directly when it can (the parser "consumes" it),
 * which would bypass the read side; `prepareShaping()` marks the handle as taken so the server
 * reads through the stream, and must run before the socket is handed to an http.Server.
 */
import { markHandleConsumed } from '../native/internals.js';
import type { Socket } from 'node:net';
import type { RelayShape } from './relay.js';

interface ShapeState {
  shape: RelayShape | null;
  onCut: () => void;
  cut: boolean;
  /** A read chunk is held until a bucket's debt is paid. */
  paused: boolean;
  /** The stream asked for data while reading was stopped. */
  readWanted: boolean;
}

type Callback = (err?: Error | null) => void;

/** The parts of net.Socket (stream internals, not in the typings) the hooks replace. */
interface SocketInternals {
  _write(chunk: Buffer | string, encoding: BufferEncoding, cb: Callback): void;
  _writev?(chunks: { chunk: Buffer | string; encoding: BufferEncoding }[], cb: Callback): void;
  _read(n: number): void;
  push(chunk: unknown, encoding?: BufferEncoding): boolean;
}

const kShape = Symbol('sockstap.shapedSocket');
type Hooked = Socket & SocketInternals & { [kShape]?: ShapeState };

/** Whether a shape is in force on this socket (its relay then must not shape it again). */
export function isShaped(socket: Socket): boolean {
  return (socket as Hooked)[kShape]?.shape != null || (socket as { [kBelow]?: true })[kBelow] === true;
}

const kBelow = Symbol('sockstap.shapedBelow');

/**
 * A socket whose bytes already pass a shaped socket below it (a TLS session over a shaped client
 * connection, net/shaped-feed.ts): its relay must not shape or meter them a second time.
 */
export function markShapedBelow(socket: Socket): void {
  (socket as { [kBelow]?: true })[kBelow] = true;
}

/**
 * Install the hooks (once), with no shape yet: for a socket about to go to an http.Server whose
 * limits are known only later (the HTTP door learns the user from the first request).
 */
export function prepareShaping(socket: Socket): void {
  hook(socket as Hooked);
}

/** Shape and meter the socket from now on; `onCut` runs once when a quota cuts it. */
export function shapeSocket(socket: Socket, shape: RelayShape, onCut: () => void): void {
  const state = hook(socket as Hooked);
  state.shape = shape;
  state.onCut = onCut;
}

function byteLength(chunk: Buffer | string, encoding: BufferEncoding): number {
  return typeof chunk === 'string' ? Buffer.byteLength(chunk, encoding) : chunk.length;
}

function hook(s: Hooked): ShapeState {
  const existing = s[kShape];
  if (existing) return existing;
  const state: ShapeState = { shape: null, onCut: () => {}, cut: false, paused: false, readWanted: false };
  s[kShape] = state;
  // Node's HTTP server would read the handle itself (parser.consume) and bypass push().
  markHandleConsumed(s);

  const cut = (): void => {
    if (state.cut) return;
    state.cut = true;
    state.onCut();
    s.destroy();
  };

  /**
   * Count and take `n` bytes about to be written, then `write(cb)`: at once, or when the debt this
   * take left is paid, so what leaves by any moment is at most the burst plus the rate times the
   * time (Writable calls the next _write only after `cb`, so writes stay in order).
   */
  const gateWrite = (n: number, cb: Callback, write: (cb: Callback) => void): void => {
    const down = state.shape?.down;
    if (!down || n === 0 || state.cut) {
      write(cb);
      return;
    }
    const over = down.count ? !down.count(n) : false;
    let wait = 0;
    for (const b of down.buckets) {
      const w = b.take(n);
      if (w > wait) wait = w;
    }
    const done: Callback = over
      ? (err) => {
          cb(err);
          cut();
        }
      : cb;
    if (wait === 0 || over) write(done);
    // Unref'd: while the socket is open its handle keeps the process alive; once it is gone the
    // write would fail anyway.
    else setTimeout(() => write(done), wait).unref();
  };

  const write0 = s._write;
  const writev0 = s._writev;
  s._write = function (this: Hooked, chunk, encoding, cb) {
    gateWrite(byteLength(chunk, encoding), cb, (done) => write0.call(this, chunk, encoding, done));
  };
  if (writev0) {
    s._writev = function (this: Hooked, chunks, cb) {
      let n = 0;
      for (const c of chunks) n += byteLength(c.chunk, c.encoding);
      gateWrite(n, cb, (done) => writev0.call(this, chunks, done));
    };
  }

  const read0 = s._read;
  s._read = function (this: Hooked, n) {
    if (state.paused) {
      state.readWanted = true;
      return;
    }
    read0.call(this, n);
  };
  const push0 = s.push;
  s.push = function (this: Hooked, chunk, encoding) {
    const up = state.shape?.up;
    if (!up || chunk === null || chunk === undefined || state.cut) return push0.call(this, chunk, encoding);
    const n = byteLength(chunk as Buffer | string, encoding ?? 'utf8');
    if (up.count && !up.count(n)) setImmediate(cut);
    let wait = 0;
    for (const b of up.buckets) {
      const w = b.take(n);
      if (w > wait) wait = w;
    }
    if (wait === 0) return push0.call(this, chunk, encoding);
    // In debt: hold this chunk until its debt is paid (so what the tap reads by any moment is at
    // most the burst plus the rate times the time) and say "stop": Node then stops reading the
    // handle (onStreamRead's readStop) until the stream asks for more, after the chunk is in.
    state.paused = true;
    setTimeout(() => {
      state.paused = false;
      if (s.destroyed) return;
      push0.call(s, chunk, encoding);
      if (state.readWanted) {
        state.readWanted = false;
        read0.call(s, 0);
      }
    }, wait).unref();
    return false;
  };
  return state;
}
