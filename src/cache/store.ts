/**
 * The cache's files on disk and the two ways they change: an atomic commit of a new entry and the
 * removal of an old one.
 *
 *   DIR/entries/ID.body   the response body, exactly `size` bytes
 *   DIR/entries/ID.meta   JSON: URL, size, variant key, the serialised CachePolicy (status, headers)
 *   DIR/tmp/              bodies and metadata being written; emptied at open
 *   DIR/index.json        recency hint for LRU eviction (ID → last use); losing it loses no entry
 *   DIR/index.db          with WORKERS=N instead: the shared index (shared-index.ts); then each
 *                         worker writes under DIR/tmp/wN/ and empties only its own
 *
 * Commit order (`BodyFile.commit`, `writeMeta`): body streamed to tmp/, fsync'd, renamed to
 * entries/; only then the metadata written to tmp/ and renamed into place. An entry exists only when
 * both files exist and the body's size equals the recorded size; `scanStore` removes everything else.
 * Removal order is the reverse: metadata first, so a crash in between leaves an orphan body, which
 * is never served and is removed at the next open.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type CachePolicy from 'http-cache-semantics';

export interface EntryMeta {
  v: 1;
  id: string;
  /** Canonical cache key URL. */
  url: string;
  /** Body bytes. */
  size: number;
  /** When the body was committed (ms since the epoch). */
  stored: number;
  /** Secondary key (Vary) of this variant. */
  varyKey: string;
  /** RFC 9111 §4.2.2 allows heuristic freshness for this response (EXPIRE applies). */
  heuristic: boolean;
  policy: CachePolicy.CachePolicyObject;
}

const ID_RE = /^[0-9a-f]{24}$/;
const ENTRY_FILE_RE = /^([0-9a-f]{24})\.(meta|body)$/;
/** Metadata is headers of one response (Node caps them at 16 KiB by default); anything bigger is not ours. */
const MAX_META_BYTES = 1024 * 1024;
/** Files opened at once while scanning at startup. */
const SCAN_CONCURRENCY = 32;

export function newEntryId(): string {
  return randomBytes(12).toString('hex');
}

export class StoreLayout {
  readonly entries: string;
  readonly tmp: string;
  readonly index: string;
  /** `tmpSub`: this worker's own temp directory under tmp/ (WORKERS=N), else tmp/ itself. */
  constructor(
    readonly dir: string,
    tmpSub?: string,
  ) {
    this.entries = join(dir, 'entries');
    this.tmp = tmpSub ? join(dir, 'tmp', tmpSub) : join(dir, 'tmp');
    this.index = join(dir, 'index.json');
  }
  body(id: string): string {
    return join(this.entries, `${id}.body`);
  }
  meta(id: string): string {
    return join(this.entries, `${id}.meta`);
  }
  /** A fresh temp name: two writers of the same entry's metadata never share one. */
  temp(id: string, kind: 'body' | 'meta' | 'index'): string {
    return join(this.tmp, `${id}.${kind}.${randomBytes(4).toString('hex')}.tmp`);
  }
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}

async function unlinkIfPresent(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if (!isMissing(err)) throw err;
  }
}

/** Write a small file atomically: temp file, then rename over the target (POSIX rename is atomic). */
async function writeAtomic(layout: StoreLayout, id: string, kind: 'meta' | 'index', target: string, text: string): Promise<void> {
  const tmp = layout.temp(id, kind);
  try {
    await writeFile(tmp, text, { flag: 'wx' });
    await rename(tmp, target);
  } catch (err) {
    await unlinkIfPresent(tmp).catch(() => undefined);
    throw err;
  }
}

/**
 * Write an entry's metadata. Not fsync'd on purpose: a torn or empty metadata file after a crash
 * fails to parse or to match its body at open and is removed, so it is never served; the body,
 * which the metadata vouches for, was fsync'd before this is called.
 */
export async function writeMeta(layout: StoreLayout, meta: EntryMeta): Promise<number> {
  const text = JSON.stringify(meta);
  await writeAtomic(layout, meta.id, 'meta', layout.meta(meta.id), text);
  return Buffer.byteLength(text);
}

export async function removeMeta(layout: StoreLayout, id: string): Promise<void> {
  await unlinkIfPresent(layout.meta(id));
}

export async function removeBody(layout: StoreLayout, id: string): Promise<void> {
  await unlinkIfPresent(layout.body(id));
}

export async function writeIndex(layout: StoreLayout, used: Record<string, number>): Promise<void> {
  await writeAtomic(layout, 'index', 'index', layout.index, JSON.stringify({ v: 1, used }));
}

async function readIndex(layout: StoreLayout): Promise<Map<string, number>> {
  const used = new Map<string, number>();
  try {
    const parsed: unknown = JSON.parse(await readFile(layout.index, 'utf8'));
    if (parsed && typeof parsed === 'object' && 'used' in parsed) {
      const u = (parsed as { used: unknown }).used;
      if (u && typeof u === 'object') {
        for (const [id, t] of Object.entries(u)) if (typeof t === 'number') used.set(id, t);
      }
    }
  } catch {
    // No index or a torn one: recency falls back to each entry's store time.
  }
  return used;
}

function validMeta(m: unknown, id: string): m is EntryMeta {
  if (!m || typeof m !== 'object') return false;
  const o = m as Partial<EntryMeta>;
  return (
    o.v === 1 &&
    o.id === id &&
    typeof o.url === 'string' &&
    typeof o.size === 'number' &&
    Number.isSafeInteger(o.size) &&
    o.size >= 0 &&
    typeof o.stored === 'number' &&
    typeof o.varyKey === 'string' &&
    typeof o.heuristic === 'boolean' &&
    !!o.policy &&
    typeof o.policy === 'object' &&
    o.policy.v === 1
  );
}

export interface ScannedEntry {
  meta: EntryMeta;
  metaBytes: number;
  /** Last use from the index, else the store time. */
  used: number;
}

export interface ScanResult {
  entries: ScannedEntry[];
  /** Files removed because they did not form a complete entry. */
  removed: number;
}

/**
 * Create the layout and load every complete entry; remove temp files, orphan bodies, metadata
 * without a body of the recorded size, and unreadable metadata. Runs at startup only.
 */
export async function scanStore(layout: StoreLayout): Promise<ScanResult> {
  await mkdir(layout.entries, { recursive: true });
  await mkdir(layout.tmp, { recursive: true });
  let removed = 0;
  for (const name of await readdir(layout.tmp)) {
    await rm(join(layout.tmp, name), { force: true, recursive: true });
    removed++;
  }
  const ids = new Map<string, { meta: boolean; body: boolean }>();
  for (const name of await readdir(layout.entries)) {
    const m = ENTRY_FILE_RE.exec(name);
    if (!m) continue; // not a file of ours: left alone
    const id = m[1]!;
    const seen = ids.get(id) ?? { meta: false, body: false };
    if (m[2] === 'meta') seen.meta = true;
    else seen.body = true;
    ids.set(id, seen);
  }
  const used = await readIndex(layout);
  const entries: ScannedEntry[] = [];
  const list = [...ids.entries()];
  for (let i = 0; i < list.length; i += SCAN_CONCURRENCY) {
    const batch = list.slice(i, i + SCAN_CONCURRENCY);
    const results = await Promise.all(
      batch.map(async ([id, seen]) => {
        const loaded = seen.meta && seen.body ? await loadEntry(layout, id) : null;
        if (loaded) {
          entries.push({ ...loaded, used: used.get(id) ?? loaded.meta.stored });
          return 0;
        }
        // Incomplete: metadata goes first (see the removal order above).
        if (seen.meta) await removeMeta(layout, id);
        if (seen.body) await removeBody(layout, id);
        return (seen.meta ? 1 : 0) + (seen.body ? 1 : 0);
      }),
    );
    for (const n of results) removed += n;
  }
  return { entries, removed };
}

/** Files of an entry younger than this are left alone by a worker's open: another may be committing or removing it. */
const SHARED_SETTLE_MS = 2_000;
/** An incomplete entry (a body without metadata) is removed by a worker's open once this old. */
const SHARED_ORPHAN_MS = 60_000;

export interface SharedScanResult {
  /** Rows whose entry is complete, with the row's last use. */
  entries: ScannedEntry[];
  /** Complete entries on disk without a row (an older single-process store, an interrupted commit). */
  adopt: ScannedEntry[];
  /** Rows whose files are gone or torn. */
  dropRows: string[];
  removed: number;
}

/**
 * A worker's open of the shared store (WORKERS=N): other workers may be committing and removing
 * entries meanwhile, so only this worker's temp directory is emptied, and files without a row are
 * adopted or removed only once they are old enough not to be another worker's work in progress.
 */
export async function scanShared(layout: StoreLayout, rows: ReadonlyArray<{ id: string; used: number }>): Promise<SharedScanResult> {
  await mkdir(layout.entries, { recursive: true });
  await rm(layout.tmp, { force: true, recursive: true });
  await mkdir(layout.tmp, { recursive: true });
  const ids = new Map<string, { meta: boolean; body: boolean }>();
  for (const name of await readdir(layout.entries)) {
    const m = ENTRY_FILE_RE.exec(name);
    if (!m) continue;
    const seen = ids.get(m[1]!) ?? { meta: false, body: false };
    if (m[2] === 'meta') seen.meta = true;
    else seen.body = true;
    ids.set(m[1]!, seen);
  }
  const out: SharedScanResult = { entries: [], adopt: [], dropRows: [], removed: 0 };
  const rowUsed = new Map(rows.map((r) => [r.id, r.used]));
  const now = Date.now();
  const age = async (path: string): Promise<number> => {
    try {
      return now - (await stat(path)).mtimeMs;
    } catch {
      return 0;
    }
  };
  const work: Array<() => Promise<void>> = [];
  for (const [id, used] of rowUsed) {
    work.push(async () => {
      const loaded = await loadEntry(layout, id);
      if (loaded) out.entries.push({ ...loaded, used });
      else out.dropRows.push(id);
    });
  }
  for (const [id, seen] of ids) {
    if (rowUsed.has(id)) continue;
    work.push(async () => {
      const newest = Math.min(seen.meta ? await age(layout.meta(id)) : Infinity, seen.body ? await age(layout.body(id)) : Infinity);
      if (newest < SHARED_SETTLE_MS) return;
      const loaded = seen.meta && seen.body ? await loadEntry(layout, id) : null;
      if (loaded) {
        out.adopt.push({ ...loaded, used: loaded.meta.stored });
        return;
      }
      if (newest < SHARED_ORPHAN_MS) return;
      if (seen.meta) await removeMeta(layout, id);
      if (seen.body) await removeBody(layout, id);
      out.removed += (seen.meta ? 1 : 0) + (seen.body ? 1 : 0);
    });
  }
  for (let i = 0; i < work.length; i += SCAN_CONCURRENCY) await Promise.all(work.slice(i, i + SCAN_CONCURRENCY).map((w) => w()));
  return out;
}

export async function loadEntry(layout: StoreLayout, id: string): Promise<{ meta: EntryMeta; metaBytes: number } | null> {
  if (!ID_RE.test(id)) return null;
  try {
    const metaStat = await stat(layout.meta(id));
    if (metaStat.size > MAX_META_BYTES) return null;
    const text = await readFile(layout.meta(id), 'utf8');
    const meta: unknown = JSON.parse(text);
    if (!validMeta(meta, id)) return null;
    const bodyStat = await stat(layout.body(id));
    // A body that is not exactly the recorded size is a torn write: never served.
    if (!bodyStat.isFile() || bodyStat.size !== meta.size) return null;
    return { meta, metaBytes: Buffer.byteLength(text) };
  } catch {
    return null;
  }
}

/**
 * A body being written to a temp file. Writes are serialised through one pump; the caller bounds
 * what is queued. `commit()` fsyncs and renames it into entries/.
 */
export class BodyFile {
  private readonly tmpPath: string;
  private fh: FileHandle | null = null;
  private opening: Promise<FileHandle> | null = null;
  private failed: Error | null = null;
  private closed = false;

  constructor(
    private readonly layout: StoreLayout,
    readonly id: string,
  ) {
    this.tmpPath = layout.temp(id, 'body');
  }

  get error(): Error | null {
    return this.failed;
  }

  private handle(): Promise<FileHandle> {
    if (this.fh) return Promise.resolve(this.fh);
    this.opening ??= open(this.tmpPath, 'wx').then((fh) => {
      this.fh = fh;
      return fh;
    });
    return this.opening;
  }

  /** Append a batch; all of it, or the file is marked failed. */
  async append(chunks: readonly Buffer[]): Promise<void> {
    if (this.failed || this.closed) return;
    try {
      const fh = await this.handle();
      for (const chunk of chunks) {
        let off = 0;
        while (off < chunk.length) {
          const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
          off += bytesWritten;
        }
      }
    } catch (err) {
      this.failed = err instanceof Error ? err : new Error(String(err));
    }
  }

  /** fsync, close, rename into entries/. Throws on any failure (the temp file is then removed). */
  async commit(): Promise<void> {
    if (this.failed) throw this.failed;
    const fh = await this.handle(); // an empty body still gets its file
    try {
      await fh.sync();
    } finally {
      this.closed = true;
      this.fh = null;
      await fh.close();
    }
    await rename(this.tmpPath, this.layout.body(this.id));
  }

  /** Close and remove the temp file; safe to call at any time, more than once. */
  async discard(): Promise<void> {
    this.closed = true;
    const fh = this.fh ?? (this.opening ? await this.opening.catch(() => null) : null);
    this.fh = null;
    await fh?.close().catch(() => undefined);
    await unlinkIfPresent(this.tmpPath).catch(() => undefined);
  }
}
