/**
 * Access-time windows (issue 5 item 3): a PERMIT/REJECT rule with WHEN applies inside its window
 * only; the window may name its own time zone (`@UTC`) or take TIMEZONE=; a YAML `users:` window
 * refuses its user outside it. Windows are set around the test's own "now", so the test does
 * not depend on the hour it runs at (a run exactly at a minute boundary is covered by the margin).
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SocksClient } from 'socks';
import { startEcho, type EchoServer } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

/** HHMM of `minutes` after midnight (wrapping). */
function hhmm(minutes: number): string {
  const m = ((minutes % 1440) + 1440) % 1440;
  return `${String(Math.floor(m / 60)).padStart(2, '0')}${String(m % 60).padStart(2, '0')}`;
}

/** A window of `now ± 30 min` in UTC (today's weekday), or the hours well away from now. */
function utcWindow(inside: boolean): string {
  const now = new Date();
  const m = now.getUTCHours() * 60 + now.getUTCMinutes();
  // Every day (`*`): a window across midnight then holds on either side of it.
  return inside ? `*/${hhmm(m - 30)}-${hhmm(m + 30)}` : `*/${hhmm(m + 120)}-${hhmm(m + 180)}`;
}

async function connects(port: number, echoPort: number, user?: { userId: string; password: string }): Promise<boolean> {
  try {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port, type: 5, ...user },
      command: 'connect',
      destination: { host: '127.0.0.1', port: echoPort },
      timeout: 5000,
    });
    socket.destroy();
    return true;
  } catch {
    return false;
  }
}

describe('time windows', () => {
  let echo: EchoServer;
  const proxies: TestProxy[] = [];

  before(async () => {
    echo = await startEcho();
  });
  after(async () => {
    for (const p of proxies) {
      await p.stop();
      p.cleanup();
    }
    echo.close();
  });

  async function proxy(args: string[]): Promise<number> {
    const p = await startProxy(['-P127.0.0.1:0/socks', ...args]);
    proxies.push(p);
    return p.port();
  }

  it('a REJECT with a window around now refuses; one outside the window does not (zone named in the window)', async () => {
    const echoPort = echo.port;
    assert.equal(await connects(await proxy([`REJECT=*:*:*:${utcWindow(true)}@UTC`]), echoPort), false);
    assert.equal(await connects(await proxy([`REJECT=*:*:*:${utcWindow(false)}@UTC`]), echoPort), true);
  });

  it('a PERMIT limited to a window permits inside it only (TIMEZONE= for windows without a zone)', async () => {
    const echoPort = echo.port;
    const inside = await proxy(['TIMEZONE=UTC', `PERMIT=*:*:*:${utcWindow(true)}`, 'REJECT=*:*:*']);
    assert.equal(await connects(inside, echoPort), true);
    const outside = await proxy(['TIMEZONE=Etc/UTC', `PERMIT=*:*:*:${utcWindow(false)}`, 'REJECT=*:*:*']);
    assert.equal(await connects(outside, echoPort), false);
  });

  it('a user window (YAML users:) refuses that user outside it and lets others through', async () => {
    const echoPort = echo.port;
    const first = await proxy([]);
    const dir = proxies.at(-1)!.stateDir;
    const file = join(dir, 'users.yaml');
    writeFileSync(
      file,
      [
        'timezone: UTC',
        'authorizer: { users: { alice: a, bob: b, carol: c } }',
        'users:',
        `  alice: { when: "${utcWindow(false)}" }`,
        `  carol: { when: "${utcWindow(true)}" }`,
        '',
      ].join('\n'),
    );
    assert.ok(first > 0);
    const port = await proxy(['-f', file]);
    assert.equal(await connects(port, echoPort, { userId: 'alice', password: 'a' }), false);
    assert.equal(await connects(port, echoPort, { userId: 'bob', password: 'b' }), true);
    assert.equal(await connects(port, echoPort, { userId: 'carol', password: 'c' }), true);
    // The log is written by a buffered writer: wait for the line (bounded) rather than race it.
    for (let i = 0; i < 100 && !/outside their time window/.test(proxies.at(-1)!.readLog('sockstap.log')); i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.match(proxies.at(-1)!.readLog('sockstap.log'), /outside their time window/);
  });
});
