/**
 * The operational log (sockstap.log): start, listen, reload, refusals, errors. One line each:
 * `2026-11-22T10:43:38.123Z info  listening door=auto addr=127.0.0.1:1080`. Written through a
 * buffered file stream, never synchronously, and mirrored to stderr when `echo` is on.
 */
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
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

/**
 * Appends lines to a file through a buffered stream; creates the directory on first use. Lines
 * are gathered for up to FLUSH_MS (or MAX_BATCH_BYTES) and go to the file in one write: a busy
 * proxy writes a few times a second instead of once per session record, which measurably raises
 * the connection rate. `close()` flushes what is pending.
 */
export class LineFile {
  private stream: WriteStream | null = null;
  private batch: string[] = [];
  private batchBytes = 0;
  private scheduled = false;
  /** `flushMs`: how long a line may wait for others (0 = until the end of this event-loop turn). */
  constructor(
    readonly path: string,
    private readonly flushMs = FLUSH_MS,
  ) {}

  write(line: string): void {
    this.batch.push(line);
    this.batchBytes += line.length;
    if (this.batchBytes >= MAX_BATCH_BYTES) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      // unref: a pending flush never keeps the process alive; close() flushes.
      if (this.flushMs > 0) setTimeout(this.flushSoon, this.flushMs).unref();
      else setImmediate(this.flushSoon);
    }
  }

  private readonly flushSoon = (): void => {
    this.scheduled = false;
    this.flush();
  };

  private flush(): void {
    if (this.batch.length === 0) return;
    const text = this.batch.length === 1 ? this.batch[0]! : this.batch.join('');
    this.batch = [];
    this.batchBytes = 0;
    if (!this.stream) {
      mkdirSync(dirname(this.path), { recursive: true });
      this.stream = createWriteStream(this.path, { flags: 'a' });
      this.stream.on('error', (err) => {
        process.stderr.write(`sockstap: cannot write ${this.path}: ${err.message}\n`);
      });
    }
    this.stream.write(text);
  }

  /** Resolves when everything written so far is on disk (or the file could not be written). */
  close(): Promise<void> {
    this.flush();
    const s = this.stream;
    this.stream = null;
    if (!s) return Promise.resolve();
    return new Promise((resolve) => {
      s.end(() => resolve());
      s.once('error', () => resolve());
    });
  }
}

/** Flush a batch at once past this many characters. */
const MAX_BATCH_BYTES = 64 * 1024;
/** Longest a line waits in memory before it is written. */
const FLUSH_MS = 100;

export class FileLogger implements Logger {
  private file: LineFile | null;
  constructor(
    path: string | null,
    private readonly options: { echo: boolean; level: LogLevel } = { echo: true, level: 'info' },
  ) {
    // Operational lines are few and people tail them: written at the end of the turn.
    this.file = path ? new LineFile(path, 0) : null;
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

  /** Switch to another file (LOGDIR changed on reload). */
  reopen(path: string): void {
    if (this.file?.path === path) return;
    void this.file?.close();
    this.file = new LineFile(path, 0);
  }

  close(): Promise<void> {
    return this.file?.close() ?? Promise.resolve();
  }
}
