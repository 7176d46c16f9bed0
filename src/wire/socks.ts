/**
 * SOCKS wire formats as pure functions: incremental parsers that look at the bytes received so far
 * and answer need-more / ok (value and bytes consumed) / error (a stable ProxyErrorCode), and the
 * encoders of the replies. No sockets, no state: fed one byte at a time or a whole pipelined
 * stream, they give the same answer.
 *
 * References: SOCKS4 and SOCKS4A (the NEC protocol documents), RFC 1928 (SOCKS5), RFC 1929
 * (username/password sub-negotiation).
 */
import type { ProxyErrorCode } from '../core/errors.js';
import type { BoundAddress } from '../core/tunnel.js';

export type ParseResult<T> =
  | { status: 'need-more' }
  | { status: 'ok'; value: T; consumed: number }
  | { status: 'error'; code: ProxyErrorCode; reason: string };

export type Parser<T> = (buf: Buffer) => ParseResult<T>;

const NEED_MORE = { status: 'need-more' } as const;

function fail(code: ProxyErrorCode, reason: string): { status: 'error'; code: ProxyErrorCode; reason: string } {
  return { status: 'error', code, reason };
}

/** Longest SOCKS4 USERID and SOCKS4a host name we accept (each without its NUL). */
export const SOCKS4_MAX_USERID = 255;
export const SOCKS4A_MAX_HOST = 255;

// ---------------------------------------------------------------------------------------------
// Addresses

/** Dotted quad of 4 bytes at `offset`. */
export function formatIPv4(buf: Buffer, offset: number): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

/** RFC 5952 text of 16 bytes at `offset`: lower-case, longest zero run (≥ 2 groups) as "::". */
export function formatIPv6(buf: Buffer, offset: number): string {
  const groups: number[] = new Array<number>(8);
  for (let i = 0; i < 8; i++) groups[i] = buf.readUInt16BE(offset + i * 2);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) bestStart = -1; // RFC 5952 §4.2.2: "::" never stands for a single group
  // RFC 5952 §5: an IPv4-mapped address keeps its dotted tail.
  if (bestStart === 0 && bestLen === 5 && groups[5] === 0xffff) {
    return `::ffff:${formatIPv4(buf, offset + 12)}`;
  }
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      out += '::';
      i += bestLen - 1;
      continue;
    }
    if (out !== '' && !out.endsWith(':')) out += ':';
    out += groups[i]!.toString(16);
  }
  return out;
}

/** Writes a dotted quad into 4 bytes at `offset`; false when `text` is not one. */
export function writeIPv4(text: string, buf: Buffer, offset: number): boolean {
  const parts = text.split('.');
  if (parts.length !== 4) return false;
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^\d{1,3}$/.test(p)) return false;
    const n = Number(p);
    if (n > 255) return false;
    buf[offset + i] = n;
  }
  return true;
}

/** Writes an IPv6 literal (with "::", an IPv4 tail, a %zone that is ignored) into 16 bytes. */
export function writeIPv6(text: string, buf: Buffer, offset: number): boolean {
  const zone = text.indexOf('%');
  const addr = zone >= 0 ? text.slice(0, zone) : text;
  const halves = addr.split('::');
  if (halves.length > 2) return false;
  const head = halves[0] === '' ? [] : halves[0]!.split(':');
  const tail = halves.length === 2 ? (halves[1] === '' ? [] : halves[1]!.split(':')) : [];
  const words: number[] = [];
  const tailWords: number[] = [];
  const take = (parts: string[], into: number[]): boolean => {
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes('.')) {
        const v4 = Buffer.allocUnsafe(4);
        if (!writeIPv4(p, v4, 0)) return false;
        into.push(v4.readUInt16BE(0), v4.readUInt16BE(2));
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return false;
        into.push(parseInt(p, 16));
      }
    }
    return true;
  };
  // An IPv4 tail is only allowed at the very end of the address.
  if (halves.length === 2 && head.some((p) => p.includes('.'))) return false;
  if (!take(head, words) || !take(tail, tailWords)) return false;
  if (halves.length === 1) {
    if (words.length !== 8) return false;
  } else {
    if (words.length + tailWords.length > 7) return false;
    while (words.length + tailWords.length < 8) words.push(0);
    words.push(...tailWords);
  }
  for (let i = 0; i < 8; i++) buf.writeUInt16BE(words[i]!, offset + i * 2);
  return true;
}

/** RFC 1928 §4 ATYP values. */
export const ATYP_IPV4 = 0x01;
export const ATYP_DOMAINNAME = 0x03;
export const ATYP_IPV6 = 0x04;

export type AddressType = 'ipv4' | 'domain' | 'ipv6';

interface SocksAddress {
  type: AddressType;
  host: string;
  port: number;
  /** Offset just past DST.PORT. */
  end: number;
}

/**
 * ATYP DST.ADDR DST.PORT starting at `offset` (the ATYP byte). Shared by the SOCKS5 request and
 * the UDP request header (RFC 1928 §4 and §7).
 */
function parseSocksAddress(buf: Buffer, offset: number): ParseResult<SocksAddress> {
  if (buf.length <= offset) return NEED_MORE;
  const atyp = buf[offset]!;
  let host: string;
  let type: AddressType;
  let at = offset + 1;
  if (atyp === ATYP_IPV4) {
    if (buf.length < at + 4 + 2) return NEED_MORE;
    host = formatIPv4(buf, at);
    type = 'ipv4';
    at += 4;
  } else if (atyp === ATYP_IPV6) {
    if (buf.length < at + 16 + 2) return NEED_MORE;
    host = formatIPv6(buf, at);
    type = 'ipv6';
    at += 16;
  } else if (atyp === ATYP_DOMAINNAME) {
    if (buf.length <= at) return NEED_MORE;
    const len = buf[at]!;
    if (len === 0) return fail('EPROTO', 'empty domain name');
    if (buf.length < at + 1 + len + 2) return NEED_MORE;
    host = buf.toString('latin1', at + 1, at + 1 + len);
    // A name is a name: a NUL or a character that cannot be in a host name is a malformed request.
    if (!/^[\x21-\x7e]+$/.test(host)) return fail('EPROTO', 'domain name with control or non-ASCII characters');
    type = 'domain';
    at += 1 + len;
  } else {
    return fail('EATYPNOTSUP', `address type ${atyp} is not supported`);
  }
  const port = buf.readUInt16BE(at);
  return { status: 'ok', value: { type, host, port, end: at + 2 }, consumed: at + 2 - offset };
}

/**
 * Size of ATYP DST.ADDR DST.PORT for an address, and writes it at `offset` when `buf` is given.
 * IP literals become ATYP 1 or 4 ("::ffff:a.b.c.d" becomes IPv4); anything else a DOMAINNAME.
 */
function writeSocksAddress(host: string, port: number, buf: Buffer | null, offset: number): number {
  const v4 = host.startsWith('::ffff:') && host.includes('.') ? host.slice(7) : host;
  const scratch = buf ?? SCRATCH;
  const o = buf ? offset : 0;
  if (writeIPv4(v4, scratch, o + 1)) {
    scratch[o] = ATYP_IPV4;
    scratch.writeUInt16BE(port, o + 5);
    return 7;
  }
  if (host.includes(':') && writeIPv6(host, scratch, o + 1)) {
    scratch[o] = ATYP_IPV6;
    scratch.writeUInt16BE(port, o + 17);
    return 19;
  }
  const name = Buffer.from(host, 'latin1');
  const len = Math.min(name.length, 255);
  if (buf) {
    buf[o] = ATYP_DOMAINNAME;
    buf[o + 1] = len;
    name.copy(buf, o + 2, 0, len);
    buf.writeUInt16BE(port, o + 2 + len);
  }
  return 4 + len;
}
const SCRATCH = Buffer.alloc(32);

// ---------------------------------------------------------------------------------------------
// SOCKS4 / SOCKS4a

export interface Socks4Request {
  /** '4a' when DSTIP was 0.0.0.x (x ≠ 0) and a host name followed the user id. */
  version: '4' | '4a';
  command: 'connect' | 'bind';
  port: number;
  /** Dotted quad for SOCKS4, the name as sent for SOCKS4a. */
  host: string;
  userId: string;
}

/** Index of the first NUL at or after `from`, looking at most `max + 1` bytes; -1 need more; -2 too long. */
function findNul(buf: Buffer, from: number, max: number): number {
  const limit = Math.min(buf.length, from + max + 1);
  for (let i = from; i < limit; i++) if (buf[i] === 0) return i;
  return buf.length >= from + max + 1 ? -2 : -1;
}

/** VN CD DSTPORT DSTIP USERID NUL [HOST NUL] (SOCKS4, SOCKS4A). */
export function parseSocks4Request(buf: Buffer): ParseResult<Socks4Request> {
  if (buf.length < 1) return NEED_MORE;
  if (buf[0] !== 0x04) return fail('EPROTO', `SOCKS version ${buf[0]} is not 4`);
  if (buf.length < 2) return NEED_MORE;
  const cd = buf[1]!;
  if (cd !== 0x01 && cd !== 0x02) return fail('ECMDNOTSUP', `SOCKS4 command ${cd} is not supported`);
  if (buf.length < 8) return NEED_MORE;
  const userEnd = findNul(buf, 8, SOCKS4_MAX_USERID);
  if (userEnd === -2) return fail('EPROTO', `SOCKS4 user id longer than ${SOCKS4_MAX_USERID} bytes`);
  if (userEnd === -1) return NEED_MORE;
  const port = buf.readUInt16BE(2);
  const command = cd === 0x01 ? 'connect' : 'bind';
  const userId = userEnd === 8 ? '' : buf.toString('utf8', 8, userEnd);
  // SOCKS4A: DSTIP 0.0.0.x with x ≠ 0 means "the host name follows the user id".
  if (buf[4] === 0 && buf[5] === 0 && buf[6] === 0 && buf[7] !== 0) {
    const hostEnd = findNul(buf, userEnd + 1, SOCKS4A_MAX_HOST);
    if (hostEnd === -2) return fail('EPROTO', `SOCKS4a host name longer than ${SOCKS4A_MAX_HOST} bytes`);
    if (hostEnd === -1) return NEED_MORE;
    if (hostEnd === userEnd + 1) return fail('EPROTO', 'SOCKS4a host name is empty');
    const host = buf.toString('latin1', userEnd + 1, hostEnd);
    if (!/^[\x21-\x7e]+$/.test(host)) return fail('EPROTO', 'SOCKS4a host name with control or non-ASCII characters');
    return { status: 'ok', value: { version: '4a', command, port, host, userId }, consumed: hostEnd + 1 };
  }
  return { status: 'ok', value: { version: '4', command, port, host: formatIPv4(buf, 4), userId }, consumed: userEnd + 1 };
}

/** SOCKS4 CD of a reply: 90 granted; 91, 92, 93 as in core/errors.ts. */
export type Socks4ReplyCode = 90 | 91 | 92 | 93;

/**
 * VN=0 CD DSTPORT DSTIP. An address SOCKS4 cannot carry (IPv6, a name) is sent as 0.0.0.0, which
 * for BIND tells the client to use the proxy's own address.
 */
export function encodeSocks4Reply(cd: Socks4ReplyCode, bound?: BoundAddress | null): Buffer {
  const out = Buffer.alloc(8);
  out[1] = cd;
  if (bound) {
    out.writeUInt16BE(bound.port, 2);
    const host = bound.address.startsWith('::ffff:') ? bound.address.slice(7) : bound.address;
    if (!writeIPv4(host, out, 4)) out.fill(0, 4, 8);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// SOCKS5 (RFC 1928)

/** RFC 1928 §3 METHOD values. */
export const METHOD_NO_AUTH = 0x00;
export const METHOD_USERNAME_PASSWORD = 0x02;
export const METHOD_NO_ACCEPTABLE = 0xff;

export interface Socks5Greeting {
  offersNoAuth: boolean;
  offersUserPass: boolean;
}

/** VER NMETHODS METHODS (RFC 1928 §3). */
export function parseSocks5Greeting(buf: Buffer): ParseResult<Socks5Greeting> {
  if (buf.length < 1) return NEED_MORE;
  if (buf[0] !== 0x05) return fail('EPROTO', `SOCKS version ${buf[0]} is not 5`);
  if (buf.length < 2) return NEED_MORE;
  const n = buf[1]!;
  if (buf.length < 2 + n) return NEED_MORE;
  let offersNoAuth = false;
  let offersUserPass = false;
  for (let i = 2; i < 2 + n; i++) {
    if (buf[i] === METHOD_NO_AUTH) offersNoAuth = true;
    else if (buf[i] === METHOD_USERNAME_PASSWORD) offersUserPass = true;
  }
  return { status: 'ok', value: { offersNoAuth, offersUserPass }, consumed: 2 + n };
}

/** VER METHOD: the server's method selection. */
export function encodeMethodSelection(method: number): Buffer {
  return Buffer.from([0x05, method]);
}

export interface UserPassRequest {
  user: string;
  /** Never logged. */
  password: string;
}

/** VER=1 ULEN UNAME PLEN PASSWD (RFC 1929 §2). */
export function parseUserPassRequest(buf: Buffer): ParseResult<UserPassRequest> {
  if (buf.length < 1) return NEED_MORE;
  if (buf[0] !== 0x01) return fail('EPROTO', `username/password sub-negotiation version ${buf[0]} is not 1`);
  if (buf.length < 2) return NEED_MORE;
  const ulen = buf[1]!;
  if (buf.length < 2 + ulen + 1) return NEED_MORE;
  const plen = buf[2 + ulen]!;
  const end = 3 + ulen + plen;
  if (buf.length < end) return NEED_MORE;
  const user = buf.toString('utf8', 2, 2 + ulen);
  const password = buf.toString('utf8', 3 + ulen, end);
  return { status: 'ok', value: { user, password }, consumed: end };
}

/** VER=1 STATUS: 0 success; anything else is failure and the connection must close (RFC 1929 §2). */
export function encodeUserPassReply(success: boolean): Buffer {
  return Buffer.from([0x01, success ? 0x00 : 0x01]);
}

export type Socks5Command = 'connect' | 'bind' | 'udp';

export interface Socks5Request {
  command: Socks5Command;
  addressType: AddressType;
  host: string;
  port: number;
}

/** VER CMD RSV ATYP DST.ADDR DST.PORT (RFC 1928 §4). */
export function parseSocks5Request(buf: Buffer): ParseResult<Socks5Request> {
  if (buf.length < 1) return NEED_MORE;
  if (buf[0] !== 0x05) return fail('EPROTO', `SOCKS version ${buf[0]} is not 5`);
  if (buf.length < 2) return NEED_MORE;
  const cmd = buf[1]!;
  let command: Socks5Command;
  if (cmd === 0x01) command = 'connect';
  else if (cmd === 0x02) command = 'bind';
  else if (cmd === 0x03) command = 'udp';
  else return fail('ECMDNOTSUP', `SOCKS5 command ${cmd} is not supported`);
  // RSV (buf[2]) is "reserved" and must be 0; clients that send garbage there still mean the rest.
  const addr = parseSocksAddress(buf, 3);
  if (addr.status !== 'ok') return addr;
  const { type, host, port, end } = addr.value;
  return { status: 'ok', value: { command, addressType: type, host, port }, consumed: end };
}

/** RFC 1928 §6 REP 0x00: succeeded. Failures come from `replyFor(code).socks5`. */
export const REP_SUCCEEDED = 0x00;

/**
 * VER REP RSV ATYP BND.ADDR BND.PORT (RFC 1928 §6). BND.ADDR is IPv4 or IPv6 for an IP literal
 * (an IPv4-mapped IPv6 address as IPv4) and a DOMAINNAME otherwise; null means 0.0.0.0:0.
 */
export function encodeSocks5Reply(rep: number, bound?: BoundAddress | null): Buffer {
  if (!bound) return Buffer.from([0x05, rep, 0x00, ATYP_IPV4, 0, 0, 0, 0, 0, 0]);
  const size = writeSocksAddress(bound.address, bound.port, null, 0);
  const out = Buffer.alloc(3 + size);
  out[0] = 0x05;
  out[1] = rep;
  writeSocksAddress(bound.address, bound.port, out, 3);
  return out;
}

// ---------------------------------------------------------------------------------------------
// SOCKS5 UDP request header (RFC 1928 §7)

export interface UdpDatagram {
  /** Fragment number; this relay only takes 0 (standalone datagrams). */
  frag: number;
  addressType: AddressType;
  host: string;
  port: number;
  /** Offset of DATA in the datagram. */
  dataOffset: number;
}

/**
 * RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA. A datagram is complete or not at all, so a short one
 * is an error, never "need more".
 */
export function parseUdpHeader(datagram: Buffer): ParseResult<UdpDatagram> {
  if (datagram.length < 4) return fail('EPROTO', 'UDP datagram shorter than its header');
  const frag = datagram[2]!;
  const addr = parseSocksAddress(datagram, 3);
  if (addr.status === 'need-more') return fail('EPROTO', 'UDP datagram shorter than its header');
  if (addr.status === 'error') return addr;
  const { type, host, port, end } = addr.value;
  return { status: 'ok', value: { frag, addressType: type, host, port, dataOffset: end }, consumed: end };
}

/** RSV RSV FRAG=0 ATYP DST.ADDR DST.PORT, to put before DATA. */
export function encodeUdpHeader(host: string, port: number): Buffer {
  const size = writeSocksAddress(host, port, null, 0);
  const out = Buffer.alloc(3 + size);
  writeSocksAddress(host, port, out, 3);
  return out;
}
