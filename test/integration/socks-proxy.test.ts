/**
 * The SOCKS doors inside the whole proxy (startProxy: config, listener, pipeline): curl with
 * --socks4, --socks4a, --socks5 and --socks5-hostname fetching a page byte-identical, RFC 1929
 * with AUTHORIZER, the handshake timeout, an IPv6 listener and destination, IDENT=do, and BIND
 * and UDP ASSOCIATE through the pipeline.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { SocksClient } from 'socks';
import { curl, PAGE, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { udpAssociate } from '../helpers/udp-associate.js';

describe('curl through the SOCKS door', () => {
  let origin: Origin;
  let proxy: TestProxy;
  before(async () => {
    origin = await startOrigin();
    proxy = await startProxy(['-P127.0.0.1:0/socks']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await origin.close();
  });

  for (const flag of ['--socks4', '--socks4a', '--socks5', '--socks5-hostname']) {
    it(`${flag} fetches the page byte-identical`, async () => {
      // A name for the hostname variants, so the proxy (not curl) resolves it.
      const url = flag === '--socks4a' || flag === '--socks5-hostname' ? `http://localhost:${origin.port}/` : origin.url('/');
      const r = await curl([flag, `127.0.0.1:${proxy.port('socks')}`, url]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(PAGE), `${flag}: body differs`);
    });
  }
});

describe('SOCKS5 with AUTHORIZER (RFC 1929)', () => {
  let origin: Origin;
  let proxy: TestProxy;
  before(async () => {
    origin = await startOrigin();
    proxy = await startProxy(['-P127.0.0.1:0/socks', 'AUTHORIZER=-list{alice:open-sesame}']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await origin.close();
  });

  it('the right password fetches, a wrong one is refused and never logged', async () => {
    const at = `127.0.0.1:${proxy.port('socks')}`;
    const good = await curl(['--socks5', at, '--proxy-user', 'alice:open-sesame', origin.url('/')]);
    assert.equal(good.code, 0, good.stderr);
    assert.ok(good.stdout.equals(PAGE));
    const bad = await curl(['--socks5', at, '--proxy-user', 'alice:guess-what', origin.url('/')]);
    assert.notEqual(bad.code, 0);
    assert.equal(bad.stdout.length, 0);
    await proxy.stop();
    const logs = proxy.readLog('sockstap.log') + proxy.readLog('sessions.jsonl');
    assert.match(logs, /authentication failed/);
    assert.doesNotMatch(logs, /guess-what|open-sesame/);
    assert.ok(proxy.sessions().some((s) => s.user === 'alice' && s.door === 'socks5'));
  });
});

describe('SOCKS handshake timeout (TIMEOUT=handshake:1s)', () => {
  let origin: Origin;
  let proxy: TestProxy;
  before(async () => {
    origin = await startOrigin();
    proxy = await startProxy(['-P127.0.0.1:0/socks', 'TIMEOUT=handshake:1s']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await origin.close();
  });

  it('closes half a SOCKS5 request while another client is served', async () => {
    const stalled = net.connect(proxy.port('socks'), '127.0.0.1');
    stalled.on('error', () => {});
    const chunks: Buffer[] = [];
    stalled.on('data', (c: Buffer) => chunks.push(c));
    stalled.write(Buffer.from([5, 1, 0, 5, 1, 0, 3, 20, 0x61])); // greeting, then half a request
    const closed = once(stalled, 'close');
    const r = await curl(['--socks5', `127.0.0.1:${proxy.port('socks')}`, origin.url('/')]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(PAGE));
    await closed;
    assert.deepEqual([...Buffer.concat(chunks)], [5, 0], 'only the method selection was sent');
    await proxy.stop();
    assert.match(proxy.readLog('sockstap.log'), /handshake timeout/);
  });
});

describe('SOCKS on an IPv6 listener', () => {
  let origin: Origin;
  let proxy: TestProxy;
  before(async () => {
    origin = await startOrigin(undefined, '::1');
    proxy = await startProxy(['-P[::1]:0/socks']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await origin.close();
  });

  it('--socks5 via [::1] to an IPv6 origin', async () => {
    const r = await curl(['--socks5', `[::1]:${proxy.port('socks')}`, origin.url('/')]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(PAGE));
  });
});

describe('IDENT=do through the proxy', () => {
  let origin: Origin;
  let proxy: TestProxy;
  let identd: net.Server;
  const identSockets = new Set<net.Socket>();
  before(async () => {
    origin = await startOrigin();
    identd = net.createServer((s) => {
      identSockets.add(s);
      s.on('close', () => identSockets.delete(s));
      s.on('error', () => {});
      s.setEncoding('latin1');
      s.once('data', (q: string) => {
        const [a, b] = q.trim().split(',').map((x) => x.trim());
        s.end(`${a} , ${b} : USERID : UNIX : alice\r\n`);
      });
    });
    identd.listen(0, '127.0.0.1');
    await once(identd, 'listening');
    process.env.SOCKSTAP_IDENT_PORT = String((identd.address() as net.AddressInfo).port);
    proxy = await startProxy(['-P127.0.0.1:0/socks', 'IDENT=do']);
  });
  after(async () => {
    delete process.env.SOCKSTAP_IDENT_PORT;
    await proxy.stop();
    proxy.cleanup();
    for (const s of identSockets) s.destroy();
    identd.close();
    await origin.close();
  });

  it('a user id identd confirms passes; another gets 93', async () => {
    const at = `127.0.0.1:${proxy.port('socks')}`;
    const good = await curl(['--socks4', at, '--proxy-user', 'alice:', origin.url('/')]);
    assert.equal(good.code, 0, good.stderr);
    assert.ok(good.stdout.equals(PAGE));
    const s = net.connect(proxy.port('socks'), '127.0.0.1');
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.write(Buffer.from([4, 1, origin.port >> 8, origin.port & 255, 127, 0, 0, 1, ...Buffer.from('bob'), 0]));
    await once(s, 'close');
    assert.deepEqual([...Buffer.concat(chunks)], [0, 93, 0, 0, 0, 0, 0, 0]);
  });
});

describe('BIND and UDP ASSOCIATE through the pipeline', () => {
  let proxy: TestProxy;
  before(async () => {
    proxy = await startProxy(['-P127.0.0.1:0/socks']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  it('SOCKS5 BIND: the expected host connects in and is relayed', async () => {
    const client = new SocksClient({
      command: 'bind',
      destination: { host: '127.0.0.1', port: 0 },
      proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5 },
      timeout: 5000,
    });
    const bound = new Promise<{ host: string; port: number }>((resolve) => client.once('bound', (i) => resolve(i.remoteHost!)));
    const established = new Promise<net.Socket>((resolve, reject) => {
      client.once('established', (i) => resolve(i.socket));
      client.once('error', reject);
    });
    client.connect();
    const at = await bound;
    const server = net.connect(at.port, at.host);
    server.on('error', () => {});
    const socket = await established;
    const got = once(socket, 'data');
    server.write('hello from the server');
    assert.equal(String((await got)[0]), 'hello from the server');
    socket.destroy();
    server.destroy();
  });

  it('SOCKS5 UDP ASSOCIATE: a datagram is echoed back through the relay', async () => {
    const echo = createSocket('udp4');
    echo.on('message', (msg, rinfo) => echo.send(msg, rinfo.port, rinfo.address));
    echo.bind(0, '127.0.0.1');
    await once(echo, 'listening');
    const client = createSocket('udp4');
    client.bind(0, '127.0.0.1');
    await once(client, 'listening');
    // Announce the exact port we will send from: only that port is accepted then.
    const { control, relay } = await udpAssociate(proxy.port('socks'), client.address().port);
    const answer = once(client, 'message');
    client.send(SocksClient.createUDPFrame({ remoteHost: { host: '127.0.0.1', port: echo.address().port }, data: Buffer.from('udp!') }), relay.port, relay.host);
    const frame = SocksClient.parseUDPFrame((await answer)[0] as Buffer);
    assert.equal(frame.data.toString(), 'udp!');
    assert.equal(frame.remoteHost.port, echo.address().port);
    control.destroy();
    client.close();
    echo.close();
  });
});
