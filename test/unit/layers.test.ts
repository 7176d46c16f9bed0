/**
 * The layering rule of docs/architecture.md for the pipeline folder, checked on the import lines
 * of src/: only the wiring (sockstap.ts) imports src/pipeline/; src/pipeline/ imports nothing
 * above it (the wiring, the command line, the admin endpoint); no pipeline or core file reaches
 * into a tap's internals (the FTP correlation: the FTP tap announces its data connections through
 * the registry of expected tunnels); core/ imports nothing but config types and sniff types.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

function files(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...files(p));
    else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Every relative import of every file under src/, as paths relative to src/ (`pipeline/plan.ts`). */
function imports(): Array<{ from: string; to: string; line: string }> {
  const out: Array<{ from: string; to: string; line: string }> = [];
  for (const file of files(SRC)) {
    const from = relative(SRC, file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/^(?:import|export)\b[^;]*?\bfrom\s+'(\.{1,2}\/[^']+)'/gms)) {
      const to = normalize(join(dirname(from), m[1]!)).replace(/\.js$/, '.ts');
      out.push({ from, to, line: m[0].replace(/\s+/g, ' ') });
    }
  }
  return out;
}

const top = (p: string): string => (p.includes('/') ? p.slice(0, p.indexOf('/')) : p);
const ALL = imports();

describe('layers (docs/architecture.md)', () => {
  it('finds the import lines it checks', () => {
    assert.ok(ALL.some((i) => i.from === 'sockstap.ts' && i.to === 'pipeline/pipeline.ts'), 'sockstap.ts imports the pipeline');
    assert.ok(ALL.filter((i) => top(i.from) === 'pipeline').length > 40);
  });

  it('only sockstap.ts imports src/pipeline/', () => {
    const bad = ALL.filter((i) => top(i.to) === 'pipeline' && top(i.from) !== 'pipeline' && i.from !== 'sockstap.ts');
    assert.deepEqual(bad, []);
  });

  it('src/pipeline/ imports nothing above it', () => {
    const above = new Set(['sockstap.ts', 'cli.ts', 'cluster.ts', 'demo.ts', 'report.ts', 'admin']);
    const bad = ALL.filter((i) => top(i.from) === 'pipeline' && above.has(top(i.to)));
    assert.deepEqual(bad, []);
  });

  it("no pipeline or core file imports a tap's FTP correlation", () => {
    const bad = ALL.filter((i) => (top(i.from) === 'pipeline' || top(i.from) === 'core') && i.to === 'taps/ftp/correlate.ts');
    assert.deepEqual(bad, []);
  });

  it('core/ stands on config and sniff types only', () => {
    const bad = ALL.filter((i) => top(i.from) === 'core' && !['core', 'config', 'sniff'].includes(top(i.to)));
    assert.deepEqual(bad, []);
  });
  it('the pure codecs (src/wire/) stand on core/ alone, and net/ never imports a door', () => {
    const codecs = ALL.filter((i) => top(i.from) === 'wire' && !['wire', 'core'].includes(top(i.to)));
    assert.deepEqual(codecs, []);
    const net = ALL.filter((i) => top(i.from) === 'net' && top(i.to) === 'frontdoors');
    assert.deepEqual(net, []);
  });

  it("Node's internals (_handle, kBuffer) are reached only from src/native/", () => {
    const bad: string[] = [];
    for (const file of files(SRC)) {
      const from = relative(SRC, file);
      if (top(from) === 'native') continue;
      const code = readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => !/^\s*(\*|\/\/|\/\*)/.test(l))
        .join('\n');
      if (/\b_handle\b|'kBuffer(Cb|Gen)?'/.test(code)) bad.push(from);
    }
    assert.deepEqual(bad, []);
  });
});
