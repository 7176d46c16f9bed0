/**
 * WORKERS=2 with CACHE and ADMIN, as child processes of the CLI: one cache store for both workers
 * (an entry stored through one is a hit through the other; concurrent misses reach the origin
 * once), the admin in the primary summing both workers and closing a session of either, and kill -9
 * of the worker that is storing a slow body: no partial entry is ever served, and the primary
 * restarts the worker and says so in sockstap.log.
 *
 * Which worker served a connection is read from sessions.jsonl: a session id starts with its
 * process's pid in base 36.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { curl } from '../helpers/origin.js';
import { runCli, type CliProcess, freeFixedPort } from '../helpers/process.js';

const BODY = Buffer.alloc(4096, 'w');
const BIG = 32 * 1024 * 1024;
let dir: string;
let origin: http.Server;
let originPort = 0;
/** Requests the origin saw, per path. */
const seen = new Map<string, number>();
let bigSent = 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sockstap-workers-shared-'));
  origin = http.createServer((req, res) => {
    const path = req.url ?? '/';
    seen.set(path, (seen.get(path) ?? 0) + 1);
    if (path.startsWith('/big')) {
      // A large cacheable body, sent slowly: the kill lands in the middle of the store.
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG, 'cache-control': 'max-age=3600' });
      const chunk = Buffer.alloc(128 * 1024, 'z');
      let left = BIG;
      const pump = (): void => {
        if (res.destroyed) return;
        if (left <= 0) return void res.end();
        left -= chunk.length;
        bigSent += chunk.length;
        res.write(chunk);
        setTimeout(pump, 20);
      };
      pump();
      return;
    }
    const send = (): void => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BODY.length, 'cache-control': 'max-age=3600' });
      res.end(BODY);
    };
    // /slow: the head comes late, so misses of the same URL overlap.
    if (path.startsWith('/slow')) setTimeout(send, 800);
    else send();
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  originPort = (origin.address() as net.AddressInfo).port;
});
after(async () => {
  origin.closeAllConnections();
  await new Promise((r) => origin.close(r));
  rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Running {
  p: CliProcess;
  port: number;
  pids: number[];
  admin: string;
  state: string;
}

async function start(name: string): Promise<Running> {
  const port = await freeFixedPort();
  const state = join(dir, name);
  const p = runCli([`-P127.0.0.1:${port}/http`, 'WORKERS=2', 'CACHE=do', 'ADMIN=127.0.0.1:0', `STATEDIR=${state}`]);
  const a = await p.waitFor(/admin on (http:\/\/\S+\/) for 2 workers/);
  const m = await p.waitFor(/2 workers ready \(pids (\d+), (\d+)\)/, 60_000);
  return { p, port, pids: [Number(m[1]), Number(m[2])], admin: a[1]!, state };
}

async function stop(r: Running): Promise<void> {
  r.p.kill('SIGTERM');
  assert.equal(await r.p.exited, 0);
}

function get(r: Running, path: string): Promise<{ code: number; status: string; size: number }> {
  return curl(['-s', '-x', `http://127.0.0.1:${r.port}`, '-o', '/dev/null', '-w', '%{http_code} %{size_download}', `http://127.0.0.1:${originPort}${path}`], 60_000).then((c) => {
    const [status, size] = c.stdout.toString().split(' ');
    return { code: c.code, status: status ?? '', size: Number(size) };
  });
}

/** The pid of the worker behind each sessions.jsonl record, in order. */
function recordPids(r: Running): number[] {
  const file = join(r.state, 'log', 'sessions.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => parseInt(String((JSON.parse(l) as { id: string }).id).split('-')[0]!.slice(0, -4), 36));
}

async function waitFor<T>(what: string, fn: () => T | Promise<T>, ok: (v: T) => boolean, ms = 15_000): Promise<T> {
  let v = await fn();
  for (const end = Date.now() + ms; !ok(v) && Date.now() < end; v = await fn()) await sleep(100);
  assert.ok(ok(v), `${what}: ${JSON.stringify(v)}`);
  return v;
}

async function json<T>(url: string): Promise<T> {
  const res = await fetch(url);
  return (await res.json()) as T;
}

/** A counter's total over its label sets, from the primary's /metrics. */
async function metric(r: Running, name: string): Promise<number> {
  const text = await (await fetch(`${r.admin}metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    // `name` may carry the start of a label set: sockstap_bytes_total{direction="down"
    if (line.startsWith(name.includes('{') ? name : `${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

describe('WORKERS=2 with CACHE and ADMIN', () => {
  test('an entry stored through one worker is a hit through the other; concurrent misses reach the origin once; /metrics sums both', async () => {
    const r = await start('shared');
    try {
      // Stored through one worker...
      const first = await get(r, '/a');
      assert.equal(first.status, '200');
      assert.equal(seen.get('/a'), 1);
      // ...and fetched on new connections until both workers have served it: never again from the origin.
      let n = 1;
      for (; n < 80 && new Set(recordPids(r)).size < 2; n++) {
        const again = await get(r, '/a');
        assert.equal(again.status, '200');
        assert.equal(again.size, BODY.length);
        await waitFor('the record', () => recordPids(r).length, (k) => k >= n + 1, 5000);
      }
      const pids = recordPids(r);
      assert.equal(new Set(pids).size, 2, `both workers served /a (records from ${[...new Set(pids)].join(', ')})`);
      for (const pid of pids) assert.ok(r.pids.includes(pid), `record of pid ${pid}, workers ${r.pids.join(', ')}`);
      assert.equal(seen.get('/a'), 1, 'the other worker answered from the entry the first one stored');

      // Concurrent misses of one URL, on connections spread over both workers: one origin request.
      for (let round = 0; round < 5; round++) {
        const path = `/slow${round}`;
        const before = recordPids(r).length;
        const results = await Promise.all(Array.from({ length: 6 }, () => get(r, path)));
        for (const x of results) {
          assert.equal(x.status, '200');
          assert.equal(x.size, BODY.length);
        }
        assert.equal(seen.get(path), 1, `${path} reached the origin ${seen.get(path)} times`);
        const those = (await waitFor('records', () => recordPids(r), (l) => l.length >= before + 6)).slice(before);
        if (new Set(those).size === 2) break;
        assert.ok(round < 4, 'the concurrent requests never landed on both workers');
      }

      // The primary's figures are the sum of both workers' traffic.
      const total = recordPids(r).length;
      await waitFor('sessions in /api/stats', () => json<{ sessionsTotal: number }>(`${r.admin}api/stats`), (s) => s.sessionsTotal === total);
      await waitFor('http requests in /metrics', () => metric(r, 'sockstap_http_requests_total'), (v) => v === total);
      await waitFor('connections in /metrics', () => metric(r, 'sockstap_connections_total'), (v) => v === total);
      // Bytes: the sum of every worker's session records, both ways.
      const records = readFileSync(join(r.state, 'log', 'sessions.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { bytesUp: number; bytesDown: number });
      const down = records.reduce((n, x) => n + x.bytesDown, 0);
      const up = records.reduce((n, x) => n + x.bytesUp, 0);
      assert.ok(down >= total * BODY.length);
      await waitFor('bytes down in /metrics', () => metric(r, 'sockstap_bytes_total{direction="down"'), (v) => v === down);
      await waitFor('bytes up in /metrics', () => metric(r, 'sockstap_bytes_total{direction="up"'), (v) => v === up);
      const hits = await metric(r, 'sockstap_cache_hits_total');
      const misses = await metric(r, 'sockstap_cache_misses_total');
      assert.equal(hits + misses, total);
      assert.equal(misses, [...seen.entries()].filter(([k]) => k === '/a' || k.startsWith('/slow')).reduce((s, [, v]) => s + v, 0));
      const stats = await json<{ cache: { entries: number } | null }>(`${r.admin}api/stats`);
      assert.ok(stats.cache && stats.cache.entries >= 2, JSON.stringify(stats.cache));

      // POST /api/reload in the primary reloads every worker.
      const token = readFileSync(join(r.state, 'admin.token'), 'utf8').trim();
      const log = join(r.state, 'log', 'sockstap.log');
      const reloads = (): number => (readFileSync(log, 'utf8').match(/ reloaded /g) ?? []).length;
      const before = reloads();
      const res = await fetch(`${r.admin}api/reload`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
      assert.equal(res.status, 200);
      await waitFor('both workers reloaded', reloads, (n) => n === before + 2);
    } finally {
      await stop(r);
    }
  });

  test('kill -9 of the worker storing a slow body: no partial entry is served, the session is listed and closable, the worker is restarted and logged', async () => {
    const r = await start('crash');
    try {
      const token = readFileSync(join(r.state, 'admin.token'), 'utf8').trim();
      const pidOf = (id: string): number => parseInt(id.split('-')[0]!.slice(0, -4), 36);
      type Live = Array<{ id: string; bytesDown: number }>;
      const moving = (): Promise<Live> => json<Live>(`${r.admin}api/sessions`).then((l) => l.filter((s) => s.bytesDown > 0));

      // A slow download, listed by the primary whichever worker has it, and closed through it.
      const closing = get(r, '/big-closed');
      const [first] = await waitFor('a live session', moving, (l) => l.length === 1);
      assert.ok(r.pids.includes(pidOf(first!.id)), `session ${first!.id} of a worker`);
      const closed = await fetch(`${r.admin}api/sessions/${encodeURIComponent(first!.id)}/close`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
      assert.equal(closed.status, 200);
      const cut = await closing;
      assert.ok(cut.size < BIG, `the closed download got ${cut.size} bytes`);
      await waitFor('no live session', moving, (l) => l.length === 0);

      // Another slow download; the worker storing it is killed -9 mid-store.
      const download = get(r, '/big');
      const [storing] = await waitFor('the storing session', moving, (l) => l.length === 1);
      const victim = pidOf(storing!.id);
      assert.ok(r.pids.includes(victim));
      process.kill(victim, 'SIGKILL');
      const killed = await download;
      assert.ok(killed.size < BIG, `the download was not cut (${killed.size} bytes)`);
      // The primary restarts it and says so in sockstap.log (not only on stderr).
      const log = join(r.state, 'log', 'sockstap.log');
      const line = await waitFor('restart line', () => readFileSync(log, 'utf8').split('\n').find((l) => l.includes('worker exited; starting another') && l.includes(String(victim))) ?? '', (l) => l !== '');
      assert.match(line, /SIGKILL/);
      await r.p.waitFor(/worker \d exited \(SIGKILL\); starting another/);
      // The restarted worker serves (both workers again: new connections keep working).
      await waitFor('a new worker', () => readFileSync(log, 'utf8').split('\n').filter((l) => / started /.test(l)).length, (k) => k >= 3, 60_000);
      // The origin goes away: only the cache could answer now, and it has no complete /big.
      origin.closeAllConnections();
      await new Promise((res) => origin.close(res));
      for (let i = 0; i < 6; i++) {
        const again = await get(r, '/big');
        assert.notEqual(again.status, '200', 'a partial entry was served');
        assert.match(again.status, /^50[24]$/);
      }
    } finally {
      await stop(r);
      origin = http.createServer();
      await new Promise<void>((res) => origin.listen(0, '127.0.0.1', res));
    }
  });
});
