/** A throwaway self-signed certificate for TLS servers in tests (made with openssl at run time). */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function selfSignedCert(commonName: string): { key: Buffer; cert: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-cert-'));
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-subj', `/CN=${commonName}`, '-addext', `subjectAltName=DNS:${commonName}`,
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2',
    ], { stdio: 'ignore' });
    return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A throwaway CA (openssl) that signs server certificates: its PEM goes to TLSCAFILE or a client's `ca`. */
export interface TestPki {
  dir: string;
  caFile: string;
  caPem: Buffer;
  /** A certificate for these DNS names (and 127.0.0.1), signed by the CA. */
  issue(names: string[]): { key: Buffer; cert: Buffer };
  cleanup(): void;
}

export function testPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-pki-'));
  const caKey = join(dir, 'ca.key');
  const caFile = join(dir, 'ca.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-subj', '/CN=sockstap test origin CA', '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout', caKey, '-out', caFile, '-days', '2',
  ], { stdio: 'ignore' });
  let n = 0;
  return {
    dir,
    caFile,
    caPem: readFileSync(caFile),
    issue(names: string[]) {
      n++;
      const key = join(dir, `s${n}.key`);
      const csr = join(dir, `s${n}.csr`);
      const cert = join(dir, `s${n}.pem`);
      const ext = join(dir, `s${n}.ext`);
      const san = [...names.map((d) => `DNS:${d}`), 'IP:127.0.0.1'].join(',');
      writeFileSync(ext, `subjectAltName=${san}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`);
      execFileSync('openssl', [
        'req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-subj', `/CN=${names[0] ?? 'localhost'}/O=sockstap test origin`, '-keyout', key, '-out', csr,
      ], { stdio: 'ignore' });
      execFileSync('openssl', [
        'x509', '-req', '-in', csr, '-CA', caFile, '-CAkey', caKey, '-CAcreateserial', '-days', '2',
        '-extfile', ext, '-out', cert,
      ], { stdio: 'ignore' });
      return { key: readFileSync(key), cert: readFileSync(cert) };
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
