/**
 * FTP AUTH TLS (RFC 4217) through the FTP tap against pyftpdlib's TLS_FTPHandler (TLS required on
 * control and data) with curl `--ssl-reqd` through SOCKS5: with STLS=mitm the tap terminates the
 * control connection's TLS (curl trusts sockstap's CA only), reads the commands inside (the session
 * record, xferlog) and, after PROT P, the data connections are intercepted both ways (a LIST and a
 * RETR byte-identical, the server requiring each data connection to resume the control connection's
 * TLS session, as vsftpd's require_ssl_reuse does); without STLS the tunnel is relayed untouched after the 234 and curl sees
 * the server's own certificate. The password is never logged.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { FTP_PASSWORD, FTP_USER, pyftpdlibTlsAvailable, startFtpServer, type TestFtpServer } from '../helpers/ftp-server.js';
import { startProxy } from '../helpers/proxy.js';
import { testPki, type TestPki } from '../helpers/tls.js';

const skip = pyftpdlibTlsAvailable() ? false : 'pyftpdlib with PyOpenSSL (python3-pyftpdlib, python3-openssl) is not installed';

let pki: TestPki;
let ftp: TestFtpServer;
let work: string;
const fileData = randomBytes(400_000);

function curl(args: string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '30', ...args], { encoding: 'buffer', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? Number((err as { code?: unknown }).code ?? 1) : 0;
      resolve({ code: Number.isFinite(code) ? code : 1, stdout, stderr: stderr.toString() });
    });
  });
}

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
  pki = testPki();
  ftp = await startFtpServer(FTP_PASSWORD, { ...pki.issue(['localhost']), requireReuse: true });
  mkdirSync(join(ftp.root, 'pub'));
  writeFileSync(join(ftp.root, 'pub', 'data.bin'), fileData);
  work = mkdtempSync(join(tmpdir(), 'sockstap-ftps-client-'));
});
after(async () => {
  if (skip) return;
  await ftp.stop();
  pki.cleanup();
  rmSync(work, { recursive: true, force: true });
});

test('STLS=mitm: AUTH TLS and PROT P are intercepted; LIST and RETR through SOCKS5 are tapped', { skip }, async () => {
  const proxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=ftp', 'STLS=mitm', `TLSCAFILE=${pki.caFile}`, 'TIMEOUT=sniff:2s']);
  try {
    const ca = join(proxy.stateDir, 'ca', 'ca.pem');
    const base = ['--ssl-reqd', '--cacert', ca, '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, '-u', `${FTP_USER}:${FTP_PASSWORD}`];
    const list = await curl([...base, `ftp://localhost:${ftp.port}/pub/`]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout.toString(), /data\.bin/);
    const out = join(work, 'data.bin');
    const r = await curl([...base, '-o', out, `ftp://localhost:${ftp.port}/pub/data.bin`]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(readFileSync(out).equals(fileData), 'the file arrived byte-identical');
    await until(() => / o r alice ftp 0 \* c\n/.test(proxy.readLog('xferlog')), 'the xferlog line');
    const x = proxy.readLog('xferlog');
    assert.match(x, new RegExp(` 127\\.0\\.0\\.1 ${fileData.length} /?pub/data\\.bin b _ o r alice ftp 0 \\* c\\n`));
    await proxy.stop();
    const sessions = proxy.sessions();
    const control = sessions.filter((s) => s.proto === 'ftp');
    assert.equal(control.length, 2);
    for (const s of control) {
      const f = s.ftp as { tls: string; prot: string; user: string; commands: string[] };
      // curl asks AUTH SSL first (RFC 4217 §4 allows both names).
      assert.match(f.tls, /^(TLS|SSL)$/);
      assert.equal(f.prot, 'P');
      assert.equal(f.user, FTP_USER, 'USER was read inside the TLS');
      assert.ok(f.commands.some((c) => /^PASS \*+/.test(c)), 'PASS recorded masked');
      assert.equal((s.tls as { intercepted: boolean }).intercepted, true);
    }
    const retr = control[1]!.ftp as { commands: string[]; transfers: Array<{ command: string; bytes: number; complete: boolean; data: string }> };
    assert.ok(retr.commands.includes('RETR data.bin') || retr.commands.some((c) => c.startsWith('RETR')), retr.commands.join(' | '));
    const t = retr.transfers.find((tr) => tr.command === 'RETR');
    assert.ok(t && t.complete && t.bytes === fileData.length && t.data === 'passive', JSON.stringify(retr.transfers));
    const data = sessions.filter((s) => s.proto === 'ftp-data');
    assert.equal(data.length, 2, 'the LIST and the RETR data connections');
    for (const f of everyFileUnder(proxy.logDir)) assert.ok(!readFileSync(f).includes(FTP_PASSWORD), `password found in ${f}`);
    // The server requires its data connections to resume the control connection's TLS session.
    assert.match(ftp.log(), /data tls session reused=True/);
    assert.doesNotMatch(ftp.log(), /data tls session reused=False/);
  } finally {
    await proxy.stop();
    proxy.cleanup();
  }
});

test('without STLS: relayed untouched after the 234, the server certificate is its own', { skip }, async () => {
  const proxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=ftp', 'TIMEOUT=sniff:2s']);
  try {
    const base = ['--ssl-reqd', '--cacert', pki.caFile, '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, '-u', `${FTP_USER}:${FTP_PASSWORD}`];
    const out = join(work, 'plain.bin');
    const r = await curl([...base, '-o', out, `ftp://localhost:${ftp.port}/pub/data.bin`]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(readFileSync(out).equals(fileData));
    await proxy.stop();
    const s = proxy.sessions().find((x) => x.proto === 'ftp');
    const f = s!.ftp as { tls: string; user: string | null; prot?: string };
    assert.match(f.tls, /^(TLS|SSL)$/);
    assert.equal(f.user, null, 'nothing after the upgrade was read');
    assert.equal(f.prot, undefined);
  } finally {
    await proxy.stop();
    proxy.cleanup();
  }
});

test('STLS=mitm and a server that fails verification: the control connection is closed, logged, nothing read inside', { skip }, async () => {
  // No TLSCAFILE: the test server's CA is not trusted.
  const proxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=ftp', 'STLS=mitm', 'TIMEOUT=sniff:2s']);
  try {
    const ca = join(proxy.stateDir, 'ca', 'ca.pem');
    const r = await curl(['--ssl-reqd', '--cacert', ca, '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, '-u', `${FTP_USER}:${FTP_PASSWORD}`, `ftp://localhost:${ftp.port}/pub/`]);
    assert.notEqual(r.code, 0);
    await proxy.stop();
    assert.match(proxy.readLog('sockstap.log'), /starttls server refused, connection closed/);
    const s = proxy.sessions().find((x) => x.proto === 'ftp');
    assert.equal(s!.result, 'EUPSTREAM');
    assert.equal((s!.ftp as { user: string | null }).user, null);
    for (const f of everyFileUnder(proxy.logDir)) assert.ok(!readFileSync(f).includes(FTP_PASSWORD), `password found in ${f}`);
  } finally {
    await proxy.stop();
    proxy.cleanup();
  }
});

test('QUOTA= counts a PROT P data connection below its TLS: the RETR is cut', { skip }, async () => {
  const proxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=ftp', 'STLS=mitm', `TLSCAFILE=${pki.caFile}`, 'TIMEOUT=sniff:2s', 'QUOTA=100k/day:all']);
  try {
    const ca = join(proxy.stateDir, 'ca', 'ca.pem');
    const out = join(work, 'cut.bin');
    const r = await curl(['--ssl-reqd', '--cacert', ca, '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, '-u', `${FTP_USER}:${FTP_PASSWORD}`, '-o', out, `ftp://localhost:${ftp.port}/pub/data.bin`]);
    assert.notEqual(r.code, 0, 'the transfer was cut');
    await proxy.stop();
    const data = proxy.sessions().find((s) => s.proto === 'ftp-data');
    assert.ok(data, 'a data session');
    assert.equal(data.result, 'EQUOTA');
    // Cut within one chunk (64 KiB) past the quota, far short of the file.
    assert.ok((data.bytesDown as number) < 100 * 1024 + 80 * 1024, `bytesDown ${String(data.bytesDown)}`);
  } finally {
    await proxy.stop();
    proxy.cleanup();
  }
});
