/**
 * Name resolution in the dialer: Happy Eyeballs over a dual-stack name (a static entry listing
 * ::1 first, where nothing listens, then 127.0.0.1) reaches the server; an IPv6 destination is
 * reached over IPv6; SOCKS4 hops get the name resolved locally.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_DNS, NameCache } from '../../src/net/dns.js';
import { dialChain } from '../../src/upstream/chain.js';
import { startEcho, type EchoServer } from '../helpers/origin.js';

async function roundTrip(socket: net.Socket): Promise<string> {
  socket.resume();
  socket.write('ping');
  const [data] = (await new Promise((r) => socket.once('data', (d: Buffer) => r([d])))) as [Buffer];
  socket.destroy();
  return data.toString();
}

describe('direct dials through the name cache', () => {
  let v4: EchoServer;
  let v6: EchoServer | null = null;
  before(async () => {
    v4 = await startEcho('127.0.0.1');
    try {
      v6 = await startEcho('::1');
    } catch {
      v6 = null;
    }
  });
  after(async () => {
    await v4.close();
    await v6?.close();
  });

  it('Happy Eyeballs: ::1 refuses, 127.0.0.1 answers', async () => {
    const names = new NameCache({ ...DEFAULT_DNS, hosts: { 'dual.test': ['::1', '127.0.0.1'] } });
    const s = await dialChain([], { host: 'dual.test', port: v4.port }, { timeoutMs: 10_000, names });
    assert.equal(s.remoteAddress, '127.0.0.1');
    assert.equal(await roundTrip(s), 'ping');
  });

  it('IPv6 egress to a name whose first address is IPv6', async (t) => {
    if (!v6) return t.skip('no IPv6 loopback here');
    const names = new NameCache({ ...DEFAULT_DNS, hosts: { 'six.test': ['::1'] } });
    const s = await dialChain([], { host: 'six.test', port: v6.port }, { timeoutMs: 10_000, names });
    assert.equal(s.remoteAddress, '::1');
    assert.equal(await roundTrip(s), 'ping');
  });

  it('a name that does not resolve is ENOTFOUND', async () => {
    const names = new NameCache(DEFAULT_DNS);
    await assert.rejects(dialChain([], { host: 'nothing.invalid', port: 80 }, { timeoutMs: 10_000, names }), { code: 'ENOTFOUND' });
  });
});
