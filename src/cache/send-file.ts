/**
 * A stored body from disk to a client: big reads into buffers reused from one response to the
 * next, two per response so the next read overlaps the last write, and the next read of a buffer
 * only once its write has left for the socket (the write callback) — the client's back-pressure
 * holds the reads back, and memory per response is two buffers whatever the body's size.
 *
 * Instead of a ReadStream's 64 KiB chunk per JavaScript turn, each allocated afresh: a 1 MiB body
 * is four reads and four writes here.
 */
import type { FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';

/** Bytes per read. */
export const SEND_CHUNK_BYTES = 256 * 1024;
/** Buffers kept for reuse when no response holds them (16 MiB). */
const POOL_MAX = 64;
const pool: Buffer[] = [];

function take(size: number): Buffer {
  if (size < SEND_CHUNK_BYTES) return Buffer.allocUnsafe(size);
  return pool.pop() ?? Buffer.allocUnsafe(SEND_CHUNK_BYTES);
}

function give(buf: Buffer): void {
  if (buf.length === SEND_CHUNK_BYTES && pool.length < POOL_MAX) pool.push(buf);
}

export interface SendFile {
  /** Resolves when the last byte was handed to `out` (then `out.end()` was called), or it stopped. */
  done: Promise<void>;
  /** Stop reading (the client went away); the file is closed once no read is in flight. */
  stop(): void;
}

/**
 * Send `length` bytes of `fh` from `start` to `out`, end `out`, close `fh`. `onBytes` counts what
 * was written; `onError` gets a read failure or a short file (the body changed under us), after
 * which nothing more is written and `out` is not ended (the caller destroys it).
 */
export function sendFile(
  fh: FileHandle,
  out: Writable,
  start: number,
  length: number,
  onBytes: (n: number) => void,
  onError: (err: Error) => void,
): SendFile {
  let stopped = false;
  let wake!: () => void;
  // Every wait also ends when the client goes away: a write to a destroyed socket may never call back.
  const stoppedP = new Promise<void>((resolve) => (wake = resolve));
  const stop = (): void => {
    stopped = true;
    wake();
  };
  const size = Math.min(SEND_CHUNK_BYTES, Math.max(1, length));
  const bufs = [take(size), take(size)];
  /** Writes in flight per buffer: a buffer is read into again only once its write is done. */
  const inFlight: (Promise<void> | null)[] = [null, null];
  const done = (async () => {
    let pos = start;
    let left = length;
    let i = 0;
    try {
      while (left > 0 && !stopped) {
        const pending = inFlight[i];
        if (pending) await Promise.race([pending, stoppedP]);
        if (stopped) break;
        const buf = bufs[i]!;
        const want = Math.min(buf.length, left);
        const { bytesRead } = await fh.read(buf, 0, want, pos);
        if (stopped) break;
        if (bytesRead === 0) throw new Error(`body file ended ${left} bytes early`);
        pos += bytesRead;
        left -= bytesRead;
        const chunk = bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
        inFlight[i] = new Promise<void>((resolve) => {
          out.write(chunk, () => resolve());
        });
        onBytes(bytesRead);
        i ^= 1;
      }
      if (!stopped) out.end();
      await Promise.race([Promise.all(inFlight), stoppedP]);
    } catch (err) {
      if (!stopped) onError(err instanceof Error ? err : new Error(String(err)));
    } finally {
      await fh.close().catch(() => undefined);
      // A buffer whose write never completed (the client went away) may still be referenced by
      // the socket's queue: only buffers whose writes finished go back to the pool.
      if (!stopped) for (const b of bufs) give(b);
    }
  })();
  return { done, stop };
}
