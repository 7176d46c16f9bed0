import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError } from '../../src/config/types.js';
import { parseDuration, parsePort, parseSize } from '../../src/config/units.js';

test('durations in DeleGate units; a bare number is seconds', () => {
  assert.equal(parseDuration('300ms', 'T'), 300);
  assert.equal(parseDuration('30s', 'T'), 30_000);
  assert.equal(parseDuration('2m', 'T'), 120_000);
  assert.equal(parseDuration('1h', 'T'), 3_600_000);
  assert.equal(parseDuration('1d', 'T'), 86_400_000);
  assert.equal(parseDuration('15', 'T'), 15_000);
  assert.equal(parseDuration('1.5s', 'T'), 1500);
  assert.equal(parseDuration('0', 'T'), 0);
});

test('sizes with k = 1024; a bare number is bytes', () => {
  assert.equal(parseSize('512k', 'S'), 512 * 1024);
  assert.equal(parseSize('64m', 'S'), 64 * 1024 ** 2);
  assert.equal(parseSize('1g', 'S'), 1024 ** 3);
  assert.equal(parseSize('1G', 'S'), 1024 ** 3);
  assert.equal(parseSize('1000', 'S'), 1000);
  assert.equal(parseSize('2mb', 'S'), 2 * 1024 ** 2);
});

test('bad durations and sizes name the parameter and what was expected', () => {
  for (const bad of ['', 'x', '2x', '-1s', '1e3', 's', '1 2s', '9'.repeat(400)]) {
    assert.throws(() => parseDuration(bad, 'TIMEOUT'), (e: unknown) => e instanceof ConfigError && e.param === 'TIMEOUT' && /duration/.test(e.message), bad);
  }
  for (const bad of ['', 'k', '1x', '-5', '1.2.3m', '9'.repeat(400) + 'g']) {
    assert.throws(() => parseSize(bad, 'CACHESIZE'), (e: unknown) => e instanceof ConfigError && e.message.startsWith('CACHESIZE: '), bad);
  }
});

test('ports', () => {
  assert.equal(parsePort('0', 'P'), 0);
  assert.equal(parsePort('65535', 'P'), 65535);
  assert.throws(() => parsePort('65536', 'P'), ConfigError);
  assert.throws(() => parsePort('8o', 'P'), ConfigError);
});
