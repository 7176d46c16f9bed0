import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import ipaddr from 'ipaddr.js';
import {
  encodeSocks4Reply,
  encodeSocks5Reply,
  encodeUdpHeader,
  formatIPv6,
  parseSocks4Request,
  parseSocks5Greeting,
  parseSocks5Request,
  parseUdpHeader,
  parseUserPassRequest,
  writeIPv6,
  type Parser,
  type ParseResult,
} from '../../src/wire/socks.js';
import { rng as prng } from '../helpers/random.js';

/** Feed `bytes` one at a time: every proper prefix must need more, the whole must parse. */
function feedByteByByte<T>(parse: Parser<T>, bytes: Buffer): ParseResult<T> {
  for (let n = 0; n < bytes.length; n++) {
    const r = parse(bytes.subarray(0, n));
    assert.equal(r.status, 'need-more', `prefix of ${n} bytes answered ${JSON.stringify(r)}`);
  }
  return parse(bytes);
}

function okValue<T>(r: ParseResult<T>, consumed: number): T {
  assert.equal(r.status, 'ok', JSON.stringify(r));
  if (r.status !== 'ok') throw new Error('unreachable');
  assert.equal(r.consumed, consumed);
  return r.value;
}

function errorCode<T>(r: ParseResult<T>): string {
  assert.equal(r.status, 'error', JSON.stringify(r));
  return r.status === 'error' ? r.code : '';
}


const socks4 = (cd: number, port: number, ip: number[], user: string, host?: string): Buffer =>
  Buffer.concat([
    Buffer.from([4, cd, port >> 8, port & 255, ...ip]),
    Buffer.from(user, 'utf8'),
    Buffer.from([0]),
    host === undefined ? Buffer.alloc(0) : Buffer.concat([Buffer.from(host, 'latin1'), Buffer.from([0])]),
  ]);

describe('SOCKS4 request', () => {
  it('parses CONNECT byte by byte', () => {
    const bytes = socks4(1, 8080, [10, 1, 2, 3], 'alice');
    const v = okValue(feedByteByByte(parseSocks4Request, bytes), bytes.length);
    assert.deepEqual(v, { version: '4', command: 'connect', port: 8080, host: '10.1.2.3', userId: 'alice' });
  });

  it('parses SOCKS4a (DSTIP 0.0.0.x) with a host name, and BIND', () => {
    const bytes = socks4(2, 21, [0, 0, 0, 9], '', 'ftp.example.test');
    const v = okValue(feedByteByByte(parseSocks4Request, bytes), bytes.length);
    assert.deepEqual(v, { version: '4a', command: 'bind', port: 21, host: 'ftp.example.test', userId: '' });
  });

  it('takes 0.0.0.0 as an address, not as SOCKS4a', () => {
    const bytes = socks4(2, 0, [0, 0, 0, 0], 'u');
    assert.equal(okValue(parseSocks4Request(bytes), bytes.length).host, '0.0.0.0');
  });

  it('leaves the bytes after the request unconsumed', () => {
    const req = socks4(1, 80, [0, 0, 0, 1], 'bob', 'www.example.test');
    const bytes = Buffer.concat([req, Buffer.from('GET / HTTP/1.1\r\n\r\n')]);
    okValue(parseSocks4Request(bytes), req.length);
  });

  it('refuses a wrong version and unknown commands', () => {
    assert.equal(errorCode(parseSocks4Request(Buffer.from([5]))), 'EPROTO');
    assert.equal(errorCode(parseSocks4Request(Buffer.from([4, 3]))), 'ECMDNOTSUP');
  });

  it('refuses a user id or 4a host over 255 bytes without waiting for more', () => {
    const longUser = Buffer.concat([Buffer.from([4, 1, 0, 80, 1, 2, 3, 4]), Buffer.alloc(256, 0x61)]);
    assert.equal(errorCode(parseSocks4Request(longUser)), 'EPROTO');
    const okUser = Buffer.concat([Buffer.from([4, 1, 0, 80, 1, 2, 3, 4]), Buffer.alloc(255, 0x61), Buffer.from([0])]);
    assert.equal(okValue(parseSocks4Request(okUser), okUser.length).userId.length, 255);
    const longHost = Buffer.concat([Buffer.from([4, 1, 0, 80, 0, 0, 0, 1, 0]), Buffer.alloc(256, 0x61)]);
    assert.equal(errorCode(parseSocks4Request(longHost)), 'EPROTO');
    assert.equal(errorCode(parseSocks4Request(socks4(1, 80, [0, 0, 0, 1], 'u', ''))), 'EPROTO');
    assert.equal(errorCode(parseSocks4Request(socks4(1, 80, [0, 0, 0, 1], 'u', 'a b'))), 'EPROTO');
  });

  it('encodes the 8-byte reply', () => {
    assert.deepEqual([...encodeSocks4Reply(90, { address: '127.0.0.1', port: 1080 })], [0, 90, 4, 56, 127, 0, 0, 1]);
    assert.deepEqual([...encodeSocks4Reply(90, { address: '::ffff:10.0.0.2', port: 1 })], [0, 90, 0, 1, 10, 0, 0, 2]);
    // IPv6 cannot be carried: 0.0.0.0 tells a BIND client to use the proxy's address.
    assert.deepEqual([...encodeSocks4Reply(90, { address: '::1', port: 2 })], [0, 90, 0, 2, 0, 0, 0, 0]);
    assert.deepEqual([...encodeSocks4Reply(92)], [0, 92, 0, 0, 0, 0, 0, 0]);
  });
});

describe('SOCKS5 greeting and RFC 1929', () => {
  it('parses the greeting byte by byte', () => {
    const bytes = Buffer.from([5, 3, 0x00, 0x01, 0x02]);
    assert.deepEqual(okValue(feedByteByByte(parseSocks5Greeting, bytes), 5), { offersNoAuth: true, offersUserPass: true });
    assert.deepEqual(okValue(parseSocks5Greeting(Buffer.from([5, 1, 2, 9, 9])), 3), { offersNoAuth: false, offersUserPass: true });
    assert.deepEqual(okValue(parseSocks5Greeting(Buffer.from([5, 0])), 2), { offersNoAuth: false, offersUserPass: false });
    assert.equal(errorCode(parseSocks5Greeting(Buffer.from([4]))), 'EPROTO');
  });

  it('parses username/password byte by byte', () => {
    const bytes = Buffer.from([1, 5, ...Buffer.from('alice'), 6, ...Buffer.from('s3cr:t')]);
    assert.deepEqual(okValue(feedByteByByte(parseUserPassRequest, bytes), bytes.length), { user: 'alice', password: 's3cr:t' });
    assert.equal(errorCode(parseUserPassRequest(Buffer.from([5, 1, 0x61]))), 'EPROTO');
  });
});

const socks5 = (cmd: number, atyp: number, addr: number[], port: number): Buffer =>
  Buffer.from([5, cmd, 0, atyp, ...addr, port >> 8, port & 255]);

describe('SOCKS5 request', () => {
  it('parses ATYP 1, 3 and 4 byte by byte', () => {
    let b = socks5(1, 1, [192, 0, 2, 7], 443);
    assert.deepEqual(okValue(feedByteByByte(parseSocks5Request, b), b.length), {
      command: 'connect',
      addressType: 'ipv4',
      host: '192.0.2.7',
      port: 443,
    });
    const name = Buffer.from('www.example.test');
    b = socks5(2, 3, [name.length, ...name], 80);
    assert.deepEqual(okValue(feedByteByByte(parseSocks5Request, b), b.length), {
      command: 'bind',
      addressType: 'domain',
      host: 'www.example.test',
      port: 80,
    });
    b = socks5(3, 4, [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 53);
    assert.deepEqual(okValue(feedByteByByte(parseSocks5Request, b), b.length), {
      command: 'udp',
      addressType: 'ipv6',
      host: '2001:db8::1',
      port: 53,
    });
  });

  it('answers ECMDNOTSUP (REP 7) and EATYPNOTSUP (REP 8)', () => {
    assert.equal(errorCode(parseSocks5Request(Buffer.from([5, 4]))), 'ECMDNOTSUP');
    assert.equal(errorCode(parseSocks5Request(Buffer.from([5, 1, 0, 2]))), 'EATYPNOTSUP');
    assert.equal(errorCode(parseSocks5Request(Buffer.from([5, 1, 0, 3, 0, 0, 80]))), 'EPROTO');
    assert.equal(errorCode(parseSocks5Request(Buffer.from([4, 1]))), 'EPROTO');
  });

  it('encodes replies with IPv4, IPv6 and name BND.ADDR', () => {
    assert.deepEqual([...encodeSocks5Reply(0, { address: '127.0.0.1', port: 0x1234 })], [5, 0, 0, 1, 127, 0, 0, 1, 0x12, 0x34]);
    assert.deepEqual([...encodeSocks5Reply(0, { address: '::ffff:127.0.0.1', port: 1 })], [5, 0, 0, 1, 127, 0, 0, 1, 0, 1]);
    assert.deepEqual(
      [...encodeSocks5Reply(0, { address: '2001:db8::2', port: 2 })],
      [5, 0, 0, 4, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2],
    );
    assert.deepEqual([...encodeSocks5Reply(0, { address: 'a.test', port: 3 })], [5, 0, 0, 3, 6, ...Buffer.from('a.test'), 0, 3]);
    assert.deepEqual([...encodeSocks5Reply(7)], [5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
  });
});

describe('SOCKS5 UDP header', () => {
  it('round-trips through encode and parse', () => {
    for (const host of ['10.0.0.1', '::1', 'fe80::1:2', 'dns.example.test']) {
      const header = encodeUdpHeader(host, 5353);
      const dgram = Buffer.concat([header, Buffer.from('payload')]);
      const v = okValue(parseUdpHeader(dgram), header.length);
      assert.equal(v.host, host);
      assert.equal(v.port, 5353);
      assert.equal(v.frag, 0);
      assert.equal(dgram.subarray(v.dataOffset).toString(), 'payload');
    }
  });

  it('reports FRAG and refuses short or unknown headers', () => {
    const d = Buffer.from([0, 0, 3, 1, 1, 2, 3, 4, 0, 53, 0xaa]);
    assert.equal(okValue(parseUdpHeader(d), 10).frag, 3);
    assert.equal(errorCode(parseUdpHeader(Buffer.from([0, 0, 0, 1, 1, 2]))), 'EPROTO');
    assert.equal(errorCode(parseUdpHeader(Buffer.from([0, 0, 0, 9, 1, 2, 3, 4, 0, 1]))), 'EATYPNOTSUP');
  });
});

describe('IPv6 text', () => {
  it('formats like RFC 5952 and parses back (random addresses, fixed seed)', () => {
    const rand = prng(1928);
    const b = Buffer.alloc(16);
    for (let i = 0; i < 2000; i++) {
      for (let j = 0; j < 16; j++) {
        // Plenty of zero groups, so that "::" placement is exercised.
        b[j] = rand() < 0.5 ? 0 : Math.floor(rand() * 256);
      }
      const text = formatIPv6(b, 0);
      const parsed = ipaddr.fromByteArray([...b]) as ipaddr.IPv6;
      if (!text.startsWith('::ffff:') || !text.includes('.')) assert.equal(text, parsed.toRFC5952String());
      const back = Buffer.alloc(16);
      assert.ok(writeIPv6(text, back, 0), text);
      assert.deepEqual(back, b, text);
      assert.ok(writeIPv6(parsed.toNormalizedString(), back, 0));
      assert.deepEqual(back, b);
    }
  });

  it('refuses malformed literals', () => {
    const out = Buffer.alloc(16);
    for (const bad of ['1::2::3', '12345::', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', 'g::', '1.2.3.4::', '::1.2.3', ':']) {
      assert.equal(writeIPv6(bad, out, 0), false, bad);
    }
    assert.ok(writeIPv6('::ffff:1.2.3.4', out, 0));
    assert.equal(formatIPv6(out, 0), '::ffff:1.2.3.4');
    assert.ok(writeIPv6('fe80::1%eth0', out, 0));
    assert.equal(formatIPv6(out, 0), 'fe80::1');
  });
});

describe('fuzz: random input never throws and ok is consistent', () => {
  const parsers: Array<[string, Parser<unknown>, number]> = [
    ['socks4', parseSocks4Request, 4],
    ['socks5 greeting', parseSocks5Greeting, 5],
    ['rfc1929', parseUserPassRequest, 1],
    ['socks5 request', parseSocks5Request, 5],
  ];
  for (const [name, parse, firstByte] of parsers) {
    it(name, () => {
      const rand = prng(0x50c5 + firstByte);
      let oks = 0;
      for (let i = 0; i < 3000; i++) {
        const len = Math.floor(rand() * 40) + (rand() < 0.1 ? 300 : 0);
        const buf = Buffer.alloc(len);
        for (let j = 0; j < len; j++) {
          // Small values are where the interesting bytes (versions, commands, ATYP, NUL) live.
          buf[j] = rand() < 0.6 ? Math.floor(rand() * 6) : Math.floor(rand() * 256);
        }
        if (len > 0 && rand() < 0.8) buf[0] = firstByte;
        const r = parse(buf);
        if (r.status === 'ok') {
          oks++;
          assert.ok(r.consumed > 0 && r.consumed <= len, `${name}: consumed ${r.consumed} of ${len}`);
          // Deterministic on exactly its own bytes, and every shorter prefix only needs more.
          const again = parse(buf.subarray(0, r.consumed));
          assert.deepEqual(again, r);
          for (let n = 0; n < r.consumed; n++) assert.equal(parse(buf.subarray(0, n)).status, 'need-more');
        } else if (r.status === 'need-more') {
          // Need-more is never the answer once a message's byte cap is passed.
          assert.ok(len < 600, `${name}: still needs more after ${len} bytes`);
        }
      }
      assert.ok(oks > 10, `${name}: the fuzz reached ok only ${oks} times`);
    });
  }

  it('udp header', () => {
    const rand = prng(7);
    for (let i = 0; i < 3000; i++) {
      const buf = Buffer.alloc(Math.floor(rand() * 40));
      for (let j = 0; j < buf.length; j++) buf[j] = rand() < 0.6 ? Math.floor(rand() * 6) : Math.floor(rand() * 256);
      const r = parseUdpHeader(buf);
      assert.notEqual(r.status, 'need-more');
      if (r.status === 'ok') assert.ok(r.value.dataOffset <= buf.length);
    }
  });
});
