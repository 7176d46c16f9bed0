/**
 * WORKERS=2 with BANDWIDTH, MAXIMA and QUOTA: the limits are the user's, not a worker's. The
 * workers accept from one shared socket, so the test finds which worker carried a connection:
 * the origin sees the proxy's port of the upstream socket, and /proc tells which worker pid holds
 * it; a refused connection names its session in sockstap.log, and a session id starts with its
 * process's pid. Connections are retried until each worker has carried (or refused) one.
 */
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { counter, MiB, pidOfLocalPort, sleep, startSender, type Endless } from '../helpers/fleet.js';
import { runCli, type CliProcess, freeFixedPort } from '../helpers/process.js';
import { socks5UserPass } from '../helpers/socks5-by-hand.js';

const WINDOW_MS = 6_000;

describe('WORKERS=2 with BANDWIDTH, MAXIMA and QUOTA', () => {
  let dir: string;
  let endless: Endless;
  let p: CliProcess;
  let port: number;
  let pids: number[];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sockstap-workers-limits-'));
    endless = await startSender();
    port = await freeFixedPort();
    p = runCli([
      `-P127.0.0.1:${port}/socks`,
      'WORKERS=2',
      `STATEDIR=${dir}`,
      'AUTHORIZER=-list{alice:a,bob:b,carol:c}',
      'MAXIMA=peruser:2',
      'BANDWIDTH=1m:user:bob',
      'QUOTA=1m/day:user:carol',
    ]);
    const m = await p.waitFor(/2 workers ready \(pids (\d+), (\d+)\)/, 90_000);
    pids = [Number(m[1]), Number(m[2])];
  });

  after(async () => {
    p?.kill('SIGTERM');
    await p?.exited;
    endless?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A connection of `user` through the workers; with the pid of the worker that carried it. */
  async function connect(user: string, pass: string, dst = endless): Promise<{ socket: net.Socket; rep: number; pid: number | null }> {
    const seen = dst.peers.length;
    const x = await socks5UserPass(port, user, pass, dst.port);
    if (x.rep !== 0) return { ...x, pid: null };
    const peer = dst.peers[seen];
    return { ...x, pid: peer === undefined ? null : pidOfLocalPort(peer, pids) };
  }

  /** Open connections until one lands on a worker other than `not` (the others are closed again). */
  async function onAnotherWorker(user: string, pass: string, not: number | null): Promise<{ socket: net.Socket; pid: number; closed: Promise<void> }> {
    for (let i = 0; i < 60; i++) {
      const x = await connect(user, pass);
      assert.equal(x.rep, 0);
      if (x.pid !== null && x.pid !== not) {
        const closed = new Promise<void>((r) => x.socket.once('close', () => r()));
        return { socket: x.socket, pid: x.pid, closed };
      }
      x.socket.destroy();
      await sleep(100);
    }
    throw new Error(`no connection of ${user} landed on the worker other than ${not}`);
  }

  /** Worker pids named by the sessions that sockstap.log says were refused with `re`. */
  function refusedBy(re: RegExp): number[] {
    const log = readFileSync(join(dir, 'log', 'sockstap.log'), 'utf8');
    const out: number[] = [];
    for (const line of log.split('\n')) {
      if (!re.test(line)) continue;
      const m = / session=([0-9a-z]+)-/.exec(line);
      if (m) out.push(parseInt(m[1]!.slice(0, -4), 36));
    }
    return out;
  }

  /** Try `user` until both workers refused it, every try being refused; resolves with the tries. */
  async function refusedOnBoth(user: string, pass: string, re: RegExp): Promise<number> {
    for (let i = 1; i <= 60; i++) {
      const x = await connect(user, pass);
      x.socket.destroy();
      assert.notEqual(x.rep, 0, `try ${i} of ${user} was let through (worker ${x.pid})`);
      await sleep(50);
      const by = new Set(refusedBy(re));
      if (pids.every((pid) => by.has(pid))) return i;
    }
    throw new Error(`${user} was not refused by both workers`);
  }

  test("a user's BANDWIDTH holds within 10 % over two connections on two workers", async (t) => {
    const one = await onAnotherWorker('bob', 'b', null);
    const two = await onAnotherWorker('bob', 'b', one.pid);
    const counts = [one, two].map((x) => counter(x.socket));
    await sleep(1000);
    const start = counts.map((x) => x.bytes());
    const t0 = performance.now();
    await sleep(WINDOW_MS);
    const elapsed = (performance.now() - t0) / 1000;
    const moved = counts.map((x, i) => x.bytes() - start[i]!);
    one.socket.destroy();
    two.socket.destroy();
    const rate = (moved[0]! + moved[1]!) / elapsed;
    t.diagnostic(`bob over workers ${one.pid} and ${two.pid}: ${(rate / MiB).toFixed(3)} MiB/s (${moved.map((n) => (n / elapsed / MiB).toFixed(2)).join(' + ')}) for a limit of 1 MiB/s`);
    assert.ok(rate > 0.9 * MiB && rate < 1.1 * MiB, `rate ${rate} B/s is not within 10 % of 1 MiB/s`);
  });

  test('MAXIMA=peruser:2 counts the connections of both workers', async (t) => {
    const one = await onAnotherWorker('alice', 'a', null);
    const two = await onAnotherWorker('alice', 'a', one.pid);
    // The primary tells each worker what the other holds (a message away).
    await sleep(300);
    const tries = await refusedOnBoth('alice', 'a', /MAXIMA=peruser reached for user alice/);
    t.diagnostic(`alice holds one connection on each worker; ${tries} more tries refused, by both workers`);
    one.socket.destroy();
    await sleep(300);
    const again = await connect('alice', 'a');
    assert.equal(again.rep, 0, 'a closed connection frees its count');
    again.socket.destroy();
    two.socket.destroy();
  });

  test("a user's QUOTA used up through one worker is refused by both", async (t) => {
    const sized = await startSender(2 * MiB);
    try {
      const x = await connect('carol', 'c', sized);
      assert.equal(x.rep, 0);
      const got = counter(x.socket);
      await got.closed;
      t.diagnostic(`carol got ${got.bytes()} bytes through one worker before the cut (quota 1 MiB)`);
      assert.ok(got.bytes() >= 0.9 * MiB && got.bytes() <= 1.1 * MiB, `cut at ${got.bytes()} bytes`);
    } finally {
      sized.close();
    }
    // Committed within 250 ms; each worker reads the shared usage again within a second.
    await sleep(1500);
    const tries = await refusedOnBoth('carol', 'c', /quota 1m\/day:user:carol used up/);
    t.diagnostic(`carol refused by both workers within ${tries} tries`);
  });

  test("a worker killed with -9 gives its MAXIMA counts back", async (t) => {
    const one = await onAnotherWorker('alice', 'a', null);
    const two = await onAnotherWorker('alice', 'a', one.pid);
    await sleep(300);
    const refused = await connect('alice', 'a');
    assert.notEqual(refused.rep, 0);
    refused.socket.destroy();
    process.kill(one.pid, 'SIGKILL');
    // Read on, so the socket sees its end.
    one.socket.resume();
    await one.closed;
    // The primary drops the dead worker's counts and tells the other at once.
    await sleep(300);
    const x = await connect('alice', 'a');
    assert.equal(x.rep, 0, 'the dead worker\'s connection no longer counts');
    t.diagnostic(`worker ${one.pid} killed; alice admitted by worker ${x.pid}`);
    x.socket.destroy();
    two.socket.destroy();
  });
});
