/**
 * Configuration texts (src/config/hostlist.ts, src/config/units.ts): a bad value is a
 * ConfigError, never another exception; a host list answers yes or no for any target; sizes and
 * durations are safe non-negative integers.
 */
import { parseHostList } from '../../../src/config/hostlist.js';
import { ConfigError } from '../../../src/config/types.js';
import { parseCount, parseDuration, parsePort, parseSize } from '../../../src/config/units.js';
import { check, onlyThrows } from '../invariants.js';

export const maxLen = 2048;
export const dictionary = ['*', '!', ',', '.', '.localnet', '127.0.0.0/8', '[::1]', ':80', ':1-1024/8080', '::ffff:10.0.0.0/104', '*.example.com', 'alice@', '*@', 'http://', '/*', 'readonly', '{', '}', 'ms', 's', 'k', 'm', 'g', 'ib', '.5'];

export function seeds(): Buffer[] {
  return [
    '*.example.com,.example.org,10.0.0.0/8,[::1]:80,!bad.example.com,.localnet',
    '!a.example,!b.example',
    'alice@*.example.com:443,*@[2001:db8::]/32:1-1024/8080,http://*.example.com/private/*,readonly',
    '{127.0.0.1,::ffff:10.0.0.0/104,LOCALHOST.}',
    '300ms',
    '1.5g',
  ].map((s) => Buffer.from(s, 'latin1'));
}

const PROBES = [
  { host: '127.0.0.1', port: 80 },
  { host: 'www.example.com', port: 443, user: 'alice', url: 'http://www.example.com/private/x', addresses: ['10.1.2.3', '::1'] },
  { host: '[::1]', port: 8080, access: 'write' as const },
  { host: 'LOCALHOST.', port: 1 },
  { host: '::ffff:10.0.0.1' },
];

export function fuzz(data: Buffer): void {
  const text = data.toString('latin1');
  const list = onlyThrows(ConfigError, 'parseHostList', () => parseHostList(text, 'FUZZ'));
  if (list) {
    for (const p of PROBES) check(typeof list.matches(p) === 'boolean', 'a host list answers yes or no', p);
    check(list.toString() === text, 'a host list keeps its text');
  }
  for (const [name, parse] of [
    ['parseDuration', parseDuration],
    ['parseSize', parseSize],
    ['parseCount', parseCount],
    ['parsePort', parsePort],
  ] as const) {
    const v = onlyThrows(ConfigError, name, () => parse(text, 'FUZZ'));
    if (v !== undefined) check(Number.isSafeInteger(v) && v >= 0, `${name} gives a safe non-negative integer`, { text, v });
    if (v !== undefined && name === 'parsePort') check(v <= 65535, 'a port', v);
  }
}
