// Summarise a V8 .cpuprofile: self time by function (top N) and inclusive time of chosen frames.
// usage: node bench/cpuprofile-summary.mjs FILE.cpuprofile [N]
import { readFileSync } from 'node:fs';
const [file, nArg] = process.argv.slice(2);
const p = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const self = new Map();
const dt = p.timeDeltas;
const counts = new Map();
for (let i = 0; i < p.samples.length; i++) counts.set(p.samples[i], (counts.get(p.samples[i]) ?? 0) + (dt[i] ?? 0));
let total = 0;
const label = (n) => `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.replace(/^.*\/(node_modules|src)\//, '$1/').replace(/^node:/, '')}:${n.callFrame.lineNumber + 1}`;
const incl = new Map();
for (const [id, t] of counts) {
  total += t;
  const n = byId.get(id);
  const l = label(n);
  self.set(l, (self.get(l) ?? 0) + t);
  const seen = new Set();
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const lab = label(byId.get(cur));
    if (seen.has(lab)) continue;
    seen.add(lab);
    incl.set(lab, (incl.get(lab) ?? 0) + t);
  }
}
const idle = [...self].filter(([l]) => l.startsWith('(idle)')).reduce((a, [, t]) => a + t, 0);
const busy = total - idle;
console.log(`total ${(total / 1e6).toFixed(2)} s, busy ${(busy / 1e6).toFixed(2)} s`);
const N = Number(nArg ?? 30);
console.log('\n-- self time (% of busy) --');
for (const [l, t] of [...self].sort((a, b) => b[1] - a[1]).slice(0, N)) console.log(`${((100 * t) / busy).toFixed(1).padStart(5)}%  ${l}`);
console.log('\n-- inclusive, frames from src/ and http-cache-semantics (% of busy) --');
for (const [l, t] of [...incl].filter(([l]) => /src\/|node_modules\/http-cache/.test(l)).sort((a, b) => b[1] - a[1]).slice(0, N))
  console.log(`${((100 * t) / busy).toFixed(1).padStart(5)}%  ${l}`);
