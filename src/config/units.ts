/**
 * Durations and sizes as DeleGate writes them: `300ms`, `30s`, `2m`, `1h`, `1d`; `512k`, `64m`,
 * `1g`. Parsed once at configuration time into milliseconds and bytes.
 */
import { ConfigError } from './types.js';

const DURATION_UNITS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** k = 1024, as in DeleGate and the usual `ls -h` reading. */
const SIZE_UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
};

// A number, optionally with a fraction, then an optional unit; no sign, no exponent.
const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/i;
const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i;

/** Milliseconds. A bare number means seconds (DeleGate's TIMEOUT=connect:30). */
export function parseDuration(text: string, param: string): number {
  const m = DURATION_RE.exec(text.trim());
  if (!m) {
    throw new ConfigError(param, `expected a duration such as 300ms, 30s, 2m, 1h or 1d, got ${JSON.stringify(text)}`);
  }
  const value = Number(m[1]) * DURATION_UNITS[(m[2] ?? 's').toLowerCase()]!;
  if (!Number.isSafeInteger(Math.round(value))) {
    throw new ConfigError(param, `duration ${JSON.stringify(text)} is too large`);
  }
  return Math.round(value);
}

/** Bytes. A bare number means bytes; k, m, g, t are powers of 1024 (a trailing `b`/`ib` is allowed). */
export function parseSize(text: string, param: string): number {
  const m = SIZE_RE.exec(text.trim());
  if (!m) {
    throw new ConfigError(param, `expected a size such as 512k, 64m or 1g, got ${JSON.stringify(text)}`);
  }
  const value = Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(Math.round(value))) {
    throw new ConfigError(param, `size ${JSON.stringify(text)} is too large`);
  }
  return Math.round(value);
}

/** A non-negative decimal integer (MAXIMA counts, ports). */
export function parseCount(text: string, param: string, what = 'a whole number'): number {
  const t = text.trim();
  if (!/^\d{1,15}$/.test(t)) throw new ConfigError(param, `expected ${what}, got ${JSON.stringify(text)}`);
  return Number(t);
}

/** A TCP/UDP port, 0..65535 (0 = let the system pick, for listeners). */
export function parsePort(text: string, param: string): number {
  const t = text.trim();
  const n = /^\d{1,5}$/.test(t) ? Number(t) : NaN;
  if (!(n >= 0 && n <= 65535)) throw new ConfigError(param, `expected a port 0-65535, got ${JSON.stringify(text)}`);
  return n;
}
