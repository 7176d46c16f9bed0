/**
 * `sockstap report [--since DATE] [--format table|csv|json] [-f FILE.yaml] [STATEDIR=DIR]`:
 * per-user and per-destination totals of finished sessions, and the bytes counted per quota scope
 * (live connections included, up to the last second), from STATEDIR/usage.sqlite. It opens the
 * database read-only, so it runs safely beside a running proxy.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { UsageStore, USAGE_FILE, type UsageTotal } from './policy/usage.js';

export type ReportFormat = 'table' | 'csv' | 'json';

export interface UsageReport {
  /** ISO time the report starts from ('' = from the beginning). */
  since: string;
  users: UsageTotal[];
  destinations: UsageTotal[];
  quotaScopes: Array<{ scope: string; up: number; down: number }>;
}

export class ReportError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReportError';
  }
}

/**
 * `--since` values: an ISO date or time (`2026-11-01`, `2026-11-01T08:00`), `today`, or a span back
 * from now (`24h`, `7d`, `30m`). Dates without a time are local midnight.
 */
export function parseSince(text: string, now = Date.now()): number {
  const t = text.trim().toLowerCase();
  if (t === 'today') {
    const d = new Date(now);
    d.setHours(0, 0, 0, 0);
    return d.getTime();
  }
  const span = /^(\d+)([mhdw])$/.exec(t);
  if (span) {
    const unit = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 }[span[2] as 'm' | 'h' | 'd' | 'w'];
    return now - Number(span[1]) * unit;
  }
  // A bare date is local midnight (Date would read it as UTC).
  const ms = /^\d{4}-\d{2}-\d{2}$/.test(t) ? new Date(`${t}T00:00:00`).getTime() : new Date(text.trim()).getTime();
  if (Number.isNaN(ms)) throw new ReportError(`--since: expected a date (2026-11-01), a time, today, or a span such as 7d; got ${JSON.stringify(text)}`);
  return ms;
}

export function readReport(stateDir: string, sinceMs: number): UsageReport {
  const file = join(stateDir, USAGE_FILE);
  if (!existsSync(file)) throw new ReportError(`no usage database at ${file} (has sockstap run with STATEDIR=${stateDir}?)`);
  const store = new UsageStore(stateDir, { readonly: true });
  try {
    return {
      since: sinceMs > 0 ? new Date(sinceMs).toISOString() : '',
      users: store.totalsByUser(sinceMs),
      destinations: store.totalsByDestination(sinceMs),
      quotaScopes: store.quotaScopes(sinceMs),
    };
  } finally {
    store.close();
  }
}

export function formatReport(r: UsageReport, format: ReportFormat): string {
  if (format === 'json') return JSON.stringify(r, null, 2) + '\n';
  if (format === 'csv') {
    const lines = ['kind,name,sessions,up,down,total'];
    const row = (kind: string, name: string, sessions: number | string, up: number, down: number): string =>
      [kind, csvField(name), sessions, up, down, up + down].join(',');
    for (const u of r.users) lines.push(row('user', u.name, u.sessions, u.up, u.down));
    for (const d of r.destinations) lines.push(row('destination', d.name, d.sessions, d.up, d.down));
    for (const q of r.quotaScopes) lines.push(row('quota', q.scope, '', q.up, q.down));
    return lines.join('\n') + '\n';
  }
  const out: string[] = [`usage${r.since ? ` since ${r.since}` : ''}`, ''];
  const table = (title: string, rows: Array<{ name: string; sessions?: number; up: number; down: number }>): void => {
    const body = rows.map((x) => [x.name, x.sessions === undefined ? '' : String(x.sessions), bytes(x.up), bytes(x.down), bytes(x.up + x.down)]);
    const head = [title, 'sessions', 'up', 'down', 'total'];
    const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
    const line = (cells: string[]): string =>
      cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
    out.push(line(head));
    out.push(widths.map((w) => '-'.repeat(w)).join('  '));
    if (body.length === 0) out.push('(none)');
    for (const b of body) out.push(line(b));
    out.push('');
  };
  table('user', r.users);
  table('destination', r.destinations);
  table('quota scope', r.quotaScopes.map((q) => ({ name: q.scope, up: q.up, down: q.down })));
  return out.join('\n');
}

/** Bytes for people: exact below 1 KiB, else one decimal with a binary unit (and the exact count). */
function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]} (${n})`;
}

function csvField(s: string): string {
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}
