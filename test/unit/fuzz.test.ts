/**
 * The fuzz targets (test/fuzz/targets/) inside `npm test`: each replays its committed corpus and
 * fuzzes for FUZZ_SECONDS (default 2) with a per-input limit of FUZZ_TIMEOUT_MS (default 2000).
 * A crash (an exception or a broken property) or a hang fails with the input that caused it.
 * `npm run fuzz` runs the same targets longer and grows the corpus.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { runFuzz } from '../fuzz/engine.js';
import { TARGETS } from '../fuzz/run.js';

const seconds = Number(process.env.FUZZ_SECONDS ?? 2);
const timeoutMs = Number(process.env.FUZZ_TIMEOUT_MS ?? 2000);

describe('coverage-guided fuzzing of the pure parsers', () => {
  for (const target of TARGETS) {
    test(target, async () => {
      const r = await runFuzz({ target, seconds, timeoutMs, seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined });
      if (r.finding) {
        assert.fail(
          `${target}: ${r.finding.kind} after ${r.execs} inputs (saved as ${r.finding.file}):\n${r.finding.message}\n` +
            `input (${r.finding.input.length} bytes, hex): ${r.finding.input.toString('hex').slice(0, 2000)}`,
        );
      }
      assert.ok(r.execs > 0 && r.covered > 0, `${target}: the target ran and reached code (${r.execs} inputs, ${r.covered} counters)`);
    });
  }
});
