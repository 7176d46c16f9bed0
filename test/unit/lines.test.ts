import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LineReader, LineTooLongError, lineText, type LineItem } from '../../src/net/lines.js';

function collect(reader: LineReader, chunks: Buffer[], onLine?: (text: string, r: LineReader) => void): LineItem[] {
  const items: LineItem[] = [];
  for (const c of chunks) {
    reader.push(c, (item) => {
      items.push({ kind: item.kind, bytes: Buffer.from(item.bytes) });
      if (item.kind === 'line') onLine?.(lineText(item.bytes), reader);
    });
  }
  return items;
}

describe('LineReader', () => {
  test('splits CRLF and bare LF lines, byte at a time, keeping every byte', () => {
    const input = Buffer.from('USER alice\r\nPASS x\nQUIT\r\npartial');
    const bytes = [...input].map((b) => Buffer.from([b]));
    const r = new LineReader(64);
    const items = collect(r, bytes);
    assert.deepEqual(items.map((i) => lineText(i.bytes)), ['USER alice', 'PASS x', 'QUIT']);
    assert.equal(Buffer.concat([...items.map((i) => i.bytes), r.drain()]).toString(), input.toString());
  });

  test('raw mode follows an IMAP literal exactly, in any chunking', () => {
    const input = Buffer.from('a1 LOGIN {5}\r\nab\r\nc secret\r\na2 NOOP\r\n');
    for (let size = 1; size <= input.length; size++) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < input.length; i += size) chunks.push(input.subarray(i, i + size));
      const items = collect(new LineReader(128), chunks, (text, r) => {
        const m = /\{(\d+)\}$/.exec(text);
        if (m) r.expectRaw(Number(m[1]));
      });
      const raw = Buffer.concat(items.filter((i) => i.kind === 'raw').map((i) => i.bytes)).toString();
      assert.equal(raw, 'ab\r\nc', `chunk size ${size}`);
      const lines = items.filter((i) => i.kind === 'line').map((i) => lineText(i.bytes));
      assert.deepEqual(lines, ['a1 LOGIN {5}', ' secret', 'a2 NOOP'], `chunk size ${size}`);
    }
  });

  test('a line over the cap throws, whether complete or still open', () => {
    assert.throws(() => collect(new LineReader(8), [Buffer.from('0123456789\r\n')]), LineTooLongError);
    assert.throws(() => collect(new LineReader(8), [Buffer.from('0123456789')]), LineTooLongError);
  });

  test('random input in random chunks: lines + rest reassemble the input', () => {
    let seed = 42;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 200; round++) {
      const input = Buffer.from(Array.from({ length: rand(400) }, () => (rand(10) === 0 ? 0x0a : rand(256))));
      const chunks: Buffer[] = [];
      for (let i = 0; i < input.length; ) {
        const n = 1 + rand(40);
        chunks.push(input.subarray(i, i + n));
        i += n;
      }
      const r = new LineReader(1024);
      const items = collect(r, chunks);
      assert.ok(Buffer.concat([...items.map((i) => i.bytes), r.drain()]).equals(input));
    }
  });
});
