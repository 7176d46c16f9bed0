/**
 * One owner per piece of state (issue 14 item 4): each sockstap instance has its own Runtime
 * (src/runtime.ts). HOSTS= reaches every name sockstap resolves (UDP ASSOCIATE datagrams and the
 * udprelay door's target, which asked the OS resolver or a default cache before); the udprelay
 * door's client associations are sessions like every other door's (sessions.jsonl, /api/sessions,
 * RELIABLE, closed from the admin API); and two instances in one process share no name cache,
 * article store or upstream mark.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { SocksClient } from 'socks';
import { startEcho, type EchoServer } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { udpAssociate } from '../helpers/udp-associate.js';

const auth = { authorization: `Basic ${Buffer.from('admin:admin-secret').toString('base64')}` };

async function udp(): Promise<UdpSocket> {
  const s = createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  return s;
}

/** An echo server on loopback UDP that answers `echo:` + the datagram. */
async function udpEcho(): Promise<UdpSocket> {
  const echo = await udp();
  echo.on('message', (msg, rinfo) => echo.send(Buffer.concat([Buffer.from('echo:'), msg]), rinfo.port, rinfo.address));
  return echo;
}

/** The next datagram on `socket`, or a rejection after `ms` (nothing came back: the datagram was dropped). */
function nextDatagram(socket: UdpSocket, ms = 5_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off('message', onMessage);
      reject(new Error(`no datagram within ${ms} ms`));
    }, ms);
    const onMessage = (msg: Buffer): void => {
      clearTimeout(timer);
      resolve(msg);
    };
    socket.once('message', onMessage);
  });
}

async function until(what: string, test: () => boolean | Promise<boolean>): Promise<void> {
  const end = Date.now() + 10_000;
  while (!(await test())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('HOSTS= applies to every name sockstap resolves', () => {
  let echo: UdpSocket;
  let proxy: TestProxy;
  before(async () => {
    echo = await udpEcho();
    proxy = await startProxy(['-P127.0.0.1:0/socks', 'HOSTS=udp-echo.test/127.0.0.1']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    echo.close();
  });

  it('a UDP ASSOCIATE datagram to a HOSTS name reaches the mapped address', async () => {
    const client = await udp();
    const { control, relay } = await udpAssociate(proxy.port('socks'), client.address().port);
    try {
      const answer = nextDatagram(client);
      const frame = SocksClient.createUDPFrame({ remoteHost: { host: 'udp-echo.test', port: echo.address().port }, data: Buffer.from('by name') });
      client.send(frame, relay.port, relay.host);
      const got = SocksClient.parseUDPFrame(await answer);
      assert.equal(got.data.toString(), 'echo:by name');
    } finally {
      control.destroy();
      client.close();
    }
  });
});

describe('the udprelay door has sessions like every other door', () => {
  let echo: UdpSocket;
  let proxy: TestProxy;
  let base = '';
  before(async () => {
    echo = await udpEcho();
    proxy = await startProxy([
      `-P127.0.0.1:0/udprelay://udp-target.test:${echo.address().port}`,
      'HOSTS=udp-target.test/127.0.0.1',
      'ADMIN=127.0.0.1:0',
      'ADMINAUTH=-list{admin:admin-secret}',
    ]);
    base = proxy.proxy.adminUrl!;
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    echo.close();
  });

  it('a client association is a live /api/sessions row with its bytes, and a sessions.jsonl record once closed', async () => {
    const client = await udp();
    try {
      // The target is a HOSTS name: the door resolves it through the instance's name cache.
      const answer = nextDatagram(client);
      client.send('through udprelay', proxy.port('udprelay'), '127.0.0.1');
      assert.equal((await answer).toString(), 'echo:through udprelay');
      const clientLabel = `127.0.0.1:${client.address().port}`;
      type Row = { id: string; client: string; door: string; dst: string; command: string; bytesUp: number; bytesDown: number };
      let row: Row | undefined;
      await until('the /api/sessions row with both directions counted', async () => {
        const rows = (await (await fetch(base + 'api/sessions', { headers: auth })).json()) as Row[];
        row = rows.find((r) => r.client === clientLabel);
        return !!row && row.bytesDown > 0;
      });
      assert.equal(row!.door, 'udprelay');
      assert.equal(row!.command, 'udp');
      assert.equal(row!.dst, `udp-target.test:${echo.address().port}`);
      assert.equal(row!.bytesUp, 'through udprelay'.length);
      assert.equal(row!.bytesDown, 'echo:through udprelay'.length);

      // Closed from the admin API like any session: the association ends and is recorded.
      const closed = await fetch(`${base}api/sessions/${row!.id}/close`, { method: 'POST', headers: auth });
      assert.equal(closed.status, 200);
      await until('the sessions.jsonl record', () => proxy.sessions().some((r) => r.id === row!.id));
      const record = proxy.sessions().find((r) => r.id === row!.id)!;
      assert.equal(record.door, 'udprelay');
      assert.equal(record.client, clientLabel);
      assert.equal(record.dst, `udp-target.test:${echo.address().port}`);
      assert.equal(record.command, 'udp');
      assert.equal(record.bytesUp, 'through udprelay'.length);
      assert.equal(record.bytesDown, 'echo:through udprelay'.length);
      assert.equal(record.result, 'closed-by-admin');

      // The next datagram of that client opens a new association, a new session.
      const again = nextDatagram(client);
      client.send('again', proxy.port('udprelay'), '127.0.0.1');
      assert.equal((await again).toString(), 'echo:again');
      const rows = (await (await fetch(base + 'api/sessions', { headers: auth })).json()) as Row[];
      const next = rows.find((r) => r.client === clientLabel);
      assert.ok(next && next.id !== row!.id, 'a new session for the new association');
    } finally {
      client.close();
    }
  });
});

describe('RELIABLE on the udprelay door', () => {
  it('refuses a source as the other doors do: counted, logged, no session', async () => {
    const echo = await udpEcho();
    const proxy = await startProxy([`-P127.0.0.1:0/udprelay://127.0.0.1:${echo.address().port}`, 'RELIABLE=127.0.0.9']);
    const client = await udp();
    const clientLabel = `127.0.0.1:${client.address().port}`;
    try {
      client.send('refused', proxy.port('udprelay'), '127.0.0.1');
      await until('the refusal', () => proxy.proxy.totals.refused > 0);
      assert.equal(proxy.proxy.sessions.size, 0);
    } finally {
      client.close();
      echo.close();
      await proxy.stop();
    }
    // Stopped: the log files are flushed.
    assert.match(proxy.readLog('sockstap.log'), new RegExp(`source refused client=${clientLabel.replace(/\./g, '\\.')}`));
    assert.equal(proxy.sessions().length, 0, 'no sessions.jsonl record for a refused source');
    proxy.cleanup();
  });
});

describe('MAXIMA on the udprelay door', () => {
  it('persrc counts client associations as it counts connections: the second one from the source is refused', async () => {
    const echo = await udpEcho();
    const proxy = await startProxy([`-P127.0.0.1:0/udprelay://127.0.0.1:${echo.address().port}`, 'MAXIMA=persrc:1']);
    const first = await udp();
    const second = await udp();
    try {
      const answer = nextDatagram(first);
      first.send('one', proxy.port('udprelay'), '127.0.0.1');
      assert.equal((await answer).toString(), 'echo:one');
      second.send('two', proxy.port('udprelay'), '127.0.0.1');
      await until('the refusal', () => proxy.proxy.totals.refused > 0);
      assert.equal(proxy.proxy.sessions.size, 1);
    } finally {
      first.close();
      second.close();
      echo.close();
      await proxy.stop();
    }
    assert.match(proxy.readLog('sockstap.log'), /connection limit .*limit="MAXIMA=persrc"/);
    proxy.cleanup();
  });
});

describe('two sockstap instances in one process share no state', () => {
  let echo: EchoServer;
  let a: TestProxy;
  let b: TestProxy;
  /** A port where nothing listens: the upstream both instances name. */
  let deadPort = 0;
  before(async () => {
    echo = await startEcho();
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    deadPort = (probe.address() as net.AddressInfo).port;
    await new Promise((r) => probe.close(r));
    a = await startProxy(['-P127.0.0.1:0/socks', 'HOSTS=only-a.test/127.0.0.1', `SOCKS=127.0.0.1:${deadPort}:down-a.test`, 'ADMIN=127.0.0.1:0', 'RELAY=js']);
    b = await startProxy(['-P127.0.0.1:0/socks', `SOCKS=127.0.0.1:${deadPort}:down-a.test`, 'ADMIN=127.0.0.1:0', 'RELAY=js']);
  });
  after(async () => {
    await a.stop();
    await b.stop();
    a.cleanup();
    b.cleanup();
    await echo.close();
  });

  const connect = (p: TestProxy, host: string, port: number): Promise<net.Socket> =>
    SocksClient.createConnection({ command: 'connect', destination: { host, port }, proxy: { host: '127.0.0.1', port: p.port('socks'), type: 5 }, timeout: 10_000 }).then(
      (r) => r.socket,
    );

  it('HOSTS= of one instance is not the other one\'s', async () => {
    const s = await connect(a, 'only-a.test', echo.port);
    s.destroy();
    await assert.rejects(connect(b, 'only-a.test', echo.port));
  });

  it('a name resolved by one instance is not in the other one\'s cache', async () => {
    const namesA = a.proxy.runtime.names(a.proxy.config().dns);
    const namesB = b.proxy.runtime.names(b.proxy.config().dns);
    assert.notEqual(namesA, namesB);
    const before = { ...namesB.stats };
    const s = await connect(a, 'localhost', echo.port);
    s.destroy();
    assert.ok(namesA.size > 0, 'instance a cached localhost');
    assert.deepEqual(namesB.stats, before, "instance b's cache was not asked");
    assert.equal(namesB.remainingMs('localhost'), 0, 'nothing cached in instance b');
  });

  it("an upstream one instance found dead is not marked in the other's /metrics", async () => {
    await assert.rejects(connect(a, 'down-a.test', 80));
    const label = `upstream="socks5://127.0.0.1:${deadPort}"`;
    const metricsOf = async (p: TestProxy): Promise<string> => (await fetch(`${p.proxy.adminUrl!}metrics`)).text();
    assert.match(await metricsOf(a), new RegExp(`sockstap_upstream_marked_dead_total\\{${label}\\} 1`));
    assert.doesNotMatch(await metricsOf(b), new RegExp(`sockstap_upstream_\\w+\\{${label}\\}`));
  });

  it('article stores and TLS sessions are per instance', () => {
    const dir = a.stateDir;
    assert.notEqual(a.proxy.runtime.articleStore(dir), b.proxy.runtime.articleStore(dir));
    assert.equal(a.proxy.runtime.articleStore(dir), a.proxy.runtime.articleStore(dir));
    assert.notEqual(a.proxy.runtime.tlsSessions, b.proxy.runtime.tlsSessions);
  });
});
