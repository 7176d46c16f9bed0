/**
 * The usage database: `STATEDIR/usage.sqlite` (SQLite through better-sqlite3, WAL). Two tables:
 *
 *  - `quota_usage(scope, hour, up, down)`: bytes per quota scope (`user:alice`, `src:10.0.0.0/8`,
 *    `door:1080`, `all`) per hour; a quota's usage is the sum of the hours of its period;
 *  - `traffic(hour, user, dst, up, down, sessions)`: finished sessions per hour, user and
 *    destination, which `sockstap report` prints.
 *
 * Every write is an additive upsert (`up = up + excluded.up`) inside one transaction, so several
 * processes (one per core, or a report reading while the proxy runs) share the file safely: WAL
 * lets readers go on while one writer commits, and busy_timeout makes a writer wait for another.
 * The caller batches: QuotaService commits at least every second and at every close.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';

export const USAGE_FILE = 'usage.sqlite';
const HOUR_MS = 3_600_000;

/** Start of the UTC hour that holds `ms` (the rows' key). */
export function hourOf(ms: number): number {
  return Math.floor(ms / HOUR_MS) * HOUR_MS;
}

export interface QuotaDelta {
  scope: string;
  hour: number;
  up: number;
  down: number;
}

export interface TrafficDelta {
  hour: number;
  /** '' for no user (the report shows it as '-'). */
  user: string;
  /** host:port as the client named it, '' when none. */
  dst: string;
  up: number;
  down: number;
  sessions: number;
}

export interface UsageTotal {
  name: string;
  up: number;
  down: number;
  sessions: number;
}

export class UsageStore {
  readonly file: string;
  private readonly db: Database.Database;
  private readonly addQuota: Database.Statement<[string, number, number, number]>;
  private readonly addTraffic: Database.Statement<[number, string, string, number, number, number]>;
  private readonly sumQuota: Database.Statement<[string, number], { up: number | null; down: number | null }>;
  private readonly commitTx: (quota: readonly QuotaDelta[], traffic: readonly TrafficDelta[]) => void;

  /** Opens (creating) `dir/usage.sqlite`; `readonly` for the report. */
  constructor(dir: string, options: { readonly?: boolean } = {}) {
    this.file = join(dir, USAGE_FILE);
    if (!options.readonly) mkdirSync(dir, { recursive: true });
    this.db = new Database(this.file, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false });
    this.db.pragma('busy_timeout = 5000');
    if (!options.readonly) {
      this.db.pragma('journal_mode = WAL');
      // With WAL, NORMAL loses nothing on a process crash (kill -9), only on a power loss.
      this.db.pragma('synchronous = NORMAL');
      this.db.exec(`
        CREATE TABLE IF NOT EXISTS quota_usage (
          scope TEXT NOT NULL, hour INTEGER NOT NULL,
          up INTEGER NOT NULL DEFAULT 0, down INTEGER NOT NULL DEFAULT 0,
          PRIMARY KEY (scope, hour)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS traffic (
          hour INTEGER NOT NULL, user TEXT NOT NULL, dst TEXT NOT NULL,
          up INTEGER NOT NULL DEFAULT 0, down INTEGER NOT NULL DEFAULT 0, sessions INTEGER NOT NULL DEFAULT 0,
          PRIMARY KEY (hour, user, dst)) WITHOUT ROWID;`);
    }
    this.addQuota = this.db.prepare(
      `INSERT INTO quota_usage (scope, hour, up, down) VALUES (?, ?, ?, ?)
       ON CONFLICT (scope, hour) DO UPDATE SET up = up + excluded.up, down = down + excluded.down`,
    );
    this.addTraffic = this.db.prepare(
      `INSERT INTO traffic (hour, user, dst, up, down, sessions) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (hour, user, dst) DO UPDATE SET up = up + excluded.up, down = down + excluded.down,
         sessions = sessions + excluded.sessions`,
    );
    this.sumQuota = this.db.prepare('SELECT SUM(up) AS up, SUM(down) AS down FROM quota_usage WHERE scope = ? AND hour >= ?');
    this.commitTx = this.db.transaction((quota: readonly QuotaDelta[], traffic: readonly TrafficDelta[]) => {
      for (const q of quota) this.addQuota.run(q.scope, q.hour, q.up, q.down);
      for (const t of traffic) this.addTraffic.run(t.hour, t.user, t.dst, t.up, t.down, t.sessions);
    });
  }

  /** One transaction for everything counted since the last commit. */
  commit(quota: readonly QuotaDelta[], traffic: readonly TrafficDelta[]): void {
    if (quota.length === 0 && traffic.length === 0) return;
    this.commitTx(quota, traffic);
  }

  /** Bytes of a quota scope in the hours from `since` (ms, rounded down to its hour) on. */
  quotaUsed(scope: string, since: number): { up: number; down: number } {
    const r = this.sumQuota.get(scope, hourOf(since));
    return { up: r?.up ?? 0, down: r?.down ?? 0 };
  }

  /** Per-user totals from `since` on, biggest first ('-' = no user). */
  totalsByUser(since: number): UsageTotal[] {
    return this.totals('user', since);
  }

  /** Per-destination totals from `since` on, biggest first. */
  totalsByDestination(since: number): UsageTotal[] {
    return this.totals('dst', since);
  }

  /** Every quota scope's bytes from `since` on (what the counters sum). */
  quotaScopes(since: number): Array<{ scope: string; up: number; down: number }> {
    return this.db
      .prepare('SELECT scope, SUM(up) AS up, SUM(down) AS down FROM quota_usage WHERE hour >= ? GROUP BY scope ORDER BY scope')
      .all(hourOf(since)) as Array<{ scope: string; up: number; down: number }>;
  }

  private totals(column: 'user' | 'dst', since: number): UsageTotal[] {
    // `column` is one of two fixed names, never user input.
    const rows = this.db
      .prepare(
        `SELECT ${column} AS name, SUM(up) AS up, SUM(down) AS down, SUM(sessions) AS sessions FROM traffic
         WHERE hour >= ? GROUP BY ${column} ORDER BY SUM(up) + SUM(down) DESC, ${column}`,
      )
      .all(hourOf(since)) as UsageTotal[];
    return rows.map((r) => ({ ...r, name: r.name === '' ? '-' : r.name }));
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
