/**
 * `npm run fuzz [TARGET...]`: fuzzes each target (all of test/fuzz/targets/ by default) for
 * FUZZ_SECONDS (default 60) and writes the minimised corpus back to test/fuzz/corpus/TARGET/, a
 * crash or hang to test/fuzz/crashes/. Exits 1 on any finding. FUZZ_TIMEOUT_MS is the per-input
 * limit (default 2000), FUZZ_SEED fixes the mutation sequence.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runFuzz } from './engine.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const TARGETS = readdirSync(path.join(here, 'targets'))
  .filter((f) => f.endsWith('.ts'))
  .map((f) => f.slice(0, -3))
  .sort();

async function main(): Promise<void> {
  const names = process.argv.slice(2).length ? process.argv.slice(2) : TARGETS;
  const seconds = Number(process.env.FUZZ_SECONDS ?? 60);
  const timeoutMs = Number(process.env.FUZZ_TIMEOUT_MS ?? 2000);
  const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined;
  let failed = 0;
  console.log('target      seconds      execs   exec/s  counters covered features corpus   bytes  result');
  for (const name of names) {
    if (!TARGETS.includes(name)) throw new Error(`no fuzz target ${name}; targets: ${TARGETS.join(' ')}`);
    const r = await runFuzz({ target: name, seconds, timeoutMs, save: true, seed });
    const verdict = r.finding ? `${r.finding.kind.toUpperCase()} ${r.finding.file}` : 'ok';
    console.log(
      `${name.padEnd(10)} ${r.seconds.toFixed(1).padStart(8)} ${String(r.execs).padStart(10)} ${String(Math.round(r.execs / r.seconds)).padStart(8)}` +
        ` ${String(r.counters).padStart(9)} ${String(r.covered).padStart(7)} ${String(r.features).padStart(8)} ${String(r.corpus).padStart(6)} ${String(r.corpusBytes).padStart(7)}  ${verdict}`,
    );
    if (r.finding) {
      failed++;
      console.log(`  ${r.finding.message.split('\n').slice(0, 8).join('\n  ')}`);
      console.log(`  input (${r.finding.input.length} bytes): ${JSON.stringify(r.finding.input.toString('latin1').slice(0, 300))}`);
    }
  }
  process.exitCode = failed ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
