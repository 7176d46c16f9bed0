/** PROXY protocol v1 and v2 headers (src/net/proxy-protocol.ts). */
import { isIP } from 'node:net';
import { encodeProxyHeader, parseProxyHeader, PROXY_V1_MAX, PROXY_V2_MAX, PROXY_V2_SIGNATURE, sniffProxyHeader } from '../../../src/net/proxy-protocol.js';
import { check, incrementalParser } from '../invariants.js';

export const maxLen = 600;
export const dictionary = [
  'PROXY ',
  'TCP4 ',
  'TCP6 ',
  'UNKNOWN',
  '\r\n',
  ' 65535',
  '127.0.0.1 ',
  '::ffff:',
  '2001:db8::',
  PROXY_V2_SIGNATURE.toString('latin1'),
  '\x21\x11\x00\x0c',
  '\x21\x21\x00\x24',
  '\x20\x00\x00\x00',
  '\x04\x00\x00',
];

const v2 = (head: number[], body: Buffer): Buffer => Buffer.concat([PROXY_V2_SIGNATURE, Buffer.from(head), body]);

export function seeds(): Buffer[] {
  return [
    Buffer.from('PROXY TCP4 192.0.2.1 127.0.0.1 40000 1080\r\n\x05\x01\x00'),
    Buffer.from('PROXY TCP6 2001:db8::1 ::ffff:127.0.0.1 1 2\r\nGET / HTTP/1.1\r\n'),
    Buffer.from('PROXY UNKNOWN\r\n'),
    v2([0x21, 0x11, 0x00, 0x0c], Buffer.from([10, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40, 0x04, 0x38])),
    v2([0x21, 0x11, 0x00, 0x13], Buffer.from([10, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40, 0x04, 0x38, 0x01, 0x00, 0x02, 0x68, 0x32, 0x04, 0x00, 0x00])),
    v2([0x21, 0x21, 0x00, 0x24], Buffer.alloc(36, 1)),
    v2([0x20, 0x00, 0x00, 0x00], Buffer.alloc(0)),
  ];
}

export function fuzz(data: Buffer): void {
  const r = incrementalParser('parseProxyHeader', parseProxyHeader, data);
  const sniff = sniffProxyHeader(data);
  if (r.status === 'ok') check(sniff === 'yes', 'a parsed header is sniffed as one', sniff);
  if (sniff === 'no') check(r.status === 'error', 'what the sniffer rules out does not parse', r);
  if (r.status !== 'ok') return;
  const h = r.value;
  check(r.consumed <= (h.version === 1 ? PROXY_V1_MAX : PROXY_V2_MAX), 'header within its bound', r.consumed);
  if (h.version === 1) check(data[r.consumed - 2] === 0x0d && data[r.consumed - 1] === 0x0a, 'a v1 header ends at its CRLF');
  else check(r.consumed === 16 + data.readUInt16BE(14), 'a v2 header is 16 bytes and its length');
  check((h.source === null) === (h.destination === null), 'source and destination come together', h);
  check((h.source === null) === (h.family === 'unspec'), 'addresses exactly for tcp4/tcp6', h);
  if (h.source && h.destination) {
    for (const e of [h.source, h.destination]) {
      check(isIP(e.address) !== 0, 'an address is an IP address', e);
      check(Number.isInteger(e.port) && e.port >= 0 && e.port <= 65535, 'a port is 0..65535', e);
    }
    if (h.family === 'tcp4') check(isIP(h.source.address) === 4 && isIP(h.destination.address) === 4, 'tcp4 carries IPv4', h);
    // What we would send on for this client reads back the same, in both versions.
    for (const version of [1, 2] as const) {
      const again = parseProxyHeader(encodeProxyHeader(version, h.source, h.destination));
      check(again.status === 'ok', 'an encoded header parses', { version, again });
      check(
        again.status === 'ok' && JSON.stringify([again.value.source, again.value.destination]) === JSON.stringify([h.source, h.destination]),
        'encode round trip',
        { version, h, again },
      );
    }
  }
}
