/**
 * HAProxy's PROXY protocol (https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt), both
 * versions, as pure functions over bytes: `parseProxyHeader` reads the header a load balancer puts
 * in front of a connection, `encodeProxyHeader` writes one for an upstream hop.
 *
 * - v1 (text): `PROXY TCP4|TCP6|UNKNOWN SRC DST SRCPORT DSTPORT\r\n`, at most 107 bytes.
 * - v2 (binary): the 12-byte signature, version/command, family/transport, a 16-bit length, the
 *   address block (12 bytes for IPv4, 36 for IPv6, 216 for UNIX) and then TLVs, which are checked
 *   for bounds and otherwise skipped (their number is kept for the log).
 *
 * A header that says nothing about the client (v2 LOCAL, a health check; v1 UNKNOWN; v2 UNSPEC or
 * UNIX) comes back with `source: null`: the connection's own endpoints stand, as the spec says.
 *
 * The parser is incremental like the SOCKS parsers (wire/socks.ts): `need-more` until
 * the header is complete, then `ok` with the bytes consumed (what follows is the client's), or an
 * `error` as soon as the bytes cannot be a header; a prefix never answers differently from the
 * whole. Bounded: v1 errs past 107 bytes without CRLF, v2 past `PROXY_V2_MAX` in all.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { ParseResult } from '../wire/socks.js';

export const PROXY_V1_MAX = 107;
/** The most a v2 header may take here (16 + length): room for TLVs of AWS, GCP and HAProxy's SSL block. */
export const PROXY_V2_MAX = 16 + 4096;
/** The v2 signature: `\r\n\r\n\0\r\nQUIT\n`. */
export const PROXY_V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');

export interface ProxyEndpoint {
  address: string;
  port: number;
}

export interface ProxyHeader {
  version: 1 | 2;
  /** v2 LOCAL (the balancer's own connection, a health check); v1 is always 'proxy'. */
  command: 'proxy' | 'local';
  /** What the header carries: tcp4/tcp6 addresses, or none (v1 UNKNOWN, v2 UNSPEC/UNIX/LOCAL). */
  family: 'tcp4' | 'tcp6' | 'unspec';
  /** The client as the balancer saw it; null: keep the connection's endpoints. */
  source: ProxyEndpoint | null;
  /** The address the client connected to (the balancer's frontend). */
  destination: ProxyEndpoint | null;
  /** v2: TLVs present (skipped). */
  tlvs: number;
}

const NEED_MORE = { status: 'need-more' } as const;

function fail(reason: string): { status: 'error'; code: 'EPROTO'; reason: string } {
  return { status: 'error', code: 'EPROTO', reason };
}

/** Whether `buf` agrees with `sig` on their common length. */
function prefixOf(buf: Buffer, sig: Buffer): boolean {
  const n = Math.min(buf.length, sig.length);
  return buf.subarray(0, n).equals(sig.subarray(0, n));
}

/**
 * Whether the first bytes of a connection are (or begin) a PROXY header: 'yes', 'no', or
 * 'maybe' while too few bytes have come to say. For sources not allowed to send one.
 */
export function sniffProxyHeader(buf: Buffer): 'yes' | 'no' | 'maybe' {
  if (buf.length === 0) return 'maybe';
  if (prefixOf(buf, PROXY_V2_SIGNATURE)) return buf.length >= PROXY_V2_SIGNATURE.length ? 'yes' : 'maybe';
  if (prefixOf(buf, V1_PREFIX)) return buf.length >= V1_PREFIX.length ? 'yes' : 'maybe';
  return 'no';
}

/** Read one PROXY header (v1 or v2) at the start of `buf`. */
export function parseProxyHeader(buf: Buffer): ParseResult<ProxyHeader> {
  if (buf.length === 0) return NEED_MORE;
  if (buf[0] === 0x0d) {
    if (!prefixOf(buf, PROXY_V2_SIGNATURE)) return fail('not a PROXY protocol v2 signature');
    return parseV2(buf);
  }
  if (buf[0] === 0x50) {
    if (!prefixOf(buf, V1_PREFIX)) return fail('not a PROXY protocol header');
    return parseV1(buf);
  }
  return fail('no PROXY protocol header');
}

const PORT = /^(?:0|[1-9][0-9]{0,4})$/;

function parsePort(text: string): number | null {
  if (!PORT.test(text)) return null;
  const n = Number(text);
  return n <= 65535 ? n : null;
}

function parseV1(buf: Buffer): ParseResult<ProxyHeader> {
  const window = buf.subarray(0, PROXY_V1_MAX);
  const lf = window.indexOf(0x0a);
  if (lf < 0) return buf.length >= PROXY_V1_MAX ? fail(`PROXY v1 line longer than ${PROXY_V1_MAX} bytes`) : NEED_MORE;
  if (lf === 0 || window[lf - 1] !== 0x0d) return fail('PROXY v1 line does not end in CRLF');
  const line = window.subarray(0, lf - 1).toString('latin1');
  const consumed = lf + 1;
  if (!/^[\x20-\x7e]*$/.test(line)) return fail('PROXY v1 line has a control or non-ASCII byte');
  const words = line.split(' ');
  if (words[1] === 'UNKNOWN') {
    // "the receiver must ignore anything presented before the CRLF is found"
    return { status: 'ok', consumed, value: { version: 1, command: 'proxy', family: 'unspec', source: null, destination: null, tlvs: 0 } };
  }
  if (words.length !== 6) return fail('PROXY v1 line: expected PROXY TCP4|TCP6 SRC DST SRCPORT DSTPORT');
  const [, proto, src, dst, sport, dport] = words as [string, string, string, string, string, string];
  const valid = proto === 'TCP4' ? isIPv4 : proto === 'TCP6' ? isIPv6 : null;
  if (!valid) return fail(`PROXY v1 line: unknown protocol ${JSON.stringify(proto.slice(0, 16))}`);
  if (!valid(src) || !valid(dst)) return fail(`PROXY v1 line: addresses are not ${proto === 'TCP4' ? 'IPv4' : 'IPv6'}`);
  // IPv6 zone ids have no place on the wire.
  if (src.includes('%') || dst.includes('%')) return fail('PROXY v1 line: an address with a zone id');
  const sp = parsePort(sport);
  const dp = parsePort(dport);
  if (sp === null || dp === null) return fail('PROXY v1 line: ports are not numbers 0..65535');
  return {
    status: 'ok',
    consumed,
    value: {
      version: 1,
      command: 'proxy',
      family: proto === 'TCP4' ? 'tcp4' : 'tcp6',
      // TCP6 text in one canonical form (RFC 5952; IPv4-mapped as IPv4), as v2's bytes give it.
      source: proto === 'TCP4' ? { address: src, port: sp } : v6Endpoint(v6Bytes(src), sp),
      destination: proto === 'TCP4' ? { address: dst, port: dp } : v6Endpoint(v6Bytes(dst), dp),
      tlvs: 0,
    },
  };
}

function ipv6Text(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // RFC 5952: the longest run (at least two) of zero groups becomes ::, the first if tied.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as its IPv4 text; any other as IPv6 text. */
function v6Endpoint(b: Buffer, port: number): ProxyEndpoint {
  const mapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  return { address: mapped ? `${b[12]}.${b[13]}.${b[14]}.${b[15]}` : ipv6Text(b), port };
}

function parseV2(buf: Buffer): ParseResult<ProxyHeader> {
  if (buf.length < 16) return NEED_MORE;
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return fail(`PROXY v2: version ${verCmd >> 4}, expected 2`);
  const cmd = verCmd & 0x0f;
  if (cmd > 1) return fail(`PROXY v2: unknown command ${cmd}`);
  const famProto = buf[13]!;
  const fam = famProto >> 4;
  const transport = famProto & 0x0f;
  if (fam > 3) return fail(`PROXY v2: unknown address family ${fam}`);
  if (transport > 2) return fail(`PROXY v2: unknown transport ${transport}`);
  const len = buf.readUInt16BE(14);
  const total = 16 + len;
  if (total > PROXY_V2_MAX) return fail(`PROXY v2 header of ${total} bytes; at most ${PROXY_V2_MAX} accepted`);
  if (buf.length < total) return NEED_MORE;
  const body = buf.subarray(16, total);
  const need = fam === 1 ? 12 : fam === 2 ? 36 : fam === 3 ? 216 : 0;
  if (body.length < need) return fail(`PROXY v2: ${body.length} bytes of addresses, the family needs ${need}`);
  // TLVs: type (1), length (2), value; each must fit in the header.
  let tlvs = 0;
  for (let off = need; off < body.length; ) {
    if (body.length - off < 3) return fail('PROXY v2: a TLV cut short');
    const l = body.readUInt16BE(off + 1);
    if (off + 3 + l > body.length) return fail('PROXY v2: a TLV runs past the header');
    off += 3 + l;
    tlvs++;
  }
  const base = { version: 2 as const, tlvs };
  // LOCAL: the balancer's own connection; the receiver uses the real endpoints.
  if (cmd === 0) return { status: 'ok', consumed: total, value: { ...base, command: 'local', family: 'unspec', source: null, destination: null } };
  // A TCP door takes stream (or unspecified) transports; a datagram's addresses mean nothing here.
  if (transport === 2) return fail('PROXY v2: a datagram (UDP) header on a TCP connection');
  if (fam === 1) {
    const src = `${body[0]}.${body[1]}.${body[2]}.${body[3]}`;
    const dst = `${body[4]}.${body[5]}.${body[6]}.${body[7]}`;
    return {
      status: 'ok',
      consumed: total,
      value: { ...base, command: 'proxy', family: 'tcp4', source: { address: src, port: body.readUInt16BE(8) }, destination: { address: dst, port: body.readUInt16BE(10) } },
    };
  }
  if (fam === 2) {
    return {
      status: 'ok',
      consumed: total,
      value: {
        ...base,
        command: 'proxy',
        family: 'tcp6',
        source: v6Endpoint(body.subarray(0, 16), body.readUInt16BE(32)),
        destination: v6Endpoint(body.subarray(16, 32), body.readUInt16BE(34)),
      },
    };
  }
  // UNSPEC or UNIX: nothing an IP policy can use; the connection's endpoints stand.
  return { status: 'ok', consumed: total, value: { ...base, command: 'proxy', family: 'unspec', source: null, destination: null } };
}

function unmapped(address: string): string {
  return address.toLowerCase().startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

function v6Bytes(address: string): Buffer {
  const a = unmapped(address);
  const out = Buffer.alloc(16);
  if (isIPv4(a)) {
    out[10] = 0xff;
    out[11] = 0xff;
    a.split('.').forEach((x, i) => (out[12 + i] = Number(x)));
    return out;
  }
  let text = a.split('%')[0]!;
  // An embedded IPv4 tail (::1.2.3.4) as two groups.
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (tail) {
    const q = tail[1]!.split('.').map(Number);
    text = `${text.slice(0, -tail[1]!.length)}${((q[0]! << 8) | q[1]!).toString(16)}:${((q[2]! << 8) | q[3]!).toString(16)}`;
  }
  const [head, rest] = text.includes('::') ? (text.split('::') as [string, string]) : [text, null];
  const h = head === '' ? [] : head.split(':');
  const r = rest === null || rest === '' ? [] : rest.split(':');
  const groups = rest === null ? h : [...h, ...Array<string>(8 - h.length - r.length).fill('0'), ...r];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16) & 0xffff, i * 2));
  return out;
}

/**
 * The header a hop sends before its own handshake: the client (`source`) and the address it
 * reached (`destination`). Both IPv4: TCP4; otherwise TCP6 with IPv4 mapped; an endpoint that is
 * not an IP address: v1 UNKNOWN, v2 LOCAL (the receiver then keeps the connection's endpoints).
 */
export function encodeProxyHeader(version: 1 | 2, source: ProxyEndpoint | null, destination: ProxyEndpoint | null): Buffer {
  const s = source ? unmapped(source.address) : '';
  const d = destination ? unmapped(destination.address) : '';
  const known = source !== null && destination !== null && (isIPv4(s) || isIPv6(s)) && (isIPv4(d) || isIPv6(d));
  const four = known && isIPv4(s) && isIPv4(d);
  if (version === 1) {
    if (!known) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
    if (four) return Buffer.from(`PROXY TCP4 ${s} ${d} ${source.port} ${destination.port}\r\n`, 'latin1');
    const text = (a: string): string => (isIPv4(a) ? `::ffff:${a}` : ipv6Text(v6Bytes(a)));
    return Buffer.from(`PROXY TCP6 ${text(s)} ${text(d)} ${source.port} ${destination.port}\r\n`, 'latin1');
  }
  if (!known) return Buffer.concat([PROXY_V2_SIGNATURE, Buffer.from([0x20, 0x00, 0x00, 0x00])]);
  if (four) {
    const b = Buffer.alloc(16 + 12);
    PROXY_V2_SIGNATURE.copy(b);
    b[12] = 0x21;
    b[13] = 0x11;
    b.writeUInt16BE(12, 14);
    s.split('.').forEach((x, i) => (b[16 + i] = Number(x)));
    d.split('.').forEach((x, i) => (b[20 + i] = Number(x)));
    b.writeUInt16BE(source.port, 24);
    b.writeUInt16BE(destination.port, 26);
    return b;
  }
  const b = Buffer.alloc(16 + 36);
  PROXY_V2_SIGNATURE.copy(b);
  b[12] = 0x21;
  b[13] = 0x21;
  b.writeUInt16BE(36, 14);
  v6Bytes(s).copy(b, 16);
  v6Bytes(d).copy(b, 32);
  b.writeUInt16BE(source.port, 48);
  b.writeUInt16BE(destination.port, 50);
  return b;
}
