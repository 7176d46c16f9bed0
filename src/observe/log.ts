/**
 * The operational log (sockstap.log): start, listen, reload, refusals, errors. One line each:
 * `2026-11-22T10:43:38.123Z info  listening door=auto addr=127.0.0.1:1080`. Written through a
 * buffered file stream, never synchronously, and mirrored to stderr when `echo` is on.
 */
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, string | number | boolean | null | undefined>;

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

/** Quote a field value only when it needs it, so lines stay greppable. */
function formatValue(v: string | number | boolean | null): string {
  const s = String(v);
  return /^[^\s"=]+$/.test(s) ? s : JSON.stringify(s);
}

export function formatLogLine(level: LogLevel, msg: string, fields: LogFields | undefined, now = new Date()): string {
  let line = `${now.toISOString()} ${level.padEnd(5)} ${msg}`;
  if (fields) {
    for (const [k, v] of Object.entries(fields)) {
      if (v === undefined) continue;
      line += ` ${k}=${formatValue(v)}`;
    }
  }
  return line + '\n';
}

/** What a LineFile tells its owner about its health (the proxy logs it once and counts it in /metrics). */
export interface LineFileHooks {
  /**
   * Opening or writing failed (ENOSPC, EACCES, EROFS, ...). `first` is true for the first failure
   * since the file was last written: that one is reported, the later ones only counted. The lines
   * stay in memory (up to MAX_BACKLOG_BYTES, oldest dropped first) and are retried every RETRY_MS.
   */
  onError?(err: NodeJS.ErrnoException, first: boolean): void;
  /** Writing works again; `dropped` lines were lost meanwhile to the backlog bound. */
  onRecover?(info: { failures: number; dropped: number; failedMs: number }): void;
  /** Lines dropped because the backlog was full. */
  onDrop?(lines: number): void;
}

/**
 * Appends lines to a file; creates the directory on first use. Lines are gathered for up to
 * FLUSH_MS (or MAX_BATCH_BYTES) and go to the file in one write: a busy proxy writes a few times a
 * second instead of once per session record, which measurably raises the connection rate. One
 * write is in flight at a time, through an `O_APPEND` descriptor, never synchronously.
 *
 * It survives its disk: a failed open or write (ENOSPC, EACCES, EROFS, ENOTDIR, ...) keeps the
 * unwritten bytes (a partial write goes on where it stopped), tells `hooks.onError`, and retries
 * every RETRY_MS, so logging resumes by itself when space or permission returns; past
 * MAX_BACKLOG_BYTES the oldest lines are dropped and counted. `reopen()` (SIGHUP, SIGUSR1) closes
 * the descriptor once what was written before it is out and opens the path again, so that after
 * `mv access.log access.log.1` new lines go to a new access.log. `close()` flushes what is pending
 * (one last attempt when the file is failing).
 */
export class LineFile {
  private handle: FileHandle | null = null;
  /**
   * The batch, encoded as its lines come (no strings kept until the flush: on a busy proxy they
   * were thousands of young objects each garbage collection had to copy); null until a line comes.
   */
  private batch: Buffer | null = null;
  private batchBytes = 0;
  private scheduled = false;
  /** Flushed batches not yet written, oldest first; a reopen marker where reopen() was called. */
  private queue: Array<Buffer | typeof REOPEN> = [];
  private queuedBytes = 0;
  private writing = false;
  private failure: { since: number; failures: number; dropped: number } | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private idle: Array<() => void> = [];
  hooks: LineFileHooks = {};

  /** `flushMs`: how long a line may wait for others (0 = until the end of this event-loop turn). */
  constructor(
    readonly path: string,
    private readonly flushMs = FLUSH_MS,
  ) {}

  /** Whether the last attempt to write failed (lines are being kept and retried). */
  get failing(): boolean {
    return this.failure !== null;
  }

  write(line: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 code unit.
    const worst = line.length * 3;
    if (worst > BATCH_BUFFER_BYTES - MAX_BATCH_BYTES) {
      // A very long line goes as its own batch, after the lines before it.
      this.flush();
      this.enqueue(Buffer.from(line, 'utf8'));
      return;
    }
    if (this.batch === null) this.batch = Buffer.allocUnsafeSlow(BATCH_BUFFER_BYTES);
    this.batchBytes += this.batch.write(line, this.batchBytes, 'utf8');
    if (this.batchBytes >= MAX_BATCH_BYTES) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      // unref: a pending flush never keeps the process alive; close() flushes.
      if (this.flushMs > 0) setTimeout(this.flushSoon, this.flushMs).unref();
      else setImmediate(this.flushSoon);
    }
  }

  /**
   * Open the path again for what is written from now on (the file was moved away by logrotate);
   * lines written before go to the old file.
   */
  reopen(): void {
    this.flush();
    this.queue.push(REOPEN);
    this.pump();
  }

  private readonly flushSoon = (): void => {
    this.scheduled = false;
    this.flush();
  };

  private flush(): void {
    const batch = this.batch;
    if (batch === null || this.batchBytes === 0) return;
    // A few lines (the timer's flush of a quiet proxy) are copied out, so that the queue does not
    // hold a whole batch buffer for them; the buffer is let go either way (an idle proxy keeps none).
    const buf = this.batchBytes < SMALL_BATCH_BYTES ? Buffer.from(batch.subarray(0, this.batchBytes)) : batch.subarray(0, this.batchBytes);
    this.batch = null;
    this.batchBytes = 0;
    this.enqueue(buf);
  }

  private enqueue(buf: Buffer): void {
    this.queue.push(buf);
    this.queuedBytes += buf.length;
    this.bound();
    this.pump();
  }

  /** Drop the oldest whole batches past the backlog bound (only a failing or very slow disk gets here). */
  private bound(): void {
    let dropped = 0;
    while (this.queuedBytes > MAX_BACKLOG_BYTES && this.queue.length > 1) {
      const i = this.queue.findIndex((q) => q !== REOPEN);
      const b = this.queue[i] as Buffer;
      this.queue.splice(i, 1);
      this.queuedBytes -= b.length;
      dropped += countLines(b);
    }
    if (dropped > 0) {
      if (this.failure) this.failure.dropped += dropped;
      this.hooks.onDrop?.(dropped);
    }
  }

  private pump(): void {
    if (this.writing || this.retryTimer) return;
    if (this.queue.length === 0) {
      this.settle();
      return;
    }
    this.writing = true;
    this.writeQueued().then(
      () => {
        this.writing = false;
        if (this.queue.length > 0 && !this.retryTimer) this.pump();
        else this.settle();
      },
      () => {
        this.writing = false;
        this.settle();
      },
    );
  }

  /** Write the queue out in order; on a failure keep what is left and arm the retry. */
  private async writeQueued(): Promise<void> {
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      if (head === REOPEN) {
        this.queue.shift();
        await this.closeHandle();
        continue;
      }
      // Several batches in one write, up to MAX_WRITE_BYTES.
      const parts: Buffer[] = [];
      let n = 0;
      for (const q of this.queue) {
        if (q === REOPEN || (n > 0 && n + q.length > MAX_WRITE_BYTES)) break;
        parts.push(q);
        n += q.length;
      }
      const chunk = parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
      let written = 0;
      try {
        if (!this.handle) {
          await mkdir(dirname(this.path), { recursive: true });
          this.handle = await open(this.path, 'a');
        }
        while (written < chunk.length) {
          const { bytesWritten } = await this.handle.write(chunk, written, chunk.length - written);
          written += bytesWritten;
        }
      } catch (err) {
        this.consume(parts.length, chunk, written);
        this.failed(err as NodeJS.ErrnoException);
        return;
      }
      this.consume(parts.length, chunk, written);
      if (this.failure) {
        const f = this.failure;
        this.failure = null;
        this.hooks.onRecover?.({ failures: f.failures, dropped: f.dropped, failedMs: Date.now() - f.since });
      }
    }
  }

  /** Take `count` batches off the queue; put back what of `chunk` was not written. */
  private consume(count: number, chunk: Buffer, written: number): void {
    this.queue.splice(0, count);
    this.queuedBytes -= chunk.length;
    if (written < chunk.length) {
      const rest = chunk.subarray(written);
      this.queue.unshift(rest);
      this.queuedBytes += rest.length;
    }
  }

  private failed(err: NodeJS.ErrnoException): void {
    const first = this.failure === null;
    if (first) this.failure = { since: Date.now(), failures: 0, dropped: 0 };
    this.failure!.failures++;
    // A descriptor that failed is not trusted again (a remounted or replaced directory): reopen.
    void this.closeHandle();
    try {
      this.hooks.onError?.(err, first);
    } catch {
      // a reporter's failure must not stop the retries
    }
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.pump();
    }, RETRY_MS);
    this.retryTimer.unref();
  }

  private async closeHandle(): Promise<void> {
    const h = this.handle;
    this.handle = null;
    if (h) await h.close().catch(() => undefined);
  }

  private settle(): void {
    if (this.writing || (this.queue.length > 0 && !this.retryTimer)) return;
    const waiters = this.idle;
    this.idle = [];
    for (const w of waiters) w();
  }

  /** Resolves when everything written so far is on disk (or, for a failing file, after one more attempt). */
  close(): Promise<void> {
    this.flush();
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    return new Promise<void>((resolve) => {
      this.idle.push(resolve);
      this.pump();
    }).then(() => {
      if (this.retryTimer) {
        // Still failing: what is left is lost, and said so.
        clearTimeout(this.retryTimer);
        this.retryTimer = null;
        const lost = this.queue.reduce((n, q) => n + (q === REOPEN ? 0 : countLines(q)), 0);
        if (lost > 0) this.hooks.onDrop?.(lost);
        this.queue = [];
        this.queuedBytes = 0;
      }
      return this.closeHandle();
    });
  }
}

const REOPEN = Symbol('reopen');

function countLines(b: Buffer): number {
  let n = 0;
  for (let i = b.indexOf(10); i >= 0; i = b.indexOf(10, i + 1)) n++;
  return n;
}

/** Flush a batch at once past this many bytes. */
const MAX_BATCH_BYTES = 64 * 1024;
/** A batch's buffer: room past MAX_BATCH_BYTES for the line that crosses it (longer lines go alone). */
const BATCH_BUFFER_BYTES = MAX_BATCH_BYTES + 16 * 1024;
/** A flushed batch smaller than this is copied out of its batch buffer. */
const SMALL_BATCH_BYTES = 8 * 1024;
/** Longest a line waits in memory before it is written (what kill -9 may lose). */
export const FLUSH_MS = 100;
/** Bytes handed to one write(2) at most. */
const MAX_WRITE_BYTES = 1024 * 1024;
/** Unwritten bytes kept per file while its disk fails; older lines are dropped past it. */
export const MAX_BACKLOG_BYTES = 8 * 1024 * 1024;
/** How often a failing file is tried again. */
export const RETRY_MS = 1000;

export class FileLogger implements Logger {
  private file: LineFile | null;
  private hooks: LineFileHooks = {};
  constructor(
    path: string | null,
    private readonly options: { echo: boolean; level: LogLevel } = { echo: true, level: 'info' },
  ) {
    // Operational lines are few and people tail them: written at the end of the turn.
    this.file = path ? new LineFile(path, 0) : null;
  }

  /** What the file's failures and recoveries are told to. */
  setHooks(hooks: LineFileHooks): void {
    this.hooks = hooks;
    if (this.file) this.file.hooks = hooks;
  }

  get path(): string | null {
    return this.file?.path ?? null;
  }

  private write(level: LogLevel, msg: string, fields?: LogFields): void {
    if (LEVELS[level] < LEVELS[this.options.level]) return;
    const line = formatLogLine(level, msg, fields);
    this.file?.write(line);
    if (this.options.echo) process.stderr.write(line);
  }

  debug(msg: string, fields?: LogFields): void {
    this.write('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.write('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.write('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.write('error', msg, fields);
  }

  /**
   * Open the file again: the same path (SIGHUP, SIGUSR1: it may have been moved away), or
   * another one (LOGDIR changed on reload).
   */
  reopen(path?: string): void {
    if (path === undefined || this.file?.path === path) {
      this.file?.reopen();
      return;
    }
    void this.file?.close();
    this.file = new LineFile(path, 0);
    this.file.hooks = this.hooks;
  }

  close(): Promise<void> {
    return this.file?.close() ?? Promise.resolve();
  }
}
