/**
 * QUOTA=5m/day:user:alice (issue 5): usage is durable in STATEDIR/usage.sqlite and survives
 * `kill -9`: a first process counts 3 MiB and is killed; a second one, on the same STATEDIR, cuts
 * the transfer that crosses 5 MiB, refuses the next connection with the door's reply (SOCKS5 REP 2,
 * HTTP 403 with a page), and is killed too; a third still refuses. The database holds the total
 * and `sockstap report` prints it. Real processes from the command line (test/helpers/process.ts).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { CLI, runCli, type CliProcess } from '../helpers/process.js';
import { socks5UserPass } from '../helpers/socks5-by-hand.js';

const MiB = 1024 * 1024;
const QUOTA = 5 * MiB;

/** A server that sends `size` bytes and ends. */
function startSized(size: number): Promise<net.Server> {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const server = net.createServer((s) => {
    s.on('error', () => {});
    let left = size;
    const pump = (): void => {
      while (left > 0 && !s.destroyed) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return;
      }
      if (left === 0) s.end();
    };
    s.on('drain', pump);
    pump();
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const socks5 = socks5UserPass;

/** Read a socket to its end; resolves with the byte count. */
function drain(socket: net.Socket): Promise<number> {
  return new Promise((resolve) => {
    let n = 0;
    socket.on('data', (d: Buffer) => {
      n += d.length;
    });
    socket.once('close', () => resolve(n));
    socket.resume();
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function dbTotal(stateDir: string): number {
  // Several processes may open the WAL database at once; this one only reads.
  const db = new Database(join(stateDir, 'usage.sqlite'), { fileMustExist: true });
  try {
    const r = db.prepare("SELECT SUM(up + down) AS n FROM quota_usage WHERE scope = 'user:alice'").get() as { n: number | null };
    return r.n ?? 0;
  } finally {
    db.close();
  }
}

describe('QUOTA= durable usage', () => {
  let stateDir: string;
  let small: net.Server;
  let big: net.Server;
  const procs: CliProcess[] = [];

  before(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'sockstap-quota-'));
    small = await startSized(3 * MiB);
    big = await startSized(8 * MiB);
  });

  after(async () => {
    for (const p of procs) {
      p.kill('SIGKILL');
      await p.exited;
    }
    small.close();
    big.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  async function start(): Promise<{ socks: number; http: number; proc: CliProcess }> {
    const proc = runCli([
      '-P127.0.0.1:0/socks',
      '-P127.0.0.1:0/http',
      'AUTHORIZER=-list{alice:a,bob:b}',
      'QUOTA=5m/day:user:alice',
      `STATEDIR=${stateDir}`,
    ]);
    procs.push(proc);
    const s = await proc.waitFor(/socks door on 127\.0\.0\.1:(\d+)/);
    const h = await proc.waitFor(/http door on 127\.0\.0\.1:(\d+)/);
    return { socks: Number(s[1]), http: Number(h[1]), proc };
  }

  async function kill9(proc: CliProcess): Promise<void> {
    proc.kill('SIGKILL');
    assert.equal(await proc.exited, 137);
  }

  it('cuts the transfer that crosses it, refuses the next, and keeps the total across kill -9', async () => {
    const smallPort = (small.address() as net.AddressInfo).port;
    const bigPort = (big.address() as net.AddressInfo).port;

    // 1. 3 MiB counted, then kill -9 more than a second later (the commit interval).
    const p1 = await start();
    const first = await socks5(p1.socks, 'alice', 'a', smallPort);
    assert.equal(first.rep, 0);
    assert.equal(await drain(first.socket), 3 * MiB);
    await sleep(1500);
    await kill9(p1.proc);
    assert.equal(dbTotal(stateDir), 3 * MiB, 'the committed total survives kill -9');

    // 2. A new process enforces the stored total: the 8 MiB transfer is cut near 2 MiB.
    const p2 = await start();
    const second = await socks5(p2.socks, 'alice', 'a', bigPort);
    assert.equal(second.rep, 0);
    const got = await drain(second.socket);
    assert.ok(got >= QUOTA - 3 * MiB - 64 * 1024 && got < 3 * MiB, `cut after ${got} bytes (quota left: ${QUOTA - 3 * MiB})`);

    // 3. The next connection is refused with the door's reply; another user is not.
    const third = await socks5(p2.socks, 'alice', 'a', smallPort);
    assert.equal(third.rep, 2, 'SOCKS5 REP 2 (not allowed by ruleset)');
    third.socket.destroy();
    const bob = await socks5(p2.socks, 'bob', 'b', smallPort);
    assert.equal(bob.rep, 0);
    bob.socket.destroy();
    const page = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.get(
        {
          host: '127.0.0.1',
          port: p2.http,
          path: `http://127.0.0.1:${smallPort}/`,
          headers: { 'Proxy-Authorization': `Basic ${Buffer.from('alice:a').toString('base64')}` },
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
    });
    assert.equal(page.status, 403);
    assert.match(page.body, /quota/i);

    // 4. The database shows the total; after kill -9 and a restart it is still enforced.
    await sleep(1200);
    const total = dbTotal(stateDir);
    assert.ok(total >= QUOTA && total < QUOTA + MiB, `usage.sqlite total ${total}`);
    await kill9(p2.proc);
    assert.equal(dbTotal(stateDir), total);
    const p3 = await start();
    const fourth = await socks5(p3.socks, 'alice', 'a', smallPort);
    assert.equal(fourth.rep, 2, 'still refused after kill -9 and restart');
    fourth.socket.destroy();
    p3.proc.kill('SIGTERM');
    assert.equal(await p3.proc.exited, 0);

    // 5. The report prints the totals.
    const json = spawnSync(process.execPath, ['--import', 'tsx', CLI, 'report', '--format', 'json', `STATEDIR=${stateDir}`], { encoding: 'utf8' });
    assert.equal(json.status, 0, json.stderr);
    const report = JSON.parse(json.stdout) as { users: Array<{ name: string; up: number; down: number; sessions: number }> };
    const alice = report.users.find((u) => u.name === 'alice');
    assert.ok(alice && alice.down >= QUOTA, `report: ${json.stdout}`);
    const table = spawnSync(process.execPath, ['--import', 'tsx', CLI, 'report', '--since', 'today', `STATEDIR=${stateDir}`], { encoding: 'utf8' });
    assert.equal(table.status, 0, table.stderr);
    assert.match(table.stdout, /^alice\s+\d+\s+/m);
    assert.match(table.stdout, new RegExp(`user:alice.*\\(${total}\\)`));
  });
});
