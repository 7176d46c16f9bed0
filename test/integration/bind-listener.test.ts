import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { describe, it } from 'node:test';
import { ProxyError } from '../../src/core/errors.js';
import { openBindListener } from '../../src/net/bind.js';

const withCode = (code: string) => (e: unknown) => e instanceof ProxyError && e.code === code;

describe('openBindListener', () => {
  it('listens on the given address and accepts the expected peer', async () => {
    const l = await openBindListener('127.0.0.1');
    assert.equal(l.address.address, '127.0.0.1');
    const wait = l.waitForPeer({ host: '127.0.0.1', addresses: ['127.0.0.1'] }, 5000);
    const c = net.connect(l.address.port, '127.0.0.1');
    const peer = await wait;
    await once(c, 'connect');
    assert.equal(peer.remoteAddress, '127.0.0.1');
    assert.equal(peer.remotePort, c.localPort);
    peer.destroy();
    c.destroy();
    l.close();
  });

  it('rejects a peer from another address with EBINDPEER and destroys it', async () => {
    const l = await openBindListener('127.0.0.1');
    const wait = l.waitForPeer({ host: 'server.test', addresses: ['127.0.0.1'] }, 5000);
    const c = net.connect({ port: l.address.port, host: '127.0.0.1', localAddress: '127.0.0.2' });
    c.on('error', () => {});
    await assert.rejects(wait, withCode('EBINDPEER'));
    await once(c, 'close');
    l.close();
  });

  it('accepts any peer when the expected host is 0.0.0.0', async () => {
    const l = await openBindListener('127.0.0.1');
    const wait = l.waitForPeer({ host: '0.0.0.0', addresses: [] }, 5000);
    const c = net.connect({ port: l.address.port, host: '127.0.0.1', localAddress: '127.0.0.4' });
    const peer = await wait;
    assert.equal(peer.remoteAddress, '127.0.0.4');
    peer.destroy();
    c.destroy();
    l.close();
  });

  it('times out with ETIMEDOUT, and close() ends a pending wait with ESHUTDOWN', async () => {
    const l = await openBindListener('127.0.0.1');
    await assert.rejects(l.waitForPeer({ host: '0.0.0.0', addresses: [] }, 50), withCode('ETIMEDOUT'));
    const pending = l.waitForPeer({ host: '0.0.0.0', addresses: [] }, 5000);
    l.close();
    await assert.rejects(pending, withCode('ESHUTDOWN'));
    // The port no longer accepts.
    const c = net.connect(l.address.port, '127.0.0.1');
    await assert.rejects(once(c, 'connect'));
  });

  it('refuses a connection that arrives when nobody waits', async () => {
    const l = await openBindListener('::1');
    assert.equal(l.address.address, '::1');
    const c = net.connect(l.address.port, '::1');
    c.on('error', () => {});
    await once(c, 'close');
    l.close();
  });
});
