/**
 * TLS interception (STLS=mitm) with real clients: curl through SOCKS5 (hostname), SOCKS4a and
 * HTTP CONNECT, and Node's TLS client, against a local HTTPS origin whose certificate a test CA
 * signed (given to sockstap as TLSCAFILE). The CA under STATEDIR/ca, `sockstap ca`, https://
 * cache entries and access.log URLs, the 502 page for an untrusted origin, a pinning client
 * relayed untouched the next time, STLS=-mitm, and no private key in any log.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import type { AccessRecord } from '../../src/observe/events.js';
import { curl } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { selfSignedCert, testPki, type TestPki } from '../helpers/tls.js';

const BODY = randomBytes(200 * 1024);

interface HttpsOrigin {
  port: number;
  /** TCP connections accepted. */
  accepts: number;
  requests: string[];
  close(): Promise<void>;
}

async function startHttpsOrigin(key: Buffer, cert: Buffer): Promise<HttpsOrigin> {
  const server = https.createServer({ key, cert }, (req, res) => {
    o.requests.push(req.url ?? '');
    if (req.url?.startsWith('/nostore')) {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
      res.end(`nostore ${o.requests.length}`);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'max-age=300', 'content-length': BODY.length });
    res.end(BODY);
  });
  const o: HttpsOrigin = {
    port: 0,
    accepts: 0,
    requests: [],
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  server.on('connection', () => o.accepts++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  o.port = (server.address() as AddressInfo).port;
  return o;
}

const ROOT = join(import.meta.dirname, '..', '..');

function runCli(args: string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'src', 'cli.ts'), ...args],
      { cwd: ROOT, encoding: 'buffer', timeout: 30_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        resolve({ code, stdout, stderr: stderr.toString() });
      },
    );
  });
}

/** A SOCKS5 tunnel to localhost:port through the proxy, then Node's TLS client over it. */
async function nodeTls(socksPort: number, port: number, ca: Buffer | string): Promise<tls.TLSSocket> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: socksPort, type: 5 },
    command: 'connect',
    destination: { host: 'localhost', port },
    timeout: 10_000,
  });
  return new Promise((resolve, reject) => {
    const s = tls.connect({ socket, servername: 'localhost', ca, ALPNProtocols: ['http/1.1'] });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

/** One GET over a TLS socket; the whole response (Connection: close). */
function getOver(s: tls.TLSSocket, port: number, path: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
    s.write(`GET ${path} HTTP/1.1\r\nHost: localhost:${port}\r\nConnection: close\r\n\r\n`);
  });
}

function bodyOf(response: Buffer): Buffer {
  const i = response.indexOf('\r\n\r\n');
  return response.subarray(i + 4);
}

let pki: TestPki;
let origin: HttpsOrigin;

before(async () => {
  pki = testPki();
  const { key, cert } = pki.issue(['localhost']);
  origin = await startHttpsOrigin(key, cert);
});
after(async () => {
  await origin.close();
  pki.cleanup();
});

describe('intercepted HTTPS through every door', () => {
  let proxy: TestProxy;
  let caPem: string;
  let caFile: string;
  const records: AccessRecord[] = [];

  before(async () => {
    proxy = await startProxy([
      '-P127.0.0.1:0/socks',
      '-P127.0.0.1:0/http',
      'SOCKSTAP=all',
      'CACHE=do',
      'STLS=mitm',
      `TLSCAFILE=${pki.caFile}`,
      'REJECT=http:{https://localhost:*/secret*}:*',
    ]);
    proxy.proxy.events.on('access', (r) => records.push(r));
    caFile = join(proxy.stateDir, 'ca', 'ca.pem');
    caPem = readFileSync(caFile, 'utf8');
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  test('the CA is created under STATEDIR/ca, its key mode 0600; sockstap ca prints it (PEM and DER)', async () => {
    assert.match(caPem, /^-----BEGIN CERTIFICATE-----/);
    const mode = statSync(join(proxy.stateDir, 'ca', 'ca.key')).mode & 0o777;
    assert.equal(mode, 0o600);
    const pem = await runCli(['ca', `STATEDIR=${proxy.stateDir}`]);
    assert.equal(pem.code, 0, pem.stderr);
    assert.equal(pem.stdout.toString(), caPem);
    const der = await runCli(['ca', '--der', `STATEDIR=${proxy.stateDir}`]);
    assert.equal(der.code, 0, der.stderr);
    assert.deepEqual(der.stdout, derOf(caPem));
  });

  const doors: Array<[string, (p: TestProxy) => string[]]> = [
    ['SOCKS5 (hostname)', (p) => ['--socks5-hostname', `127.0.0.1:${p.port('socks')}`]],
    ['SOCKS4a', (p) => ['--socks4a', `127.0.0.1:${p.port('socks')}`]],
    ['HTTP CONNECT', (p) => ['-p', '-x', `http://127.0.0.1:${p.port('http')}`]],
  ];
  for (const [i, [name, via]] of doors.entries()) {
    test(`curl through ${name}: byte-identical, then a TCP_HIT for the https:// URL`, async () => {
      const path = `/obj${i}`;
      const url = `https://localhost:${origin.port}${path}`;
      const first = await curl(['--cacert', caFile, ...via(proxy), url]);
      assert.equal(first.code, 0, first.stderr);
      assert.ok(first.stdout.equals(BODY), `the body is byte-identical: ${first.stdout.length} ${first.stdout.subarray(0, 300).toString()}`);
      // The store completes just after the body went out.
      await waitFor(() => proxy.proxy.httpCache!.hasFreshUnder(`https://localhost:${origin.port}`));
      const requestsBefore = origin.requests.length;
      const acceptsBefore = origin.accepts;
      const second = await curl(['--cacert', caFile, ...via(proxy), url]);
      assert.equal(second.code, 0, second.stderr);
      assert.ok(second.stdout.equals(BODY), `second: ${second.stdout.length} ${second.stdout.subarray(0, 300).toString()}`);
      assert.equal(origin.requests.length, requestsBefore, 'the second fetch never reached the origin');
      assert.equal(origin.accepts, acceptsBefore, 'a fresh https:// hit needs no connection to the origin at all');
      const mine = records.filter((r) => r.url === url);
      assert.deepEqual(
        mine.map((r) => r.resultCode.replace('TCP_MEM_HIT', 'TCP_HIT')),
        ['TCP_MISS', 'TCP_HIT'],
      );
    });
  }

  test('a fresh entry for the host, a path not cached: the server is dialed over TLS then (TCP_MISS)', async () => {
    const url = `https://localhost:${origin.port}/other`;
    const acceptsBefore = origin.accepts;
    const r = await curl(['--cacert', caFile, '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, url]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(BODY));
    assert.equal(origin.accepts, acceptsBefore + 1);
    assert.equal(records.filter((x) => x.url === url)[0]?.resultCode, 'TCP_MISS');
  });

  test('sessions.jsonl has the tls section: sni, alpn, intercepted, subject', async () => {
    const r = await curl(['--cacert', caFile, '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, `https://localhost:${origin.port}/obj0`]);
    assert.equal(r.code, 0, r.stderr);
    await proxy.stop();
    const log = proxy.readLog('access.log');
    for (let i = 0; i < 3; i++) assert.match(log, new RegExp(` TCP_(MEM_)?HIT/200 \\d+ GET https://localhost:${origin.port}/obj${i} `));
    const s = proxy.sessions().filter((x) => (x.tls as { intercepted?: boolean } | undefined)?.intercepted === true);
    assert.ok(s.length >= 4, `intercepted sessions: ${s.length}`);
    const t = s[0]!.tls as { sni: string; alpn: string[]; intercepted: boolean; subject: string };
    assert.equal(t.sni, 'localhost');
    assert.ok(t.alpn.includes('http/1.1'));
    assert.match(t.subject, /CN=localhost/);
    // The bytes that crossed the client's connection, TLS records included.
    assert.ok((s[0]!.bytesDown as number) > BODY.length, `bytesDown ${String(s[0]!.bytesDown)}`);
    assert.ok((s[0]!.bytesUp as number) > 0);
  });
});

describe('interception details', () => {
  let proxy: TestProxy;
  let caPem: string;
  const records: AccessRecord[] = [];

  before(async () => {
    proxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=tls', 'CACHE=do', 'STLS=mitm', `TLSCAFILE=${pki.caFile}`, 'REJECT=http:{https://localhost:*/secret*}:*']);
    proxy.proxy.events.on('access', (r) => records.push(r));
    caPem = readFileSync(join(proxy.stateDir, 'ca', 'ca.pem'), 'utf8');
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  test("Node's TLS client with ca: gets a leaf for the name with the server's names, signed by the CA", async () => {
    const s = await nodeTls(proxy.port('socks'), origin.port, caPem);
    const peer = s.getPeerCertificate(true);
    assert.match(peer.subjectaltname ?? '', /DNS:localhost/);
    assert.match(peer.subjectaltname ?? '', /IP Address:127\.0\.0\.1/);
    assert.match(String(peer.issuer.CN), /sockstap interception CA/);
    assert.equal(s.alpnProtocol, 'http/1.1');
    const response = await getOver(s, origin.port, '/node');
    assert.match(response.toString('latin1', 0, 20), /^HTTP\/1\.1 200/);
    assert.ok(bodyOf(response).equals(BODY));
  });

  test('TLS 1.2 on the client side works too', async () => {
    const r = await curl(['--cacert', join(proxy.stateDir, 'ca', 'ca.pem'), '--tlsv1.2', '--tls-max', '1.2', '-w', '\n%{http_code}', '-o', '/dev/null', '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, `https://localhost:${origin.port}/nostore12`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout.toString(), /200$/);
  });

  test('REJECT on an https:// URL pattern answers 403 inside the TLS', async () => {
    const r = await curl(['--cacert', join(proxy.stateDir, 'ca', 'ca.pem'), '-o', '/dev/null', '-w', '%{http_code}', '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, `https://localhost:${origin.port}/secret/x`]);
    assert.equal(r.stdout.toString(), '403');
    assert.ok(!origin.requests.includes('/secret/x'));
    assert.ok(records.some((x) => x.url === `https://localhost:${origin.port}/secret/x` && x.resultCode === 'TCP_DENIED'));
  });

  test('no private key in any log; leaves are reused', async () => {
    const before = proxy.proxy.interceptionCa!.stats.issued;
    const r = await curl(['--cacert', join(proxy.stateDir, 'ca', 'ca.pem'), '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, `https://localhost:${origin.port}/nostore`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(proxy.proxy.interceptionCa!.stats.issued, before, 'the leaf of localhost came from the LRU');
    const key = readFileSync(join(proxy.stateDir, 'ca', 'ca.key'), 'utf8');
    const keyBody = key.split('\n').filter((l) => l && !l.startsWith('-----')).join('');
    for (const name of ['sockstap.log', 'access.log', 'sessions.jsonl']) {
      const text = proxy.readLog(name);
      assert.ok(!text.includes('PRIVATE KEY'), name);
      assert.ok(!text.includes(keyBody.slice(0, 40)), name);
    }
  });
});

describe('when interception must not happen or fails', () => {
  let proxy: TestProxy;
  let caPem: string;
  let untrusted: HttpsOrigin;
  let plainOrigin: HttpsOrigin;

  before(async () => {
    const self = selfSignedCert('localhost');
    untrusted = await startHttpsOrigin(self.key, self.cert);
    const { key, cert } = pki.issue(['localhost']);
    plainOrigin = await startHttpsOrigin(key, cert);
    proxy = await startProxy([
      '-P127.0.0.1:0/socks',
      'SOCKSTAP=all',
      'CACHE=do',
      `STLS=-mitm:{localhost:${plainOrigin.port}}`,
      'STLS=mitm',
      `TLSCAFILE=${pki.caFile}`,
    ]);
    caPem = readFileSync(join(proxy.stateDir, 'ca', 'ca.pem'), 'utf8');
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await untrusted.close();
    await plainOrigin.close();
  });

  test('an origin that fails verification: a 502 page inside TLS, a log line, nothing cached', async () => {
    const caFile = join(proxy.stateDir, 'ca', 'ca.pem');
    for (let i = 0; i < 2; i++) {
      const r = await curl(['--cacert', caFile, '-w', '\n%{http_code}', '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, `https://localhost:${untrusted.port}/obj`]);
      assert.equal(r.code, 0, r.stderr);
      const text = r.stdout.toString();
      assert.match(text, /502$/);
      assert.match(text, /failed verification/);
      assert.match(text, /self[- ]signed/i);
    }
    assert.equal(untrusted.requests.length, 0, 'no request reached the untrusted origin');
    assert.match(proxy.readLog('sockstap.log'), /tls server refused, the client gets a 502 page/);
  });

  test('a pinning client (rejects the leaf): the next tunnel is relayed untouched, logged once', async () => {
    // curl trusting only the origin's CA refuses the leaf with an alert.
    const url = `https://localhost:${origin.port}/pinned`;
    const first = await curl(['--cacert', pki.caFile, '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, url]);
    assert.notEqual(first.code, 0, 'the leaf is refused');
    const requestsBefore = origin.requests.length;
    const second = await curl(['--cacert', pki.caFile, '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, url]);
    assert.equal(second.code, 0, second.stderr);
    assert.ok(second.stdout.equals(BODY));
    assert.equal(origin.requests.length, requestsBefore + 1);
    // Node's client sees the origin's own certificate.
    const s = await nodeTls(proxy.port('socks'), origin.port, pki.caPem);
    assert.match(String(s.getPeerCertificate().issuer.CN), /sockstap test origin CA/);
    s.destroy();
    const lines = proxy.readLog('sockstap.log').split('\n').filter((l) => /rejected the interception certificate/.test(l));
    assert.equal(lines.length, 1);
  });

  test("a client that closes right after the handshake (Node's verification) is remembered too", async () => {
    // 127.0.0.1: a name of its own in the memory (no SNI: the tunnel's address is the name).
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5 },
      command: 'connect',
      destination: { host: '127.0.0.1', port: origin.port },
      timeout: 10_000,
    });
    const err = await new Promise<Error | null>((resolve) => {
      const s = tls.connect({ socket, ca: pki.caPem, ALPNProtocols: ['http/1.1'] });
      s.once('secureConnect', () => resolve(null));
      s.once('error', (e) => {
        // The client gives up its connection, as an https.Agent's socket would be.
        socket.destroy();
        resolve(e);
      });
    });
    assert.ok(err, 'the leaf is refused by Node');
    await waitFor(() => /rejected the interception certificate.* name=127\.0\.0\.1/.test(proxy.readLog('sockstap.log')));
    const { socket: again } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5 },
      command: 'connect',
      destination: { host: '127.0.0.1', port: origin.port },
      timeout: 10_000,
    });
    const s = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const t = tls.connect({ socket: again, ca: pki.caPem, ALPNProtocols: ['http/1.1'] });
      t.once('secureConnect', () => resolve(t));
      t.once('error', reject);
    });
    assert.match(String(s.getPeerCertificate().issuer.CN), /sockstap test origin CA/);
    s.destroy();
  });

  test('STLS=-mitm destinations are never intercepted', async () => {
    const r = await curl(['--cacert', pki.caFile, '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, `https://localhost:${plainOrigin.port}/obj`]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(BODY));
    // With sockstap's CA only, curl refuses: the certificate is the origin's own.
    const refused = await curl(['--cacert', join(proxy.stateDir, 'ca', 'ca.pem'), '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, `https://localhost:${plainOrigin.port}/obj`]);
    assert.notEqual(refused.code, 0);
    void caPem;
  });
});

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('a company CA (CAFILE=/CAKEY=) and non-HTTP inside TLS', () => {
  let proxy: TestProxy;
  let echo: tls.Server;
  let echoPort = 0;

  before(async () => {
    const { key, cert } = pki.issue(['localhost']);
    echo = tls.createServer({ key, cert }, (s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    echoPort = (echo.address() as AddressInfo).port;
    proxy = await startProxy([
      '-P127.0.0.1:0/socks',
      'SOCKSTAP=all',
      'STLS=mitm',
      `TLSCAFILE=${pki.caFile}`,
      `CAFILE=${pki.caFile}`,
      `CAKEY=${join(pki.dir, 'ca.key')}`,
    ]);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    echo.close();
  });

  test('leaves are signed by the CA named in CAFILE; a line protocol inside is relayed between the two TLS sessions', async () => {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5 },
      command: 'connect',
      destination: { host: 'localhost', port: echoPort },
      timeout: 10_000,
    });
    const s = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const t = tls.connect({ socket, servername: 'localhost', ca: pki.caPem });
      t.once('secureConnect', () => resolve(t));
      t.once('error', reject);
    });
    const issuer = s.getPeerCertificate().issuer;
    assert.equal(issuer.CN, 'sockstap test origin CA');
    // Signed by the company CA, but a leaf of sockstap's: the origin's has O=sockstap test origin.
    assert.notEqual(s.getPeerCertificate().subject.O, 'sockstap test origin');
    const line = 'HELLO not http at all\n';
    const got = await new Promise<string>((resolve) => {
      let text = '';
      s.on('data', (c: Buffer) => {
        text += c.toString();
        if (text.length >= line.length) resolve(text);
      });
      s.write(line);
    });
    assert.equal(got, line);
    s.destroy();
    assert.equal(statSync(join(proxy.stateDir, 'ca'), { throwIfNoEntry: false }), undefined, 'no CA of its own was made');
  });
});

function derOf(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

