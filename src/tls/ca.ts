/**
 * sockstap's certificate authority for TLS interception (docs/tls-interception.md).
 *
 * The CA is `STATEDIR/ca/ca.pem` + `STATEDIR/ca/ca.key` (mode 0600), created at the first start
 * that needs it (ECDSA P-256, ten years), or the administrator's `CAFILE=`/`CAKEY=` (a company CA
 * or an intermediate with its chain; EC P-256/P-384/P-521 or RSA). The key is never logged and
 * never leaves this module except to sign.
 *
 * Leaves: every leaf of one CA shares one ECDSA P-256 key pair made at load (in memory only), so a
 * leaf costs one signature. Leaves are issued with WebCrypto (`@peculiar/x509` builds the DER; no
 * hand-written ASN.1), whose signing runs on libuv's thread pool, so issuing one does not stall
 * the other connections. They live in a bounded LRU keyed by name and subject alternative names,
 * and concurrent requests for the same leaf share one issuance.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, createPublicKey, randomBytes, webcrypto, X509Certificate, type KeyObject } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { chmod, link, mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { isIP } from 'node:net';
import tls from 'node:tls';
import { performance } from 'node:perf_hooks';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

/** Leaves kept in memory (each a SecureContext of a few KiB). */
export const LEAF_CACHE_ENTRIES = 1024;
/** A leaf is valid this long; one kept longer than LEAF_REISSUE_MS is issued again. */
const LEAF_VALIDITY_MS = 30 * 24 * 3600 * 1000;
const LEAF_REISSUE_MS = 24 * 3600 * 1000;
/** Leaves start this far in the past, for clients whose clock is behind. */
const BACKDATE_MS = 3600 * 1000;
const CA_VALIDITY_MS = 10 * 365 * 24 * 3600 * 1000;
/** Largest CA file read (a chain of a few certificates). */
const MAX_PEM_BYTES = 1024 * 1024;

export class CaError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CaError';
  }
}

/** A subject alternative name of a leaf. */
export interface AltName {
  type: 'dns' | 'ip';
  value: string;
}

export interface CaFiles {
  cert: string;
  key: string;
  /** The default location (STATEDIR/ca): created when neither file exists. */
  create: boolean;
}

/** Where the CA of a configuration lives. */
export function caFiles(stateDir: string, tls?: { caFile?: string; caKey?: string }): CaFiles {
  if (tls?.caFile || tls?.caKey) {
    const cert = tls.caFile ?? tls.caKey!;
    return { cert, key: tls.caKey ?? cert, create: false };
  }
  return { cert: join(stateDir, 'ca', 'ca.pem'), key: join(stateDir, 'ca', 'ca.key'), create: true };
}

interface Signer {
  key: CryptoKey;
  algorithm: Algorithm | EcdsaParams;
}

/** WebCrypto parameters for a CA key (Node KeyObject); throws CaError for a kind we cannot sign with. */
async function signerOf(key: KeyObject): Promise<Signer> {
  const der = key.export({ format: 'der', type: 'pkcs8' });
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    const map: Record<string, [string, string]> = {
      prime256v1: ['P-256', 'SHA-256'],
      secp384r1: ['P-384', 'SHA-384'],
      secp521r1: ['P-521', 'SHA-512'],
    };
    const m = curve ? map[curve] : undefined;
    if (!m) throw new CaError(`the CA key's curve ${curve ?? '?'} is not supported (P-256, P-384, P-521 or RSA)`);
    const algorithm = { name: 'ECDSA', namedCurve: m[0], hash: m[1] };
    return { key: await webcrypto.subtle.importKey('pkcs8', der, algorithm, false, ['sign']), algorithm };
  }
  if (key.asymmetricKeyType === 'rsa') {
    const algorithm = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    return { key: await webcrypto.subtle.importKey('pkcs8', der, algorithm, false, ['sign']), algorithm };
  }
  throw new CaError(`the CA key is ${key.asymmetricKeyType ?? 'of an unknown kind'}; expected EC (P-256, P-384, P-521) or RSA`);
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

async function readBounded(path: string, what: string): Promise<string> {
  let text: Buffer;
  try {
    text = await readFile(path);
  } catch (err) {
    throw new CaError(`cannot read the ${what} ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (text.length > MAX_PEM_BYTES) throw new CaError(`the ${what} ${path} is larger than ${MAX_PEM_BYTES} bytes`);
  return text.toString('utf8');
}

interface LeafEntry {
  context: tls.SecureContext;
  at: number;
}

export interface LeafStats {
  issued: number;
  /** Time of the last issuance, ms (signature, encoding and the SecureContext). */
  lastMs: number;
  totalMs: number;
  cached: number;
}

export class CertificateAuthority {
  private readonly leaves = new Map<string, LeafEntry>();
  private readonly pending = new Map<string, Promise<tls.SecureContext>>();
  /** The key of the last leaf issued for each name (leafContext's `anyForName`). */
  private readonly lastForName = new Map<string, string>();
  readonly stats: LeafStats = { issued: 0, lastMs: 0, totalMs: 0, cached: 0 };

  private constructor(
    /** The CA certificate (first of the file), PEM. */
    readonly certPem: string,
    /** What follows a leaf in the chain sent to clients: every certificate of the CA file. */
    private readonly chainPem: string,
    private readonly caCert: x509.X509Certificate,
    private readonly signer: Signer,
    private readonly leafKeys: CryptoKeyPair,
    private readonly leafKeyPem: string,
    /** Where it came from, for messages (never the key's contents). */
    readonly source: string,
    readonly created: boolean,
  ) {}

  /** The CA certificate in DER. */
  get der(): Buffer {
    return Buffer.from(this.caCert.rawData);
  }

  get subject(): string {
    return this.caCert.subject;
  }

  /**
   * Load the CA from its files, or create it at the default location when neither file exists.
   * Throws CaError with a message that names the file (never the key material).
   */
  static async load(files: CaFiles): Promise<CertificateAuthority> {
    let created = false;
    if (files.create) created = await createIfMissing(files);
    const certText = await readBounded(files.cert, 'CA certificate');
    const keyText = await readBounded(files.key, 'CA key');
    const pems = certText.match(PEM_CERT);
    if (!pems || pems.length === 0) throw new CaError(`${files.cert} holds no PEM certificate`);
    let caNode: X509Certificate;
    let key: KeyObject;
    try {
      caNode = new X509Certificate(pems[0]!);
    } catch (err) {
      throw new CaError(`${files.cert}: the first certificate cannot be read (${(err as Error).message})`, { cause: err });
    }
    try {
      key = createPrivateKey(keyText);
    } catch {
      // The key's own parse error may quote it: say only where.
      throw new CaError(`${files.key} holds no usable PEM private key (an encrypted key is not supported)`);
    }
    const spki = (k: KeyObject): Buffer => k.export({ format: 'der', type: 'spki' });
    if (!spki(createPublicKey(key)).equals(spki(caNode.publicKey))) {
      throw new CaError(`the key in ${files.key} does not belong to the certificate in ${files.cert}`);
    }
    if (!caNode.ca) throw new CaError(`${files.cert} is not a CA certificate (basicConstraints CA:TRUE is missing)`);
    if (Date.parse(caNode.validTo) <= Date.now()) throw new CaError(`the CA certificate in ${files.cert} expired on ${caNode.validTo}`);
    const signer = await signerOf(key);
    const leafAlg = { name: 'ECDSA', namedCurve: 'P-256' };
    const leafKeys = await webcrypto.subtle.generateKey(leafAlg, true, ['sign', 'verify']);
    const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey));
    const leafKeyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END PRIVATE KEY-----\n`;
    const chainPem = `${pems.join('\n')}\n`;
    return new CertificateAuthority(
      pems[0]! + '\n',
      chainPem,
      new x509.X509Certificate(pems[0]!),
      signer,
      leafKeys,
      leafKeyPem,
      files.cert,
      created,
    );
  }

  /**
   * The TLS server context of a leaf for `name` (the SNI, or the tunnel's host) with these
   * subject alternative names (the server certificate's; `name` is added when missing).
   */
  leafContext(name: string, alt: readonly AltName[] = [], anyForName = false): Promise<tls.SecureContext> {
    const names = normaliseAltNames(name, alt);
    const lower = name.toLowerCase();
    // Without the server's names (a cache-first tunnel), the leaf last issued for the name serves.
    const last = anyForName ? this.lastForName.get(lower) : undefined;
    const key = last && this.leaves.has(last) ? last : `${lower}|${names.map((n) => `${n.type}:${n.value}`).join(',')}`;
    const now = Date.now();
    const hit = this.leaves.get(key);
    if (hit && now - hit.at < LEAF_REISSUE_MS) {
      this.leaves.delete(key);
      this.leaves.set(key, hit);
      this.stats.cached++;
      return Promise.resolve(hit.context);
    }
    const running = this.pending.get(key);
    if (running) return running;
    const p = this.issue(name, names).then(
      (context) => {
        this.pending.delete(key);
        this.leaves.delete(key);
        this.leaves.set(key, { context, at: Date.now() });
        this.lastForName.delete(lower);
        this.lastForName.set(lower, key);
        while (this.leaves.size > LEAF_CACHE_ENTRIES) {
          const oldest = this.leaves.keys().next().value;
          if (oldest === undefined) break;
          this.leaves.delete(oldest);
        }
        while (this.lastForName.size > LEAF_CACHE_ENTRIES) {
          const oldest = this.lastForName.keys().next().value;
          if (oldest === undefined) break;
          this.lastForName.delete(oldest);
        }
        return context;
      },
      (err: unknown) => {
        this.pending.delete(key);
        throw err;
      },
    );
    this.pending.set(key, p);
    return p;
  }

  get leafCount(): number {
    return this.leaves.size;
  }

  private async issue(name: string, names: readonly AltName[]): Promise<tls.SecureContext> {
    const started = performance.now();
    const now = Date.now();
    const notAfter = Math.min(now + LEAF_VALIDITY_MS, this.caCert.notAfter.getTime());
    const serial = randomBytes(16);
    serial[0] = serial[0]! & 0x7f; // positive (RFC 5280 §4.1.2.2)
    // RFC 5280 ub-common-name is 64 characters; a longer name lives in the SAN alone.
    const subject: x509.JsonName = name.length <= 64 ? [{ CN: [name] }] : [{ O: ['sockstap'] }];
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial.toString('hex'),
      subject,
      issuer: this.caCert.subjectName,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(notAfter),
      signingAlgorithm: this.signer.algorithm,
      publicKey: this.leafKeys.publicKey,
      signingKey: this.signer.key,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension(names.map((n) => ({ type: n.type, value: n.value }))),
        await x509.AuthorityKeyIdentifierExtension.create(this.caCert, false),
      ],
    });
    const context = tls.createSecureContext({ key: this.leafKeyPem, cert: `${cert.toString('pem')}\n${this.chainPem}` });
    const ms = performance.now() - started;
    this.stats.issued++;
    this.stats.lastMs = ms;
    this.stats.totalMs += ms;
    return context;
  }
}

/** The leaf's SANs: DNS names and addresses, `name` first, no duplicates, bounded. */
function normaliseAltNames(name: string, alt: readonly AltName[]): AltName[] {
  const out: AltName[] = [];
  const seen = new Set<string>();
  const add = (n: AltName): void => {
    const value = n.type === 'dns' ? n.value.toLowerCase().replace(/\.$/, '') : n.value;
    const k = `${n.type}:${value}`;
    if (value === '' || seen.has(k) || out.length >= 100) return;
    seen.add(k);
    out.push({ type: n.type, value });
  };
  add(isIP(name) ? { type: 'ip', value: name } : { type: 'dns', value: name });
  for (const n of alt) add(n);
  return out;
}

/**
 * `subjectaltname` of a peer certificate as Node prints it (`DNS:a.test, IP Address:10.0.0.1`):
 * the DNS names and addresses (other kinds are not copied).
 */
export function altNamesOf(subjectaltname: string | undefined): AltName[] {
  if (!subjectaltname) return [];
  const out: AltName[] = [];
  for (const part of subjectaltname.split(/,\s*/)) {
    const m = /^(DNS|IP Address):(.+)$/.exec(part.trim());
    if (!m) continue;
    const value = m[2]!.trim().replace(/^"|"$/g, '');
    if (m[1] === 'DNS') {
      if (/^[A-Za-z0-9*._-]+$/.test(value)) out.push({ type: 'dns', value });
    } else if (isIP(value)) out.push({ type: 'ip', value });
  }
  return out;
}

/**
 * Create the default CA (STATEDIR/ca) when neither file exists. Files are written under temporary
 * names and linked into place, so two processes starting at once end with one CA, and a crash
 * never leaves half a file. Returns whether this call created it.
 */
async function createIfMissing(files: CaFiles): Promise<boolean> {
  const exists = async (p: string): Promise<boolean> => {
    try {
      await (await open(p, 'r')).close();
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw new CaError(`cannot open ${p}: ${(err as Error).message}`, { cause: err });
    }
  };
  const [haveCert, haveKey] = await Promise.all([exists(files.cert), exists(files.key)]);
  if (haveCert && haveKey) return false;
  if (haveCert !== haveKey) {
    throw new CaError(
      `${haveCert ? files.key : files.cert} is missing beside ${haveCert ? files.cert : files.key}; restore it, or remove both to have a new CA made`,
    );
  }
  const dir = dirname(files.key);
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new CaError(`cannot create ${dir}: ${(err as Error).message}`, { cause: err });
  }
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const now = Date.now();
  const host = hostname().replace(/[^A-Za-z0-9.-]/g, '').slice(0, 40) || 'localhost';
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomBytes(16).toString('hex').replace(/^[89a-f]/, '1'),
    name: [{ CN: [`sockstap interception CA ${host} ${new Date(now).toISOString().slice(0, 10)}`] }, { O: ['sockstap'] }],
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + CA_VALIDITY_MS),
    signingAlgorithm: alg,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }) as string;
  const tmpKey = `${files.key}.${process.pid}.tmp`;
  const tmpCert = `${files.cert}.${process.pid}.tmp`;
  try {
    const fk = await open(tmpKey, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
    try {
      await fk.chmod(0o600);
      await fk.writeFile(keyPem);
      await fk.sync();
    } finally {
      await fk.close();
    }
    const fc = await open(tmpCert, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o644);
    try {
      await fc.writeFile(cert.toString('pem') + '\n');
      await fc.sync();
    } finally {
      await fc.close();
    }
    try {
      // link() refuses an existing name: the first process to get here wins.
      await link(tmpKey, files.key);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw err;
    }
    await rename(tmpCert, files.cert);
    await chmod(files.key, 0o600);
    return true;
  } catch (err) {
    throw new CaError(`cannot write the CA in ${dir}: ${(err as Error).message}`, { cause: err });
  } finally {
    await unlink(tmpKey).catch(() => {});
    await unlink(tmpCert).catch(() => {});
  }
}
