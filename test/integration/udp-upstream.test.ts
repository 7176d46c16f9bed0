/**
 * UDP ASSOCIATE through an upstream SOCKS5 proxy (issue 19 item 4): a SOCKS5 client's datagrams
 * leave through a real Dante's UDP relay when SOCKS= (or a YAML route) sends the destination
 * there, and through a chain of two Dantes (each datagram wrapped for both); the answers of a UDP
 * echo server come back to the client; PERMIT/REJECT still decide per datagram.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { encodeUdpHeader, parseUdpHeader } from '../../src/wire/socks.js';
import { danteMissing, startDante, type Dante } from '../helpers/dante.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

async function udp(): Promise<UdpSocket> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return s;
}

/** A UDP echo server that answers "echo:" + what it got, and counts the sources it saw. */
async function udpEcho(): Promise<{ socket: UdpSocket; port: number; sources: Set<string> }> {
  const socket = await udp();
  const sources = new Set<string>();
  socket.on('message', (msg, rinfo) => {
    sources.add(`${rinfo.address}:${rinfo.port}`);
    socket.send(Buffer.concat([Buffer.from('echo:'), msg]), rinfo.port, rinfo.address);
  });
  return { socket, port: socket.address().port, sources };
}

/** UDP ASSOCIATE at the proxy, then one datagram to each port: the answers' texts by port (missing ones absent). */
async function exchange(proxy: TestProxy, ports: number[]): Promise<Map<number, string>> {
  const client = await udp();
  const socks = new SocksClient({
    proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5 },
    command: 'associate',
    destination: { host: '127.0.0.1', port: client.address().port },
    timeout: 10_000,
  });
  const { socket: control, remoteHost } = await new Promise<{ socket: Socket; remoteHost?: { host: string; port: number } }>((resolve, reject) => {
    socks.once('established', resolve);
    socks.once('error', reject);
    socks.connect();
  });
  const relay = remoteHost!;
  const got = new Map<number, string>();
  client.on('message', (msg) => {
    const h = parseUdpHeader(msg);
    if (h.status === 'ok') got.set(h.value.port, msg.subarray(h.value.dataOffset).toString());
  });
  try {
    // Datagrams may be lost; ask again a few times until every allowed port answered.
    for (let round = 0; round < 20 && got.size < ports.length; round++) {
      for (const p of ports) if (!got.has(p)) client.send([encodeUdpHeader('127.0.0.1', p), Buffer.from(`hi ${p}`)], relay.port, relay.host === '0.0.0.0' ? '127.0.0.1' : relay.host);
      await new Promise((r) => setTimeout(r, 150));
    }
  } finally {
    (control as Socket).destroy();
    client.close();
  }
  return got;
}

const skip = danteMissing() ?? false;

describe('UDP ASSOCIATE through an upstream SOCKS5 (Dante)', { skip }, () => {
  let d1: Dante;
  let d2: Dante;
  let echoA: Awaited<ReturnType<typeof udpEcho>>;
  let echoB: Awaited<ReturnType<typeof udpEcho>>;
  let dir: string;
  before(async () => {
    d1 = await startDante({ auth: 'none', udp: true });
    d2 = await startDante({ auth: 'none', udp: true });
    echoA = await udpEcho();
    echoB = await udpEcho();
    dir = mkdtempSync(join(tmpdir(), 'sockstap-udpup-'));
  });
  after(async () => {
    await d1?.stop();
    await d2?.stop();
    echoA?.socket.close();
    echoB?.socket.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('SOCKS=dante: datagrams go through its UDP relay, answers come back', async () => {
    const proxy = await startProxy(['-P127.0.0.1:0/socks', `SOCKS=127.0.0.1:${d1.port}`, 'RELAY=js']);
    try {
      const got = await exchange(proxy, [echoA.port]);
      assert.equal(got.get(echoA.port), `echo:hi ${echoA.port}`);
      for (let i = 0; i < 50 && !/udpassociate|udpreply/.test(d1.log()); i++) await new Promise((r) => setTimeout(r, 100));
      assert.match(d1.log(), /udp/i, 'Dante relayed the datagrams');
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });

  test('per-datagram policy: a rejected destination gets nothing, the others pass through the upstream', async () => {
    const proxy = await startProxy(['-P127.0.0.1:0/socks', `SOCKS=127.0.0.1:${d1.port}`, `REJECT=*:{127.0.0.1:${echoB.port}}:*`, 'RELAY=js']);
    const before = echoB.sources.size;
    try {
      const got = await exchange(proxy, [echoA.port, echoB.port]);
      assert.equal(got.get(echoA.port), `echo:hi ${echoA.port}`);
      assert.equal(got.has(echoB.port), false);
      assert.equal(echoB.sources.size, before, 'the rejected server saw no datagram');
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });

  test('a chain of two Dantes (YAML route): each datagram wrapped for both relays', async () => {
    const file = join(dir, 'chain.yaml');
    writeFileSync(file, `routes:\n  - match: { dst: "*" }\n    via: "socks5://127.0.0.1:${d1.port},socks5://127.0.0.1:${d2.port}"\n`);
    const proxy = await startProxy(['-f', file, '-P127.0.0.1:0/socks', 'RELAY=js']);
    try {
      const got = await exchange(proxy, [echoB.port]);
      assert.equal(got.get(echoB.port), `echo:hi ${echoB.port}`);
      for (let i = 0; i < 50 && !/udp/i.test(d2.log()); i++) await new Promise((r) => setTimeout(r, 100));
      assert.match(d2.log(), /udp/i, 'the second Dante relayed them');
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });

  test('an upstream that cannot be reached: datagrams are dropped and the route failure logged', async () => {
    const proxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKS=127.0.0.1:1', 'RELAY=js']);
    try {
      const got = await exchange(proxy, [echoA.port]);
      assert.equal(got.size, 0);
      assert.match(proxy.readLog('sockstap.log'), /udp route failed .*route=socks5:\/\/127\.0\.0\.1:1/);
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });
});
