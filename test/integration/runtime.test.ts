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
import { startProxy, type TestProxy } from '../helpers/proxy.js';

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
    const associate = new SocksClient({
      command: 'associate',
      destination: { host: '127.0.0.1', port: client.address().port },
      proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5 },
    });
    const established = new Promise<{ socket: net.Socket; remoteHost?: { host: string; port: number } }>((resolve, reject) => {
      associate.once('established', resolve);
      associate.once('error', reject);
    });
    associate.connect();
    const { socket: control, remoteHost } = await established;
    try {
      const answer = nextDatagram(client);
      const frame = SocksClient.createUDPFrame({ remoteHost: { host: 'udp-echo.test', port: echo.address().port }, data: Buffer.from('by name') });
      client.send(frame, remoteHost!.port, remoteHost!.host);
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
    try {
      client.send('refused', proxy.port('udprelay'), '127.0.0.1');
      await until('the refusal', () => proxy.proxy.totals.refused > 0);
      const clientLabel = `127.0.0.1:${client.address().port}`;
      assert.equal(proxy.proxy.sessions.size, 0);
      assert.match(proxy.readLog('sockstap.log'), new RegExp(`source refused client=${clientLabel.replace(/\./g, '\\.')}`));
    } finally {
      client.close();
      echo.close();
      await proxy.stop();
      proxy.cleanup();
    }
    assert.equal(proxy.sessions().length, 0, 'no sessions.jsonl record for a refused source');
  });
});
