/**
 * SRCIF=ADDRESS[:dstHostList[:srcHostList]] (issue 19 item 2): the origin sees the chosen source
 * address (second loopback addresses: Linux's lo answers for all of 127.0.0.0/8), first match
 * wins, per destination and per source, IPv4 and IPv6, through the SOCKS door (the native accept
 * path hands such CONNECTs to JavaScript) and the HTTP door; an address that is not local is a
 * configuration error (exit status 2).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/types.js';
import { runCli } from '../helpers/process.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

/** A TCP server that answers every connection with the address it came from. */
async function whoami(host: string): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer((s) => s.end(`${s.remoteAddress}\n`));
  await new Promise<void>((r) => server.listen(0, host, r));
  return { port: (server.address() as net.AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) };
}

async function viaSocks(proxy: TestProxy, host: string, port: number, localAddress?: string): Promise<string> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5 },
    command: 'connect',
    destination: { host, port },
    timeout: 10_000,
    ...(localAddress ? { socket_options: { localAddress } } : {}),
  } as Parameters<typeof SocksClient.createConnection>[0]);
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString()));
  await new Promise((r) => socket.once('end', r));
  socket.destroy();
  return text.trim();
}

describe('SRCIF: the source address of direct dials', () => {
  let proxy: TestProxy;
  let a: Awaited<ReturnType<typeof whoami>>;
  let b: Awaited<ReturnType<typeof whoami>>;
  let v6: Awaited<ReturnType<typeof whoami>>;
  let origin: http.Server;
  let originPort = 0;
  let originSaw = '';

  before(async () => {
    a = await whoami('127.0.0.1');
    b = await whoami('127.0.0.1');
    v6 = await whoami('::1');
    origin = http.createServer((req, res) => {
      originSaw = req.socket.remoteAddress ?? '';
      res.end('ok');
    });
    await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
    originPort = (origin.address() as net.AddressInfo).port;
    proxy = await startProxy([
      '-P127.0.0.1:0/socks',
      '-P127.0.0.1:0/http',
      // the native accept path is on (RELAY=splice, the default): these CONNECTs must still bind
      `SRCIF=127.0.0.3:{127.0.0.1:${b.port}}`,
      'SRCIF=127.0.0.4:*:127.0.0.5',
      'SRCIF=[::1]',
      'SRCIF=127.0.0.2',
    ]);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await a.close();
    await b.close();
    await v6.close();
    await new Promise((r) => origin.close(r));
  });

  test('a SOCKS5 CONNECT leaves from 127.0.0.2 (the IPv6 rule is skipped for an IPv4 destination)', async () => {
    assert.equal(await viaSocks(proxy, '127.0.0.1', a.port), '127.0.0.2');
  });

  test('first match wins: a destination list picks 127.0.0.3', async () => {
    assert.equal(await viaSocks(proxy, '127.0.0.1', b.port), '127.0.0.3');
  });

  test('a source list picks 127.0.0.4 for the client on 127.0.0.5', async () => {
    assert.equal(await viaSocks(proxy, '127.0.0.1', a.port, '127.0.0.5'), '127.0.0.4');
  });

  test('IPv6: a destination on ::1 is dialed from [::1]', async () => {
    assert.equal(await viaSocks(proxy, '::1', v6.port), '::1');
  });

  test('the HTTP door forwards from 127.0.0.2', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: proxy.port('http'), path: `http://127.0.0.1:${originPort}/x`, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(status, 200);
    assert.equal(originSaw, '127.0.0.2');
  });
});

describe('SRCIF errors', () => {
  test('an address that is not this host\'s is refused, naming it', () => {
    assert.throws(
      () => loadConfig(['SRCIF=192.0.2.250']),
      (e: unknown) => e instanceof ConfigError && /SRCIF: 192\.0\.2\.250 is not an address of this host/.test(e.message),
    );
    assert.throws(() => loadConfig(['SRCIF=[2001:db8::99]:*']), (e: unknown) => e instanceof ConfigError && /not an address of this host/.test(e.message));
    assert.throws(() => loadConfig(['SRCIF=nohost.example']), (e: unknown) => e instanceof ConfigError && /IPv4 or \[IPv6\] address/.test(e.message));
    assert.throws(() => loadConfig(['SRCIF=127.0.0.2:a:b:c']), (e: unknown) => e instanceof ConfigError && /ADDRESS\[:dstHostList/.test(e.message));
    const c = loadConfig(['SRCIF=127.0.0.9:*.example.com:10.0.0.0/8', 'SRCIF=[::1]:*']);
    assert.deepEqual(
      c.srcif?.map((r) => [r.address, r.family, r.dst.source, r.src.source]),
      [
        ['127.0.0.9', 4, '*.example.com', '10.0.0.0/8'],
        ['::1', 6, '*', '*'],
      ],
    );
  });

  test('the command line exits with status 2', async () => {
    const p = runCli(['-P127.0.0.1:0/socks', 'SRCIF=192.0.2.250']);
    assert.equal(await p.exited, 2);
    assert.match(p.output(), /SRCIF: 192\.0\.2\.250 is not an address of this host/);
  });
});
