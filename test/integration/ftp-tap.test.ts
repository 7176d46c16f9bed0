/**
 * The FTP tap against a real server (pyftpdlib) and real clients (curl through --socks5, the
 * `socks` package for BIND): passive download and upload byte-identical with their xferlog lines,
 * active mode through SOCKS BIND, a read-only rule refusing STOR with the proxy's own 550 while
 * RETR works, `GET ftp://` through the HTTP door twice (the second a TCP_HIT), a directory as an
 * HTML listing, and no password anywhere under LOGDIR.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { formatPortArg } from '../../src/taps/ftp/wire.js';
import { FTP_PASSWORD, FTP_USER, pyftpdlibAvailable, startFtpServer, type TestFtpServer } from '../helpers/ftp-server.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const skip = pyftpdlibAvailable() ? false : 'python3-pyftpdlib is not installed';

let ftp: TestFtpServer;
let work: string;

/**
 * The suite runs under the tap's own rule, under the default job (`npm start`: SOCKSTAP=all
 * CACHE=do on an auto door) and under the seed's line (`-P1080 SERVER=socks CACHE=do
 * SOCKSTAP=http,ftp`, plus an HTTP door for the ftp:// checks): the server's port is one the
 * connect strategy has never seen, and it must find the banner on its own.
 */
const JOBS: Array<[string, string[]]> = [
  ['SOCKSTAP=ftp', ['-P127.0.0.1:0/auto', 'SOCKSTAP=ftp', 'CACHE=do', 'TIMEOUT=sniff:2s']],
  ['the default job', ['-P127.0.0.1:0/auto', 'SOCKSTAP=all', 'CACHE=do']],
  ['the seed line', ['-P127.0.0.1:0', 'SERVER=socks', 'CACHE=do', 'SOCKSTAP=http,ftp', '-P127.0.0.1:0/http']],
];
const fileData = randomBytes(300_000);

function curl(args: string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '20', ...args], { encoding: 'buffer', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? Number((err as NodeJS.ErrnoException & { code?: unknown }).code ?? 1) : 0;
      resolve({ code: Number.isFinite(code) ? code : 1, stdout, stderr: stderr.toString() });
    });
  });
}

/** Wait until `check` is true (log lines are written after the session ends). */
async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`timed out waiting for ${what}`);
}

function everyFileUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...everyFileUnder(p));
    else out.push(p);
  }
  return out;
}

before(async () => {
  if (skip) return;
  ftp = await startFtpServer();
  mkdirSync(join(ftp.root, 'pub'));
  writeFileSync(join(ftp.root, 'pub', 'data.bin'), fileData);
  writeFileSync(join(ftp.root, 'pub', 'notes.txt'), 'hello <ftp>\n');
  mkdirSync(join(ftp.root, 'pub', 'sub dir'));
  work = mkdtempSync(join(tmpdir(), 'sockstap-ftp-client-'));
});

after(async () => {
  if (skip) return;
  await ftp.stop();
  rmSync(work, { recursive: true, force: true });
});

for (const [job, jobArgs] of JOBS) {
  describe(`under ${job}`, () => {
    describe('FTP tap', { skip }, () => {
      let proxy: TestProxy;
      let readonlyProxy: TestProxy;
      /** The HTTP door: the auto port, or the seed line's extra http port. */
      const httpPort = (): number => proxy.proxy.addresses().find((a) => a.door === 'http' || a.door === 'auto')!.port;

      before(async () => {
        if (skip) return;
        proxy = await startProxy(jobArgs);
        const readonlyRules = ['PERMIT=ftp:readonly:*', 'REJECT=ftp:*:*'];
        readonlyProxy = await startProxy(
          job === 'SOCKSTAP=ftp' ? ['-P127.0.0.1:0/socks', 'SOCKSTAP=ftp', ...readonlyRules, 'TIMEOUT=sniff:2s'] : [...jobArgs, ...readonlyRules],
        );
      });

      after(async () => {
        if (skip) return;
        await proxy.stop();
        await readonlyProxy.stop();
        const secretFree = [proxy, readonlyProxy].flatMap((p) => everyFileUnder(p.logDir));
        for (const f of secretFree) assert.ok(!readFileSync(f).includes(FTP_PASSWORD), `password found in ${f}`);
        proxy.cleanup();
        readonlyProxy.cleanup();
      });

      test('passive download through --socks5 is byte-identical, recorded and in xferlog', async () => {
        const out = join(work, 'down.bin');
        const r = await curl(['--socks5', `127.0.0.1:${proxy.port()}`, '-u', `${FTP_USER}:${FTP_PASSWORD}`, '-o', out, `ftp://127.0.0.1:${ftp.port}/pub/data.bin`]);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(readFileSync(out).equals(fileData));
        await until(() => / o r alice ftp 0 \* c\n/.test(proxy.readLog('xferlog')), 'the xferlog line');
        const line = proxy.readLog('xferlog').split('\n').find((l) => l.includes('pub/data.bin'))!;
        const f = line.split(/ +/); // ctime pads a one-digit day with a second space
        // current-time is 5 fields ("Mon Nov 22 10:43:38 2026"), then 13 more.
        assert.equal(f.length, 18, line);
        assert.equal(f[6], '127.0.0.1');
        assert.equal(f[7], String(fileData.length));
        assert.equal(f[8], 'pub/data.bin');
        assert.equal(f[9], 'b');
        await until(() => proxy.sessions().some((s) => s.proto === 'ftp'), 'the control session record');
        const ctl = proxy.sessions().find((s) => s.proto === 'ftp')!;
        const section = ctl.ftp as { user: string; commands: string[]; transfers: Array<Record<string, unknown>> };
        assert.equal(section.user, FTP_USER);
        assert.ok(section.commands.includes('PASS ****'), JSON.stringify(section.commands));
        assert.ok(section.commands.some((c) => c === 'RETR data.bin'));
        const t = section.transfers.find((x) => x.command === 'RETR')!;
        assert.equal(t.bytes, fileData.length);
        assert.equal(t.complete, true);
        assert.equal(t.data, 'passive');
        assert.ok((ctl.bytesDown as number) > 0 && (ctl.bytesUp as number) > 0);
        assert.ok(proxy.sessions().some((s) => s.proto === 'ftp-data' && s.bytesDown === fileData.length));
        // Retrieved in full through the tap: the same file by GET ftp:// is served from the cache.
        const again = await curl(['-x', `http://127.0.0.1:${httpPort()}`, `ftp://127.0.0.1:${ftp.port}/pub/data.bin`]);
        assert.ok(again.stdout.equals(fileData));
        await until(() => /TCP_(MEM_)?HIT\/200 \d+ GET ftp:\/\/127\.0\.0\.1:\d+\/pub\/data\.bin/.test(proxy.readLog('access.log')), 'a TCP_HIT line');
      });

      test('passive upload through --socks5-hostname arrives intact, xferlog direction i', async () => {
        const src = join(work, 'up.bin');
        const payload = randomBytes(123_457);
        writeFileSync(src, payload);
        const r = await curl(['--socks5-hostname', `127.0.0.1:${proxy.port()}`, '-T', src, `ftp://localhost:${ftp.port}/pub/up.bin`]);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(readFileSync(join(ftp.root, 'pub', 'up.bin')).equals(payload));
        await until(() => / i a anonymous ftp 0 \* c\n/.test(proxy.readLog('xferlog')), 'the upload xferlog line');
        const line = proxy.readLog('xferlog').split('\n').find((l) => l.includes('pub/up.bin'))!;
        assert.equal(line.split(/ +/)[7], String(payload.length));
      });

      test('active mode: SOCKS BIND + PORT by hand, the data connection is counted as the transfer', async () => {
        const ctl = await SocksClient.createConnection({
          proxy: { host: '127.0.0.1', port: proxy.port(), type: 5 },
          command: 'connect',
          destination: { host: '127.0.0.1', port: ftp.port },
        });
        const c = ctl.socket;
        let text = '';
        c.on('data', (d: Buffer) => (text += d.toString('latin1')));
        const waitFor = (re: RegExp): Promise<void> => until(() => re.test(text), String(re));
        const send = (line: string): void => void c.write(`${line}\r\n`);
        await waitFor(/^220 /m);
        send('USER anonymous');
        await waitFor(/^331 /m);
        send('PASS guest@example.test');
        await waitFor(/^230 /m);
        send('TYPE I');
        await waitFor(/^200 Type/m);
        const bind = new SocksClient({
          proxy: { host: '127.0.0.1', port: proxy.port(), type: 5 },
          command: 'bind',
          destination: { host: '127.0.0.1', port: 0 },
        });
        const bound = new Promise<{ host: string; port: number }>((resolve) => bind.once('bound', (i) => resolve(i.remoteHost!)));
        const established = new Promise<net.Socket>((resolve) => bind.once('established', (i) => resolve(i.socket)));
        bind.once('error', (err) => assert.fail(err));
        bind.connect();
        const at = await bound;
        send(`PORT ${formatPortArg(at.host === '0.0.0.0' ? '127.0.0.1' : at.host, at.port)}`);
        await waitFor(/^200 Active/m);
        send('RETR pub/data.bin');
        const data = await established;
        const chunks: Buffer[] = [];
        data.on('data', (d: Buffer) => chunks.push(d));
        await new Promise((r) => data.once('close', r));
        await waitFor(/^226 /m);
        assert.ok(Buffer.concat(chunks).equals(fileData));
        send('QUIT');
        await new Promise((r) => c.once('close', r));
        await until(() => proxy.sessions().some((s) => (s.ftp as { transfers?: Array<{ data: string }> } | undefined)?.transfers?.some((t) => t.data === 'active') ?? false), 'the active transfer');
        const rec = proxy.sessions().find((s) => (s.ftp as { transfers?: Array<{ data: string }> } | undefined)?.transfers?.some((t) => t.data === 'active'))!;
        const t = (rec.ftp as { transfers: Array<{ data: string; bytes: number; complete: boolean }> }).transfers.find((x) => x.data === 'active')!;
        assert.equal(t.bytes, fileData.length);
        assert.equal(t.complete, true);
        assert.ok(!JSON.stringify(rec).includes('guest@example.test'));
      });

      test('a read-only rule refuses STOR with the proxy 550 (the server never sees it) while RETR works', async () => {
        const src = join(work, 'ro.bin');
        writeFileSync(src, 'must not arrive');
        const up = await curl(['--socks5', `127.0.0.1:${readonlyProxy.port()}`, '-T', src, `ftp://127.0.0.1:${ftp.port}/pub/ro.bin`]);
        assert.notEqual(up.code, 0);
        assert.match(up.stderr, /550/);
        assert.equal(existsSync(join(ftp.root, 'pub', 'ro.bin')), false);
        assert.ok(!/STOR \/pub\/ro\.bin/.test(ftp.log()) && !ftp.log().includes('ro.bin'), 'the server saw the refused STOR');
        const down = await curl(['--socks5', `127.0.0.1:${readonlyProxy.port()}`, `ftp://127.0.0.1:${ftp.port}/pub/notes.txt`]);
        assert.equal(down.code, 0, down.stderr);
        assert.equal(down.stdout.toString(), 'hello <ftp>\n');
        await until(() => readonlyProxy.sessions().some((s) => (s.ftp as { refused?: string[] } | undefined)?.refused?.length), 'the refusal record');
        const rec = readonlyProxy.sessions().find((s) => (s.ftp as { refused?: string[] } | undefined)?.refused?.length)!;
        assert.deepEqual((rec.ftp as { refused: string[] }).refused, ['STOR ro.bin']);
      });

      test('GET ftp:// through the HTTP door: streamed and stored, the second time a TCP_HIT', async () => {
        writeFileSync(join(ftp.root, 'pub', 'http.bin'), fileData.subarray(0, 70_000));
        const url = `ftp://127.0.0.1:${ftp.port}/pub/http.bin`;
        const first = await curl(['-x', `http://127.0.0.1:${httpPort()}`, url]);
        assert.equal(first.code, 0, first.stderr);
        assert.ok(first.stdout.equals(fileData.subarray(0, 70_000)));
        // The store commits after the response; the hit needs it on disk.
        await until(() => proxy.readLog('access.log').includes(url), 'the first access line');
        const second = await curl(['-x', `http://127.0.0.1:${httpPort()}`, url]);
        assert.equal(second.code, 0, second.stderr);
        assert.ok(second.stdout.equals(fileData.subarray(0, 70_000)));
        await until(() => /TCP_(MEM_)?HIT\/200 \d+ GET ftp:\/\/127\.0\.0\.1:\d+\/pub\/http\.bin/.test(proxy.readLog('access.log')), 'a TCP_HIT line');
        assert.match(proxy.readLog('access.log'), /TCP_MISS\/200 \d+ GET ftp:\/\/127\.0\.0\.1:\d+\/pub\/http\.bin/);
      });

      test('a changed file is fetched again (SIZE/MDTM validation), not served stale', async () => {
        const name = join(ftp.root, 'pub', 'changing.txt');
        writeFileSync(name, 'version one\n');
        const url = `ftp://127.0.0.1:${ftp.port}/pub/changing.txt`;
        const a = await curl(['-x', `http://127.0.0.1:${httpPort()}`, url]);
        assert.equal(a.stdout.toString(), 'version one\n');
        writeFileSync(name, 'version two, longer\n');
        const b = await curl(['-x', `http://127.0.0.1:${httpPort()}`, url]);
        assert.equal(b.stdout.toString(), 'version two, longer\n');
      });

      test('a directory through the HTTP door is an HTML listing; a password in the URL is not logged', async () => {
        const r = await curl(['-x', `http://127.0.0.1:${httpPort()}`, '-i', `ftp://${FTP_USER}:${FTP_PASSWORD}@127.0.0.1:${ftp.port}/pub/`]);
        assert.equal(r.code, 0, r.stderr);
        const text = r.stdout.toString();
        assert.match(text, /^HTTP\/1\.1 200/);
        assert.match(text, /content-type: text\/html/i);
        assert.match(text, /<a href="data\.bin">data\.bin<\/a>/);
        assert.match(text, /<a href="sub%20dir\/">sub dir\/<\/a>/);
        assert.match(text, /notes\.txt/);
        await until(() => proxy.readLog('access.log').includes(`ftp://${FTP_USER}@127.0.0.1:${ftp.port}/pub/`), 'the listing access line');
      });
    });
  });
}
