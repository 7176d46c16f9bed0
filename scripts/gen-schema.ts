/**
 * Writes schema/sockstap.schema.json from the zod schema of the YAML form (src/config/schema.ts).
 * Run: `npx tsx scripts/gen-schema.ts`; with `--check` it only reports whether the file is current.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { configJsonSchemaText } from '../src/config/schema.js';

const target = fileURLToPath(new URL('../schema/sockstap.schema.json', import.meta.url));
const text = configJsonSchemaText();

if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(target, 'utf8');
  } catch {
    // A missing file is simply out of date.
  }
  if (current !== text) {
    process.stderr.write(`${target} is out of date; run npx tsx scripts/gen-schema.ts\n`);
    process.exit(1);
  }
} else {
  writeFileSync(target, text);
  process.stdout.write(`wrote ${target}\n`);
}
