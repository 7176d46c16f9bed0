/**
 * MAXIMA=perdoor (issue 5 item 4): a listener takes at most N connections at once, another
 * listener is counted apart, and a refusal is logged with the limit's name.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

function open(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.on('error', reject);
  });
}

/** True when the proxy closed the socket without a word (a refusal at accept). */
function closedAtOnce(s: net.Socket): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), 1000);
    s.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
    s.resume();
  });
}

describe('MAXIMA=perdoor', () => {
  let proxy: TestProxy;
  before(async () => {
    proxy = await startProxy(['-P127.0.0.1:0/socks', '-P127.0.0.1:0/http', 'MAXIMA=perdoor:1', 'TIMEOUT=handshake:3s']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  it('refuses the second connection on one door, not on the other, and logs the refusal', async () => {
    const [socksPort, httpPort] = [proxy.port('socks'), proxy.port('http')];
    const a = await open(socksPort);
    const refused = await open(socksPort);
    assert.equal(await closedAtOnce(refused), true);
    const other = await open(httpPort);
    assert.equal(await closedAtOnce(other), false);
    a.destroy();
    other.destroy();
    // The door's count drops when the proxy closes its side (at the latest after the handshake
    // timeout of a client that said nothing): a new one is accepted again.
    for (let i = 0; i < 200 && proxy.proxy.limits.connections > 0; i++) await new Promise((r) => setTimeout(r, 50));
    const again = await open(socksPort);
    assert.equal(await closedAtOnce(again), false);
    again.destroy();
    assert.match(proxy.readLog('sockstap.log'), /connection limit.*MAXIMA=perdoor/);
  });
});
