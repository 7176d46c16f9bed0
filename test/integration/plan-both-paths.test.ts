/**
 * One plan for both accept paths (issue 14 item 1): a check added to the configuration reaches
 * the CONNECTs the native accept path's thread reads (and would remember) and the JavaScript
 * doors' alike, because both ask planTunnel (src/pipeline/plan.ts). Here a REJECT added at a
 * reload refuses a native SOCKS5 CONNECT (from the thread, not handed over) and a SOCKS4 one; a
 * SOCKSTAP rule added at a reload taps both. Real curl and real origins on loopback.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import type { SessionRecord } from '../../src/core/session.js';
import { nativeDoorAvailable, nativeDoorStats } from '../../src/native/door.js';
import { nativeUnavailable } from '../../src/native/addon.js';
import { curl, startEcho, startOrigin, PAGE, type EchoServer, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const noNative = nativeDoorAvailable() ? false : `the addon has no native accept path (${nativeUnavailable ?? 'an older build'})`;

/** A SOCKS5 CONNECT to 127.0.0.1:port written by hand: the reply code (-1: closed without one). */
function socks5Rep(proxyPort: number, port: number): Promise<number> {
  return new Promise((resolve) => {
    const s = net.connect(proxyPort, '127.0.0.1');
    let got = Buffer.alloc(0);
    let sent = false;
    const done = (rep: number): void => {
      s.destroy();
      resolve(rep);
    };
    s.on('error', () => done(-1));
    s.on('close', () => done(got.length >= 4 ? got[3]! : -1));
    s.on('connect', () => s.write(Buffer.from([5, 1, 0])));
    s.on('data', (b: Buffer) => {
      got = Buffer.concat([got, b]);
      if (!sent && got.length >= 2) {
        sent = true;
        s.write(Buffer.from([5, 1, 0, 1, 127, 0, 0, 1, port >> 8, port & 0xff]));
      }
      if (got.length >= 12) done(got[3]!);
    });
  });
}

async function eventually(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  for (let waited = 0; !check(); waited += 20) {
    if (waited > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('a check added to the plan applies to native and JavaScript CONNECTs alike', { skip: noNative }, () => {
  let origin: Origin;
  let echo: EchoServer;
  let approve: EchoServer;
  let proxy: TestProxy;
  /** The command line sockstap started with: each reload adds to it. */
  let start: { argv: string[]; cwd: string };
  const ended: SessionRecord[] = [];

  before(async () => {
    origin = await startOrigin();
    echo = await startEcho();
    approve = await startEcho();
    proxy = await startProxy(['-P127.0.0.1:0/auto']);
    const o = proxy.proxy.config().origin;
    start = { argv: [...o.argv], cwd: o.cwd };
    proxy.proxy.events.on('session-end', (s) => ended.push(s.toRecord()));
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await origin.close();
    await echo.close();
    await approve.close();
  });

  /** One SOCKS5 CONNECT from 127.0.0.1, so the thread has approved the source (RELIABLE) again. */
  async function approved(): Promise<void> {
    assert.equal(await socks5Rep(proxy.port(), approve.port), 0);
  }

  async function reloadWith(extra: string[]): Promise<void> {
    await proxy.proxy.reload(loadConfig([...start.argv, ...extra], { cwd: start.cwd }));
  }

  test('a REJECT added at reload refuses a remembered native CONNECT (from the thread) and a SOCKS4 one', async () => {
    await approved();
    // Twice: the second is dialed on the remembered plan.
    assert.equal(await socks5Rep(proxy.port(), echo.port), 0);
    assert.equal(await socks5Rep(proxy.port(), echo.port), 0);
    const s4 = await curl(['--socks4', `127.0.0.1:${proxy.port()}`, origin.url('/before')]);
    assert.equal(s4.code, 0, s4.stderr);

    await reloadWith([`REJECT=*:{127.0.0.1:${echo.port}}:*`, `REJECT=*:{127.0.0.1:${origin.port}}:*`]);
    await approved();
    const before = nativeDoorStats();
    assert.equal(await socks5Rep(proxy.port(), echo.port), 2, 'native: REP 2 (not allowed by ruleset)');
    assert.equal(nativeDoorStats().handedOff, before.handedOff, 'refused by the thread, not handed over');
    const js = await curl(['--socks4', `127.0.0.1:${proxy.port()}`, origin.url('/after')]);
    assert.notEqual(js.code, 0, 'SOCKS4 (JavaScript door): refused');
    await eventually(() => ended.filter((s) => s.result === 'EDENIED').length >= 2, 'two EDENIED records');
    const denied = ended.filter((s) => s.result === 'EDENIED');
    assert.ok(denied.some((s) => s.door === 'socks5' && s.dst === `127.0.0.1:${echo.port}`), JSON.stringify(denied));
    assert.ok(denied.some((s) => s.door === 'socks4' && s.dst === `127.0.0.1:${origin.port}`), JSON.stringify(denied));
  });

  test('a SOCKSTAP rule added at reload taps a native CONNECT and a SOCKS4 one', async () => {
    await reloadWith([]);
    await approved();
    // Untapped at first: the native CONNECT is spliced by the thread, and remembered.
    const r0 = await curl(['--socks5', `127.0.0.1:${proxy.port()}`, origin.url('/spliced')]);
    assert.equal(r0.code, 0, r0.stderr);
    const r1 = await curl(['--socks5', `127.0.0.1:${proxy.port()}`, origin.url('/spliced-again')]);
    assert.equal(r1.code, 0, r1.stderr);
    assert.doesNotMatch(proxy.readLog('access.log'), /spliced/, 'a spliced tunnel is not read');

    await reloadWith([`SOCKSTAP=http:127.0.0.1`]);
    await approved();
    const native = await curl(['--socks5', `127.0.0.1:${proxy.port()}`, origin.url('/tapped-native')]);
    assert.equal(native.code, 0, native.stderr);
    assert.ok(native.stdout.equals(PAGE));
    const js = await curl(['--socks4', `127.0.0.1:${proxy.port()}`, origin.url('/tapped-js')]);
    assert.equal(js.code, 0, js.stderr);
    assert.ok(js.stdout.equals(PAGE));
    await eventually(() => /tapped-native/.test(proxy.readLog('access.log')) && /tapped-js/.test(proxy.readLog('access.log')), 'both requests in access.log');
    await eventually(() => ended.filter((s) => s.proto === 'http' && s.dst === `127.0.0.1:${origin.port}`).length >= 2, 'two tapped records');
    const tapped = ended.filter((s) => s.proto === 'http' && s.dst === `127.0.0.1:${origin.port}`);
    assert.ok(tapped.some((s) => s.door === 'socks5'), JSON.stringify(tapped));
    assert.ok(tapped.some((s) => s.door === 'socks4'), JSON.stringify(tapped));
  });
});
