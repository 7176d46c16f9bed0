/**
 * Turns one bench run (bench/results/raw/run-*.jsonl, written by bench/run.sh) into one Markdown
 * table, with each sockstap row's ratio to the best peer (microsocks or Dante) per metric.
 *
 *   node --import tsx bench/report.ts bench/results/raw/run-DATE.jsonl
 */
import { readFileSync } from 'node:fs';

interface Line {
  proxy?: string;
  env?: boolean;
  test?: string;
  [k: string]: unknown;
}

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: report.ts RUN.jsonl\n');
  process.exit(2);
}
const lines: Line[] = readFileSync(file, 'utf8')
  .split('\n')
  .filter((l) => l.trim().startsWith('{'))
  .map((l) => JSON.parse(l) as Line);
const env = lines.find((l) => l.env) ?? {};
const results = lines.filter((l) => l.proxy && l.test);

const proxies = [...new Set(results.map((l) => l.proxy!))];
const PEERS = ['microsocks', 'dante'];

/** One column: how to read it from the results, and whether more is better. */
interface Column {
  title: string;
  get(p: string): number | undefined;
  higherIsBetter: boolean;
  digits: number;
}

const pick = (p: string, test: string, field: string): number | undefined => {
  const l = results.find((r) => r.proxy === p && r.test === test);
  const v = l?.[field];
  return typeof v === 'number' && v >= 0 ? v : undefined;
};
const cpuPerGiB = (p: string, test: string): number | undefined => {
  const cpu = pick(p, test, 'proxy_cpu_s');
  const bytes = pick(p, test, 'bytes');
  return cpu !== undefined && bytes ? cpu / (bytes / 2 ** 30) : undefined;
};

const columns: Column[] = [
  { title: 'down MB/s', get: (p) => pick(p, 'bulk_down', 'mbps'), higherIsBetter: true, digits: 0 },
  { title: 'up MB/s', get: (p) => pick(p, 'bulk_up', 'mbps'), higherIsBetter: true, digits: 0 },
  { title: 'CPU-s/GiB down', get: (p) => cpuPerGiB(p, 'bulk_down'), higherIsBetter: false, digits: 2 },
  { title: 'CPU-s/GiB up', get: (p) => cpuPerGiB(p, 'bulk_up'), higherIsBetter: false, digits: 2 },
  { title: 'conn/s (50 clients)', get: (p) => pick(p, 'rate', 'conn_per_s'), higherIsBetter: true, digits: 0 },
  { title: 'under load p50 ms', get: (p) => pick(p, 'rate', 'p50_ms'), higherIsBetter: false, digits: 2 },
  { title: 'under load p99 ms', get: (p) => pick(p, 'rate', 'p99_ms'), higherIsBetter: false, digits: 2 },
  { title: 'RTT p50 µs', get: (p) => pick(p, 'lat', 'p50_us'), higherIsBetter: false, digits: 0 },
  { title: 'RTT p99 µs', get: (p) => pick(p, 'lat', 'p99_us'), higherIsBetter: false, digits: 0 },
  { title: 'connect+1st resp p50 µs', get: (p) => pick(p, 'connlat', 'p50_us'), higherIsBetter: false, digits: 0 },
  { title: 'connect+1st resp p99 µs', get: (p) => pick(p, 'connlat', 'p99_us'), higherIsBetter: false, digits: 0 },
  { title: 'RSS MiB idle tunnels', get: (p) => kib(pick(p, 'idle', 'rss_kib')), higherIsBetter: false, digits: 0 },
  { title: 'KiB/idle tunnel', get: (p) => pick(p, 'idle', 'kib_per_tunnel'), higherIsBetter: false, digits: 1 },
];

function kib(v: number | undefined): number | undefined {
  return v === undefined ? undefined : v / 1024;
}

const fmt = (v: number | undefined, digits: number): string =>
  v === undefined ? '–' : v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** Ratio of a row to the best peer, oriented so that > 1.00 always means "better than the best peer". */
function ratio(p: string, c: Column): string {
  const mine = c.get(p);
  const peers = PEERS.map((q) => c.get(q)).filter((v): v is number => v !== undefined && v > 0);
  if (mine === undefined || mine <= 0 || peers.length === 0) return '–';
  const best = c.higherIsBetter ? Math.max(...peers) : Math.min(...peers);
  return `${(c.higherIsBetter ? mine / best : best / mine).toFixed(2)}×`;
}

const out: string[] = [];
const idle = results.find((r) => r.test === 'idle')?.tunnels;
out.push(
  `## sockstap bench ${String(env.date ?? '')} — Node ${String(env.node ?? '?')}, kernel ${String(env.kernel ?? '?')}, ` +
    `${String(env.cpus ?? '?')} CPUs; microsocks ${String(env.microsocks || '?')}, Dante ${String(env.dante || '?')}`,
  '',
  `Bulk ${((Number(env.bytes) || 0) / 2 ** 20).toFixed(0)} MiB each way; idle tunnels: ${String(idle ?? '–')}. ` +
    'Ratio rows: value ÷ best of microsocks and Dante, turned so that above 1.00× is better.',
  '',
  `| proxy | ${columns.map((c) => c.title).join(' | ')} |`,
  `|---|${columns.map(() => '---:').join('|')}|`,
);
for (const p of proxies) out.push(`| ${p} | ${columns.map((c) => fmt(c.get(p), c.digits)).join(' | ')} |`);
for (const p of proxies.filter((q) => q.startsWith('sockstap') || q.startsWith('relay'))) {
  out.push(`| **${p} ÷ best peer** | ${columns.map((c) => ratio(p, c)).join(' | ')} |`);
}
const errors = results.filter((r) => typeof r.errors === 'number' && r.errors > 0);
for (const e of errors) out.push('', `Note: ${e.proxy} had ${String(e.errors)} failed connections in the rate test.`);
process.stdout.write(out.join('\n') + '\n');
