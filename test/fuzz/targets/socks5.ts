/**
 * SOCKS5 greeting, username/password sub-negotiation, request and UDP header
 * (src/wire/socks.ts). The first byte picks the message; the rest is its bytes.
 */
import {
  encodeSocks5Reply,
  encodeUdpHeader,
  parseSocks5Greeting,
  parseSocks5Request,
  parseUdpHeader,
  parseUserPassRequest,
} from '../../../src/wire/socks.js';
import { check, incrementalParser } from '../invariants.js';

export const maxLen = 600;
export const dictionary = ['\x05\x01\x00', '\x05\x02\x00\x02', '\x01\x05alice\x06secret', '\x05\x01\x00\x01', '\x05\x01\x00\x03', '\x05\x01\x00\x04', '\x00\x50', '::ffff:', '\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff'];

export function seeds(): Buffer[] {
  const v6 = Buffer.alloc(16);
  v6[15] = 1;
  const mapped = Buffer.from('00000000000000000000ffff7f000001', 'hex');
  return [
    Buffer.from('\x00\x05\x02\x00\x02', 'latin1'),
    Buffer.from('\x01\x01\x05alice\x06secret', 'latin1'),
    Buffer.from('\x02\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50', 'latin1'),
    Buffer.from('\x02\x05\x01\x00\x03\x0bexample.com\x01\xbb', 'latin1'),
    Buffer.concat([Buffer.from('\x02\x05\x03\x00\x04', 'latin1'), v6, Buffer.from([0, 53])]),
    Buffer.concat([Buffer.from('\x02\x05\x01\x00\x04', 'latin1'), mapped, Buffer.from([0, 80])]),
    Buffer.from('\x03\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x35payload', 'latin1'),
    Buffer.from('\x03\x00\x00\x00\x03\x09localhost\x00\x35', 'latin1'),
  ];
}

export function fuzz(data: Buffer): void {
  if (data.length === 0) return;
  const body = data.subarray(1);
  switch (data[0]! % 4) {
    case 0: {
      const r = incrementalParser('parseSocks5Greeting', parseSocks5Greeting, body);
      if (r.status === 'ok') check(r.consumed === 2 + body[1]!, 'greeting is VER NMETHODS METHODS');
      break;
    }
    case 1: {
      const r = incrementalParser('parseUserPassRequest', parseUserPassRequest, body);
      if (r.status === 'ok') check(r.consumed === 3 + body[1]! + body[2 + body[1]!]!, 'sub-negotiation length');
      break;
    }
    case 2: {
      const r = incrementalParser('parseSocks5Request', parseSocks5Request, body);
      if (r.status !== 'ok') break;
      const v = r.value;
      check(v.port === body.readUInt16BE(r.consumed - 2), 'port is the last two bytes', v);
      // A reply carries BND.ADDR in the request's layout: what we encode, we parse back.
      const reply = encodeSocks5Reply(0x01, { address: v.host, port: v.port });
      const back = parseSocks5Request(reply);
      check(back.status === 'ok' && back.consumed === reply.length, 'an encoded address parses', { v, reply, back });
      if (back.status !== 'ok') break;
      check(back.value.port === v.port, 'port survives encoding', { v, back });
      const mapped = /^::ffff:\d+\.\d+\.\d+\.\d+$/.test(v.host);
      if (v.addressType === 'ipv4' || (v.addressType === 'ipv6' && !mapped)) {
        check(back.value.host === v.host && back.value.addressType === v.addressType, 'an IP address survives encoding', { v, back });
      } else if (v.addressType === 'ipv6') {
        check(back.value.addressType === 'ipv4' && `::ffff:${back.value.host}` === v.host, 'an IPv4-mapped address is sent as IPv4', { v, back });
      } else if (back.value.addressType === 'domain') {
        check(back.value.host === v.host, 'a name survives encoding', { v, back });
      }
      break;
    }
    case 3: {
      const r = parseUdpHeader(body);
      check(r.status !== 'need-more', 'a datagram is never need-more');
      if (r.status !== 'ok') break;
      check(r.value.dataOffset <= body.length && r.value.dataOffset === r.consumed, 'DATA starts inside the datagram', r);
      const header = encodeUdpHeader(r.value.host, r.value.port);
      const back = parseUdpHeader(header);
      check(back.status === 'ok' && back.value.port === r.value.port && back.value.dataOffset === header.length, 'an encoded UDP header parses', { r, back });
      break;
    }
  }
}
