/**
 * The properties every fuzz target checks beyond "does not throw": the parsers' own promise that
 * they are pure and incremental (docs/testing.md). A broken property throws, which the fuzzer
 * reports as a crash with the input that broke it.
 */
import { isDeepStrictEqual, inspect } from 'node:util';
import type { ParseResult } from '../../src/wire/socks.js';
import type { SniffVerdict } from '../../src/sniff/index.js';

export class PropertyError extends Error {
  override name = 'PropertyError';
}

export function check(cond: unknown, what: string, detail?: unknown): asserts cond {
  if (!cond) throw new PropertyError(detail === undefined ? what : `${what}: ${inspect(detail, { depth: 6 })}`);
}

/** A few cut points of `buf`: the places where one more byte could change an answer. */
export function cuts(buf: Buffer): number[] {
  const n = buf.length;
  if (n === 0) return [];
  const out = new Set([0, 1, n >> 1, n - 1, Math.max(0, n - 2), buf[0]! % n, buf[n - 1]! % n]);
  return [...out].filter((c) => c >= 0 && c < n);
}

/**
 * A SOCKS-style incremental parser: a prefix says need-more or the answer the whole buffer gives;
 * an accepted message is complete by itself (parsing only its bytes gives the same value) and
 * bytes after it (pipelining) do not change it.
 */
export function incrementalParser<T>(name: string, parse: (b: Buffer) => ParseResult<T>, buf: Buffer): ParseResult<T> {
  const full = parse(buf);
  if (full.status === 'ok') {
    check(full.consumed >= 1 && full.consumed <= buf.length, `${name}: consumed outside 1..length`, { consumed: full.consumed, length: buf.length });
    const alone = parse(Buffer.from(buf.subarray(0, full.consumed)));
    check(isDeepStrictEqual(alone, full), `${name}: the message alone parses differently`, { alone, full });
    const more = parse(Buffer.concat([buf, Buffer.from([0x05, 0x01, 0x00])]));
    check(isDeepStrictEqual(more, full), `${name}: bytes after the message changed the answer`, { more, full });
  }
  for (const c of cuts(buf)) {
    const p = parse(Buffer.from(buf.subarray(0, c)));
    if (p.status === 'need-more') continue;
    if (p.status === 'error') check(full.status === 'error' && full.code === p.code, `${name}: a prefix of ${c} bytes is an error, the whole is not`, { prefix: p, full });
    else check(isDeepStrictEqual(p, full), `${name}: a prefix of ${c} bytes is accepted differently`, { prefix: p, full });
  }
  return full;
}

/** A sniffer: a final answer (match or no-match) for a prefix never changes with more bytes. */
export function monotoneSniffer(name: string, sniff: (b: Buffer) => SniffVerdict, buf: Buffer): SniffVerdict {
  const full = sniff(buf);
  for (const c of cuts(buf)) {
    const p = sniff(Buffer.from(buf.subarray(0, c)));
    if (p.verdict === 'need-more') continue;
    check(isDeepStrictEqual(p, full), `${name}: the answer for ${c} bytes changed with more bytes`, { prefix: p, full });
  }
  const again = sniff(Buffer.from(buf));
  check(isDeepStrictEqual(again, full), `${name}: not a pure function of its bytes`, { again, full });
  return full;
}

/** Splits `data` into lines at LF (the LF kept), as the taps' line readers do. */
export function splitLines(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (;;) {
    const lf = data.indexOf(0x0a, start);
    if (lf < 0) break;
    out.push(data.subarray(start, lf + 1));
    start = lf + 1;
  }
  if (start < data.length) out.push(data.subarray(start));
  return out;
}

/** Throws unless `fn` returns or throws an instance of `allowed`. */
export function onlyThrows<T>(allowed: new (...args: never[]) => Error, what: string, fn: () => T): T | undefined {
  try {
    return fn();
  } catch (err) {
    if (err instanceof allowed) return undefined;
    throw new PropertyError(`${what} threw ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  }
}
