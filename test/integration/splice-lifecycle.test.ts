/**
 * Every spliced tunnel's end reaches its session, however fast the tunnel ends: the relay thread
 * owns a tunnel from the moment it is posted to it and may end it (and free it) before
 * spliceStart has returned. Here clients that hang up right after the SOCKS5 reply, on the
 * native accept path (a tapped CONNECT handed back to JavaScript, which splices the raw relay)
 * and on plain spliced CONNECTs; every session must end and be recorded.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { nativeDoorAvailable } from '../../src/native/door.js';
import { nativeUnavailable } from '../../src/native/addon.js';
import { SocksClient } from 'socks';
import { startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const noNative = nativeDoorAvailable() ? false : `the addon has no native accept path (${nativeUnavailable ?? 'an older build'})`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Open `n` SOCKS5 tunnels to the origin one after another, each closed right after the reply. */
async function hangUps(proxy: TestProxy, origin: Origin, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port: proxy.port(), type: 5 },
      command: 'connect',
      destination: { host: '127.0.0.1', port: origin.port },
    });
    socket.destroy();
  }
}

/** Wait (bounded) until the proxy has no live session left; the ones left when time is up. */
async function drained(proxy: TestProxy, ms: number): Promise<number> {
  const until = Date.now() + ms;
  while (proxy.proxy.sessions.size > 0 && Date.now() < until) await sleep(100);
  return proxy.proxy.sessions.size;
}

describe('spliced tunnels that end at once', { skip: noNative }, () => {
  let origin: Origin;
  before(async () => {
    origin = await startOrigin();
  });
  after(async () => {
    await origin.close();
  });

  for (const [what, args] of [
    ['tapped (SOCKSTAP=all): handed back by the native door, spliced as raw', ['SOCKSTAP=all']],
    ['untapped: dialed and spliced by the thread', []],
  ] as const) {
    test(`${what}: every session ends`, async () => {
      const proxy = await startProxy(['-P127.0.0.1:0/auto', ...args]);
      try {
        const n = 40;
        await hangUps(proxy, origin, n);
        const left = await drained(proxy, 15_000);
        assert.equal(left, 0, `${left} of ${n} sessions never ended: ${[...proxy.proxy.sessions.values()].map((s) => `${s.id} ${s.proto} ${s.result}`).join(', ')}`);
        await proxy.stop();
        const records = proxy.sessions().filter((r) => r.command === 'connect');
        assert.equal(records.length, n, 'one sessions.jsonl record per tunnel');
      } finally {
        await proxy.stop();
        proxy.cleanup();
      }
    });
  }
});
