/**
 * The one bounded line reader every line protocol tap uses (FTP, SMTP, POP3, IMAP, NNTP).
 * It splits a byte stream into lines ending in LF (CRLF or bare LF, as servers in the wild send),
 * hands each complete line with its terminator, and can switch to counting raw bytes (IMAP
 * literals `{n}`, a DATA body the caller wants to pass through in bulk). A line longer than the
 * cap is an error the tap answers in its protocol's terms (RFC 5321 §4.5.3.1.4 "line too long"),
 * never an unbounded buffer.
 */

export type LineItem =
  | { kind: 'line'; /** the line with its terminator */ bytes: Buffer }
  | { kind: 'raw'; bytes: Buffer };

export class LineTooLongError extends Error {
  readonly code = 'ELINETOOLONG';
  constructor(readonly limit: number) {
    super(`line longer than ${limit} bytes`);
  }
}

export class LineReader {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Raw bytes still to hand over before lines resume. */
  private rawLeft = 0;

  constructor(private readonly maxLineBytes: number) {}

  /** After the current item, treat the next `n` bytes as raw (an IMAP literal). */
  expectRaw(n: number): void {
    this.rawLeft += n;
  }

  /** Bytes held that do not yet form a complete line. */
  get buffered(): number {
    return this.pendingBytes;
  }

  /** Take whatever is held (for a switch to plain relaying, e.g. after STARTTLS). */
  drain(): Buffer {
    const b = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    return b;
  }

  /**
   * Feed a chunk; `onItem` is called for every complete line or raw piece, in order. `onItem` may
   * call `expectRaw()` to make the bytes right after the line raw. Throws LineTooLongError.
   */
  push(chunk: Buffer, onItem: (item: LineItem) => void): void {
    let data = chunk;
    if (this.pendingBytes > 0) {
      data = Buffer.concat([...this.pending, chunk], this.pendingBytes + chunk.length);
      this.pending = [];
      this.pendingBytes = 0;
    }
    let start = 0;
    while (start < data.length) {
      if (this.rawLeft > 0) {
        const n = Math.min(this.rawLeft, data.length - start);
        this.rawLeft -= n;
        onItem({ kind: 'raw', bytes: data.subarray(start, start + n) });
        start += n;
        continue;
      }
      const lf = data.indexOf(0x0a, start);
      if (lf < 0) break;
      if (lf + 1 - start > this.maxLineBytes) throw new LineTooLongError(this.maxLineBytes);
      onItem({ kind: 'line', bytes: data.subarray(start, lf + 1) });
      start = lf + 1;
    }
    if (start < data.length) {
      const rest = data.subarray(start);
      if (rest.length > this.maxLineBytes) throw new LineTooLongError(this.maxLineBytes);
      // Copy: the caller's chunk may be a reused buffer.
      this.pending.push(Buffer.from(rest));
      this.pendingBytes = rest.length;
    }
  }
}

/** The text of a line without its CRLF / LF, as latin1 (bytes kept 1:1). */
export function lineText(bytes: Buffer): string {
  let end = bytes.length;
  if (end > 0 && bytes[end - 1] === 0x0a) end--;
  if (end > 0 && bytes[end - 1] === 0x0d) end--;
  return bytes.toString('latin1', 0, end);
}
