/**
 * AUTHORIZER=-cmd{PROGRAM ARGS}: accounts checked by a helper process that speaks Squid's basic
 * authentication helper protocol, so every Squid helper (basic_ncsa_auth, basic_ldap_auth,
 * basic_pam_auth, basic_radius_auth, ...) works unchanged:
 *
 *   sockstap → helper   [ID ]USER PASSWORD\n     both URL-escaped (RFC 1738: %XX)
 *   helper → sockstap   [ID ]OK|ERR|BH[ kv-pairs]\n
 *
 * `ID` (a channel ID) is there only with `concurrency=N` (N > 0): the helper may then have N
 * requests open and answer them in any order. Without it each helper answers one request at a
 * time, in order; `children=N` runs up to N helpers (default 4, started as load needs them).
 *
 * - Answers are cached (AUTHTTL=: successes 60 s, failures 10 s by default), keyed by an HMAC of the
 *   user and password under a per-process random key; BH, timeouts and dead helpers are not cached.
 *   Identical questions in flight share one helper request.
 * - Every question has a time limit (`timeout=`, default 5 s) that fails closed: the client is
 *   refused. It may wait that long for a free helper, then that long for the answer. A serial
 *   helper that does not answer in time is killed (it is stuck) and a new one serves the queue, so
 *   one hanging request does not hold the others.
 * - A helper that exits is started again when needed; the questions it had open are asked once
 *   more. A helper that keeps dying (5 times in 10 s) is not restarted for a second.
 * - No password goes to any log: the helper's stderr is logged with the passwords of the questions
 *   in flight masked; log lines name the user only.
 * - The helper is spawned on the first question (loading a configuration starts no process) and
 *   stopped by `close()` (at stop and when a reload replaces the configuration).
 */
import { authorizerOptions, authTimeout } from './auth-cache.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import type { Accounts } from '../config/types.js';
import { ConfigError } from '../config/types.js';
import { parseCount, parseDuration } from '../config/units.js';

export const DEFAULT_AUTH_TTL = { okMs: 60_000, errMs: 10_000 };
const DEFAULT_TIMEOUT_MS = 5_000;
/** Helpers started at most (as load needs them), as Squid's `children`. */
const DEFAULT_CHILDREN = 4;
const MAX_CACHE_ENTRIES = 8192;
/** Longest request line (escaped user and password) and answer line. */
const MAX_LINE_BYTES = 8192;
const MAX_CHILDREN = 64;
const MAX_CONCURRENCY = 1000;
/** Questions waiting for a helper; more are refused at once. */
const MAX_QUEUE = 4096;
const RESPAWN_WINDOW_MS = 10_000;
const RESPAWN_LIMIT = 5;
const STDERR_LINE_CHARS = 300;

/** What the helper module logs through (the proxy's logger, once it is running). */
export interface HelperLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}


export interface HelperOptions {
  argv: string[];
  concurrency: number;
  children: number;
  timeoutMs: number;
}

/**
 * `PROGRAM ARGS` (split on blanks; "..." or '...' quote an argument) followed by optional
 * `,concurrency=N`, `,children=N`, `,timeout=DURATION` after the closing brace.
 */
export function parseCmdAuthorizer(body: string, options: string, param: string, cwd: string): CmdAccounts {
  const argv = splitCommand(body, param);
  if (argv.length === 0) throw new ConfigError(param, '-cmd{} names no program; expected -cmd{PROGRAM ARGS}');
  argv[0] = findProgram(argv[0]!, param, cwd);
  const opts: HelperOptions = { argv, concurrency: 0, children: DEFAULT_CHILDREN, timeoutMs: DEFAULT_TIMEOUT_MS };
  for (const { name, value, label } of authorizerOptions(options, param)) {
    if (name === 'concurrency') opts.concurrency = bounded(parseCount(value, label), 0, MAX_CONCURRENCY, label);
    else if (name === 'children') opts.children = bounded(parseCount(value, label), 1, MAX_CHILDREN, label);
    else if (name === 'timeout') {
      opts.timeoutMs = authTimeout(value, label);
    } else throw new ConfigError(param, `unknown -cmd{} option ${JSON.stringify(name)}; expected concurrency=N, children=N or timeout=DURATION`);
  }
  return new CmdAccounts(opts);
}

function bounded(n: number, lo: number, hi: number, label: string): number {
  if (!Number.isInteger(n) || n < lo || n > hi) throw new ConfigError(label, `expected a whole number from ${lo} to ${hi}`);
  return n;
}

function splitCommand(text: string, param: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quote: string | null = null;
  let has = false;
  for (const ch of text) {
    if (quote) {
      if (ch === quote) quote = null;
      else cur += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      has = true;
    } else if (/\s/.test(ch)) {
      if (has || cur !== '') out.push(cur);
      cur = '';
      has = false;
    } else cur += ch;
  }
  if (quote) throw new ConfigError(param, 'unclosed quote in -cmd{}');
  if (has || cur !== '') out.push(cur);
  return out;
}

/** The program as a path that exists and is executable (a bare name is looked up in PATH). */
function findProgram(name: string, param: string, cwd: string): string {
  const candidates = name.includes('/') ? [isAbsolute(name) ? name : resolve(cwd, name)] : (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, name));
  for (const c of candidates) {
    try {
      if (!statSync(c).isFile()) continue;
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // try the next
    }
  }
  throw new ConfigError(param, name.includes('/') ? `${name} is not an executable file` : `${name} is not found in PATH (or not executable)`);
}

/** RFC 1738 escaping as Squid does it for helpers: every byte outside a safe set as %XX. */
export function helperEscape(text: string): string {
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-_.!*'(),$+]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

type Verdict = 'OK' | 'ERR' | 'BH';

interface Question {
  user: string;
  password: string;
  line: string;
  resolve(v: Verdict): void;
  /** Times asked again after a helper died. */
  retries: number;
  done: boolean;
  timer: NodeJS.Timeout;
  child: Helper | null;
  id: number;
}

interface Helper {
  proc: ChildProcess;
  open: Map<number, Question>;
  /** Serial helpers: the questions in the order they were written. */
  order: Question[];
  buf: string;
  dead: boolean;
}

export class CmdAccounts implements Accounts {
  readonly source: string;
  private ttl = { ...DEFAULT_AUTH_TTL };
  private readonly cacheKey = randomBytes(32);
  private readonly cache = new Map<string, { ok: boolean; until: number }>();
  private readonly inflight = new Map<string, Promise<boolean>>();
  private readonly helpers: Helper[] = [];
  private readonly queue: Question[] = [];
  private nextId = 0;
  private deaths: number[] = [];
  private respawnTimer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Figures for tests and logs. */
  readonly stats = { asked: 0, cached: 0, timeouts: 0, spawned: 0 };

  constructor(readonly options: HelperOptions) {
    const o = options;
    const extra = [o.concurrency ? `concurrency=${o.concurrency}` : '', o.children !== DEFAULT_CHILDREN ? `children=${o.children}` : '', o.timeoutMs !== DEFAULT_TIMEOUT_MS ? `timeout=${o.timeoutMs}ms` : '']
      .filter(Boolean)
      .join(',');
    this.source = `-cmd{${o.argv.join(' ')}}${extra ? ',' + extra : ''}`;
  }

  private log: HelperLog | null = null;

  /** Where helper events go (the proxy's operational log). */
  setLog(log: HelperLog): void {
    this.log = log;
  }

  /** AUTHTTL=: how long successes and failures are remembered (0: not at all). */
  setTtl(ttl: { okMs: number; errMs: number }): void {
    this.ttl = { ...ttl };
  }

  /** A helper cannot list its users: SOCKS4 (a user id without a password) is refused. */
  has(_user: string): boolean {
    return false;
  }

  verify(user: string, password: string): Promise<boolean> {
    const key = createHmac('sha256', this.cacheKey).update(user).update('\0').update(password).digest('base64');
    const now = Date.now();
    const hit = this.cache.get(key);
    if (hit) {
      if (hit.until > now) {
        this.stats.cached++;
        return Promise.resolve(hit.ok);
      }
      this.cache.delete(key);
    }
    const pending = this.inflight.get(key);
    if (pending) return pending;
    const p = this.ask(user, password).then((verdict) => {
      this.inflight.delete(key);
      if (verdict !== 'BH') {
        const ok = verdict === 'OK';
        const ms = ok ? this.ttl.okMs : this.ttl.errMs;
        if (ms > 0) {
          if (this.cache.size >= MAX_CACHE_ENTRIES) this.cache.delete(this.cache.keys().next().value!);
          this.cache.set(key, { ok, until: Date.now() + ms });
        }
      }
      return verdict === 'OK';
    });
    this.inflight.set(key, p);
    return p;
  }

  private ask(user: string, password: string): Promise<Verdict> {
    if (this.closed) return Promise.resolve('BH');
    const line = `${helperEscape(user)} ${helperEscape(password)}`;
    if (Buffer.byteLength(line) + 16 > MAX_LINE_BYTES) {
      this.log?.info('auth helper: credentials too long, refused without asking', { user: user.slice(0, 64) });
      return Promise.resolve('ERR');
    }
    if (this.queue.length >= MAX_QUEUE) {
      this.log?.warn('auth helper: too many questions waiting, refused', { user: user.slice(0, 64), queued: this.queue.length });
      return Promise.resolve('BH');
    }
    this.stats.asked++;
    return new Promise<Verdict>((resolveVerdict) => {
      const q: Question = {
        user,
        password,
        line,
        retries: 0,
        done: false,
        child: null,
        id: 0,
        resolve: (v) => {
          if (q.done) return;
          q.done = true;
          clearTimeout(q.timer);
          resolveVerdict(v);
        },
        timer: setTimeout(() => this.timedOut(q), this.options.timeoutMs),
      };
      // The first limit is for waiting for a free helper; dispatch() starts the limit of the answer.
      q.timer.unref();
      this.queue.push(q);
      this.dispatch();
    });
  }

  private timedOut(q: Question): void {
    if (q.done) return;
    this.stats.timeouts++;
    const waiting = q.child === null;
    this.log?.warn(waiting ? 'no auth helper free in time: refused' : 'auth helper did not answer in time: refused', {
      user: q.user.slice(0, 64),
      ms: this.options.timeoutMs,
    });
    q.resolve('BH');
    const i = this.queue.indexOf(q);
    if (i >= 0) this.queue.splice(i, 1);
    const h = q.child;
    if (h && !h.dead) {
      h.open.delete(q.id);
      if (this.options.concurrency === 0) {
        // A serial helper that does not answer is stuck: its answers would come out of step.
        this.kill(h, 'did not answer in time');
      }
    }
    this.dispatch();
  }

  private capacity(): number {
    return Math.max(1, this.options.concurrency);
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      let h = this.helpers.find((x) => !x.dead && x.open.size < this.capacity());
      if (!h) {
        if (this.helpers.length >= this.options.children) return;
        const spawned = this.spawnHelper();
        if (!spawned) return;
        h = spawned;
      }
      const q = this.queue.shift()!;
      if (q.done) continue;
      q.child = h;
      clearTimeout(q.timer);
      q.timer = setTimeout(() => this.timedOut(q), this.options.timeoutMs);
      q.timer.unref();
      q.id = this.nextId = (this.nextId + 1) % 1_000_000_000;
      h.open.set(q.id, q);
      h.order.push(q);
      const text = this.options.concurrency > 0 ? `${q.id} ${q.line}\n` : `${q.line}\n`;
      h.proc.stdin?.write(text);
    }
  }

  private spawnHelper(): Helper | null {
    if (this.closed) return null;
    const now = Date.now();
    this.deaths = this.deaths.filter((t) => now - t < RESPAWN_WINDOW_MS);
    if (this.deaths.length >= RESPAWN_LIMIT) {
      if (!this.respawnTimer) {
        this.log?.error('auth helper keeps exiting; not restarted for a second', { program: this.options.argv[0] });
        this.respawnTimer = setTimeout(() => {
          this.respawnTimer = null;
          this.deaths = [];
          this.dispatch();
        }, 1000);
        this.respawnTimer.unref();
      }
      return null;
    }
    const [program, ...args] = this.options.argv;
    let proc: ChildProcess;
    try {
      proc = spawn(program!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (err) {
      this.deaths.push(now);
      this.log?.error('auth helper cannot start', { program, error: err instanceof Error ? err.message : String(err) });
      return null;
    }
    this.stats.spawned++;
    const h: Helper = { proc, open: new Map(), order: [], buf: '', dead: false };
    this.helpers.push(h);
    proc.stdout!.setEncoding('utf8');
    proc.stdout!.on('data', (chunk: string) => this.onData(h, chunk));
    let errBuf = '';
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (chunk: string) => {
      errBuf += chunk;
      let nl: number;
      while ((nl = errBuf.indexOf('\n')) >= 0) {
        this.logStderr(h, errBuf.slice(0, nl));
        errBuf = errBuf.slice(nl + 1);
      }
      if (errBuf.length > MAX_LINE_BYTES) {
        this.logStderr(h, errBuf);
        errBuf = '';
      }
    });
    proc.stdin!.on('error', () => {});
    proc.on('error', (err) => {
      this.log?.error('auth helper cannot start', { program, error: err.message });
      this.onExit(h, null, null);
    });
    proc.on('exit', (code, signal) => this.onExit(h, code, signal));
    this.log?.info('auth helper started', { program, pid: proc.pid });
    return h;
  }

  private logStderr(h: Helper, line: string): void {
    let text = line.slice(0, STDERR_LINE_CHARS);
    // The helper may echo what it was asked (debug modes): mask every password in flight.
    for (const q of h.open.values()) {
      for (const secret of [q.password, helperEscape(q.password)]) if (secret.length >= 1) text = text.split(secret).join('***');
    }
    if (text.trim() !== '') this.log?.info('auth helper stderr', { pid: h.proc.pid, line: text });
  }

  private onData(h: Helper, chunk: string): void {
    h.buf += chunk;
    let nl: number;
    while ((nl = h.buf.indexOf('\n')) >= 0) {
      const line = h.buf.slice(0, nl).replace(/\r$/, '');
      h.buf = h.buf.slice(nl + 1);
      this.onAnswer(h, line);
    }
    if (h.buf.length > MAX_LINE_BYTES) this.kill(h, 'answer line too long');
  }

  private onAnswer(h: Helper, line: string): void {
    const words = line.trim().split(/\s+/);
    let q: Question | undefined;
    if (this.options.concurrency > 0) {
      const id = Number(words.shift());
      q = h.open.get(id);
      if (!q) return; // a late answer to a question that timed out
      h.open.delete(id);
    } else {
      q = h.order.shift();
      while (q && q.done && !h.open.has(q.id)) q = h.order.shift();
      if (!q) {
        this.log?.warn('auth helper answered a question it was not asked', { pid: h.proc.pid });
        return;
      }
      h.open.delete(q.id);
    }
    if (this.options.concurrency > 0) h.order = h.order.filter((x) => x !== q);
    const result = (words[0] ?? '').toUpperCase();
    const verdict: Verdict = result === 'OK' ? 'OK' : result === 'ERR' ? 'ERR' : 'BH';
    if (verdict === 'BH') {
      this.log?.warn('auth helper could not decide (BH or unexpected answer): refused', { user: q.user.slice(0, 64), answer: result.slice(0, 16) });
    }
    q.resolve(verdict);
    this.dispatch();
  }

  private kill(h: Helper, why: string): void {
    if (h.dead) return;
    this.log?.warn('auth helper stopped', { pid: h.proc.pid, reason: why });
    h.proc.kill('SIGKILL');
    this.onExit(h, null, 'SIGKILL');
  }

  private onExit(h: Helper, code: number | null, signal: NodeJS.Signals | null): void {
    if (h.dead) return;
    h.dead = true;
    const i = this.helpers.indexOf(h);
    if (i >= 0) this.helpers.splice(i, 1);
    if (!this.closed) {
      this.deaths.push(Date.now());
      this.log?.warn('auth helper exited', { pid: h.proc.pid, code, signal });
    }
    // Its open questions are asked once more (a second death answers them BH).
    const again: Question[] = [];
    for (const q of h.open.values()) {
      if (q.done) continue;
      q.child = null;
      if (this.closed || q.retries >= 1) q.resolve('BH');
      else {
        q.retries++;
        again.push(q);
      }
    }
    h.open.clear();
    h.order = [];
    this.queue.unshift(...again);
    if (!this.closed) this.dispatch();
  }

  /** Stop the helpers; open questions are refused. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.respawnTimer) clearTimeout(this.respawnTimer);
    for (const q of this.queue.splice(0)) q.resolve('BH');
    for (const h of [...this.helpers]) {
      for (const q of h.open.values()) q.resolve('BH');
      h.open.clear();
      h.proc.stdin?.end();
      // Squid helpers exit at end of input; one that does not is killed.
      const t = setTimeout(() => h.proc.kill('SIGKILL'), 2000);
      t.unref();
      h.proc.once('exit', () => clearTimeout(t));
      h.dead = true;
    }
    this.helpers.length = 0;
  }

  toString(): string {
    return this.source;
  }
}

/** AUTHTTL=OK[/ERR]: one duration sets both; 0 turns caching off. */
export function parseAuthTtl(text: string, label: string): { okMs: number; errMs: number } {
  const parts = text.trim().split('/');
  if (parts.length > 2 || parts.some((p) => p.trim() === '')) {
    throw new ConfigError(label, `expected DURATION or SUCCESS/FAILURE durations such as 60s/10s, got ${JSON.stringify(text)}`);
  }
  const okMs = parseDuration(parts[0]!, label);
  const errMs = parts.length === 2 ? parseDuration(parts[1]!, label) : okMs;
  if (okMs > 86_400_000 || errMs > 86_400_000) throw new ConfigError(label, 'at most 1d');
  return { okMs, errMs };
}
