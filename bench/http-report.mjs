// The HTTP hit table of bench/run-http.sh: one line per server and file, from the shared
// harness's JSONL (name, file, rps, p99_ms, origin_requests, proxy CPU if measured), with each
// sockstap figure as a ratio to Squid and to Varnish measured in the same run.
// usage: node bench/http-report.mjs RESULTS.jsonl
import { readFileSync } from 'node:fs';
const rows = readFileSync(process.argv[2], 'utf8')
  .split('\n')
  .filter((l) => l.trim().startsWith('{'))
  .map((l) => JSON.parse(l));
const by = (name, file) => rows.find((r) => r.name === name && r.file === file);
const files = [...new Set(rows.map((r) => r.file))];
const names = [...new Set(rows.map((r) => r.name))];
const fmt = (n, d = 0) => (typeof n === 'number' && Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : '-');
const ratio = (a, b) => (a && b ? `${(a / b).toFixed(2)}×` : '-');
const load = rows.map((r) => r.load1).filter((x) => typeof x === 'number');
console.log(`HTTP cache hits, wrk ${rows[0]?.threads ?? '?'} threads, ${rows[0]?.conns ?? '?'} connections; load average 1 min during the runs: ${load.length ? `${Math.min(...load)}–${Math.max(...load)}` : '?'}`);
console.log('');
console.log('| server | file | req/s | p99 ms | origin requests | req/s vs Squid | req/s vs Varnish | p99 vs Squid |');
console.log('|---|---|---|---|---|---|---|---|');
for (const f of files) {
  const squid = by('squid', f);
  const varnish = by('varnish', f);
  for (const n of names) {
    const r = by(n, f);
    if (!r) continue;
    console.log(
      `| ${n} | ${f} | ${fmt(r.rps)} | ${fmt(r.p99_ms, 1)} | ${r.origin_requests ?? '-'} | ${ratio(r.rps, squid?.rps)} | ${ratio(r.rps, varnish?.rps)} | ${ratio(r.p99_ms, squid?.p99_ms)} |`,
    );
  }
}
