/**
 * The HTTP cache of tapped and forward-proxied HTTP (CACHE=do): an RFC 9111 shared cache whose
 * rules all come from `http-cache-semantics` (see policy.ts), on a bounded disk store (store.ts).
 *
 * The HTTP tap asks `lookup()` first; on a miss it collapses concurrent fetches of one key with
 * `joinFetch()`, then streams the origin's response to the client and, through `beginStore()`, to
 * disk at the same time. Bounds: CACHESIZE bytes in total (bodies and metadata, least recently used
 * evicted first), an eighth of that per response, a count of entries and of variants per URL, a
 * count of stores in progress and a cap on bytes waiting for the disk (a store that falls behind is
 * abandoned instead of slowing the client or buffering without bound).
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { Logger } from '../observe/log.js';
import {
  applyHeuristic,
  canonicalKey,
  heuristicAllowed,
  libraryHeaders,
  libraryRequest,
  nodeHeaders,
  policyOptions,
  ProxyCachePolicy,
  servedHeaders,
  servedHeadersWithoutAge,
  varyKey,
  type CacheKey,
  type CacheRequest,
  type CacheResponseHead,
} from './policy.js';
import {
  BodyFile,
  loadEntry,
  newEntryId,
  removeBody,
  removeMeta,
  scanShared,
  scanStore,
  StoreLayout,
  writeIndex,
  writeMeta,
  type EntryMeta,
  type ScannedEntry,
} from './store.js';
import { SharedIndex } from './shared-index.js';
import { MemoryTier } from './memory.js';

export type { CacheRequest, CacheResponseHead } from './policy.js';

export interface CacheHit {
  /** Stored status and headers, with Age and Date computed for now (RFC 9111 §4.2.3, §5.1). */
  head: CacheResponseHead;
  /** The stored response satisfies the request without revalidation (RFC 9111 §4.2). */
  fresh: boolean;
  /** Body bytes. */
  size: number;
  /** The whole body when the memory tier holds it (served without touching the disk), else null. */
  readonly memBody: Buffer | null;
  /**
   * The stored head as made when the entry was stored or revalidated: without Age (`age` is its
   * value for now), never to be modified. `rawHead` is the same fields as a raw list, hop-by-hop
   * fields left out and Content-Length the stored body's size: ready to send with `age` appended.
   */
  readonly servedHead: Readonly<CacheResponseHead>;
  readonly rawHead: readonly string[];
  readonly age: string;
  /** The entry's id (stable while it is stored and not revalidated: onEntryChange names it then). */
  readonly entryId: string;
  /**
   * Until when (ms since the epoch) the entry is fresh for a request without conditionals,
   * Cache-Control or Pragma; 0 when a stored Vary makes every request's answer the library's.
   */
  readonly freshUntil: number;
  /** Age for any moment t is floor((t - ageOriginMs) / 1000) (RFC 9111 §4.2.3: apparent age plus resident time). */
  readonly ageOriginMs: number;
  /**
   * The body, streamed from disk. If the entry was evicted since `lookup()` (for example during a
   * revalidation round trip) the stream errors with ENOENT before emitting data; `openBody()`
   * reports that case as null instead.
   */
  body(): Readable;
  /**
   * The body stream once its file is open, or null when the entry is gone (treat as a miss);
   * `range` (inclusive offsets) for a 206.
   */
  openBody(range?: { start: number; end: number }): Promise<Readable | null>;
  /** The body file opened for reading (the caller closes it), or null when the entry is gone. */
  openFile(): Promise<FileHandle | null>;
  /**
   * The conditional fields to send upstream for this request (RFC 9111 §4.3.1): If-None-Match and/or
   * If-Modified-Since, merged with the client's own. They replace the client's conditional fields;
   * an empty object means the stored response has no validator (send the request unconditionally).
   */
  revalidationHeaders(req: CacheRequest): IncomingHttpHeaders;
  /**
   * After the conditional request: a 304 that selects this response is merged into it (RFC 9111
   * §4.3.4), persisted, and the merged head returned with `modified: false` (serve `body()`). Any
   * other response gives `modified: true` and its own head: the caller relays it and stores it
   * again with `beginStore()`, which replaces this variant. A 5xx with stale-if-error allowed (RFC
   * 5861) gives `modified: false` with the stored head.
   */
  revalidated(req: CacheRequest, head304: CacheResponseHead): Promise<{ modified: boolean; head: CacheResponseHead }>;
}

export interface CacheWriter {
  /**
   * Append a chunk of the body. Never blocks and never throws: when the store cannot keep up or
   * grows past its bounds it is abandoned silently (see `aborted`). The chunk is written later
   * without a copy, so it must not be modified after this call.
   */
  write(chunk: Buffer): void;
  /** The body is complete: fsync and commit atomically. Resolves true when the entry was stored; never rejects. */
  end(): Promise<boolean>;
  /** Abandon the store (the response was cut, or the client went away); removes the temp file. */
  abort(): void;
  /** The store was abandoned (by `abort()` or by a bound). */
  readonly aborted: boolean;
  /** Bytes accepted by `write()` so far. */
  readonly bytes: number;
  /** Bytes accepted but not yet on disk. */
  readonly queuedBytes: number;
  /** Resolves when nothing is waiting for the disk; for producers that can wait (tests, bulk loads). */
  drained(): Promise<void>;
}

export interface HttpCacheOptions {
  dir: string;
  /** CACHESIZE: bodies and metadata together. */
  maxBytes: number;
  /** EXPIRE: heuristic freshness for responses without explicit freshness (RFC 9111 §4.2.2). */
  heuristicMs?: number;
  log: Logger;
  /** Largest single body stored; default maxBytes / 8. */
  maxEntryBytes?: number;
  /** Entries kept (each costs memory for its headers); default maxBytes / 16 KiB, within 256..100 000. */
  maxEntries?: number;
  /** Bytes one store may have waiting for the disk before it is abandoned; default 4 MiB. */
  maxQueuedBytes?: number;
  /** CACHEMEM: bytes of bodies held in memory (0 = no memory tier); default 64 MiB. */
  memBytes?: number;
  /** Largest body held in memory; default memBytes / 8, at most 1 MiB. */
  memMaxEntryBytes?: number;
  /**
   * WORKERS=N: this process is worker `worker` of several sharing `dir` (DIR/index.db, see
   * shared-index.ts); without it the store is this process's alone (DIR/index.json).
   */
  shared?: { worker: number };
}

export interface CacheStats {
  entries: number;
  /** Committed bytes (bodies and metadata). */
  bytes: number;
  maxBytes: number;
  /** Stores in progress and the bytes they have accepted. */
  writers: number;
  writingBytes: number;
  /** The memory tier: bodies held and their bytes, and its bound. */
  memEntries: number;
  memBytes: number;
  memMaxBytes: number;
}

/** Variants kept per URL (RFC 9111 §4.1 lets a cache keep several); older ones are dropped. */
const MAX_VARIANTS_PER_URL = 8;
/** Stores in progress at once; further responses are relayed without being stored. */
const MAX_ACTIVE_WRITERS = 128;
/** Bytes waiting for the disk over all stores. */
const MAX_TOTAL_QUEUED_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_QUEUED_BYTES = 4 * 1024 * 1024;
/** A collapsed miss waits at most this long for its leader, then fetches on its own. */
const COLLAPSE_MAX_WAIT_MS = 30_000;
/** Distinct keys being collapsed at once; beyond it every caller is a leader (no collapsing). */
const MAX_COLLAPSED_KEYS = 10_000;
/** CACHEMEM default, and the largest body the memory tier holds by default. */
const DEFAULT_MEM_BYTES = 64 * 1024 * 1024;
const MAX_MEM_ENTRY_BYTES = 1024 * 1024;
/** Bodies being read into the memory tier at once (the hits that find more are served from disk). */
const MAX_PROMOTIONS = 16;
/** How soon a changed recency order is written to index.json. */
const INDEX_FLUSH_MS = 30_000;
/** With WORKERS=N: how soon uses are written to the shared index (the LRU order every worker evicts by). */
const SHARED_TOUCH_FLUSH_MS = 1_000;
/** With WORKERS=N: a lookup sees other workers' removals and updates at most this late. */
const SHARED_SYNC_MS = 5;
/** With WORKERS=N: how often a collapsed miss looks whether another worker's fetch is done. */
const SHARED_COLLAPSE_POLL_MS = 20;

/** RFC 9110 §9.2.1. */
const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);

interface Entry {
  meta: EntryMeta;
  metaBytes: number;
  policy: ProxyCachePolicy;
  lastUsed: number;
  /** Body opens in progress; the body file is unlinked only when none is (see `dropEntry`). */
  opening: number;
  removed: boolean;
  bodyDeletePending: boolean;
  /** File operations of this entry, in order (metadata rewrite, removal). */
  io: Promise<void>;
  /** The head served for it, ready but for Age (made when stored or revalidated, not per hit). */
  served: CacheResponseHead;
  /** Until when (ms) it is fresh for a request without conditionals, Cache-Control or Pragma. */
  freshUntil: number;
  /** The stored response has a Vary: a hit must match the request's fields (the library does). */
  hasVary: boolean;
  /** Its body is being read into the memory tier. */
  promoting: boolean;
  /** `served` as a raw field list framed by the stored size (see CacheHit.rawHead). */
  servedRaw: string[];
}

/**
 * Request fields that make the library's evaluation necessary for a hit (RFC 9111 §4.2.1 request
 * directives, §4.3.2 conditionals): without any of them, and without Vary on the stored response,
 * "fresh" is only "now is before freshUntil", computed when the entry was stored or revalidated.
 */
const EVALUATED_REQUEST_FIELDS = ['cache-control', 'pragma', 'if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range'];

function needsEvaluation(headers: IncomingHttpHeaders): boolean {
  for (const name of EVALUATED_REQUEST_FIELDS) if (headers[name] !== undefined) return true;
  return false;
}

/** The per-entry state derived from its policy: redone whenever the policy changes. */
function prepared(policy: ProxyCachePolicy, status: number, size: number): Pick<Entry, 'served' | 'freshUntil' | 'hasVary' | 'servedRaw'> {
  const now = Date.now();
  const headers = servedHeadersWithoutAge(policy);
  // satisfiesWithoutRevalidation for a plain request is !stale(), i.e. age() < maxAge(), and age()
  // grows with the clock: fresh until now + (maxAge - age).
  const freshUntil = policy.storable() ? now + (policy.maxAge() - policy.age()) * 1000 : 0;
  const servedRaw: string[] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name === 'content-length') continue;
    if (Array.isArray(value)) for (const v of value) servedRaw.push(name, v);
    else servedRaw.push(name, String(value));
  }
  // The stored body's exact size frames the message (RFC 9112 §6.3), however the origin framed it.
  if (status !== 204 && status !== 304) servedRaw.push('content-length', String(size));
  return { served: { status, headers }, freshUntil, hasVary: policy.storedHeaders().vary !== undefined, servedRaw };
}

interface PendingStore {
  key: string;
  policy: ProxyCachePolicy;
  status: number;
  varyKey: string;
  heuristic: boolean;
  contentLength: number | undefined;
}

/** What a writer needs from its cache; kept narrow so the writer cannot reach the index. */
interface WriterHost {
  readonly maxEntryBytes: number;
  readonly maxQueuedBytes: number;
  readonly log: Logger;
  /** A body of n bytes would be held by the memory tier. */
  memFits(n: number): boolean;
  queue(n: number): boolean;
  unqueue(n: number): void;
  reserve(n: number): boolean;
  release(n: number): void;
  commit(writer: StoreWriter, file: BodyFile): Promise<boolean>;
  finished(writer: StoreWriter): void;
  /** Let close() wait for this file work. */
  track(p: Promise<void>): void;
}

class StoreWriter implements CacheWriter {
  private queue: Buffer[] = [];
  private queuedNow = 0;
  private accepted = 0;
  private state: 'open' | 'ending' | 'done' | 'aborted' = 'open';
  private pumping: Promise<void> | null = null;
  private ending: Promise<boolean> | null = null;
  private drainWaiters: (() => void)[] = [];
  /** Set when the URL was invalidated during the store: the response must not be committed. */
  invalidated = false;
  /** The body's chunks while it may still go to the memory tier (null once it cannot). */
  private memChunks: Buffer[] | null = [];

  constructor(
    private readonly host: WriterHost,
    readonly pending: PendingStore,
    private readonly file: BodyFile,
  ) {}

  get aborted(): boolean {
    return this.state === 'aborted';
  }
  get bytes(): number {
    return this.accepted;
  }
  get queuedBytes(): number {
    return this.queuedNow;
  }

  write(chunk: Buffer): void {
    if (this.state !== 'open' || chunk.length === 0) return;
    const n = chunk.length;
    if (this.accepted + n > this.host.maxEntryBytes) return this.fail('body exceeds the per-entry bound');
    if (this.queuedNow + n > this.host.maxQueuedBytes || !this.host.queue(n)) {
      return this.fail('disk slower than the network');
    }
    if (!this.host.reserve(n)) {
      this.host.unqueue(n);
      return this.fail('cache bound reached');
    }
    this.accepted += n;
    this.queuedNow += n;
    this.queue.push(chunk);
    if (this.memChunks) {
      if (this.host.memFits(this.accepted)) this.memChunks.push(chunk);
      else this.memChunks = null;
    }
    this.pump();
  }

  /** The whole body, when it is small enough for the memory tier. */
  memBody(): Buffer | null {
    if (!this.memChunks || !this.host.memFits(this.accepted)) return null;
    return this.memChunks.length === 1 ? Buffer.from(this.memChunks[0]!) : Buffer.concat(this.memChunks, this.accepted);
  }

  private dropMem(): void {
    this.memChunks = null;
  }

  private pump(): void {
    if (this.pumping) return;
    this.pumping = (async () => {
      while (this.queue.length > 0 && this.state !== 'aborted') {
        const batch = this.queue;
        this.queue = [];
        let n = 0;
        for (const b of batch) n += b.length;
        await this.file.append(batch);
        this.queuedNow -= n;
        this.host.unqueue(n);
        if (this.file.error) {
          this.fail(`write failed: ${this.file.error.message}`);
          break;
        }
      }
      this.pumping = null;
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const w of waiters) w();
    })();
  }

  drained(): Promise<void> {
    if (!this.pumping) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  end(): Promise<boolean> {
    if (this.state === 'open') {
      this.state = 'ending';
      this.ending = this.finish();
      this.host.track(this.ending.then(() => undefined));
    }
    return this.ending ?? Promise.resolve(false);
  }

  private async finish(): Promise<boolean> {
    while (this.pumping) await this.pumping;
    if (this.state === 'aborted') return false;
    const expected = this.pending.contentLength;
    if (expected !== undefined && expected !== this.accepted) {
      this.fail(`body of ${this.accepted} bytes, Content-Length ${expected}`);
      return false;
    }
    if (this.invalidated) {
      this.fail('URL invalidated during the store');
      return false;
    }
    try {
      await this.file.commit();
    } catch (err) {
      this.fail(`commit failed: ${(err as Error).message}`);
      return false;
    }
    this.state = 'done';
    const stored = await this.host.commit(this, this.file);
    this.host.finished(this);
    return stored;
  }

  abort(): void {
    // After end() the body is complete; a late abort (the client went away) changes nothing.
    if (this.state === 'open') this.fail('aborted');
  }

  /** Abandon the store: drop what is queued, give back the reservation, remove the temp file. */
  fail(reason: string): void {
    if (this.state === 'aborted' || this.state === 'done') return;
    this.state = 'aborted';
    this.dropMem();
    let dropped = 0;
    for (const b of this.queue) dropped += b.length;
    this.queue = [];
    this.queuedNow -= dropped;
    this.host.unqueue(dropped);
    this.host.release(this.accepted);
    this.host.log.debug('cache store abandoned', { url: this.pending.key, reason, bytes: this.accepted });
    const pumping = this.pumping ?? Promise.resolve();
    this.host.track(pumping.then(() => this.file.discard()));
    this.host.finished(this);
  }
}

class StoredHit implements CacheHit {
  readonly size: number;
  readonly servedHead: Readonly<CacheResponseHead>;
  readonly rawHead: readonly string[];
  readonly age: string;
  readonly entryId: string;
  readonly freshUntil: number;
  readonly ageOriginMs: number;
  private madeHead: CacheResponseHead | null = null;

  constructor(
    private readonly cache: HitHost,
    private readonly entry: Entry,
    private readonly key: CacheKey,
    readonly fresh: boolean,
    readonly memBody: Buffer | null,
  ) {
    this.servedHead = entry.served;
    this.rawHead = entry.servedRaw;
    const age = entry.policy.age();
    this.age = String(Math.floor(age));
    this.ageOriginMs = Date.now() - age * 1000;
    this.entryId = entry.meta.id;
    this.freshUntil = entry.hasVary ? 0 : entry.freshUntil;
    this.size = entry.meta.size;
  }

  /** The head made when the entry was stored or revalidated, with Age for now (RFC 9111 §5.1). */
  get head(): CacheResponseHead {
    this.madeHead ??= { status: this.servedHead.status, headers: { ...this.servedHead.headers, age: this.age } };
    return this.madeHead;
  }

  body(): Readable {
    const entry = this.entry;
    entry.opening++;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.cache.bodyOpened(entry);
    };
    const stream = createReadStream(this.cache.layout.body(entry.meta.id), { highWaterMark: 64 * 1024 });
    // Once the file is open, unlinking it no longer matters to this reader (POSIX keeps the data).
    stream.once('open', release);
    stream.once('error', release);
    stream.once('close', release);
    return stream;
  }

  async openBody(range?: { start: number; end: number }): Promise<Readable | null> {
    const entry = this.entry;
    entry.opening++;
    try {
      const fh = await open(this.cache.layout.body(entry.meta.id), 'r');
      return fh.createReadStream({ highWaterMark: 64 * 1024, autoClose: true, ...(range ?? {}) });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    } finally {
      this.cache.bodyOpened(entry);
    }
  }

  async openFile(): Promise<FileHandle | null> {
    const entry = this.entry;
    entry.opening++;
    try {
      return await open(this.cache.layout.body(entry.meta.id), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    } finally {
      this.cache.bodyOpened(entry);
    }
  }

  revalidationHeaders(req: CacheRequest): IncomingHttpHeaders {
    const all = this.entry.policy.revalidationHeaders(libraryRequest(req, this.key));
    const out: IncomingHttpHeaders = {};
    const inm = all['if-none-match'];
    const ims = all['if-modified-since'];
    if (inm !== undefined) out['if-none-match'] = Array.isArray(inm) ? inm.join(', ') : inm;
    if (ims !== undefined) out['if-modified-since'] = Array.isArray(ims) ? ims.join(', ') : ims;
    return out;
  }

  revalidated(req: CacheRequest, head304: CacheResponseHead): Promise<{ modified: boolean; head: CacheResponseHead }> {
    return this.cache.revalidate(this.entry, libraryRequest(req, this.key), head304);
  }
}

interface HitHost {
  readonly layout: StoreLayout;
  memBody(entry: Entry): Buffer | null;
  bodyOpened(entry: Entry): void;
  revalidate(
    entry: Entry,
    req: ReturnType<typeof libraryRequest>,
    head: CacheResponseHead,
  ): Promise<{ modified: boolean; head: CacheResponseHead }>;
}

export class HttpCache {
  readonly maxBytes: number;
  readonly maxEntryBytes: number;
  readonly maxEntries: number;
  private readonly layout: StoreLayout;
  private readonly heuristicMs: number | undefined;
  private readonly log: Logger;
  private readonly maxQueuedBytes: number;

  /** All entries; Map order is the recency order (first = least recently used). */
  private readonly entries = new Map<string, Entry>();
  /** Told the id of every entry dropped, or whose head or freshness changed (revalidated, reloaded). */
  private readonly changeListeners = new Set<(entryId: string) => void>();
  /** The entry last in `entries` by touch(), or null when another has been put after it since. */
  private newest: Entry | null = null;
  /** Variants per canonical URL, newest first. */
  private readonly byUrl = new Map<string, Entry[]>();
  private readonly writers = new Set<StoreWriter>();
  private readonly fetches = new Map<string, { wait: Promise<void>; finish(): void }>();
  private readonly io = new Set<Promise<void>>();
  private committedBytes = 0;
  private writingBytes = 0;
  private queuedBytes = 0;
  private opened = false;
  private closed = false;
  private indexDirty = false;
  private indexTimer: NodeJS.Timeout | null = null;
  private readonly writerHost: WriterHost;
  private readonly hitHost: HitHost;
  /** CACHEMEM: bodies of hot small entries, by entry id (copies of committed bodies only). */
  private readonly mem: MemoryTier<string>;
  private promotions = 0;
  /** WORKERS=N: the index shared with the other workers (null: this process's store alone). */
  private index: SharedIndex | null = null;
  private readonly shared: { worker: number } | null;
  private lastSync = 0;

  constructor(options: HttpCacheOptions) {
    if (!(options.maxBytes > 0) || !Number.isFinite(options.maxBytes)) {
      throw new RangeError(`cache size must be a positive number of bytes, not ${options.maxBytes}`);
    }
    if (options.heuristicMs !== undefined && !(options.heuristicMs >= 0)) {
      throw new RangeError(`heuristic freshness must be a duration >= 0, not ${options.heuristicMs}`);
    }
    this.shared = options.shared ?? null;
    this.layout = new StoreLayout(options.dir, this.shared ? `w${this.shared.worker}` : undefined);
    this.maxBytes = Math.floor(options.maxBytes);
    this.maxEntryBytes = Math.min(options.maxEntryBytes ?? Math.floor(this.maxBytes / 8), this.maxBytes);
    this.maxEntries = options.maxEntries ?? Math.min(100_000, Math.max(256, Math.floor(this.maxBytes / 16384)));
    this.maxQueuedBytes = options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    this.heuristicMs = options.heuristicMs;
    this.log = options.log;
    const memBytes = options.memBytes ?? DEFAULT_MEM_BYTES;
    if (!(memBytes >= 0) || !Number.isFinite(memBytes)) throw new RangeError(`memory tier size must be a number of bytes >= 0, not ${memBytes}`);
    this.mem = new MemoryTier(Math.floor(memBytes), options.memMaxEntryBytes ?? Math.min(MAX_MEM_ENTRY_BYTES, Math.floor(memBytes / 8)));

    const host = this;
    this.writerHost = {
      maxEntryBytes: this.maxEntryBytes,
      maxQueuedBytes: this.maxQueuedBytes,
      log: this.log,
      memFits: (n) => host.mem.fits(n),
      queue: (n) => {
        if (host.queuedBytes + n > MAX_TOTAL_QUEUED_BYTES) return false;
        host.queuedBytes += n;
        return true;
      },
      unqueue: (n) => {
        host.queuedBytes -= n;
      },
      reserve: (n) => {
        host.writingBytes += n;
        if (host.makeRoom()) return true;
        host.writingBytes -= n;
        return false;
      },
      release: (n) => {
        host.writingBytes -= n;
      },
      commit: (writer, file) => host.commitEntry(writer, file),
      finished: (writer) => {
        host.writers.delete(writer);
      },
      track: (p) => {
        void host.track(p);
      },
    };
    this.hitHost = {
      layout: this.layout,
      memBody: (entry) => host.mem.get(entry.meta.id) ?? null,
      bodyOpened: (entry) => host.bodyOpened(entry),
      revalidate: (entry, req, head) => host.revalidate(entry, req, head),
    };
  }

  /** Create the directory, load the entries on disk, remove leftovers of interrupted writes. */
  async open(): Promise<void> {
    if (this.opened) return;
    if (this.shared) return this.openShared();
    const { entries, removed } = await scanStore(this.layout);
    const doomed = this.adoptScanned(entries);
    for (const meta of doomed) {
      this.track(removeMeta(this.layout, meta.id).then(() => removeBody(this.layout, meta.id)));
    }
    this.opened = true;
    this.makeRoom(); // CACHESIZE may have shrunk since the last run
    this.log.info('cache open', {
      dir: this.layout.dir,
      entries: this.entries.size,
      bytes: this.committedBytes,
      maxBytes: this.maxBytes,
      removed: removed + doomed.length,
    });
  }

  /** A worker's open of the store shared by WORKERS=N (DIR/index.db). */
  private async openShared(): Promise<void> {
    await mkdir(this.layout.dir, { recursive: true });
    const index = new SharedIndex(join(this.layout.dir, 'index.db'));
    try {
      const scan = await scanShared(this.layout, index.all());
      index.remove(scan.dropRows);
      for (const a of scan.adopt) index.adopt(this.rowOf(a.meta, a.metaBytes, a.used));
      const doomed = this.adoptScanned([...scan.entries, ...scan.adopt]);
      for (const id of index.remove(doomed.map((m) => m.id))) {
        this.track(removeMeta(this.layout, id).then(() => removeBody(this.layout, id)));
      }
      this.index = index;
      this.opened = true;
      this.makeRoom();
      const t = index.totals();
      this.log.info('cache open', {
        dir: this.layout.dir,
        entries: t.count,
        bytes: t.bytes,
        maxBytes: this.maxBytes,
        removed: scan.removed + scan.dropRows.length + doomed.length,
        shared: `worker ${this.shared!.worker}`,
      });
    } catch (err) {
      if (!this.index) index.close();
      throw err;
    }
  }

  private rowOf(meta: EntryMeta, metaBytes: number, used: number): { id: string; url: string; vary: string; bytes: number; stored: number; used: number } {
    return { id: meta.id, url: meta.url, vary: meta.varyKey, bytes: meta.size + metaBytes, stored: meta.stored, used };
  }

  /** Take scanned entries into the in-memory index; returns the ones to remove (older duplicates, unreadable policies). */
  private adoptScanned(entries: ScannedEntry[]): EntryMeta[] {
    entries.sort((a, b) => a.used - b.used);
    const doomed: EntryMeta[] = [];
    // Newest store of each variant first, so older duplicates (a crash between commit and cleanup) lose.
    const byStore = [...entries].sort((a, b) => b.meta.stored - a.meta.stored);
    const keep = new Set<string>();
    const perUrl = new Map<string, Set<string>>();
    for (const s of byStore) {
      const variants = perUrl.get(s.meta.url) ?? new Set<string>();
      perUrl.set(s.meta.url, variants);
      if (variants.has(s.meta.varyKey) || variants.size >= MAX_VARIANTS_PER_URL) doomed.push(s.meta);
      else {
        variants.add(s.meta.varyKey);
        keep.add(s.meta.id);
      }
    }
    for (const s of entries) {
      if (!keep.has(s.meta.id)) continue;
      const policy = this.loadPolicy(s.meta);
      if (!policy) {
        doomed.push(s.meta);
        continue;
      }
      const entry: Entry = {
        meta: s.meta,
        metaBytes: s.metaBytes,
        policy,
        lastUsed: s.used,
        opening: 0,
        removed: false,
        bodyDeletePending: false,
        io: Promise.resolve(),
        ...prepared(policy, s.meta.policy.st, s.meta.size),
        promoting: false,
      };
      this.entries.set(s.meta.id, entry);
      this.newest = null;
      this.committedBytes += s.meta.size + s.metaBytes;
    }
    // byUrl lists are newest first.
    for (const s of byStore) {
      const entry = this.entries.get(s.meta.id);
      if (!entry) continue;
      const list = this.byUrl.get(s.meta.url) ?? [];
      list.push(entry);
      this.byUrl.set(s.meta.url, list);
      this.indexOrigin(s.meta.url, true);
    }
    return doomed;
  }

  /** Abandon stores in progress, release collapsed waiters, finish file removals, write the index. */
  async close(): Promise<void> {
    // Copies served elsewhere (the native hit path) go with the cache.
    for (const id of this.entries.keys()) this.entryChanged(id);
    this.changeListeners.clear();
    if (this.closed) return;
    this.closed = true;
    // Stores still receiving their body are abandoned; those already ending commit, and are awaited below.
    for (const w of [...this.writers]) w.abort();
    for (const f of [...this.fetches.values()]) f.finish();
    this.mem.clear();
    if (this.indexTimer) clearTimeout(this.indexTimer);
    this.indexTimer = null;
    while (this.io.size > 0) await Promise.allSettled([...this.io]);
    if (this.opened) await this.flushIndex();
    if (this.index) {
      try {
        this.index.close();
      } catch (err) {
        this.log.warn('cache cannot close the shared index', { error: (err as Error).message });
      }
      this.index = null;
    }
  }

  stats(): CacheStats {
    const t = this.index ? this.sharedTotals() : null;
    return {
      entries: t ? t.count : this.entries.size,
      bytes: t ? t.bytes : this.committedBytes,
      maxBytes: this.maxBytes,
      writers: this.writers.size,
      writingBytes: this.writingBytes,
      memEntries: this.mem.entries,
      memBytes: this.mem.bytes,
      memMaxBytes: this.mem.maxBytes,
    };
  }

  /** Find a stored response for a GET or HEAD request (Vary honoured, RFC 9111 §4.1). */
  async lookup(req: CacheRequest): Promise<CacheHit | null> {
    if (!this.opened || this.closed) return null;
    const method = req.method.toUpperCase();
    if (method !== 'GET' && method !== 'HEAD') return null;
    const key = canonicalKey(req.url);
    if (!key) return null;
    if (!this.index) return this.find(req, key);
    // WORKERS=N: what other workers removed or updated first; on a miss here, what they stored.
    this.syncShared();
    const found = this.find(req, key);
    if (found || !(await this.loadFromIndex(key.href)) || this.closed) return found;
    return this.find(req, key);
  }

  /**
   * `lookup()` without a promise when the answer is known at once (this process's own store: the
   * hit path of every request); undefined when `lookup()` must be asked (WORKERS=N: the shared
   * index may have to be read).
   */
  lookupNow(req: CacheRequest): CacheHit | null | undefined {
    if (this.index) return undefined;
    if (!this.opened || this.closed) return null;
    const method = req.method.toUpperCase();
    if (method !== 'GET' && method !== 'HEAD') return null;
    const key = canonicalKey(req.url);
    if (!key) return null;
    return this.find(req, key);
  }

  private find(req: CacheRequest, key: CacheKey): CacheHit | null {
    const variants = this.byUrl.get(key.href);
    if (!variants) return null;
    // The common hit: one stored response without Vary, a request without conditionals or
    // directives. Its freshness was computed when it was stored or revalidated; the library's
    // evaluation (which gives the same answer, see prepared()) is skipped.
    const only = variants.length === 1 ? variants[0]! : null;
    if (only && !only.hasVary && Date.now() < only.freshUntil && !needsEvaluation(req.headers)) {
      return this.hit(only, key, true);
    }
    const libReq = libraryRequest(req, key);
    let chosen: Entry | null = null;
    let fresh = false;
    for (const entry of variants) {
      const vk = varyKey(entry.meta.policy.resh.vary, libReq.headers);
      if (vk === null || vk !== entry.meta.varyKey) continue;
      // Freshness as this request's EXPIRE sees it (a SOCKSTAP rule's, else the cache's own).
      applyHeuristic(entry.policy, entry.meta.heuristic, req.heuristicMs ?? this.heuristicMs);
      if (entry.policy.satisfiesWithoutRevalidation(libReq)) {
        chosen = entry;
        fresh = true;
        break;
      }
      chosen ??= entry; // newest matching variant, to revalidate
    }
    if (!chosen) return null;
    return this.hit(chosen, key, fresh);
  }

  private hit(entry: Entry, key: CacheKey, fresh: boolean): CacheHit {
    this.touch(entry);
    const memBody = this.mem.get(entry.meta.id) ?? null;
    if (!memBody && !entry.promoting && this.promotions < MAX_PROMOTIONS && this.mem.fits(entry.meta.size)) this.promote(entry);
    return new StoredHit(this.hitHost, entry, key, fresh, memBody);
  }

  /** Read an entry's body (committed, so complete) into the memory tier, for the hits after this one. */
  private promote(entry: Entry): void {
    entry.promoting = true;
    entry.opening++;
    this.promotions++;
    void this.track(
      readFile(this.layout.body(entry.meta.id))
        .then((body) => {
          if (!entry.removed && body.length === entry.meta.size) this.mem.set(entry.meta.id, body);
        })
        .catch(() => undefined)
        .finally(() => {
          this.promotions--;
          entry.promoting = false;
          this.bodyOpened(entry);
        }),
    );
  }

  /**
   * Whether some stored response under this origin (`https://host[:port]`, as canonicalKey gives
   * it) is fresh, whatever its request: the connect strategy's hint that an intercepted HTTPS
   * tunnel may be answered without its server (docs/tls-interception.md). Only that origin's
   * URLs are looked at, stopped at the first fresh one.
   */
  hasFreshUnder(origin: string): boolean {
    if (!this.opened || this.closed) return false;
    const urls = this.httpsUrls.get(origin);
    if (!urls) return false;
    for (const url of urls) {
      const variants = this.byUrl.get(url);
      if (variants?.some((e) => !e.removed && !e.policy.stale())) return true;
    }
    return false;
  }

  /** The https:// URLs stored per origin, for hasFreshUnder (kept beside byUrl). */
  private readonly httpsUrls = new Map<string, Set<string>>();

  private indexOrigin(url: string, stored: boolean): void {
    if (!url.startsWith('https://')) return;
    const slash = url.indexOf('/', 8);
    const origin = slash < 0 ? url : url.slice(0, slash);
    let set = this.httpsUrls.get(origin);
    if (stored) {
      if (!set) this.httpsUrls.set(origin, (set = new Set()));
      set.add(url);
    } else if (set) {
      set.delete(url);
      if (set.size === 0) this.httpsUrls.delete(origin);
    }
  }

  /**
   * Start storing a GET response while it streams to the client; null when it must not or need not
   * be stored: not storable for a shared cache (RFC 9111 §3: no-store, private, Authorization without
   * public/s-maxage/must-revalidate, status not understood, 206), Vary: *, Set-Cookie without
   * public, larger than the per-entry bound, never reusable, or too many stores in progress.
   */
  beginStore(req: CacheRequest, head: CacheResponseHead): CacheWriter | null {
    if (!this.opened || this.closed) return null;
    if (req.method.toUpperCase() !== 'GET') return null;
    if (this.writers.size >= MAX_ACTIVE_WRITERS) return null;
    const key = canonicalKey(req.url);
    if (!key) return null;
    const libReq = libraryRequest(req, key);
    const res = { status: head.status, headers: libraryHeaders(head.headers) };
    // Partial content is not stored (it is not combined, RFC 9111 §3.3); a Content-Range on a
    // complete response is only one more field, stored as sent (RFC 9111 §3.1).
    if (head.status === 206) return null;
    const policy = new ProxyCachePolicy(libReq, res, policyOptions(this.heuristicMs));
    if (!policy.storable()) return null;
    const cc = String(res.headers['cache-control'] ?? '').toLowerCase();
    // The library already gives such responses no freshness in a shared cache; storing them would
    // still hand one user's cookie to another after a 304, so they are not stored at all.
    if (res.headers['set-cookie'] !== undefined && !/(^|,)\s*public\s*(,|$)/.test(cc)) return null;
    const vk = varyKey(res.headers.vary, libReq.headers);
    if (vk === null) return null;
    const heuristic = heuristicAllowed(libReq, res);
    applyHeuristic(policy, heuristic, req.heuristicMs ?? this.heuristicMs);
    // A response that is stale at once and has no validator can never be reused.
    if (policy.timeToLive() === 0 && res.headers.etag === undefined && res.headers['last-modified'] === undefined) {
      return null;
    }
    let contentLength: number | undefined;
    const cl = res.headers['content-length'];
    if (typeof cl === 'string' && /^\d+$/.test(cl)) {
      contentLength = Number(cl);
      if (contentLength > this.maxEntryBytes) return null;
    }
    const pending: PendingStore = { key: key.href, policy, status: head.status, varyKey: vk, heuristic, contentLength };
    const writer = new StoreWriter(this.writerHost, pending, new BodyFile(this.layout, newEntryId()));
    this.writers.add(writer);
    return writer;
  }

  /**
   * Collapse concurrent misses of one key: the first caller leads (fetches, stores, calls `done()`
   * even on failure); the others wait, then look up again. A wait ends after 30 s at most.
   */
  joinFetch(key: string): { leader: true; done(): void } | { leader: false; wait: Promise<void> } {
    const existing = this.fetches.get(key);
    if (existing) return { leader: false, wait: existing.wait };
    if (this.closed || this.fetches.size >= MAX_COLLAPSED_KEYS) return { leader: true, done: () => undefined };
    let resolve!: () => void;
    const wait = new Promise<void>((r) => (resolve = r));
    let poll: NodeJS.Timeout | null = null;
    let claimed = false;
    const record = {
      wait,
      finish: (): void => {
        clearTimeout(timer);
        if (poll) clearInterval(poll);
        if (this.fetches.get(key) === record) this.fetches.delete(key);
        if (claimed) this.sharedCall(() => this.index?.release(key), undefined);
        claimed = false;
        resolve();
      },
    };
    const timer = setTimeout(record.finish, COLLAPSE_MAX_WAIT_MS);
    timer.unref();
    this.fetches.set(key, record);
    if (this.index) {
      // WORKERS=N: one fetch for all workers. Another worker's live fetch of the key makes this one
      // (and the requests here that join it) wait for it, at most as long, then look again.
      const index = this.index;
      claimed = this.sharedCall(() => index.claim(key, COLLAPSE_MAX_WAIT_MS), true);
      if (!claimed) {
        poll = setInterval(() => {
          if (this.closed || !this.sharedCall(() => index.fetching(key), false)) record.finish();
        }, SHARED_COLLAPSE_POLL_MS);
        poll.unref();
        return { leader: false, wait };
      }
    }
    return { leader: true, done: record.finish };
  }

  /** Remove every stored variant of a URL, and keep stores in progress for it from committing. */
  async invalidate(url: string): Promise<void> {
    const key = canonicalKey(url);
    if (!key) return;
    for (const w of this.writers) if (w.pending.key === key.href) w.invalidated = true;
    const index = this.index;
    if (index) {
      // WORKERS=N: the variants other workers stored, which this one may never have looked at.
      const ids = this.sharedCall(() => index.byUrl(key.href).map((r) => r.id), []);
      for (const id of this.sharedCall(() => index.remove(ids.filter((id) => !this.entries.has(id))), [])) this.removeFilesOf(id);
    }
    const variants = this.byUrl.get(key.href);
    if (!variants) return;
    await Promise.all([...variants].map((e) => this.dropEntry(e)));
  }

  /**
   * RFC 9111 §4.4: a non-error response to an unsafe request invalidates the target URI and the
   * same-origin URIs in Location and Content-Location.
   */
  async invalidateAfter(req: CacheRequest, head: CacheResponseHead): Promise<void> {
    if (SAFE_METHODS.has(req.method.toUpperCase())) return;
    if (head.status < 200 || head.status >= 400) return;
    const target = canonicalKey(req.url);
    if (!target) return;
    const urls = [target.href];
    for (const name of ['location', 'content-location'] as const) {
      const v = head.headers[name];
      if (typeof v !== 'string') continue;
      let u: URL;
      try {
        u = new URL(v, target.href);
      } catch {
        continue;
      }
      // Reference resolution (RFC 3986 §5.2) does remove dot segments: that is the URL Location names.
      if (`${u.protocol}//${u.host}` === target.origin) urls.push(u.href);
    }
    await Promise.all(urls.map((u) => this.invalidate(u)));
  }

  private loadPolicy(meta: EntryMeta): ProxyCachePolicy | null {
    try {
      // The heuristic setting of this run applies, not the one the entry was stored under.
      const ch = policyOptions(this.heuristicMs).cacheHeuristic ?? 0.1;
      const policy = ProxyCachePolicy.fromObject({ ...meta.policy, ch });
      if (!(policy instanceof ProxyCachePolicy)) return null;
      applyHeuristic(policy, meta.heuristic, this.heuristicMs);
      return policy;
    } catch {
      return null;
    }
  }

  /** `fn(entryId)` whenever an entry is dropped or its head or freshness changes; returns the unsubscribe. */
  onEntryChange(fn: (entryId: string) => void): () => void {
    this.changeListeners.add(fn);
    return () => this.changeListeners.delete(fn);
  }

  private entryChanged(id: string): void {
    for (const fn of this.changeListeners) fn(id);
  }

  /**
   * A hit served outside lookup() (the native hit path, from a copy of the entry): the entry's
   * recency, as a lookup would mark it. With WORKERS=N, other workers' changes are looked at too.
   */
  noteHit(entryId: string): void {
    const entry = this.entries.get(entryId);
    if (entry && !entry.removed) this.touch(entry);
    this.syncShared();
  }

  /** With WORKERS=N: the store is shared by the workers (a SQLite index). */
  get isShared(): boolean {
    return this.index !== null;
  }

  /** With WORKERS=N: look at other workers' removals and updates now (at most every few ms). */
  pollShared(): void {
    this.syncShared();
  }

  private touch(entry: Entry): void {
    entry.lastUsed = Date.now();
    // Already the most recently used (the hot entry, hit after hit): the order stands as it is,
    // and the Map is not shrunk and grown again by a delete and a set.
    if (this.newest !== entry) {
      this.entries.delete(entry.meta.id);
      this.entries.set(entry.meta.id, entry);
      this.newest = entry;
    }
    this.index?.touch(entry.meta.id, entry.lastUsed);
    this.markIndexDirty();
  }

  /** Evict least recently used entries until the bounds hold; false if even an empty cache cannot hold what is being written. */
  private makeRoom(): boolean {
    if (this.index) return this.makeSharedRoom(this.index);
    while (this.committedBytes + this.writingBytes > this.maxBytes || this.entries.size > this.maxEntries) {
      const oldest = this.entries.values().next();
      if (oldest.done) break;
      void this.dropEntry(oldest.value);
    }
    return this.committedBytes + this.writingBytes <= this.maxBytes;
  }

  /**
   * Forget an entry now; remove its files in the background, metadata first so a crash in between
   * leaves only an orphan body. The body is unlinked once no reader is opening it.
   */
  private dropEntry(entry: Entry, how: 'local' | 'indexed' | 'remote' = 'local'): Promise<void> {
    if (entry.removed) return entry.io;
    // WORKERS=N: the shared index first (no worker serves it from then on), then the files; an
    // entry another worker removed ('remote') has its files removed by that worker.
    if (how === 'local' && this.index) {
      const index = this.index;
      this.sharedCall(() => index.remove([entry.meta.id]), []);
    }
    entry.removed = true;
    this.mem.delete(entry.meta.id);
    this.entries.delete(entry.meta.id);
    if (this.newest === entry) this.newest = null;
    this.entryChanged(entry.meta.id);
    this.committedBytes -= entry.meta.size + entry.metaBytes;
    const list = this.byUrl.get(entry.meta.url);
    if (list) {
      const i = list.indexOf(entry);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) {
        this.byUrl.delete(entry.meta.url);
        this.indexOrigin(entry.meta.url, false);
      }
    }
    this.markIndexDirty();
    if (how === 'remote') return entry.io;
    entry.io = entry.io.then(async () => {
      try {
        await removeMeta(this.layout, entry.meta.id);
        if (entry.opening > 0) entry.bodyDeletePending = true;
        else await removeBody(this.layout, entry.meta.id);
      } catch (err) {
        this.log.warn('cache cannot remove entry', { id: entry.meta.id, error: (err as Error).message });
      }
    });
    return this.track(entry.io);
  }

  private bodyOpened(entry: Entry): void {
    entry.opening--;
    if (entry.opening === 0 && entry.bodyDeletePending) {
      entry.bodyDeletePending = false;
      this.track(removeBody(this.layout, entry.meta.id).catch(() => undefined));
    }
  }

  private async commitEntry(writer: StoreWriter, file: BodyFile): Promise<boolean> {
    const p = writer.pending;
    const size = writer.bytes;
    const meta: EntryMeta = {
      v: 1,
      id: file.id,
      url: p.key,
      size,
      stored: Date.now(),
      varyKey: p.varyKey,
      heuristic: p.heuristic,
      policy: p.policy.toObject(),
    };
    let metaBytes: number;
    try {
      metaBytes = await writeMeta(this.layout, meta);
    } catch (err) {
      this.writingBytes -= size;
      this.log.warn('cache cannot write metadata', { url: p.key, error: (err as Error).message });
      await removeBody(this.layout, file.id).catch(() => undefined);
      return false;
    }
    this.writingBytes -= size;
    if (writer.invalidated) {
      await removeMeta(this.layout, file.id).then(() => removeBody(this.layout, file.id)).catch(() => undefined);
      return false;
    }
    const entry: Entry = {
      meta,
      metaBytes,
      policy: p.policy,
      lastUsed: meta.stored,
      opening: 0,
      removed: false,
      bodyDeletePending: false,
      io: Promise.resolve(),
      ...prepared(p.policy, p.status, size),
      promoting: false,
    };
    if (this.index) {
      // WORKERS=N: the row makes the entry every worker's; the same variant stored by any worker is replaced.
      const index = this.index;
      const replaced = this.sharedCall(() => index.commit(this.rowOf(meta, metaBytes, meta.stored)), null);
      if (replaced === null) {
        await removeMeta(this.layout, file.id).then(() => removeBody(this.layout, file.id)).catch(() => undefined);
        return false;
      }
      for (const id of replaced) this.removeFilesOf(id);
    }
    // The new response replaces the stored one of the same variant (RFC 9111 §3, §4.1).
    const old = this.byUrl.get(p.key) ?? [];
    for (const e of [...old]) if (e.meta.varyKey === p.varyKey) void this.dropEntry(e);
    const list = this.byUrl.get(p.key) ?? [];
    list.unshift(entry);
    this.byUrl.set(p.key, list);
    this.indexOrigin(p.key, true);
    this.entries.set(entry.meta.id, entry);
    this.newest = null;
    this.committedBytes += size + metaBytes;
    // The body is on disk (fsync'd and renamed) and its metadata written: only now may the memory
    // tier hold a copy.
    const body = writer.memBody();
    if (body) this.mem.set(entry.meta.id, body);
    while (list.length > MAX_VARIANTS_PER_URL) void this.dropEntry(list[list.length - 1]!);
    this.makeRoom();
    this.markIndexDirty();
    return !entry.removed;
  }

  private async revalidate(
    entry: Entry,
    req: ReturnType<typeof libraryRequest>,
    head: CacheResponseHead,
  ): Promise<{ modified: boolean; head: CacheResponseHead }> {
    const res = { status: head.status, headers: libraryHeaders(head.headers) };
    const result = entry.policy.revalidatedPolicy(req, res);
    if (result.modified) return { modified: true, head };
    const storedHead = (): CacheResponseHead => ({ status: entry.meta.policy.st, headers: servedHeaders(entry.policy) });
    if (result.policy === entry.policy) return { modified: false, head: storedHead() }; // stale-if-error
    if (!result.matches) {
      // A 304 whose validators select no stored response (RFC 9111 §4.3.4): nothing is updated.
      // The stored response is served as it is and kept — dropping it removed the body this very
      // answer needed, and the request went to the origin again, unconditionally.
      return { modified: false, head: storedHead() };
    }
    const policy =
      result.policy instanceof ProxyCachePolicy ? result.policy : this.loadPolicy({ ...entry.meta, policy: result.policy.toObject() });
    if (!policy) return { modified: false, head: storedHead() };
    const obj = policy.toObject();
    const heuristic = heuristicAllowed(req, { status: obj.st, headers: obj.resh });
    applyHeuristic(policy, heuristic, this.heuristicMs);
    entry.policy = policy;
    entry.meta = { ...entry.meta, policy: obj, heuristic };
    Object.assign(entry, prepared(policy, obj.st, entry.meta.size));
    this.entryChanged(entry.meta.id);
    const merged: CacheResponseHead = { status: obj.st, headers: servedHeaders(policy) };
    if (!entry.removed) {
      const meta = entry.meta;
      entry.io = entry.io.then(async () => {
        if (entry.removed) return;
        try {
          const bytes = await writeMeta(this.layout, meta);
          if (!entry.removed) {
            this.committedBytes += bytes - entry.metaBytes;
            entry.metaBytes = bytes;
            const index = this.index;
            if (index) this.sharedCall(() => index.updated(meta.id, meta.size + bytes), undefined);
          }
        } catch (err) {
          this.log.warn('cache cannot update metadata', { url: meta.url, error: (err as Error).message });
        }
      });
      await this.track(entry.io);
    }
    return { modified: false, head: merged };
  }

  /** Background file work: close() waits for it, and a failure is logged rather than left unhandled. */
  private track(p: Promise<void>): Promise<void> {
    const tracked = p
      .catch((err: unknown) => this.log.warn('cache file operation failed', { error: (err as Error).message }))
      .finally(() => this.io.delete(tracked));
    this.io.add(tracked);
    return tracked;
  }

  private markIndexDirty(): void {
    this.indexDirty = true;
    if (this.indexTimer || this.closed) return;
    this.indexTimer = setTimeout(
      () => {
        this.indexTimer = null;
        void this.track(this.flushIndex());
      },
      this.shared ? SHARED_TOUCH_FLUSH_MS : INDEX_FLUSH_MS,
    );
    this.indexTimer.unref();
  }

  private async flushIndex(): Promise<void> {
    if (!this.indexDirty) return;
    this.indexDirty = false;
    if (this.shared) {
      const index = this.index;
      if (index) this.sharedCall(() => index.flushTouches(), undefined);
      return;
    }
    const used: Record<string, number> = {};
    for (const [id, e] of this.entries) used[id] = e.lastUsed;
    try {
      await writeIndex(this.layout, used);
    } catch (err) {
      this.indexDirty = true;
      this.log.warn('cache cannot write index', { error: (err as Error).message });
    }
  }

  /**
   * A call into the shared index. SQLite waits up to 5 s for another worker's transaction; past
   * that (or on a damaged file) the cache degrades for this request (`fallback`) and says so.
   */
  private sharedCall<T>(fn: () => T, fallback: T): T {
    try {
      return fn();
    } catch (err) {
      this.log.warn('cache shared index failed', { error: (err as Error).message });
      return fallback;
    }
  }

  private sharedTotals(): { bytes: number; count: number } {
    const index = this.index;
    return index ? this.sharedCall(() => index.totals(), { bytes: this.committedBytes, count: this.entries.size }) : { bytes: 0, count: 0 };
  }

  /** The LRU bound over every worker's entries: the least recently used rows go, whoever stored them. */
  private makeSharedRoom(index: SharedIndex): boolean {
    const gone = this.sharedCall(() => index.evict(this.maxBytes, this.maxEntries, this.writingBytes), []);
    for (const id of gone) this.removeFilesOf(id);
    return this.sharedTotals().bytes + this.writingBytes <= this.maxBytes;
  }

  /**
   * Remove the files of an entry whose row is gone: metadata first. A reader in any worker that
   * has the body open keeps reading it (an unlinked file lives while it is open); one that had not
   * opened it yet finds it gone and fetches (a miss).
   */
  private removeFilesOf(id: string): void {
    const entry = this.entries.get(id);
    if (entry) {
      void this.dropEntry(entry, 'indexed');
      return;
    }
    this.mem.delete(id);
    this.track(removeMeta(this.layout, id).then(() => removeBody(this.layout, id)));
  }

  /**
   * Apply what other workers changed since the last look: removals, and metadata updated by a 304.
   * At most once per SHARED_SYNC_MS (a look costs a SQLite read; busy hit paths do many a millisecond).
   */
  private syncShared(): void {
    const index = this.index;
    if (!index) return;
    const now = Date.now();
    if (now - this.lastSync < SHARED_SYNC_MS) return;
    this.lastSync = now;
    const { list, gap } = this.sharedCall(() => index.changes(), { list: [], gap: false });
    for (const c of list) {
      const entry = this.entries.get(c.id);
      if (!entry) continue;
      if (c.op === 'del') void this.dropEntry(entry, 'remote');
      else this.reloadMeta(entry);
    }
    if (gap) {
      const ids = this.sharedCall(() => index.ids(), null);
      if (ids) for (const entry of [...this.entries.values()]) if (!ids.has(entry.meta.id)) void this.dropEntry(entry, 'remote');
    }
  }

  private reloadMeta(entry: Entry): void {
    entry.io = entry.io.then(async () => {
      const loaded = await loadEntry(this.layout, entry.meta.id);
      if (!loaded || entry.removed) return;
      const policy = this.loadPolicy(loaded.meta);
      if (!policy) return;
      entry.meta = loaded.meta;
      entry.metaBytes = loaded.metaBytes;
      entry.policy = policy;
      Object.assign(entry, prepared(policy, loaded.meta.policy.st, loaded.meta.size));
      this.entryChanged(entry.meta.id);
    });
    void this.track(entry.io);
  }

  /**
   * A miss here: the entries other workers stored for this URL, taken into this worker's view.
   * True when there were any to look at (a concurrent lookup may be the one that took them in).
   */
  private async loadFromIndex(url: string): Promise<boolean> {
    const index = this.index;
    if (!index) return false;
    const rows = this.sharedCall(() => index.byUrl(url), []).filter((r) => !this.entries.has(r.id));
    if (rows.length === 0) return false;
    for (const row of rows) {
      const loaded = await loadEntry(this.layout, row.id);
      // Gone meanwhile (evicted, replaced), or already taken in by a concurrent lookup.
      if (!loaded || this.closed || this.entries.has(row.id) || !this.sharedCall(() => index.has(row.id), false)) continue;
      const policy = this.loadPolicy(loaded.meta);
      if (!policy) continue;
      const meta = loaded.meta;
      const entry: Entry = {
        meta,
        metaBytes: loaded.metaBytes,
        policy,
        lastUsed: row.used,
        opening: 0,
        removed: false,
        bodyDeletePending: false,
        io: Promise.resolve(),
        ...prepared(policy, meta.policy.st, meta.size),
        promoting: false,
      };
      this.entries.set(meta.id, entry);
      this.newest = null;
      this.committedBytes += meta.size + loaded.metaBytes;
      const list = this.byUrl.get(meta.url) ?? [];
      list.push(entry);
      list.sort((a, b) => b.meta.stored - a.meta.stored);
      this.byUrl.set(meta.url, list);
      this.indexOrigin(meta.url, true);
    }
    return true;
  }
}
