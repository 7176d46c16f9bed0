/**
 * A small coverage-guided fuzzer (the libFuzzer/AFL loop) for sockstap's pure parsers, used because
 * @jazzer.js/core cannot load here (docs/testing.md says why): each target is bundled with esbuild,
 * instrumented with istanbul (statement and branch counters), and run in a worker thread. An input
 * that reaches a new (counter, hit-count bucket) pair joins the corpus; inputs are mutated AFL
 * "havoc" style with the target's dictionary. An exception is a crash; an input that runs longer
 * than the time limit is a hang (the parent watches a shared heartbeat and stops the worker).
 *
 * `runFuzz()` is the parent side (used by test/unit/fuzz.test.ts and test/fuzz/run.ts); this same
 * file is the worker's entry when loaded as one.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
export const CORPUS_DIR = path.join(here, 'corpus');
export const CRASH_DIR = path.join(here, 'crashes');
/** Inputs that once crashed or hung a target, kept (as TARGET-*) and replayed first on every run. */
export const REGRESSION_DIR = path.join(here, 'regressions');
const CACHE_DIR = path.join(root, 'node_modules', '.cache', 'sockstap-fuzz');
const COVERAGE_VAR = '__sockstapFuzzCoverage';
const SHARED_INPUT_BYTES = 1 << 20;

/** What a target module under test/fuzz/targets/ exports. */
export interface FuzzTarget {
  /** Throws on a broken invariant; must not throw otherwise. */
  fuzz(data: Buffer): void;
  /** Hand-written starting inputs (valid messages and near misses). */
  seeds(): Buffer[] | Promise<Buffer[]>;
  /** Tokens the mutator splices in (keywords, delimiters). */
  dictionary: readonly (string | Buffer)[];
  /** Longest input tried. */
  maxLen: number;
}

export interface FuzzOptions {
  target: string;
  seconds: number;
  /** Per-input time limit; longer is a hang. */
  timeoutMs?: number;
  /** Write the minimised corpus back to test/fuzz/corpus/TARGET/ and findings to test/fuzz/crashes/. */
  save?: boolean;
  seed?: number;
}

export interface FuzzResult {
  target: string;
  execs: number;
  seconds: number;
  /** Coverage features (counter × hit-count bucket) reached. */
  features: number;
  /** Counters (statements and branch arms) reached at least once, and how many there are. */
  covered: number;
  counters: number;
  corpus: number;
  corpusBytes: number;
  /** Inputs found in this run that reached new coverage. */
  added: number;
  finding: null | { kind: 'crash' | 'hang'; message: string; input: Buffer; file?: string };
}

type WorkerMessage =
  | { type: 'done'; execs: number; features: number; covered: number; counters: number; added: number; corpus: Uint8Array[] }
  | { type: 'crash'; message: string; input: Uint8Array; execs: number };

// ---------------------------------------------------------------------------------------------
// Parent side

/** Bundles and instruments test/fuzz/targets/NAME.ts; the path of the CommonJS file to load. */
export async function buildTarget(name: string): Promise<string> {
  const esbuild = await import('esbuild');
  const { createInstrumenter } = (await import('istanbul-lib-instrument')).default;
  const entry = path.join(here, 'targets', `${name}.ts`);
  const out = await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    packages: 'external',
    write: false,
    logLevel: 'silent',
  });
  const code = out.outputFiles[0]!.text;
  const instrumenter = createInstrumenter({ coverageVariable: COVERAGE_VAR, compact: true, esModules: false, produceSourceMap: false });
  // One file per process: `npm test` and `npm run fuzz` may build the same target at once.
  const file = path.join(CACHE_DIR, `${name}-${process.pid}.cjs`);
  const instrumented = instrumenter.instrumentSync(code, file);
  mkdirSync(CACHE_DIR, { recursive: true });
  writeFileSync(file, instrumented);
  return file;
}

function readCorpus(target: string): Buffer[] {
  const dir = path.join(CORPUS_DIR, target);
  let names: string[];
  try {
    names = readdirSync(dir).sort();
  } catch {
    return [];
  }
  return names.map((n) => readFileSync(path.join(dir, n)));
}

function readRegressions(target: string): Buffer[] {
  let names: string[];
  try {
    names = readdirSync(REGRESSION_DIR).filter((n) => n.startsWith(`${target}-`)).sort();
  } catch {
    return [];
  }
  return names.map((n) => readFileSync(path.join(REGRESSION_DIR, n)));
}

const hash = (b: Uint8Array): string => createHash('sha1').update(b).digest('hex');

export async function runFuzz(opts: FuzzOptions): Promise<FuzzResult> {
  const bundle = await buildTarget(opts.target);
  const timeoutMs = opts.timeoutMs ?? 2000;
  // [0] executions started, [1] length of the input in `input`, [2] worker ready flag.
  const state = new Int32Array(new SharedArrayBuffer(12));
  const input = new Uint8Array(new SharedArrayBuffer(SHARED_INPUT_BYTES));
  const seed = opts.seed ?? (Date.now() ^ (process.pid << 8)) >>> 0;
  const started = Date.now();
  // The worker loads this file through tsx's loader (a worker does not inherit the parent's hooks).
  const boot = `import('tsx/esm/api').then((api) => { api.register(); return import(${JSON.stringify(import.meta.url)}); })`;
  const worker = new Worker(boot, {
    eval: true,
    workerData: { bundle, target: opts.target, seconds: opts.seconds, state, input, corpus: readCorpus(opts.target), regressions: readRegressions(opts.target), seed },
    resourceLimits: { maxOldGenerationSizeMb: 1024 },
  });
  const result = await new Promise<WorkerMessage | { type: 'hang' } | { type: 'error'; message: string }>((resolve) => {
    let lastExec = -1;
    let lastChange = Date.now();
    const watch = setInterval(() => {
      if (Atomics.load(state, 2) !== 1) {
        lastChange = Date.now();
        return;
      }
      const n = Atomics.load(state, 0);
      if (n !== lastExec) {
        lastExec = n;
        lastChange = Date.now();
      } else if (Date.now() - lastChange > timeoutMs) {
        clearInterval(watch);
        resolve({ type: 'hang' });
      }
    }, 50);
    worker.once('message', (m: WorkerMessage) => {
      clearInterval(watch);
      resolve(m);
    });
    worker.once('error', (err) => {
      clearInterval(watch);
      resolve({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    });
    worker.once('exit', (code) => {
      clearInterval(watch);
      resolve({ type: 'error', message: `fuzz worker exited with code ${code}` });
    });
  });
  await worker.terminate();
  rmSync(bundle, { force: true });
  const seconds = (Date.now() - started) / 1000;
  const base: FuzzResult = {
    target: opts.target,
    execs: 0,
    seconds,
    features: 0,
    covered: 0,
    counters: 0,
    corpus: 0,
    corpusBytes: 0,
    added: 0,
    finding: null,
  };
  if (result.type === 'done') {
    const corpus = result.corpus.map((c) => Buffer.from(c));
    if (opts.save) writeCorpus(opts.target, corpus);
    const kept = opts.save ? readCorpus(opts.target) : corpus;
    return {
      ...base,
      execs: result.execs,
      features: result.features,
      covered: result.covered,
      counters: result.counters,
      corpus: kept.length,
      corpusBytes: kept.reduce((n, c) => n + c.length, 0),
      added: result.added,
    };
  }
  const finding =
    result.type === 'crash'
      ? { kind: 'crash' as const, message: result.message, input: Buffer.from(result.input) }
      : result.type === 'hang'
        ? {
            kind: 'hang' as const,
            message: `an input ran longer than ${timeoutMs} ms`,
            input: Buffer.from(input.subarray(0, Atomics.load(state, 1))),
          }
        : { kind: 'crash' as const, message: result.message, input: Buffer.alloc(0) };
  const execs = result.type === 'crash' ? result.execs : Atomics.load(state, 0);
  const file = saveFinding(opts.target, finding.kind, finding.input, opts.save === true);
  return { ...base, execs, finding: { ...finding, file } };
}

/** Bytes of corpus kept per target in the repository; past it the longest inputs go first. */
export const MAX_CORPUS_BYTES = 24 * 1024;

/** The minimised corpus replaces what was there (seeds are not stored: they live in the target). */
function writeCorpus(target: string, found: Buffer[]): void {
  const corpus = [...found].sort((a, b) => a.length - b.length);
  let total = corpus.reduce((n, c) => n + c.length, 0);
  while (total > MAX_CORPUS_BYTES) total -= corpus.pop()!.length;
  const dir = path.join(CORPUS_DIR, target);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const c of corpus) writeFileSync(path.join(dir, hash(c)), c);
}

function saveFinding(target: string, kind: string, input: Buffer, inRepo: boolean): string {
  const dir = inRepo ? CRASH_DIR : path.join(CACHE_DIR, 'findings');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${target}-${kind}-${hash(input).slice(0, 12)}`);
  writeFileSync(file, input);
  return file;
}

// ---------------------------------------------------------------------------------------------
// Worker side

interface WorkerData {
  bundle: string;
  target: string;
  seconds: number;
  state: Int32Array;
  input: Uint8Array;
  corpus: Uint8Array[];
  /** Replayed first; they must pass, and they are not corpus entries. */
  regressions: Uint8Array[];
  seed: number;
}

interface FileCoverage {
  s: Record<string, number>;
  b: Record<string, number[]>;
  f: Record<string, number>;
}

function xorshift(seed: number): (n: number) => number {
  let s = seed >>> 0 || 0x9e3779b9;
  return (n) => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) % n;
  };
}

const INTERESTING_8 = [0, 1, 0x7f, 0x80, 0xff, 0x20, 0x0a, 0x0d, 0x09, 0x2e, 0x3a, 0x40, 0x7b, 0x7d];
const INTERESTING_16 = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x3fff, 0x4000, 0x7fff, 0x8000, 0xfffe, 0xffff];

async function workerMain(data: WorkerData): Promise<void> {
  const require = createRequire(import.meta.url);
  const target = require(data.bundle) as FuzzTarget;
  const all = (globalThis as unknown as Record<string, Record<string, FileCoverage>>)[COVERAGE_VAR]!;
  const files = Object.values(all);
  // Replace istanbul's counter objects by views into one flat array, so a reset is one fill() and
  // the scan one loop; the instrumented code only ever does `cov.s[i]++` and `cov.b[i][j]++`.
  let size = 0;
  for (const fc of files) {
    size += Object.keys(fc.s).length;
    for (const arms of Object.values(fc.b)) size += arms.length;
  }
  const counters = new Uint32Array(size);
  let at = 0;
  for (const fc of files) {
    const n = Object.keys(fc.s).length;
    fc.s = counters.subarray(at, at + n) as unknown as Record<string, number>;
    at += n;
    const b: Record<string, number[]> = {};
    for (const [k, arms] of Object.entries(fc.b)) {
      b[k] = counters.subarray(at, at + arms.length) as unknown as number[];
      at += arms.length;
    }
    fc.b = b;
  }
  const seen = new Uint8Array(size); // bit per hit-count bucket
  const everHit = new Uint8Array(size);
  let features = 0;
  let covered = 0;
  const bucket = (c: number): number => (c <= 3 ? c - 1 : c <= 7 ? 3 : c <= 15 ? 4 : c <= 31 ? 5 : c <= 127 ? 6 : 7);

  const { state, input } = data;
  const maxLen = Math.min(target.maxLen, SHARED_INPUT_BYTES);
  const dict = target.dictionary.map((t) => (typeof t === 'string' ? Buffer.from(t, 'latin1') : t));
  let execs = 0;

  /** Runs one input; true when it reached new coverage. Throws what the target threw. */
  const execute = (buf: Buffer): boolean => {
    input.set(buf.subarray(0, SHARED_INPUT_BYTES));
    Atomics.store(state, 1, Math.min(buf.length, SHARED_INPUT_BYTES));
    Atomics.store(state, 0, ++execs);
    counters.fill(0);
    target.fuzz(buf);
    let fresh = false;
    for (let i = 0; i < size; i++) {
      const c = counters[i]!;
      if (c === 0) continue;
      const bit = 1 << bucket(c);
      if ((seen[i]! & bit) === 0) {
        seen[i]! |= bit;
        features++;
        fresh = true;
        if (everHit[i] === 0) {
          everHit[i] = 1;
          covered++;
        }
      }
    }
    return fresh;
  };

  const crash = (err: unknown, buf: Buffer): void => {
    const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
    parentPort!.postMessage({ type: 'crash', message, input: new Uint8Array(buf), execs } satisfies WorkerMessage);
  };

  const seeds = (await target.seeds()).map((s) => Buffer.from(s));
  Atomics.store(state, 2, 1);
  for (const r of data.regressions) {
    const buf = Buffer.from(r);
    try {
      execute(buf);
    } catch (err) {
      crash(err, buf);
      return;
    }
  }
  seen.fill(0);
  everHit.fill(0);
  features = 0;
  covered = 0;
  const corpus: Buffer[] = [];
  const stored = data.corpus.map((c) => Buffer.from(c));
  for (const buf of [...seeds, ...stored]) {
    try {
      if (execute(buf) || corpus.length === 0) corpus.push(buf);
    } catch (err) {
      crash(err, buf);
      return;
    }
  }
  const rnd = xorshift(data.seed);

  const mutate = (src: Buffer): Buffer => {
    let b = Buffer.from(src);
    const rounds = 1 << rnd(4);
    for (let r = 0; r < rounds; r++) {
      switch (rnd(13)) {
        case 0: // flip a bit
          if (b.length) b[rnd(b.length)]! ^= 1 << rnd(8);
          break;
        case 1: // random byte
          if (b.length) b[rnd(b.length)] = rnd(256);
          break;
        case 2: // interesting byte
          if (b.length) b[rnd(b.length)] = INTERESTING_8[rnd(INTERESTING_8.length)]!;
          break;
        case 3: {
          // interesting or length-like 16-bit big-endian value
          if (b.length < 2) break;
          const p = rnd(b.length - 1);
          const v = rnd(3) === 0 ? Math.max(0, b.length - p - 2 - rnd(4)) : INTERESTING_16[rnd(INTERESTING_16.length)]!;
          b.writeUInt16BE(v & 0xffff, p);
          break;
        }
        case 4: {
          // add or subtract a small number
          if (!b.length) break;
          const p = rnd(b.length);
          b[p] = (b[p]! + (rnd(2) ? 1 : -1) * (1 + rnd(35))) & 0xff;
          break;
        }
        case 5: {
          // delete a range
          if (b.length < 2) break;
          const p = rnd(b.length);
          const n = 1 + rnd(Math.min(16, b.length - p));
          b = Buffer.concat([b.subarray(0, p), b.subarray(p + n)]);
          break;
        }
        case 6: {
          // insert random bytes
          const n = 1 + rnd(8);
          const ins = Buffer.alloc(n);
          for (let i = 0; i < n; i++) ins[i] = rnd(256);
          const p = rnd(b.length + 1);
          b = Buffer.concat([b.subarray(0, p), ins, b.subarray(p)]);
          break;
        }
        case 7: {
          // copy a range elsewhere (repeats fields, grows lists)
          if (!b.length) break;
          const from = rnd(b.length);
          const n = 1 + rnd(Math.min(64, b.length - from));
          const p = rnd(b.length + 1);
          b = Buffer.concat([b.subarray(0, p), Buffer.from(b.subarray(from, from + n)), b.subarray(p)]);
          break;
        }
        case 8:
        case 9: {
          // insert or overwrite with a dictionary token
          if (!dict.length) break;
          const t = dict[rnd(dict.length)]!;
          const p = rnd(b.length + 1);
          b = r % 2 ? Buffer.concat([b.subarray(0, p), t, b.subarray(p)]) : Buffer.concat([b.subarray(0, p), t, b.subarray(p + t.length)]);
          break;
        }
        case 10: {
          // splice with another corpus entry
          const other = corpus[rnd(corpus.length)]!;
          const p = rnd(b.length + 1);
          const q = rnd(other.length + 1);
          b = Buffer.concat([b.subarray(0, p), other.subarray(q)]);
          break;
        }
        case 11: // truncate
          if (b.length) b = b.subarray(0, rnd(b.length));
          break;
        case 12: {
          // a run of one byte (long lines, long names)
          const n = 1 + rnd(rnd(8) === 0 ? 4096 : 64);
          const p = rnd(b.length + 1);
          b = Buffer.concat([b.subarray(0, p), Buffer.alloc(n, b.length ? b[rnd(b.length)]! : 0x41), b.subarray(p)]);
          break;
        }
      }
    }
    return b.length > maxLen ? b.subarray(0, maxLen) : b;
  };

  const deadline = Date.now() + data.seconds * 1000;
  let added = 0;
  while (Date.now() < deadline) {
    for (let k = 0; k < 256; k++) {
      const buf = mutate(corpus[rnd(corpus.length)]!);
      try {
        if (execute(buf)) {
          corpus.push(buf);
          added++;
        }
      } catch (err) {
        crash(err, buf);
        return;
      }
    }
  }

  // Minimise: seeds first, then the rest shortest first; keep what adds coverage.
  seen.fill(0);
  everHit.fill(0);
  features = 0;
  covered = 0;
  const seedSet = new Set(seeds.map((s) => s.toString('latin1')));
  const rest = corpus.filter((c) => !seedSet.has(c.toString('latin1'))).sort((a, b) => a.length - b.length || Buffer.compare(a, b));
  const kept: Buffer[] = [];
  try {
    for (const s of seeds) execute(s);
    for (const c of rest) if (execute(c)) kept.push(c);
  } catch (err) {
    crash(err, Buffer.from(input.subarray(0, Atomics.load(state, 1))));
    return;
  }
  parentPort!.postMessage({
    type: 'done',
    execs,
    features,
    covered,
    counters: size,
    added,
    corpus: kept.map((c) => new Uint8Array(c)),
  } satisfies WorkerMessage);
}

if (!isMainThread && (workerData as { bundle?: string } | null)?.bundle) {
  void workerMain(workerData as WorkerData).catch((err: unknown) => {
    parentPort!.postMessage({
      type: 'crash',
      message: `fuzz harness: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
      input: new Uint8Array(0),
      execs: 0,
    } satisfies WorkerMessage);
  });
}
