/**
 * HTTP/1.x request line (RFC 9112 §3) and the HTTP/2 prior-knowledge connection preface
 * (RFC 9113 §3.4), recognised from the client's first bytes.
 */
import { match, NEED_MORE, NO_MATCH, type SniffVerdict } from './types.js';

/** Longest request line accepted (RFC 9112 §3 recommends supporting at least 8000 octets). */
export const MAX_REQUEST_LINE = 8 * 1024;

/** RFC 9113 §3.4: the client connection preface, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n". */
export const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

const SP = 0x20;
const CR = 0x0d;
const LF = 0x0a;

/** RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;

/** RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT; only 1.x is HTTP/1 on the wire. */
const VERSION_PREFIX = Buffer.from('HTTP/1.', 'latin1');

function isDigit(b: number): boolean {
  return b >= 0x30 && b <= 0x39;
}

/** RFC 5234 VCHAR or obs-text: the request-target carries no space and no control character. */
function isVisible(b: number): boolean {
  return (b >= 0x21 && b <= 0x7e) || b >= 0x80;
}

/** Empty lines a client may send before its request line (RFC 9112 §2.2); more is not HTTP. */
const MAX_LEADING_EMPTY_LINES = 4;

/**
 * request-line = method SP request-target SP HTTP-version CRLF. Decides 'no-match' at the first
 * byte that cannot belong to one, 'match' at its LF, 'need-more' in between; a line longer than
 * MAX_REQUEST_LINE is 'no-match'.
 *
 * As lenient as the origins a tap must not be bypassed around: a bare LF ends the line (RFC 9112
 * §2.2 lets a recipient accept it), empty lines before it are skipped (§2.2: "SHOULD ignore at
 * least one empty line"), and the target may carry obs-text (bytes 0x80-0xFF, which origins take
 * as UTF-8). What the sniffer calls HTTP goes to the HTTP tap, whose parser then normalises or
 * answers 400; only bytes no origin would read as a request stay 'no-match'.
 */
export function sniffRequestLine(bytes: Uint8Array): SniffVerdict {
  const end = Math.min(bytes.length, MAX_REQUEST_LINE);
  let i = 0;
  for (let empty = 0; i < end && (bytes[i] === CR || bytes[i] === LF); ) {
    if (bytes[i] === LF && ++empty > MAX_LEADING_EMPTY_LINES) return NO_MATCH;
    if (bytes[i] === CR && i + 1 < end && bytes[i + 1] !== LF) return NO_MATCH;
    i++;
  }
  if (i === end) return end === MAX_REQUEST_LINE ? NO_MATCH : NEED_MORE;
  const methodStart = i;
  // method = token
  while (i < end && TCHAR[bytes[i]!]) i++;
  if (i === end) return end === MAX_REQUEST_LINE ? NO_MATCH : NEED_MORE;
  if (i === methodStart || bytes[i] !== SP) return NO_MATCH;
  const methodEnd = i++;
  const targetStart = i;
  while (i < end && isVisible(bytes[i]!)) i++;
  if (i === end) return end === MAX_REQUEST_LINE ? NO_MATCH : NEED_MORE;
  if (i === targetStart || bytes[i] !== SP) return NO_MATCH;
  const targetEnd = i++;
  for (let k = 0; k < VERSION_PREFIX.length; k++, i++) {
    if (i === end) return end === MAX_REQUEST_LINE ? NO_MATCH : NEED_MORE;
    if (bytes[i] !== VERSION_PREFIX[k]) return NO_MATCH;
  }
  if (i === end) return end === MAX_REQUEST_LINE ? NO_MATCH : NEED_MORE;
  if (!isDigit(bytes[i]!)) return NO_MATCH;
  i++;
  // CRLF, or a bare LF.
  if (i === end) return end === MAX_REQUEST_LINE ? NO_MATCH : NEED_MORE;
  if (bytes[i] === CR) {
    i++;
    if (i === end) return end === MAX_REQUEST_LINE ? NO_MATCH : NEED_MORE;
  }
  if (bytes[i] !== LF) return NO_MATCH;
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  return match('http', {
    method: text.toString('latin1', methodStart, methodEnd),
    target: text.toString('latin1', targetStart, targetEnd),
  });
}

/** RFC 9113 §3.4: prior knowledge starts with the 24-octet preface, nothing else. */
export function sniffHttp2Preface(bytes: Uint8Array): SniffVerdict {
  const n = Math.min(bytes.length, HTTP2_PREFACE.length);
  for (let i = 0; i < n; i++) if (bytes[i] !== HTTP2_PREFACE[i]) return NO_MATCH;
  return n === HTTP2_PREFACE.length ? match('http2', {}) : NEED_MORE;
}
