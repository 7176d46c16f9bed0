/**
 * The taps' line reader (src/net/lines.ts): however the stream is chunked, the items are the
 * stream's bytes, once and in order; a line ends at its LF and is at most the cap; raw pieces
 * (IMAP literals) are exactly the count asked for. The first input byte sets the cap, the second
 * the chunking; a line ending in `{n}` asks for n raw bytes.
 */
import { LineReader, LineTooLongError, lineText } from '../../../src/net/lines.js';
import { check, onlyThrows } from '../invariants.js';

export const maxLen = 1024;
export const dictionary = ['\r\n', '\n', '{5}\r\n', '{0}\r\n', '{12}\n', '{+}', 'a1 LOGIN {5}\r\n'];

export function seeds(): Buffer[] {
  return [
    '\x20\x03USER alice\r\nPASS x\nQUIT\r\npartial',
    '\x40\x07a1 LOGIN {5}\r\nab\r\nc secret\r\na2 NOOP\r\n',
    '\x00\x01' + 'x'.repeat(200) + '\r\n',
    '\x10\x00{3}\n\n\n\nend\n',
  ].map((s) => Buffer.from(s, 'latin1'));
}

interface Run {
  items: { kind: string; bytes: Buffer }[];
  rest: Buffer;
  tooLong: boolean;
}

function read(max: number, stream: Buffer, sizes: (i: number) => number): Run {
  const reader = new LineReader(max);
  const items: Run['items'] = [];
  let tooLong = false;
  for (let i = 0, k = 0; i < stream.length && !tooLong; k++) {
    const n = sizes(k);
    const chunk = stream.subarray(i, i + n);
    i += n;
    const done = onlyThrows(LineTooLongError, 'LineReader.push', () => {
      reader.push(chunk, (item) => {
        items.push({ kind: item.kind, bytes: Buffer.from(item.bytes) });
        if (item.kind === 'line') {
          const m = /\{(\d{1,4})\}$/.exec(lineText(item.bytes));
          if (m) reader.expectRaw(Number(m[1]));
        }
      });
      return true;
    });
    if (done === undefined) tooLong = true;
  }
  return { items, rest: tooLong ? Buffer.alloc(0) : reader.drain(), tooLong };
}

export function fuzz(data: Buffer): void {
  if (data.length < 2) return;
  const max = 1 + data[0]!;
  const seed = data[1]!;
  const stream = data.subarray(2);
  const whole = read(max, stream, () => stream.length || 1);
  const bytewise = read(max, stream, () => 1);
  const mixed = read(max, stream, (k) => 1 + ((seed * 31 + k * 17) % 23));
  for (const run of [whole, bytewise, mixed]) {
    let raw = 0;
    for (const it of run.items) {
      if (it.kind === 'line') {
        check(it.bytes.length <= max && it.bytes[it.bytes.length - 1] === 0x0a && it.bytes.indexOf(0x0a) === it.bytes.length - 1, 'a line is one LF-terminated line within the cap', { max, line: it.bytes.toString('latin1') });
      } else raw += it.bytes.length;
    }
    void raw;
    if (!run.tooLong) {
      const all = Buffer.concat([...run.items.map((i) => i.bytes), run.rest]);
      check(all.equals(stream), 'every byte once and in order', { got: all.length, sent: stream.length });
    }
  }
  // Chunking changes nothing: the same lines, raw bytes and verdict as in one piece.
  const flat = (r: Run): string => (r.tooLong ? 'too long' : r.items.filter((i) => i.kind === 'line').map((i) => i.bytes.toString('latin1')).join('|'));
  check(flat(bytewise) === flat(whole) || whole.tooLong || bytewise.tooLong, 'byte-at-a-time lines differ from one-chunk lines');
  check(whole.tooLong === bytewise.tooLong && whole.tooLong === mixed.tooLong, 'whether a line is too long depends on the chunking', { whole: whole.tooLong, bytewise: bytewise.tooLong, mixed: mixed.tooLong });
  if (!whole.tooLong) check(flat(mixed) === flat(whole), 'mixed chunking lines differ from one-chunk lines');
}
