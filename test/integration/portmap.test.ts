/**
 * Port mapping: a YAML range of tcprelay ports to a loopback web server serves like the HTTP door
 * and goes through the same routing (a mapped port leaving through Dante); a udprelay port echoes
 * datagrams with one session per client address, ended when idle.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { curl, PAGE, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { danteMissing, startDante, type Dante } from '../helpers/dante.js';
import { UdpPortmap, type UdpSessionRecord } from '../../src/net/udp-portmap.js';
import { NameCache } from '../../src/net/dns.js';

describe('tcprelay port ranges from YAML', () => {
  let origin: Origin;
  let proxy: TestProxy;
  let dir: string;
  // Fixed ports below 32768, spread by pid so parallel runs rarely meet.
  const base = 20000 + (process.pid % 4000) * 3;
  before(async () => {
    origin = await startOrigin();
    dir = mkdtempSync(join(tmpdir(), 'sockstap-portmap-'));
    const file = join(dir, 'portmap.yaml');
    writeFileSync(file, ['portmap:', `  - listen: "127.0.0.1:${base}-${base + 2}"`, `    to: "localhost:${origin.port}"`, ''].join('\n'));
    proxy = await startProxy(['-f', file]);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await origin.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('opens every port of the range and no default port', () => {
    const ports = proxy.proxy.addresses().map((a) => `${a.door}:${a.port}`).sort();
    assert.deepEqual(ports, [`tcprelay:${base}`, `tcprelay:${base + 1}`, `tcprelay:${base + 2}`]);
  });

  for (const offset of [0, 2]) {
    it(`port ${offset} of the range serves the web server`, async () => {
      const r = await curl([`http://127.0.0.1:${base + offset}/mapped`]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(PAGE));
      assert.ok(origin.requests.some((q) => q.url === '/mapped'));
    });
  }

  it('records tcprelay sessions with a direct route', async () => {
    await proxy.stop(2000);
    const s = proxy.sessions().filter((x) => x.door === 'tcprelay');
    assert.equal(s.length, 2);
    for (const x of s) {
      assert.equal(x.route, 'direct');
      assert.equal(x.dst, `localhost:${origin.port}`);
    }
  });
});

describe('a mapped port leaves through an upstream SOCKS proxy', { skip: danteMissing() ?? false }, () => {
  let origin: Origin;
  let dante: Dante;
  let proxy: TestProxy;
  before(async () => {
    origin = await startOrigin();
    dante = await startDante({ auth: 'none' });
    proxy = await startProxy([`-P127.0.0.1:0/tcprelay://localhost:${origin.port}`, `SOCKS=127.0.0.1:${dante.port}`]);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await dante.stop();
    await origin.close();
  });

  it('serves the page through Dante and records that route', async () => {
    const r = await curl([`http://127.0.0.1:${proxy.port()}/virtual`]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(PAGE));
    await proxy.stop(2000);
    assert.equal(proxy.sessions()[0]?.route, `socks5://127.0.0.1:${dante.port}`);
    assert.match(dante.log(), /connect/);
  });
});

describe('udprelay', () => {
  let echo: dgram.Socket;
  let relay: UdpPortmap;
  let port = 0;
  const ended: UdpSessionRecord[] = [];
  const names = new NameCache();
  before(async () => {
    echo = dgram.createSocket('udp4');
    echo.on('message', (msg, rinfo) => echo.send(Buffer.concat([Buffer.from('echo:'), msg]), rinfo.port, rinfo.address));
    echo.bind(0, '127.0.0.1');
    await once(echo, 'listening');
    relay = new UdpPortmap({
      listen: { host: '127.0.0.1', port: 0 },
      target: { host: '127.0.0.1', port: echo.address().port },
      idleMs: 300,
      names: () => names,
      onSessionEnd: (r) => ended.push(r),
    });
    port = (await relay.start()).port;
  });
  after(async () => {
    await relay.close();
    echo.close();
  });

  it('echoes a datagram to each client through its own session, then expires them', async () => {
    const clients = [dgram.createSocket('udp4'), dgram.createSocket('udp4')];
    try {
      for (const [i, c] of clients.entries()) {
        c.bind(0, '127.0.0.1');
        await once(c, 'listening');
        const reply = once(c, 'message');
        c.send(`hello ${i}`, port, '127.0.0.1');
        const [msg] = (await reply) as [Buffer];
        assert.equal(msg.toString(), `echo:hello ${i}`);
      }
      assert.equal(relay.sessionCount, 2);
      const until = Date.now() + 10_000;
      while (relay.sessionCount > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      assert.equal(relay.sessionCount, 0, 'idle sessions did not end');
      assert.equal(ended.length, 2);
      for (const r of ended) {
        assert.equal(r.result, 'idle');
        assert.equal(r.datagramsUp, 1);
        assert.equal(r.datagramsDown, 1);
      }
    } finally {
      for (const c of clients) c.close();
    }
  });
});

describe('udprelay through the proxy', () => {
  it('-P…/udprelay://HOST:PORT opens a UDP port that relays a datagram and its answer', async () => {
    const echo = dgram.createSocket('udp4');
    echo.on('message', (msg, rinfo) => echo.send(Buffer.concat([Buffer.from('echo:'), msg]), rinfo.port, rinfo.address));
    echo.bind(0, '127.0.0.1');
    await once(echo, 'listening');
    const proxy = await startProxy([`-P127.0.0.1:0/udprelay://127.0.0.1:${echo.address().port}`]);
    const client = dgram.createSocket('udp4');
    try {
      client.bind(0, '127.0.0.1');
      await once(client, 'listening');
      const reply = once(client, 'message');
      client.send('through sockstap', proxy.port('udprelay'), '127.0.0.1');
      const [msg] = (await reply) as [Buffer];
      assert.equal(msg.toString(), 'echo:through sockstap');
    } finally {
      client.close();
      echo.close();
      await proxy.stop();
      assert.match(proxy.readLog('sockstap.log'), /listening door=udprelay/);
      proxy.cleanup();
    }
  });
});
