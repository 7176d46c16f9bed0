/**
 * TLS ClientHello (RFC 8446 §4.1.2, same layout in TLS 1.0–1.2) read from the client's first
 * records: the handshake message may be split over several records (RFC 8446 §5.1) and several
 * reads. Only server_name (RFC 6066 §3) and application_layer_protocol_negotiation (RFC 7301
 * §3.1) are taken out. Anything malformed is 'no-match': the caller relays it raw, untouched.
 */
import { match, NEED_MORE, NO_MATCH, type SniffInfo, type SniffVerdict } from './types.js';

/** RFC 8446 §5.1 ContentType handshake(22). */
const CONTENT_HANDSHAKE = 22;
/** RFC 8446 §4 HandshakeType client_hello(1). */
const CLIENT_HELLO = 1;
/** RFC 8446 §5.1: TLSPlaintext.length MUST NOT exceed 2^14. */
const MAX_RECORD = 16 * 1024;
/** Largest ClientHello body accepted; real ones (with post-quantum key shares) are below 2 KiB. */
export const MAX_CLIENT_HELLO = 16 * 1024;
const RECORD_HEADER = 5;
const HANDSHAKE_HEADER = 4;
/** RFC 6066 §3 ExtensionType server_name(0); RFC 7301 §3.1 application_layer_protocol_negotiation(16). */
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
/** RFC 6066 §3 NameType host_name(0). */
const NAME_HOST = 0;

/**
 * Reads the ClientHello from the start of the client's bytes. 'need-more' while the records seen
 * so far are a valid beginning; 'match' with SNI and ALPN once the whole handshake message is in.
 */
export function parseClientHello(bytes: Uint8Array): SniffVerdict {
  const hello = Buffer.allocUnsafe(Math.min(MAX_CLIENT_HELLO + HANDSHAKE_HEADER, bytes.length));
  let have = 0;
  let off = 0;
  for (;;) {
    // Record header: ContentType, ProtocolVersion legacy_record_version, uint16 length.
    const headerBytes = Math.min(RECORD_HEADER, bytes.length - off);
    if (headerBytes >= 1 && bytes[off] !== CONTENT_HANDSHAKE) return NO_MATCH;
    // legacy_record_version is 0x0301 (or 0x0300..0x0303 from older stacks); never above 0x0304.
    if (headerBytes >= 2 && bytes[off + 1] !== 3) return NO_MATCH;
    if (headerBytes >= 3 && bytes[off + 2]! > 4) return NO_MATCH;
    if (headerBytes < RECORD_HEADER) return NEED_MORE;
    const length = (bytes[off + 3]! << 8) | bytes[off + 4]!;
    // RFC 8446 §5.1: no zero-length handshake fragments, no record over 2^14.
    if (length === 0 || length > MAX_RECORD) return NO_MATCH;
    const start = off + RECORD_HEADER;
    const available = Math.min(length, bytes.length - start);
    // Bytes past the cap can never be part of an accepted ClientHello: stop copying there.
    const take = Math.min(available, hello.length - have);
    hello.set(bytes.subarray(start, start + take), have);
    have += take;
    if (have >= 1 && hello[0] !== CLIENT_HELLO) return NO_MATCH;
    if (have >= HANDSHAKE_HEADER) {
      const bodyLength = readUint24(hello, 1);
      if (bodyLength > MAX_CLIENT_HELLO) return NO_MATCH;
      if (have >= HANDSHAKE_HEADER + bodyLength) {
        return parseClientHelloBody(hello.subarray(HANDSHAKE_HEADER, HANDSHAKE_HEADER + bodyLength));
      }
    }
    if (available < length) return NEED_MORE;
    // RFC 8446 §5.1: a handshake message split over records has no other record type in between;
    // the next record must continue it (checked by the header tests above).
    off = start + length;
  }
}

function readUint24(b: Uint8Array, at: number): number {
  return (b[at]! << 16) | (b[at + 1]! << 8) | b[at + 2]!;
}

/** Bounds-checked reader over one opaque vector; any overrun makes the hello malformed. */
class Reader {
  constructor(
    private readonly b: Uint8Array,
    public pos = 0,
    private readonly end = b.length,
  ) {}
  get left(): number {
    return this.end - this.pos;
  }
  u8(): number {
    if (this.left < 1) throw MALFORMED;
    return this.b[this.pos++]!;
  }
  u16(): number {
    if (this.left < 2) throw MALFORMED;
    const v = (this.b[this.pos]! << 8) | this.b[this.pos + 1]!;
    this.pos += 2;
    return v;
  }
  /** The next `n` bytes as a reader of their own. */
  sub(n: number): Reader {
    if (this.left < n) throw MALFORMED;
    const r = new Reader(this.b, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }
  skip(n: number): void {
    if (this.left < n) throw MALFORMED;
    this.pos += n;
  }
  text(n: number): string {
    if (this.left < n) throw MALFORMED;
    const s = Buffer.from(this.b.buffer, this.b.byteOffset + this.pos, n).toString('latin1');
    this.pos += n;
    return s;
  }
}

/** Thrown only inside this module and caught in parseClientHelloBody: no caller sees it. */
const MALFORMED = new Error('malformed ClientHello');

/** RFC 1123 host name characters; RFC 6066 §3: ASCII, no trailing dot. '_' is seen in the wild. */
const HOST_NAME = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;

function parseClientHelloBody(body: Uint8Array): SniffVerdict {
  try {
    const r = new Reader(body);
    r.skip(2); // legacy_version
    r.skip(32); // random
    const sessionId = r.u8();
    if (sessionId > 32) return NO_MATCH;
    r.skip(sessionId);
    const suites = r.u16();
    if (suites < 2 || suites % 2 !== 0) return NO_MATCH;
    r.skip(suites);
    const compressions = r.u8();
    if (compressions < 1) return NO_MATCH;
    r.skip(compressions);
    const info: SniffInfo = {};
    // A TLS 1.0–1.2 ClientHello may end here, with no extensions at all.
    if (r.left === 0) return match('tls', info);
    const extensions = r.sub(r.u16());
    if (r.left !== 0) return NO_MATCH;
    const seen = new Set<number>();
    while (extensions.left > 0) {
      const type = extensions.u16();
      const data = extensions.sub(extensions.u16());
      // RFC 8446 §4.2: no more than one extension of the same type.
      if (seen.has(type)) return NO_MATCH;
      seen.add(type);
      if (type === EXT_SERVER_NAME) {
        // An empty extension_data is legal in a ServerHello only; a client sends a list.
        const list = data.sub(data.u16());
        if (data.left !== 0 || list.left === 0) return NO_MATCH;
        while (list.left > 0) {
          const nameType = list.u8();
          const name = list.text(list.u16());
          if (nameType !== NAME_HOST) continue;
          // RFC 6066 §3: at most one name of each type.
          if (info.sni !== undefined || name.length === 0 || !HOST_NAME.test(name)) return NO_MATCH;
          info.sni = name;
        }
      } else if (type === EXT_ALPN) {
        const list = data.sub(data.u16());
        if (data.left !== 0 || list.left < 2) return NO_MATCH;
        const protocols: string[] = [];
        while (list.left > 0) {
          const n = list.u8();
          // RFC 7301 §3.1: empty protocol names MUST NOT be included.
          if (n === 0) return NO_MATCH;
          protocols.push(list.text(n));
        }
        info.alpn = protocols;
      }
    }
    return match('tls', info);
  } catch (err) {
    if (err === MALFORMED) return NO_MATCH;
    throw err;
  }
}
