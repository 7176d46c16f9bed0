/**
 * The command line as users run it: exit status 2 for configuration errors (before anything
 * listens), 1 for a port already in use, --help, SIGHUP reload (a broken file refused, the old
 * configuration kept, live tunnels untouched), SIGTERM drain.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { curl, PAGE, startEcho, startOrigin, type EchoServer, type Origin } from '../helpers/origin.js';
import { runCli } from '../helpers/process.js';

let dir: string;
let origin: Origin;
let echo: EchoServer;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sockstap-cli-'));
  origin = await startOrigin();
  echo = await startEcho();
});
after(async () => {
  await origin.close();
  await echo.close();
  rmSync(dir, { recursive: true, force: true });
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

describe('exit status', () => {
  test('a wrong parameter exits 2 naming it, before listening', async () => {
    const port = await freePort();
    const p = runCli([`-P127.0.0.1:${port}`, 'TIMEOUT=conect:5s', `STATEDIR=${dir}`]);
    assert.equal(await p.exited, 2);
    assert.match(p.output(), /TIMEOUT/);
    // Nothing listened.
    await assert.rejects(
      new Promise((resolve, reject) => {
        const c = net.connect(port, '127.0.0.1', () => resolve(c));
        c.on('error', reject);
      }),
    );
  });

  test('an unknown parameter exits 2', async () => {
    const p = runCli(['-P127.0.0.1:0', 'NOSUCH=1', `STATEDIR=${dir}`]);
    assert.equal(await p.exited, 2);
    assert.match(p.output(), /NOSUCH/);
  });

  test('a port already in use exits 1 naming the address', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const { port } = blocker.address() as net.AddressInfo;
    try {
      const p = runCli([`-P127.0.0.1:${port}`, `STATEDIR=${dir}`]);
      assert.equal(await p.exited, 1);
      assert.match(p.output(), new RegExp(`127\\.0\\.0\\.1:${port}.*in use`));
    } finally {
      blocker.close();
    }
  });

  test('--help lists every parameter of the interface', async () => {
    const p = runCli(['--help']);
    assert.equal(await p.exited, 0);
    for (const name of ['-P', '-f', 'SERVER', 'SOCKSTAP', 'CACHE', 'CACHEDIR', 'CACHESIZE', 'EXPIRE', 'STATEDIR', 'LOGDIR', 'LOGFORMAT', 'RELIABLE', 'PERMIT', 'REJECT', 'AUTHORIZER', 'PROXY', 'SOCKS', 'MOUNT', 'TIMEOUT', 'MAXIMA', 'IDENT', 'SPOOF', 'BANDWIDTH', 'QUOTA', 'ADMIN', 'ADMINAUTH']) {
      assert.ok(p.output().includes(name), `--help does not mention ${name}`);
    }
  });

  test("the seed's command line starts", async () => {
    const p = runCli(['-P127.0.0.1:0', 'SERVER=socks', 'CACHE=do', 'SOCKSTAP=http,ftp', `STATEDIR=${dir}/seed`]);
    try {
      const m = await p.waitFor(/socks door on 127\.0\.0\.1:(\d+)/);
      const r = await curl(['--socks5-hostname', `127.0.0.1:${m[1]}`, origin.url('/seed')]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(PAGE));
    } finally {
      p.kill('SIGTERM');
      assert.equal(await p.exited, 0);
    }
  });
});

describe('signals', () => {
  test('SIGHUP reloads for new connections, refuses a broken file, keeps live tunnels', async () => {
    const file = join(dir, 'reload.yaml');
    writeFileSync(file, 'rules: []\n');
    const p = runCli(['-f', file, '-P127.0.0.1:0/socks', `STATEDIR=${dir}/hup`]);
    try {
      const m = await p.waitFor(/socks door on 127\.0\.0\.1:(\d+)/);
      const port = Number(m[1]);
      // A live tunnel across the reloads.
      const { socket } = await SocksClient.createConnection({
        proxy: { host: '127.0.0.1', port, type: 5 },
        command: 'connect',
        destination: { host: '127.0.0.1', port: echo.port },
      });
      // New rules: the origin is refused for new connections.
      writeFileSync(file, `rules:\n  - reject: "*:{127.0.0.1:${origin.port}}:*"\n`);
      p.kill('SIGHUP');
      await p.waitFor(/reloaded/);
      const refused = await curl(['--socks5', `127.0.0.1:${port}`, origin.url('/after-reload')]);
      assert.notEqual(refused.code, 0, 'the new rule did not apply');
      // A broken file: refused, the previous configuration stays.
      writeFileSync(file, 'rules: [ {reject: \n');
      p.kill('SIGHUP');
      await p.waitFor(/reload refused/);
      const still = await curl(['--socks5', `127.0.0.1:${port}`, origin.url('/still-refused')]);
      assert.notEqual(still.code, 0, 'the broken file replaced the configuration');
      // The live tunnel still works.
      const reply = await new Promise<Buffer>((resolve, reject) => {
        socket.once('data', resolve);
        socket.once('error', reject);
        socket.write('ping across reloads');
      });
      assert.equal(reply.toString(), 'ping across reloads');
      socket.destroy();
    } finally {
      p.kill('SIGTERM');
      assert.equal(await p.exited, 0);
    }
  });

  test('SIGTERM stops accepting and lets a live session finish within the drain time', async () => {
    const p = runCli(['-P127.0.0.1:0/socks', 'TIMEOUT=drain:20s', `STATEDIR=${dir}/term`]);
    const m = await p.waitFor(/socks door on 127\.0\.0\.1:(\d+)/);
    const port = Number(m[1]);
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port, type: 5 },
      command: 'connect',
      destination: { host: '127.0.0.1', port: echo.port },
    });
    p.kill('SIGTERM');
    await p.waitFor(/stopping/);
    // No new connections...
    await assert.rejects(
      SocksClient.createConnection({
        proxy: { host: '127.0.0.1', port, type: 5 },
        command: 'connect',
        destination: { host: '127.0.0.1', port: echo.port },
        timeout: 3000,
      }),
    );
    // ...but the live one still relays.
    const reply = await new Promise<Buffer>((resolve, reject) => {
      socket.once('data', resolve);
      socket.once('error', reject);
      socket.write('still here');
    });
    assert.equal(reply.toString(), 'still here');
    socket.end();
    assert.equal(await p.exited, 0);
  });
});
