/**
 * The cache index that several WORKERS=N processes share: DIR/index.db, SQLite in WAL mode
 * (better-sqlite3, synchronous calls of a few microseconds). It holds what every worker must agree
 * on; the entries' files stay as store.ts writes them (bodies and metadata committed atomically).
 *
 *   entries   one row per committed entry: id, canonical URL, variant key, bytes (body and
 *             metadata), store time, last use. A row is written only after the body was fsync'd
 *             and renamed and the metadata written, so a row always names a complete entry; an
 *             entry without a row is never served.
 *   totals    one row: the entries' bytes and count (kept by triggers), for the one LRU bound.
 *   changes   removals and metadata updates, in order: each worker applies the ones it has not
 *             seen to its own in-memory view before a lookup (additions are found by URL on a miss).
 *   inflight  collapsed misses across workers: the fetch of a key in progress, its worker's pid
 *             and an expiry; a second worker waits for the row to go (bounded), then looks again.
 */
import Database from 'better-sqlite3';

export interface IndexRow {
  id: string;
  url: string;
  vary: string;
  bytes: number;
  stored: number;
  used: number;
}

export interface IndexChange {
  seq: number;
  id: string;
  op: 'del' | 'upd';
}

/** Changes are kept this long; a worker that has not looked for longer reconciles its whole view. */
const CHANGES_KEPT_MS = 10 * 60_000;
/** Rows evicted per statement while the bound does not hold. */
const EVICT_BATCH = 32;

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class SharedIndex {
  private readonly db: Database.Database;
  private readonly st: Record<string, Database.Statement>;
  /** Uses noted since the last flush (recency is a hint: batched). */
  private readonly touched = new Map<string, number>();
  private lastSeq = 0;
  private lastPrune = 0;

  constructor(path: string) {
    this.db = new Database(path, { timeout: 5000 });
    this.db.pragma('journal_mode = WAL');
    // The rows vouch for files already fsync'd; losing the last transactions at a power cut only
    // loses rows, whose entries the next open adopts again from their files.
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS entries (id TEXT PRIMARY KEY, url TEXT NOT NULL, vary TEXT NOT NULL, bytes INTEGER NOT NULL, stored INTEGER NOT NULL, used INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS entries_url ON entries(url);
      CREATE INDEX IF NOT EXISTS entries_used ON entries(used);
      CREATE TABLE IF NOT EXISTS totals (k INTEGER PRIMARY KEY CHECK (k = 0), bytes INTEGER NOT NULL, count INTEGER NOT NULL);
      INSERT OR IGNORE INTO totals VALUES (0, 0, 0);
      CREATE TRIGGER IF NOT EXISTS entries_ins AFTER INSERT ON entries BEGIN UPDATE totals SET bytes = bytes + NEW.bytes, count = count + 1; END;
      CREATE TRIGGER IF NOT EXISTS entries_del AFTER DELETE ON entries BEGIN UPDATE totals SET bytes = bytes - OLD.bytes, count = count - 1; END;
      CREATE TRIGGER IF NOT EXISTS entries_upd AFTER UPDATE OF bytes ON entries BEGIN UPDATE totals SET bytes = bytes - OLD.bytes + NEW.bytes; END;
      CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, op TEXT NOT NULL, at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS inflight (key TEXT PRIMARY KEY, pid INTEGER NOT NULL, expires INTEGER NOT NULL);
    `);
    const p = (sql: string): Database.Statement => this.db.prepare(sql);
    this.st = {
      all: p('SELECT id, url, vary, bytes, stored, used FROM entries'),
      byUrl: p('SELECT id, url, vary, bytes, stored, used FROM entries WHERE url = ?'),
      has: p('SELECT 1 FROM entries WHERE id = ?'),
      ids: p('SELECT id FROM entries'),
      insert: p('INSERT OR REPLACE INTO entries (id, url, vary, bytes, stored, used) VALUES (@id, @url, @vary, @bytes, @stored, @used)'),
      insertIgnore: p('INSERT OR IGNORE INTO entries (id, url, vary, bytes, stored, used) VALUES (@id, @url, @vary, @bytes, @stored, @used)'),
      sameVariant: p('SELECT id FROM entries WHERE url = ? AND vary = ? AND id <> ?'),
      del: p('DELETE FROM entries WHERE id = ?'),
      log: p('INSERT INTO changes (id, op, at) VALUES (?, ?, ?)'),
      setBytes: p('UPDATE entries SET bytes = ? WHERE id = ?'),
      touch: p('UPDATE entries SET used = MAX(used, ?) WHERE id = ?'),
      totals: p('SELECT bytes, count FROM totals WHERE k = 0'),
      oldest: p('SELECT id FROM entries ORDER BY used LIMIT ?'),
      since: p('SELECT seq, id, op FROM changes WHERE seq > ? ORDER BY seq LIMIT 10000'),
      maxSeq: p('SELECT COALESCE(MAX(seq), 0) AS seq FROM changes'),
      prune: p('DELETE FROM changes WHERE at < ?'),
      claim: p(
        'INSERT INTO inflight (key, pid, expires) VALUES (@key, @pid, @expires) ON CONFLICT(key) DO UPDATE SET pid = excluded.pid, expires = excluded.expires WHERE inflight.expires < @now OR inflight.pid = @pid',
      ),
      holder: p('SELECT pid, expires FROM inflight WHERE key = ?'),
      release: p('DELETE FROM inflight WHERE key = ? AND pid = ?'),
      inflightAll: p('SELECT key, pid FROM inflight'),
      dropInflight: p('DELETE FROM inflight WHERE key = ? AND pid = ?'),
    };
    // Fetches that a dead worker (kill -9) announced are nobody's now.
    for (const r of this.st.inflightAll!.all() as { key: string; pid: number }[]) {
      if (!alive(r.pid)) this.st.dropInflight!.run(r.key, r.pid);
    }
    this.lastSeq = (this.st.maxSeq!.get() as { seq: number }).seq;
  }

  all(): IndexRow[] {
    return this.st.all!.all() as IndexRow[];
  }

  byUrl(url: string): IndexRow[] {
    return this.st.byUrl!.all(url) as IndexRow[];
  }

  has(id: string): boolean {
    return this.st.has!.get(id) !== undefined;
  }

  /** Every id in the index (a full reconcile). */
  ids(): Set<string> {
    return new Set((this.st.ids!.all() as { id: string }[]).map((r) => r.id));
  }

  /** Adopt an entry found complete on disk (a store that predates the index, or an interrupted commit). */
  adopt(row: IndexRow): void {
    this.st.insertIgnore!.run(row);
  }

  /**
   * A new entry is committed: its row, and the stored responses of the same variant it replaces
   * (RFC 9111 §4.1) removed in the same transaction. Returns the replaced ids (their files are the
   * caller's to remove).
   */
  readonly commit = (row: IndexRow): string[] =>
    this.db.transaction((r: IndexRow) => {
      const now = Date.now();
      const old = (this.st.sameVariant!.all(r.url, r.vary, r.id) as { id: string }[]).map((x) => x.id);
      for (const id of old) {
        this.st.del!.run(id);
        this.st.log!.run(id, 'del', now);
      }
      this.st.insert!.run(r);
      return old;
    })(row);

  /** Remove entries; returns the ids this call removed (another worker may have been first). */
  remove(ids: readonly string[]): string[] {
    if (ids.length === 0) return [];
    return this.db.transaction((list: readonly string[]) => {
      const now = Date.now();
      const gone: string[] = [];
      for (const id of list) {
        if (this.st.del!.run(id).changes > 0) {
          this.st.log!.run(id, 'del', now);
          gone.push(id);
        }
      }
      return gone;
    })(ids);
  }

  /** An entry's metadata was rewritten (a 304 merged into it): other workers reload it. */
  updated(id: string, bytes: number): void {
    this.db.transaction(() => {
      if (this.st.setBytes!.run(bytes, id).changes > 0) this.st.log!.run(id, 'upd', Date.now());
    })();
  }

  touch(id: string, when: number): void {
    this.touched.set(id, when);
  }

  /** Write the noted uses in one transaction. */
  flushTouches(): void {
    if (this.touched.size === 0) return;
    const list = [...this.touched];
    this.touched.clear();
    this.db.transaction(() => {
      for (const [id, when] of list) this.st.touch!.run(when, id);
    })();
  }

  totals(): { bytes: number; count: number } {
    return this.st.totals!.get() as { bytes: number; count: number };
  }

  /**
   * Remove least recently used rows until `reserved` more bytes fit under maxBytes and the count
   * under maxEntries; returns the removed ids (their files are the caller's to remove).
   */
  evict(maxBytes: number, maxEntries: number, reserved: number): string[] {
    const t = this.totals();
    if (t.bytes + reserved <= maxBytes && t.count <= maxEntries) return [];
    this.flushTouches();
    return this.db.transaction(() => {
      const now = Date.now();
      const gone: string[] = [];
      for (;;) {
        const t = this.totals();
        if (t.bytes + reserved <= maxBytes && t.count <= maxEntries) break;
        const batch = (this.st.oldest!.all(EVICT_BATCH) as { id: string }[]).map((r) => r.id);
        if (batch.length === 0) break;
        for (const id of batch) {
          this.st.del!.run(id);
          this.st.log!.run(id, 'del', now);
          gone.push(id);
          const after = this.totals();
          if (after.bytes + reserved <= maxBytes && after.count <= maxEntries) break;
        }
      }
      return gone;
    })();
  }

  /**
   * The changes since this worker last looked. `gap` is true when some were pruned unseen: the
   * caller then reconciles its whole view with `ids()`.
   */
  changes(): { list: IndexChange[]; gap: boolean } {
    const list = this.st.since!.all(this.lastSeq) as IndexChange[];
    if (list.length === 0) return { list, gap: false };
    const gap = list[0]!.seq > this.lastSeq + 1;
    this.lastSeq = list[list.length - 1]!.seq;
    const now = Date.now();
    if (now - this.lastPrune > 60_000) {
      this.lastPrune = now;
      this.st.prune!.run(now - CHANGES_KEPT_MS);
    }
    return { list, gap };
  }

  /** Announce the fetch of `key`: true when this worker leads it (no live fetch by another). */
  claim(key: string, ttlMs: number): boolean {
    const now = Date.now();
    return this.st.claim!.run({ key, pid: process.pid, expires: now + ttlMs, now }).changes > 0;
  }

  /** Whether another worker's fetch of `key` is still in progress (its worker alive, not expired). */
  fetching(key: string): boolean {
    const r = this.st.holder!.get(key) as { pid: number; expires: number } | undefined;
    if (!r) return false;
    if (r.pid === process.pid) return false;
    if (r.expires < Date.now() || !alive(r.pid)) {
      this.st.dropInflight!.run(key, r.pid);
      return false;
    }
    return true;
  }

  release(key: string): void {
    this.st.release!.run(key, process.pid);
  }

  close(): void {
    try {
      this.flushTouches();
    } finally {
      this.db.close();
    }
  }
}
