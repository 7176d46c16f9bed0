/**
 * TLS doors (issue 19 item 3): `-PPORT/https` — an HTTP proxy reached over TLS (curl
 * `--proxy https://... --proxy-cacert`), absolute-form GET and CONNECT — and `-PPORT/socks+tls` —
 * SOCKS5 inside TLS (the `socks` package over a Node TLS socket), with CERTFILE=/KEYFILE= taken
 * again at a reload; a missing or unreadable certificate is a start error; a client that does not
 * speak TLS is refused with a log line.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/types.js';
import { curl, PAGE, startEcho, startOrigin, type EchoServer, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { testPki, type TestPki } from '../helpers/tls.js';

let pki: TestPki;
let echo: EchoServer;
let origin: Origin;
let certFile: string;
let keyFile: string;
let proxy: TestProxy;

before(async () => {
  pki = testPki();
  const { cert, key } = pki.issue(['localhost']);
  certFile = join(pki.dir, 'door.pem');
  keyFile = join(pki.dir, 'door.key');
  writeFileSync(certFile, cert);
  writeFileSync(keyFile, key);
  echo = await startEcho();
  origin = await startOrigin();
  proxy = await startProxy(['-P127.0.0.1:0/https', '-P127.0.0.1:0/socks+tls', `CERTFILE=${certFile}`, `KEYFILE=${keyFile}`, 'AUTHORIZER=-list{alice:tls-door-pw}']);
});
after(async () => {
  await proxy?.stop();
  proxy?.cleanup();
  await echo.close();
  await origin.close();
  pki.cleanup();
});

function socksOverTls(ca: Buffer | string, password = 'tls-door-pw'): Promise<{ reply: string; cert: tls.PeerCertificate }> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ host: '127.0.0.1', port: proxy.port('socks'), ca, servername: 'localhost' }, async () => {
      try {
        const { socket } = await SocksClient.createConnection({
          proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5, userId: 'alice', password },
          command: 'connect',
          destination: { host: '127.0.0.1', port: echo.port },
          existing_socket: t,
          timeout: 10_000,
        });
        socket.write('ping over tls');
        const reply = await new Promise<string>((r) => socket.once('data', (d: Buffer) => r(d.toString())));
        const cert = t.getPeerCertificate();
        socket.destroy();
        resolve({ reply, cert });
      } catch (err) {
        t.destroy();
        reject(err);
      }
    });
    t.on('error', reject);
  });
}

describe('-PPORT/https', () => {
  test('curl --proxy https:// GETs a page through the TLS door', async () => {
    const r = await curl(['--proxy', `https://127.0.0.1:${proxy.port('http')}`, '--proxy-cacert', pki.caFile, '--proxy-user', 'alice:tls-door-pw', origin.url('/page')]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(PAGE));
  });

  test('CONNECT through the TLS door (curl --proxytunnel)', async () => {
    const r = await curl(['--proxy', `https://127.0.0.1:${proxy.port('http')}`, '--proxy-cacert', pki.caFile, '--proxy-user', 'alice:tls-door-pw', '--proxytunnel', origin.url('/page')]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(PAGE));
  });

  test('the proxy certificate is verified: curl without the CA refuses it', async () => {
    const r = await curl(['--proxy', `https://127.0.0.1:${proxy.port('http')}`, '--proxy-user', 'alice:tls-door-pw', origin.url('/page')]);
    assert.notEqual(r.code, 0);
  });

  test('a client speaking plain HTTP to the TLS door is refused, with a log line', async () => {
    const got = await new Promise<string>((resolve) => {
      const s = net.connect(proxy.port('http'), '127.0.0.1', () => s.write(`GET ${origin.url('/page')} HTTP/1.1\r\nHost: x\r\n\r\n`));
      let buf = '';
      s.on('data', (d: Buffer) => (buf += d.toString('latin1')));
      s.on('close', () => resolve(buf));
      s.on('error', () => {});
    });
    assert.ok(!got.includes('sockstap-origin'));
    for (let i = 0; i < 100 && !/TLS door handshake failed/.test(proxy.readLog('sockstap.log')); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(proxy.readLog('sockstap.log'), /TLS door handshake failed/);
  });
});

describe('PAC and check output', () => {
  test('the PAC file names the https door as HTTPS and leaves socks+tls out (browsers have no SOCKS over TLS)', async () => {
    const r = await curl(['--cacert', pki.caFile, `https://127.0.0.1:${proxy.port('http')}/proxy.pac`]);
    assert.equal(r.code, 0, r.stderr);
    const pac = r.stdout.toString();
    assert.match(pac, new RegExp(`HTTPS 127\\.0\\.0\\.1:${proxy.port('http')}`));
    assert.doesNotMatch(pac, new RegExp(`:${proxy.port('socks')}`));
  });
});

describe('-PPORT/socks+tls', () => {
  test('SOCKS5 with user/password inside TLS reaches the echo server', async () => {
    const { reply } = await socksOverTls(pki.caPem);
    assert.equal(reply, 'ping over tls');
    await assert.rejects(socksOverTls(pki.caPem, 'wrong-pw'));
  });

  test('a reload takes a renewed certificate for new connections', async () => {
    const before = (await socksOverTls(pki.caPem)).cert.fingerprint256;
    const renewed = pki.issue(['localhost']);
    writeFileSync(certFile, renewed.cert);
    writeFileSync(keyFile, renewed.key);
    await proxy.proxy.reloadFromOrigin();
    const afterReload = (await socksOverTls(pki.caPem)).cert.fingerprint256;
    assert.notEqual(afterReload, before);
  });
});

describe('CERTFILE/KEYFILE errors', () => {
  test('a TLS door without CERTFILE, an unreadable file or a key that does not match is a start error', () => {
    const fails = (args: string[], re: RegExp) => assert.throws(() => loadConfig(args), (e: unknown) => e instanceof ConfigError && re.test(e.message), args.join(' '));
    fails(['-P127.0.0.1:0/https'], /needs CERTFILE/);
    fails(['-P127.0.0.1:0/socks+tls', `CERTFILE=${join(pki.dir, 'missing.pem')}`, `KEYFILE=${keyFile}`], /cannot read .*missing\.pem: ENOENT/);
    const other = pki.issue(['other']);
    const otherKey = join(pki.dir, 'other.key');
    writeFileSync(otherKey, other.key);
    fails(['-P127.0.0.1:0/https', `CERTFILE=${certFile}`, `KEYFILE=${otherKey}`], /do not make a usable certificate and key/);
    fails(['-P127.0.0.1:0/socks', `CERTFILE=${certFile}`], /is for TLS doors/);
  });
});
