/**
 * The dashboard's Server-Sent Events stream (GET /api/events) and the admin API's edges: ADMINAUTH
 * on the stream, a snapshot that shows a live tunnel, the bound on open streams and their cleanup
 * on disconnect and on stop, cross-origin POSTs, /api/quotas without a quota service, methods.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { MAX_EVENT_CLIENTS } from '../../src/admin/server.js';
import { startEcho, type EchoServer } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

let echo: EchoServer;
let proxy: TestProxy;
let base = '';
const authHeader = `Basic ${Buffer.from('admin:sse-secret').toString('base64')}`;
const auth = { authorization: authHeader };

before(async () => {
  echo = await startEcho();
  proxy = await startProxy(['-P127.0.0.1:0/socks', 'ADMIN=127.0.0.1:0', 'ADMINAUTH=-list{admin:sse-secret}']);
  base = proxy.proxy.adminUrl!;
});
after(async () => {
  await proxy.stop();
  proxy.cleanup();
  await echo.close();
});

interface SseEvent {
  event: string;
  data: string;
}

/** An open SSE stream read with a plain HTTP client. */
interface Stream {
  res: http.IncomingMessage;
  /** Resolves with the next event of that name. */
  next(name: string): Promise<SseEvent>;
  ended: Promise<void>;
  close(): void;
}

function openStream(headers: http.OutgoingHttpHeaders = auth): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const req = http.get(base + 'api/events', { headers, agent: false }, (res) => {
      res.setEncoding('utf8');
      let buffer = '';
      const queue: SseEvent[] = [];
      const waiters: Array<{ name: string; resolve: (e: SseEvent) => void }> = [];
      const deliver = (): void => {
        for (let i = 0; i < waiters.length; i++) {
          const w = waiters[i]!;
          const at = queue.findIndex((e) => e.event === w.name);
          if (at >= 0) {
            w.resolve(queue.splice(at, 1)[0]!);
            waiters.splice(i--, 1);
          }
        }
      };
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = 'message';
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data.push(line.slice(6));
          }
          if (data.length) queue.push({ event, data: data.join('\n') });
        }
        deliver();
      });
      const ended = new Promise<void>((r) => res.once('close', () => r()));
      resolve({
        res,
        ended,
        next: (name) =>
          new Promise((r) => {
            waiters.push({ name, resolve: r });
            deliver();
          }),
        close: () => req.destroy(),
      });
    });
    req.on('error', reject);
  });
}

describe('GET /api/events', () => {
  test('is behind ADMINAUTH', async () => {
    const s = await openStream({});
    assert.equal(s.res.statusCode, 401);
    s.close();
  });

  test('sends the throughput history, then snapshots that show a live tunnel', async () => {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port: proxy.port(), type: 5 },
      command: 'connect',
      destination: { host: '127.0.0.1', port: echo.port },
    });
    socket.on('error', () => {});
    await new Promise<void>((resolve) => {
      socket.once('data', () => resolve());
      socket.write('x'.repeat(4000));
    });
    const s = await openStream();
    try {
      assert.equal(s.res.statusCode, 200);
      assert.match(s.res.headers['content-type'] ?? '', /^text\/event-stream/);
      const history = JSON.parse((await s.next('history')).data) as unknown[];
      assert.ok(Array.isArray(history));
      const first = JSON.parse((await s.next('snapshot')).data) as {
        stats: { sessionsLive: number };
        sessions: Array<{ id: string; dst: string; door: string; bytesUp: number }>;
      };
      assert.equal(first.stats.sessionsLive, 1);
      const live = first.sessions.find((x) => x.dst === `127.0.0.1:${echo.port}`);
      assert.ok(live, JSON.stringify(first.sessions));
      assert.equal(live.door, 'socks5');
      assert.ok(live.bytesUp >= 4000);
      // The once-a-second snapshot carries a throughput point.
      const tick = JSON.parse((await s.next('snapshot')).data) as { point: { t: number; up: number; down: number } | null };
      assert.ok(tick.point && typeof tick.point.up === 'number');
      const closed = once(socket, 'close');
      socket.destroy();
      await closed;
    } finally {
      s.close();
      await s.ended;
    }
  });

  test(`holds at most ${MAX_EVENT_CLIENTS} streams and frees a slot when one disconnects`, async () => {
    const streams: Stream[] = [];
    try {
      for (let i = 0; i < MAX_EVENT_CLIENTS; i++) {
        const s = await openStream();
        assert.equal(s.res.statusCode, 200);
        streams.push(s);
      }
      const extra = await openStream();
      assert.equal(extra.res.statusCode, 503);
      extra.res.resume();
      await extra.ended;
      streams.pop()!.close();
      // The server notices the disconnect and frees the slot (bounded wait).
      let again: Stream | null = null;
      for (let i = 0; i < 100; i++) {
        const s = await openStream();
        if (s.res.statusCode === 200) {
          again = s;
          break;
        }
        s.res.resume();
        await s.ended;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(again, 'a slot was freed');
      streams.push(again);
    } finally {
      for (const s of streams) s.close();
      await Promise.all(streams.map((s) => s.ended));
    }
  });
});

describe('admin API edges', () => {
  test('refuses a cross-origin POST, allows the same origin', async () => {
    const evil = await fetch(base + 'api/sessions/whatever/close', { method: 'POST', headers: { ...auth, origin: 'http://evil.example' } });
    assert.equal(evil.status, 403);
    const same = await fetch(base + 'api/sessions/whatever/close', { method: 'POST', headers: { ...auth, origin: base.replace(/\/$/, '') } });
    assert.equal(same.status, 404);
  });

  test('/api/quotas is an empty list with no quota service; wrong methods are 405', async () => {
    const q = await fetch(base + 'api/quotas', { headers: auth });
    assert.equal(q.status, 200);
    assert.deepEqual(await q.json(), []);
    const m = await fetch(base + 'api/stats', { method: 'POST', headers: auth });
    assert.equal(m.status, 405);
    const g = await fetch(base + 'api/reload', { headers: auth });
    assert.equal(g.status, 405);
    assert.equal(g.headers.get('allow'), 'POST');
  });

  test('/api/quotas lists each quota with its use when QUOTA is given', async () => {
    const p = await startProxy(['-P127.0.0.1:0/socks', 'ADMIN=127.0.0.1:0', 'AUTHORIZER=-list{alice:pw}', 'QUOTA=5m/day:user:alice']);
    try {
      const r = await fetch(p.proxy.adminUrl + 'api/quotas');
      assert.equal(r.status, 200);
      const list = (await r.json()) as Array<Record<string, unknown>>;
      const q = list.find((x) => x.scope === 'user:alice');
      assert.ok(q, JSON.stringify(list));
      assert.equal(q.period, 'day');
      assert.equal(q.direction, 'both');
      assert.equal(q.limitBytes, 5 * 1024 * 1024);
      assert.equal(q.usedBytes, 0);
    } finally {
      await p.stop();
      p.cleanup();
    }
  });

  test('stop ends the open streams', async () => {
    const p = await startProxy(['-P127.0.0.1:0/socks', 'ADMIN=127.0.0.1:0']);
    const url = p.proxy.adminUrl!;
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get(url + 'api/events', { agent: false }, resolve).on('error', reject);
    });
    assert.equal(res.statusCode, 200);
    res.resume();
    const ended = new Promise<void>((r) => res.once('close', () => r()));
    await p.stop();
    p.cleanup();
    await ended;
  });
});
