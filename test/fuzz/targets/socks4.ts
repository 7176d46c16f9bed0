/** SOCKS4 / SOCKS4a requests (src/wire/socks.ts). */
import { parseSocks4Request, SOCKS4_MAX_USERID, SOCKS4A_MAX_HOST } from '../../../src/wire/socks.js';
import { check, incrementalParser } from '../invariants.js';

export const maxLen = 1200;
export const dictionary = ['\x04\x01', '\x04\x02', '\x00\x50', '\x00\x00\x00\x01', '\x7f\x00\x00\x01', '\x00', 'alice\x00', 'example.com\x00'];

export function seeds(): Buffer[] {
  return [
    Buffer.from('\x04\x01\x00\x50\x7f\x00\x00\x01alice\x00', 'latin1'),
    Buffer.from('\x04\x01\x01\xbb\x00\x00\x00\x01\x00www.example.com\x00', 'latin1'),
    Buffer.from('\x04\x02\x00\x15\x0a\x00\x00\x01\x00', 'latin1'),
    Buffer.from('\x04\x01\x00\x50\x00\x00\x00\x01bob\x00\x00', 'latin1'),
    Buffer.concat([Buffer.from('\x04\x01\x00\x50\x01\x02\x03\x04', 'latin1'), Buffer.alloc(300, 0x61), Buffer.from([0])]),
  ];
}

export function fuzz(data: Buffer): void {
  const r = incrementalParser('parseSocks4Request', parseSocks4Request, data);
  if (r.status !== 'ok') return;
  const v = r.value;
  check(v.port === data.readUInt16BE(2), 'port is DSTPORT', v);
  check(Buffer.byteLength(v.userId, 'utf8') <= SOCKS4_MAX_USERID * 3, 'user id bounded', v.userId.length);
  check(data[r.consumed - 1] === 0, 'a request ends at its NUL');
  if (v.version === '4a') check(v.host.length >= 1 && v.host.length <= SOCKS4A_MAX_HOST && /^[\x21-\x7e]+$/.test(v.host), 'SOCKS4a host is a visible name', v.host);
  else check(/^\d{1,3}(\.\d{1,3}){3}$/.test(v.host), 'SOCKS4 host is a dotted quad', v.host);
}
