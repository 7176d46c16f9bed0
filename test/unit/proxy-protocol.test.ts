import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/types.js';
import {
  encodeProxyHeader,
  parseProxyHeader,
  PROXY_V1_MAX,
  PROXY_V2_MAX,
  PROXY_V2_SIGNATURE,
  sniffProxyHeader,
} from '../../src/net/proxy-protocol.js';
import { parseChain } from '../../src/upstream/hop.js';
import { hopFromUpstream } from '../../src/upstream/hop.js';

const ok = (buf: Buffer) => {
  const r = parseProxyHeader(buf);
  assert.equal(r.status, 'ok', JSON.stringify(r));
  return r as Extract<typeof r, { status: 'ok' }>;
};
const err = (buf: Buffer): string => {
  const r = parseProxyHeader(buf);
  assert.equal(r.status, 'error', JSON.stringify(r));
  return (r as { reason: string }).reason;
};
const needMore = (buf: Buffer): void => assert.deepEqual(parseProxyHeader(buf), { status: 'need-more' });

function v2(verCmd: number, famProto: number, body: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head[0] = verCmd;
  head[1] = famProto;
  head.writeUInt16BE(body.length, 2);
  return Buffer.concat([PROXY_V2_SIGNATURE, head, body]);
}

test('v1 TCP4, TCP6 and UNKNOWN; what follows is the client\'s', () => {
  const r = ok(Buffer.from('PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n'));
  assert.equal(r.consumed, 'PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n'.length);
  assert.deepEqual(r.value, {
    version: 1,
    command: 'proxy',
    family: 'tcp4',
    source: { address: '192.0.2.10', port: 56324 },
    destination: { address: '198.51.100.1', port: 443 },
    tlvs: 0,
  });
  const six = ok(Buffer.from('PROXY TCP6 2001:DB8::1 ::1 1 65535\r\n')).value;
  assert.deepEqual(six.source, { address: '2001:db8::1', port: 1 });
  assert.deepEqual(six.destination, { address: '::1', port: 65535 });
  const unknown = ok(Buffer.from('PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 65535 65535\r\n\x05'));
  assert.equal(unknown.value.source, null);
  assert.equal(unknown.consumed, 'PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 65535 65535\r\n'.length);
});

test('v1 in pieces: need-more until CRLF; bounded at 107 bytes', () => {
  const line = Buffer.from('PROXY TCP4 10.0.0.1 10.0.0.2 1000 80\r\n');
  for (let i = 1; i < line.length; i++) needMore(line.subarray(0, i));
  const long = Buffer.concat([Buffer.from('PROXY UNKNOWN '), Buffer.alloc(PROXY_V1_MAX, 0x61), Buffer.from('\r\n')]);
  needMore(long.subarray(0, PROXY_V1_MAX - 1));
  assert.match(err(long), /longer than 107/);
  // the longest legal line, 107 bytes with its CRLF
  const max = `PROXY TCP6 ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`;
  assert.equal(max.length, 104);
  ok(Buffer.from(max));
});

test('v1 refusals: not a header, bare LF, bad family, bad addresses, bad ports', () => {
  assert.match(err(Buffer.from([0x05, 0x01, 0x00])), /no PROXY protocol header/);
  assert.match(err(Buffer.from('GET / HTTP/1.1\r\n')), /no PROXY protocol header/);
  assert.match(err(Buffer.from('PROXZ')), /not a PROXY/);
  assert.match(err(Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n')), /CRLF/);
  assert.match(err(Buffer.from('PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n')), /unknown protocol/);
  assert.match(err(Buffer.from('PROXY TCP4 ::1 5.6.7.8 1 2\r\n')), /not IPv4/);
  assert.match(err(Buffer.from('PROXY TCP6 1.2.3.4 ::1 1 2\r\n')), /not IPv6/);
  assert.match(err(Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n')), /ports/);
  assert.match(err(Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n')), /ports/);
  assert.match(err(Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n')), /expected/);
  assert.match(err(Buffer.from('PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n')), /expected/);
  assert.match(err(Buffer.from('PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n')), /not IPv6|zone/);
});

test('v2 PROXY over TCP4 and TCP6 (IPv4-mapped read as IPv4), TLVs skipped', () => {
  const body4 = Buffer.from([192, 0, 2, 7, 127, 0, 0, 1, 0xc3, 0x50, 0x1f, 0x90]);
  const tlvs = Buffer.from([0x04, 0x00, 0x03, 0, 0, 0, 0x01, 0x00, 0x02, 0x68, 0x32]);
  const h4 = v2(0x21, 0x11, Buffer.concat([body4, tlvs]));
  const r4 = ok(Buffer.concat([h4, Buffer.from([0x05, 0x01, 0x00])]));
  assert.equal(r4.consumed, h4.length);
  assert.deepEqual(r4.value, {
    version: 2,
    command: 'proxy',
    family: 'tcp4',
    source: { address: '192.0.2.7', port: 50000 },
    destination: { address: '127.0.0.1', port: 8080 },
    tlvs: 2,
  });
  const body6 = Buffer.alloc(36);
  Buffer.from('20010db8000000000000000000000042', 'hex').copy(body6, 0);
  Buffer.from('00000000000000000000ffffc0000209', 'hex').copy(body6, 16);
  body6.writeUInt16BE(1234, 32);
  body6.writeUInt16BE(443, 34);
  const r6 = ok(v2(0x21, 0x21, body6)).value;
  assert.deepEqual(r6.source, { address: '2001:db8::42', port: 1234 });
  assert.deepEqual(r6.destination, { address: '192.0.2.9', port: 443 });
  for (let i = 1; i < h4.length; i++) needMore(h4.subarray(0, i));
});

test('v2 LOCAL, UNSPEC and UNIX keep the connection\'s endpoints', () => {
  const local = ok(v2(0x20, 0x00, Buffer.alloc(0))).value;
  assert.equal(local.command, 'local');
  assert.equal(local.source, null);
  // LOCAL with an address block (HAProxy's health checks may send one): still ignored
  assert.equal(ok(v2(0x20, 0x11, Buffer.alloc(12, 1))).value.source, null);
  assert.equal(ok(v2(0x21, 0x00, Buffer.alloc(0))).value.source, null);
  assert.equal(ok(v2(0x21, 0x31, Buffer.alloc(216))).value.family, 'unspec');
});

test('v2 refusals: version, command, family, datagrams, short blocks, broken TLVs, the size cap', () => {
  assert.match(err(v2(0x11, 0x11, Buffer.alloc(12))), /version 1/);
  assert.match(err(v2(0x22, 0x11, Buffer.alloc(12))), /command 2/);
  assert.match(err(v2(0x21, 0x41, Buffer.alloc(12))), /family 4/);
  assert.match(err(v2(0x21, 0x13, Buffer.alloc(12))), /transport 3/);
  assert.match(err(v2(0x21, 0x12, Buffer.alloc(12))), /datagram/);
  assert.match(err(v2(0x21, 0x11, Buffer.alloc(11))), /needs 12/);
  assert.match(err(v2(0x21, 0x21, Buffer.alloc(12))), /needs 36/);
  assert.match(err(v2(0x21, 0x11, Buffer.concat([Buffer.alloc(12), Buffer.from([0x01, 0x00])]))), /cut short/);
  assert.match(err(v2(0x21, 0x11, Buffer.concat([Buffer.alloc(12), Buffer.from([0x01, 0x00, 0x09, 0x00])]))), /runs past/);
  const big = Buffer.concat([PROXY_V2_SIGNATURE, Buffer.from([0x21, 0x11, 0xff, 0xff])]);
  assert.match(err(big), /at most/);
  assert.equal(16 + 4096, PROXY_V2_MAX);
  assert.match(err(Buffer.from('\r\n\r\n\x00\r\nQUIZ\n', 'latin1')), /signature/);
});

test('encode then parse: v1 and v2, IPv4, IPv6, mixed families, unknown endpoints', () => {
  const cases = [
    [{ address: '10.1.2.3', port: 4000 }, { address: '127.0.0.1', port: 1080 }],
    [{ address: '2001:db8::1', port: 5 }, { address: '::1', port: 1080 }],
    [{ address: '::ffff:10.9.8.7', port: 6 }, { address: '10.0.0.1', port: 7 }],
  ] as const;
  for (const version of [1, 2] as const) {
    for (const [src, dst] of cases) {
      const r = ok(encodeProxyHeader(version, src, dst)).value;
      assert.equal(r.version, version);
      assert.deepEqual(r.source, { address: src.address.replace('::ffff:', ''), port: src.port });
      assert.deepEqual(r.destination, dst);
    }
    // an IPv4 client reaching an IPv6 address: TCP6 with the client mapped (read back as IPv4)
    const mixed = ok(encodeProxyHeader(version, { address: '10.0.0.5', port: 9 }, { address: '::1', port: 1080 })).value;
    assert.equal(mixed.family, 'tcp6');
    assert.deepEqual(mixed.source, { address: '10.0.0.5', port: 9 });
    const none = ok(encodeProxyHeader(version, null, null)).value;
    assert.equal(none.source, null);
  }
  assert.equal(encodeProxyHeader(1, { address: '10.1.2.3', port: 4000 }, { address: '127.0.0.1', port: 1080 }).toString(), 'PROXY TCP4 10.1.2.3 127.0.0.1 4000 1080\r\n');
});

test('sniffing a header from a source that may not send one', () => {
  assert.equal(sniffProxyHeader(Buffer.alloc(0)), 'maybe');
  assert.equal(sniffProxyHeader(Buffer.from('PRO')), 'maybe');
  assert.equal(sniffProxyHeader(Buffer.from('PROXY ')), 'yes');
  assert.equal(sniffProxyHeader(PROXY_V2_SIGNATURE.subarray(0, 5)), 'maybe');
  assert.equal(sniffProxyHeader(PROXY_V2_SIGNATURE), 'yes');
  assert.equal(sniffProxyHeader(Buffer.from([0x05, 0x01, 0x00])), 'no');
  assert.equal(sniffProxyHeader(Buffer.from('PROPFIND / HTTP/1.1')), 'no');
  assert.equal(sniffProxyHeader(Buffer.from('\r\n')), 'maybe');
  assert.equal(sniffProxyHeader(Buffer.from('\r\nX')), 'no');
});

const dir = mkdtempSync(join(tmpdir(), 'sockstap-pp-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('PROXYPROTOCOL=hostList and the /proxy-v1|/proxy-v2 hop option', () => {
  const c = loadConfig(['PROXYPROTOCOL=127.0.0.2,10.0.0.0/8', 'SOCKS=gw:1080/5/proxy-v2', 'SOCKS=gw4:1080/proxy-v1/4a', 'PROXY=sq:3128/proxy-v1:*.corp'], { cwd: dir });
  assert.ok(c.proxyProtocol?.matches({ host: '10.2.3.4', addresses: ['10.2.3.4'] }));
  assert.ok(!c.proxyProtocol?.matches({ host: '127.0.0.1', addresses: ['127.0.0.1'] }));
  assert.deepEqual(
    c.upstreams.map((u) => [u.kind, u.version, u.proxyProtocol, u.source]),
    [
      ['socks', '5', 2, 'SOCKS=gw:1080/5/proxy-v2'],
      ['socks', '4a', 1, 'SOCKS=gw4:1080/proxy-v1/4a'],
      ['http', undefined, 1, 'PROXY=sq:3128/proxy-v1:*.corp'],
    ],
  );
  assert.equal(hopFromUpstream(c.upstreams[0]!).proxyProtocol, 2);
  assert.ok(c.upstreams[2]!.dst.matches({ host: 'a.corp' }));
  assert.equal(loadConfig([], { cwd: dir }).proxyProtocol, undefined);
  assert.throws(() => loadConfig(['SOCKS=gw:1080/proxy-v3'], { cwd: dir }), ConfigError);
  assert.throws(() => loadConfig(['SOCKS=gw:1080/proxy-v1/proxy-v2'], { cwd: dir }), /once/);
  assert.throws(() => loadConfig(['PROXY=sq:3128/5'], { cwd: dir }), ConfigError);
  const [chain] = [parseChain('socks5://gw:1080/proxy-v2,http://sq:3128', 'via')];
  assert.deepEqual(chain!.map((h) => h.proxyProtocol), [2, undefined]);
  assert.equal(parseChain('http://u:p@sq:3128/proxy-v1', 'via')[0]!.proxyProtocol, 1);
});

test('YAML proxyprotocol: a list or a string', () => {
  const f = join(dir, 'pp.yaml');
  writeFileSync(f, 'proxyprotocol: [10.0.0.5, 10.0.0.0/30]\nsocks: "gw:1080/proxy-v2"\n');
  const c = loadConfig(['-f', f], { cwd: dir });
  assert.ok(c.proxyProtocol?.matches({ host: '10.0.0.2', addresses: ['10.0.0.2'] }));
  assert.ok(c.proxyProtocol?.matches({ host: '10.0.0.5', addresses: ['10.0.0.5'] }));
  assert.ok(!c.proxyProtocol?.matches({ host: '10.0.0.6', addresses: ['10.0.0.6'] }));
  assert.equal(c.upstreams[0]!.proxyProtocol, 2);
  writeFileSync(f, 'proxyprotocol: 7\n');
  assert.throws(() => loadConfig(['-f', f], { cwd: dir }), /proxyprotocol/);
});
