/**
 * POOL= (issue 19 item 5, the DeleGate-style parameter for upstream pools): round-robin spreads
 * tunnels over two upstream SOCKS5 proxies (two sockstaps), weighted follows the weights, a
 * stopped member is marked dead and its traffic moves to the other with no failed tunnel; dst
 * lists pick which destinations a pool serves; bad values are start errors.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/types.js';
import { startEcho, type EchoServer } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

let echo: EchoServer;
let a: TestProxy;
let b: TestProxy;
before(async () => {
  echo = await startEcho();
  a = await startProxy(['-P127.0.0.1:0/socks', 'RELAY=js']);
  b = await startProxy(['-P127.0.0.1:0/socks', 'RELAY=js']);
});
after(async () => {
  await a?.stop();
  a?.cleanup();
  await b?.stop();
  b?.cleanup();
  await echo.close();
});

async function tunnel(proxy: TestProxy): Promise<string> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5 },
    command: 'connect',
    destination: { host: '127.0.0.1', port: echo.port },
    timeout: 10_000,
  });
  socket.write('pooled');
  const got = await new Promise<string>((r) => socket.once('data', (d: Buffer) => r(d.toString())));
  socket.destroy();
  return got;
}

/** Sessions each upstream has logged so far (they are written when a tunnel ends). */
async function counts(expected: number, base: [number, number]): Promise<[number, number]> {
  for (let i = 0; i < 100; i++) {
    const n: [number, number] = [a.sessions().length - base[0], b.sessions().length - base[1]];
    if (n[0] + n[1] >= expected) return n;
    await new Promise((r) => setTimeout(r, 50));
  }
  return [a.sessions().length - base[0], b.sessions().length - base[1]];
}

const base = (): [number, number] => [a.sessions().length, b.sessions().length];

describe('POOL=', () => {
  test('round-robin: tunnels alternate over both members', async () => {
    const start = base();
    const proxy = await startProxy(['-P127.0.0.1:0/socks', `POOL=round-robin:{socks5://127.0.0.1:${a.port('socks')},socks5://127.0.0.1:${b.port('socks')}}`, 'RELAY=js']);
    try {
      for (let i = 0; i < 4; i++) assert.equal(await tunnel(proxy), 'pooled');
      assert.deepEqual(await counts(4, start), [2, 2]);
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });

  test('weighted *3,*1: three to the first for one to the second', async () => {
    const start = base();
    const proxy = await startProxy(['-P127.0.0.1:0/socks', `POOL=weighted:{socks5://127.0.0.1:${a.port('socks')}*3,socks5://127.0.0.1:${b.port('socks')}*1}`, 'RELAY=js']);
    try {
      for (let i = 0; i < 8; i++) assert.equal(await tunnel(proxy), 'pooled');
      assert.deepEqual(await counts(8, start), [6, 2]);
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });

  test('a dst list: destinations it does not name go direct', async () => {
    const start = base();
    const proxy = await startProxy(['-P127.0.0.1:0/socks', `POOL=first-up:{socks5://127.0.0.1:${a.port('socks')}}:*.pooled.example`, 'RELAY=js']);
    try {
      assert.equal(await tunnel(proxy), 'pooled');
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual([a.sessions().length - start[0], b.sessions().length - start[1]], [0, 0]);
      for (let i = 0; i < 40 && proxy.sessions().length < 1; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(proxy.sessions()[0]!.route, 'direct');
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });

  test('a member that stops is marked dead: its traffic moves, no tunnel fails', async () => {
    const c = await startProxy(['-P127.0.0.1:0/socks', 'RELAY=js']);
    const start = base();
    const proxy = await startProxy(['-P127.0.0.1:0/socks', `POOL=round-robin/maxfails=1/failtimeout=1m:{socks5://127.0.0.1:${a.port('socks')},socks5://127.0.0.1:${c.port('socks')}}`, 'RELAY=js']);
    try {
      await c.stop();
      for (let i = 0; i < 4; i++) assert.equal(await tunnel(proxy), 'pooled');
      assert.deepEqual((await counts(4, start))[0], 4);
      assert.match(proxy.readLog('sockstap.log'), /route failed, trying the next/);
    } finally {
      await proxy.stop();
      proxy.cleanup();
      c.cleanup();
    }
  });

  test('bad values are start errors', () => {
    const bad = (v: string, re: RegExp) => assert.throws(() => loadConfig(['-P127.0.0.1:0', `POOL=${v}`]), (e: unknown) => e instanceof ConfigError && re.test(e.message), v);
    bad('fastest:{direct}', /unknown balance/);
    bad('round-robin:http://a:1', /braces/);
    bad('round-robin:{http://a:1*2}', /for POOL=weighted/);
    bad('round-robin/maxfails=0:{direct}', /1 to 1000/);
    bad('round-robin/colour=red:{direct}', /unknown pool option/);
    bad('round-robin:{ftp://a:1}', /unknown scheme/);
    bad('round-robin', /expected BALANCE/);
  });
});
