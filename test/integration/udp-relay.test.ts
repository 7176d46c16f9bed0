import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import { describe, it } from 'node:test';
import { encodeUdpHeader, parseUdpHeader } from '../../src/wire/socks.js';
import { openUdpAssociation } from '../../src/net/udp-relay.js';
import { NameCache } from '../../src/net/dns.js';

/** A TCP connection pair on loopback: `server` plays the proxy's control socket. */
async function controlPair(): Promise<{ client: net.Socket; server: net.Socket; close(): void }> {
  const listener = net.createServer({ pauseOnConnect: true });
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const accepted = once(listener, 'connection');
  const client = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
  const [server] = (await accepted) as [net.Socket];
  listener.close();
  return { client, server, close: () => (client.destroy(), server.destroy()) };
}

async function udp(address: string): Promise<UdpSocket> {
  const s = createSocket('udp4');
  s.bind(0, address);
  await once(s, 'listening');
  return s;
}

const frame = (port: number, data: string, frag = 0): Buffer => {
  const h = encodeUdpHeader('127.0.0.1', port);
  h[2] = frag;
  return Buffer.concat([h, Buffer.from(data)]);
};

describe('openUdpAssociation', () => {
  it('accepts only the hinted client port and address, counts bytes, ends with the control connection', async () => {
    const pair = await controlPair();
    const echo = await udp('127.0.0.1');
    const seen: string[] = [];
    echo.on('message', (m, r) => {
      seen.push(m.toString());
      echo.send(Buffer.from(`re:${m}`), r.port, r.address);
    });
    const client = await udp('127.0.0.1');
    const stranger = await udp('127.0.0.1');
    const otherHost = await udp('127.0.0.2');
    const a = await openUdpAssociation({
      controlSocket: pair.server,
      clientHint: { host: '127.0.0.1', port: client.address().port },
      checkDestination: () => true,
      idleMs: 0,
      names: new NameCache(),
    });
    assert.equal(a.address.address, '127.0.0.1');
    const echoPort = echo.address().port;
    stranger.send(frame(echoPort, 'wrong port'), a.address.port, '127.0.0.1');
    otherHost.send(frame(echoPort, 'wrong host'), a.address.port, '127.0.0.1');
    client.send(Buffer.from([0, 0, 0, 7, 1]), a.address.port, '127.0.0.1'); // malformed
    client.send(frame(echoPort, 'frag', 2), a.address.port, '127.0.0.1');
    const got = once(client, 'message');
    client.send(frame(echoPort, 'hello'), a.address.port, '127.0.0.1');
    const [msg] = (await got) as [Buffer];
    const h = parseUdpHeader(msg);
    assert.equal(h.status, 'ok');
    if (h.status === 'ok') {
      assert.deepEqual([h.value.host, h.value.port], ['127.0.0.1', echoPort]);
      assert.equal(msg.subarray(h.value.dataOffset).toString(), 're:hello');
    }
    assert.deepEqual(seen, ['hello']);
    assert.equal(a.bytesUp, 5);
    assert.equal(a.bytesDown, 8);
    assert.equal(a.dropped, 4);
    pair.client.end();
    assert.equal(await a.closed, 'ok');
    pair.close();
    for (const s of [echo, client, stranger, otherHost]) s.close();
  });

  it('learns the client port from the first datagram with a 0.0.0.0:0 hint, drops refused destinations, closes when idle', async () => {
    const pair = await controlPair();
    const echo = await udp('127.0.0.1');
    echo.on('message', (m, r) => echo.send(m, r.port, r.address));
    const client = await udp('127.0.0.1');
    const a = await openUdpAssociation({
      controlSocket: pair.server,
      clientHint: { host: '0.0.0.0', port: 0 },
      checkDestination: (_host, port) => port === echo.address().port,
      idleMs: 300,
      names: new NameCache(),
    });
    client.send(frame(9, 'refused'), a.address.port, '127.0.0.1');
    const got = once(client, 'message');
    client.send(frame(echo.address().port, 'x'), a.address.port, '127.0.0.1');
    await got;
    assert.equal(a.dropped, 1);
    assert.equal(await a.closed, 'idle');
    pair.close();
    echo.close();
    client.close();
  });
});
