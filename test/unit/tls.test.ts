/** STLS= parsing and decisions, the pinning memory, the CA's leaves (issuing time, LRU, SANs). */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/types.js';
import { chooseStrategy } from '../../src/core/destinations.js';
import { altNamesOf, caFiles, CaError, CertificateAuthority } from '../../src/tls/ca.js';
import { PinnedNames, stlsDecision } from '../../src/tls/intercept.js';

const q = (host: string, sni: string | null = null, port = 443) => ({ clientAddress: '127.0.0.1', user: null, dst: { host, port }, sni });

test('STLS= rules parse; first match wins; no rule intercepts nothing', () => {
  const c = loadConfig(['STLS=-mitm:{*.bank.test,pinned.test}', 'STLS=mitm:*.test', 'TLSCAFILE=/x/ca.pem', 'TLSVERIFY=no']);
  assert.equal(c.tls?.rules.length, 2);
  assert.equal(c.tls?.verify, false);
  assert.equal(c.tls?.trustFile, '/x/ca.pem');
  assert.equal(stlsDecision(c.tls, q('www.bank.test')), 'never');
  assert.equal(stlsDecision(c.tls, q('a.test')), 'mitm');
  assert.equal(stlsDecision(c.tls, q('a.example')), 'none');
  // The SNI counts as well as the name the client gave (a SOCKS client that resolved locally).
  assert.equal(stlsDecision(c.tls, q('10.0.0.1', 'www.bank.test')), 'never');
  assert.equal(stlsDecision(c.tls, q('10.0.0.1', 'a.test')), 'mitm');
  assert.equal(stlsDecision(loadConfig([]).tls, q('a.test')), 'none');
  assert.equal(loadConfig([]).tls, undefined);
  assert.equal(loadConfig(['STLS=mitm']).tls?.verify, true);
  // Source lists.
  const s = loadConfig(['STLS=mitm:*:10.0.0.0/8']);
  assert.equal(stlsDecision(s.tls, q('a.test')), 'none');
  assert.equal(stlsDecision(s.tls, { ...q('a.test'), clientAddress: '10.1.2.3' }), 'mitm');
});

test('bad STLS=, TLSVERIFY= are refused with the parameter named', () => {
  for (const bad of ['STLS=bump', 'STLS=-mitm', 'STLS=mitm:a:b:c', 'TLSVERIFY=maybe', 'CAFILE=']) {
    assert.throws(() => loadConfig([bad]), (e: unknown) => e instanceof ConfigError && e.message.startsWith(bad.split('=')[0]!), bad);
  }
});

test('the pinning memory is bounded and forgets after its time', () => {
  const p = new PinnedNames(2, 1000);
  assert.equal(p.add('A.test', 0), true);
  assert.equal(p.add('a.test', 1), false, 'logged once');
  assert.equal(p.has('a.test', 500), true);
  assert.equal(p.has('a.test', 1500), false);
  p.add('b.test', 2000);
  p.add('c.test', 2000);
  p.add('d.test', 2000);
  assert.equal(p.has('b.test', 2001), false, 'the oldest went first');
  assert.equal(p.has('d.test', 2001), true);
});

test('a fresh https:// entry makes an intercepted destination cache-first unless pinned dial-first', () => {
  assert.equal(chooseStrategy(undefined, 443, false, 'auto', true), 'cache-first');
  assert.equal(chooseStrategy({ proto: 'tls', serverFirst: false, at: 0 }, 443, true, 'auto', true), 'cache-first');
  assert.equal(chooseStrategy(undefined, 443, true, 'dial-first', true), 'dial-first');
  assert.equal(chooseStrategy(undefined, 443, true, 'auto', false), 'dial-first');
});

test('subjectaltname parsing keeps DNS names and addresses only', () => {
  assert.deepEqual(altNamesOf('DNS:a.test, DNS:*.a.test, IP Address:10.0.0.1, email:x@y, URI:http://x'), [
    { type: 'dns', value: 'a.test' },
    { type: 'dns', value: '*.a.test' },
    { type: 'ip', value: '10.0.0.1' },
  ]);
  assert.deepEqual(altNamesOf(undefined), []);
});

test('the CA: created once with the key 0600, leaves signed by it, reused from the LRU; issuing time', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-ca-'));
  try {
    const files = caFiles(dir);
    const ca = await CertificateAuthority.load(files);
    assert.equal(ca.created, true);
    assert.equal(statSync(files.key).mode & 0o777, 0o600);
    const again = await CertificateAuthority.load(files);
    assert.equal(again.created, false);
    assert.equal(again.certPem, ca.certPem);
    const caCert = new X509Certificate(ca.certPem);
    assert.equal(caCert.ca, true);
    // Leaves: the name first, the server's names after; signed by the CA.
    const started = performance.now();
    const n = 20;
    await Promise.all(Array.from({ length: n }, (_, i) => ca.leafContext(`h${i}.test`, [{ type: 'ip', value: '10.0.0.1' }])));
    const perLeaf = (performance.now() - started) / n;
    assert.equal(ca.stats.issued, n);
    await ca.leafContext('h1.test', [{ type: 'ip', value: '10.0.0.1' }]);
    assert.equal(ca.stats.issued, n, 'from the LRU');
    await ca.leafContext('h1.test', [], true);
    assert.equal(ca.stats.issued, n, 'anyForName takes the leaf issued for the name');
    // The leaf as a TLS server presents it.
    const server = tls.createServer({ SNICallback: (name, cb) => void ca.leafContext(name).then((c) => cb(null, c), cb) });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const peer = await new Promise<tls.PeerCertificate>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername: 'leaf.test', ca: ca.certPem }, () => {
        resolve(s.getPeerCertificate());
        s.destroy();
      });
      s.once('error', reject);
    });
    server.close();
    assert.equal(peer.subject.CN, 'leaf.test');
    assert.equal(peer.subjectaltname, 'DNS:leaf.test');
    process.stdout.write(`# time to issue one leaf: ${perLeaf.toFixed(2)} ms (${n} concurrently), last ${ca.stats.lastMs.toFixed(2)} ms\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a CA file whose key does not match, or that is not a CA, is refused with the file named', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-ca-'));
  const other = mkdtempSync(join(tmpdir(), 'sockstap-ca-'));
  try {
    await CertificateAuthority.load(caFiles(dir));
    await CertificateAuthority.load(caFiles(other));
    await assert.rejects(
      CertificateAuthority.load({ cert: join(dir, 'ca', 'ca.pem'), key: join(other, 'ca', 'ca.key'), create: false }),
      (e: unknown) => e instanceof CaError && /does not belong/.test(e.message) && !/PRIVATE KEY/.test(e.message),
    );
    await assert.rejects(CertificateAuthority.load({ cert: join(dir, 'nope.pem'), key: join(dir, 'nope.key'), create: false }), CaError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(other, { recursive: true, force: true });
  }
});

test('the YAML form takes stls, cafile, cakey, tlsverify, tlscafile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-yaml-'));
  try {
    const file = join(dir, 'c.yaml');
    writeFileSync(file, 'stls:\n  - "-mitm:*.bank.test"\n  - mitm\ncafile: ca/company.pem\ncakey: ca/company.key\ntlsverify: no\ntlscafile: /etc/extra.pem\n');
    const c = loadConfig(['-f', file]);
    assert.equal(c.tls?.rules.length, 2);
    assert.equal(c.tls?.rules[0]!.action, 'never');
    assert.equal(c.tls?.caFile, join(dir, 'ca', 'company.pem'));
    assert.equal(c.tls?.caKey, join(dir, 'ca', 'company.key'));
    assert.equal(c.tls?.verify, false);
    assert.equal(c.tls?.trustFile, '/etc/extra.pem');
    writeFileSync(file, 'stls: bump\n');
    assert.throws(() => loadConfig(['-f', file]), (e: unknown) => e instanceof ConfigError && e.message.startsWith('stls'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
