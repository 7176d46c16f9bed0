/**
 * Upstream pools (issue 19 item 5) through two real Squids: round-robin spreads CONNECTs over both;
 * one stopped mid-test is marked dead and traffic moves to the other with no failed request; it
 * comes back after failtimeout and gets traffic again; /metrics shows each upstream's figures.
 * Each Squid is reached through a TCP relay the test can close and reopen on the same port.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { curl, PAGE, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { squidMissing, startSquid, type Squid } from '../helpers/squid.js';

/** A TCP relay to `target` that can be closed (every connection cut) and opened again on its port. */
class Relay {
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  port = 0;
  constructor(private readonly target: number) {}
  async open(): Promise<void> {
    const server = net.createServer((client) => {
      const up = net.connect(this.target, '127.0.0.1');
      for (const s of [client, up]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {});
      }
      client.pipe(up).pipe(client);
    });
    await new Promise<void>((r) => server.listen(this.port, '127.0.0.1', r));
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = null;
    if (server) await new Promise((r) => server.close(r));
  }
}

function metrics(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(`${url}metrics`, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve(text));
      })
      .on('error', reject);
  });
}

const connects = (squid: Squid, port: number): number =>
  squid.accessLog().split('\n').filter((l) => l.includes(`CONNECT localhost:${port}`)).length;

/** Squid writes its access.log line when the tunnel has closed: wait (10 s at most) for the count. */
async function countReaches(squid: Squid, port: number, want: number): Promise<number> {
  for (let i = 0; i < 200 && connects(squid, port) < want; i++) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 100));
  return connects(squid, port);
}

describe('an upstream pool of two Squids', { skip: squidMissing() ?? false }, () => {
  let origin: Origin;
  let squidA: Squid;
  let squidB: Squid;
  let relayA: Relay;
  let relayB: Relay;
  let proxy: TestProxy;
  let dir: string;
  const FAILTIMEOUT_MS = 1500;

  before(async () => {
    origin = await startOrigin();
    [squidA, squidB] = await Promise.all([startSquid(), startSquid()]);
    relayA = new Relay(squidA.port);
    relayB = new Relay(squidB.port);
    await relayA.open();
    await relayB.open();
    dir = mkdtempSync(join(tmpdir(), 'sockstap-pool-'));
    const file = join(dir, 'pool.yaml');
    writeFileSync(
      file,
      [
        'routes:',
        `  - via: ["http://127.0.0.1:${relayA.port}", "http://127.0.0.1:${relayB.port}"]`,
        '    balance: round-robin',
        '    maxfails: 1',
        `    failtimeout: ${FAILTIMEOUT_MS}ms`,
        '',
      ].join('\n'),
    );
    proxy = await startProxy(['-f', file, '-P127.0.0.1:0/socks', 'ADMIN=127.0.0.1:0', 'RELAY=js']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await relayA.close();
    await relayB.close();
    await Promise.all([squidA.stop(), squidB.stop()]);
    await origin.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function fetch(i: number): Promise<void> {
    const r = await curl(['-sS', '-x', `socks5h://127.0.0.1:${proxy.port('socks')}`, `http://localhost:${origin.port}/pool-${i}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(PAGE));
  }

  test('round-robin: both Squids carry the CONNECTs, in turn', async () => {
    for (let i = 0; i < 4; i++) await fetch(i);
    assert.equal(await countReaches(squidA, origin.port, 2), 2);
    assert.equal(await countReaches(squidB, origin.port, 2), 2);
  });

  test('one stopped mid-test: marked dead, traffic moves to the other, no request fails', async () => {
    await relayA.close();
    const [a0, b0] = [connects(squidA, origin.port), connects(squidB, origin.port)];
    for (let i = 10; i < 14; i++) await fetch(i);
    assert.equal(await countReaches(squidB, origin.port, b0 + 4), b0 + 4);
    assert.equal(connects(squidA, origin.port), a0);
    const text = await metrics(proxy.proxy.adminUrl!);
    const a = `upstream="http://127.0.0.1:${relayA.port}"`;
    const b = `upstream="http://127.0.0.1:${relayB.port}"`;
    assert.match(text, new RegExp(`sockstap_upstream_up\\{${a}\\} 0`));
    assert.match(text, new RegExp(`sockstap_upstream_up\\{${b}\\} 1`));
    assert.match(text, new RegExp(`sockstap_upstream_failures_total\\{${a}\\} 1`), 'one failure, then skipped while dead');
    assert.match(text, new RegExp(`sockstap_upstream_marked_dead_total\\{${a}\\} 1`));
    assert.match(text, new RegExp(`sockstap_upstream_connections_total\\{${b}\\} \\d+`));
  });

  test('it comes back: probed after failtimeout, then in turn again', async () => {
    await relayA.open();
    await new Promise((r) => setTimeout(r, FAILTIMEOUT_MS + 200));
    const a0 = connects(squidA, origin.port);
    for (let i = 20; i < 24; i++) await fetch(i);
    assert.equal(await countReaches(squidA, origin.port, a0 + 2), a0 + 2);
    const text = await metrics(proxy.proxy.adminUrl!);
    assert.match(text, new RegExp(`sockstap_upstream_up\\{upstream="http://127.0.0.1:${relayA.port}"\\} 1`));
  });
});
