#!/usr/bin/env node
// The table of bench/run-tls.sh: per proxy and measure, the mean over the rounds of requests per
// second, with the ratio to Squid ssl-bump of the same run, and the origin connections made.
import { readFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) {
  console.error('usage: tls-report.mjs RESULTS.jsonl');
  process.exit(2);
}
const rows = readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const groups = new Map();
for (const r of rows) {
  const key = `${r.measure}\t${r.name}`;
  if (!groups.has(key)) groups.set(key, []);
  groups.get(key).push(r);
}
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const label = { handshakes: 'new tunnel + TLS handshake (warm leaf) + one cached GET, per s', hits: 'HTTPS cache hits per s (keep-alive)' };
const out = [`# TLS interception beside Squid ssl-bump (${file.split('/').pop()})`, ''];
out.push('| measure | proxy | req/s (mean) | runs | vs Squid | p50 | p99 | origin connections per run | tunnels intercepted per run | errors |');
out.push('|---|---|---:|---:|---:|---|---|---:|---:|---:|');
for (const measure of ['handshakes', 'hits']) {
  const squid = groups.get(`${measure}\tsquid`);
  const squidRps = squid ? mean(squid.map((r) => r.rps)) : null;
  for (const name of ['squid', 'sockstap', 'sockstap-dialfirst']) {
    const g = groups.get(`${measure}\t${name}`);
    if (!g) continue;
    const rps = mean(g.map((r) => r.rps));
    const ratio = squidRps ? (rps / squidRps).toFixed(2) : '-';
    const errors = g.reduce((n, r) => n + r.non2xx + r.socketErrors, 0);
    out.push(`| ${label[measure]} | ${name} | ${rps.toFixed(0)} | ${g.length} | ${ratio} | ${g.map((r) => r.p50).join(', ')} | ${g.map((r) => r.p99).join(', ')} | ${g.map((r) => r.originConnections).join(', ')} | ${name === 'squid' ? '(all bumped)' : g.map((r) => r.intercepted).join(', ')} | ${errors} |`);
  }
}
out.push('', `Load average during the runs: ${[...new Set(rows.map((r) => r.loadavg))].join('; ')} (2 shared cores).`);
console.log(out.join('\n'));
