/**
 * AUTHORIZER: the one account list every door checks (SOCKS5 user/password RFC 1929, SOCKS4 user
 * id, HTTP `Proxy-Authorization: Basic`). Two sources, as in DeleGate:
 *
 *   -list{USER:PASS,USER2:PASS2}   accounts written in the parameter
 *   -htpasswd{FILE}                an Apache htpasswd file: bcrypt ($2y$/$2a$/$2b$), Apache MD5
 *                                  ($apr1$) or {SHA}; plain crypt(3) and plain text are refused
 *
 * Passwords never appear in `source`, in an error message or in a log line. Comparisons run in
 * constant time; bcrypt answers are remembered briefly (keyed by an HMAC, never the password) so
 * a busy client does not cost one bcrypt per connection.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import bcrypt from 'bcryptjs';
import type { Accounts } from '../config/types.js';
import { ConfigError } from '../config/types.js';
import { parseCmdAuthorizer } from './auth-helper.js';
import { parseLdapAuthorizer } from './ldap-auth.js';
import { parseRadiusAuthorizer } from './radius-auth.js';

type Credential =
  | { kind: 'plain'; digest: Buffer } // sha256 of the password from -list{}, compared digest to digest
  | { kind: 'bcrypt'; hash: string }
  | { kind: 'apr1'; salt: string; hash: string }
  | { kind: 'sha1'; digest: Buffer };

const MAX_HTPASSWD_BYTES = 16 * 1024 * 1024;
const BCRYPT_CACHE_ENTRIES = 1024;
const BCRYPT_CACHE_MS = 60_000;
// Compared against when the user is unknown, so "no such user" costs about what a wrong password does.
const DUMMY = createHash('sha256').update('sockstap-no-such-user').digest();

/** Parse `-list{...}`, `-htpasswd{FILE}` (FILE relative to `cwd`) or `-cmd{PROGRAM ARGS}` (policy/auth-helper.ts). */
export function parseAuthorizer(value: string, param: string, cwd: string): Accounts {
  const v = value.trim();
  let m = /^-list\{(.*)\}$/s.exec(v);
  if (m) return parseAccountList(m[1]!, param);
  m = /^-htpasswd\{(.+)\}$/s.exec(v);
  if (m) return loadHtpasswd(resolve(cwd, m[1]!.trim()), param);
  m = /^-cmd\{(.*)\}((?:,[^{}]*)?)$/s.exec(v);
  if (m) return parseCmdAuthorizer(m[1]!, m[2]!.replace(/^,/, ''), param, cwd);
  m = /^-(ldap|radius)\{/.exec(v);
  if (m) {
    const close = matchingBrace(v, m[0].length - 1);
    if (close < 0) throw new ConfigError(param, `unclosed { in -${m[1]}{...}`);
    const after = v.slice(close + 1);
    if (after !== '' && !after.startsWith(',')) throw new ConfigError(param, `expected ,NAME=VALUE options after -${m[1]}{...}`);
    const body = v.slice(m[0].length, close);
    return m[1] === 'ldap' ? parseLdapAuthorizer(body, after.slice(1), param, cwd) : parseRadiusAuthorizer(body, after.slice(1), param, cwd);
  }
  throw new ConfigError(param, 'expected -list{USER:PASS,...}, -htpasswd{FILE}, -cmd{PROGRAM ARGS}, -ldap{URL,BASEDN,FILTER} or -radius{HOST:PORT,SECRET}');
}

/** The index of the `}` that closes the `{` at `open`, or -1. */
function matchingBrace(text: string, open: number): number {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return i;
  }
  return -1;
}

/** `USER:PASS,USER2:PASS2` (the password may contain ':', not ',' or '}'). */
function parseAccountList(body: string, param: string): Accounts {
  const users: Record<string, string> = {};
  if (body.trim() === '') throw new ConfigError(param, '-list{} names no account; expected -list{USER:PASS,...}');
  body.split(',').forEach((entry, i) => {
    const colon = entry.indexOf(':');
    const user = colon < 0 ? entry.trim() : entry.slice(0, colon).trim();
    if (colon < 0 || user === '') {
      throw new ConfigError(param, `account ${i + 1} of -list{}: expected USER:PASS`);
    }
    if (Object.hasOwn(users, user)) throw new ConfigError(param, `user ${JSON.stringify(user)} is listed twice`);
    users[user] = entry.slice(colon + 1);
  });
  return accountsFromMap(users, param);
}

/** Accounts from a `{user: password}` map (the YAML form `authorizer: {users: {...}}`). */
export function accountsFromMap(users: Readonly<Record<string, string>>, param: string): Accounts {
  const creds = new Map<string, Credential>();
  for (const [user, password] of Object.entries(users)) {
    checkUserName(user, param, `user ${JSON.stringify(user)}`);
    if (typeof password !== 'string' || password === '') {
      throw new ConfigError(param, `user ${JSON.stringify(user)} has an empty password`);
    }
    creds.set(user, { kind: 'plain', digest: sha256(password) });
  }
  if (creds.size === 0) throw new ConfigError(param, 'no account given');
  return new AccountTable(`-list{${[...creds.keys()].join(',')}}`, creds);
}

/** Read an htpasswd file now (at load and at each reload). */
export function loadHtpasswd(file: string, param: string): Accounts {
  let text: string;
  try {
    if (statSync(file).size > MAX_HTPASSWD_BYTES) throw new ConfigError(param, `${file} is larger than 16 MiB`);
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(param, `cannot read htpasswd file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const creds = new Map<string, Credential>();
  text.split(/\r?\n/).forEach((line, i) => {
    const where = `${file} line ${i + 1}`;
    if (line.trim() === '' || line.trimStart().startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new ConfigError(param, `${where}: expected USER:HASH`);
    const user = line.slice(0, colon);
    checkUserName(user, param, where);
    if (creds.has(user)) throw new ConfigError(param, `${where}: user ${JSON.stringify(user)} is listed twice`);
    creds.set(user, parseHtpasswdHash(line.slice(colon + 1).trim(), param, `${where} (user ${JSON.stringify(user)})`));
  });
  if (creds.size === 0) throw new ConfigError(param, `${file} holds no account`);
  return new AccountTable(`-htpasswd{${file}}`, creds);
}

function parseHtpasswdHash(hash: string, param: string, where: string): Credential {
  if (/^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) return { kind: 'bcrypt', hash };
  const apr1 = /^\$apr1\$([^$]{1,8})\$([./0-9A-Za-z]{22})$/.exec(hash);
  if (apr1) return { kind: 'apr1', salt: apr1[1]!, hash };
  if (hash.startsWith('{SHA}')) {
    const digest = Buffer.from(hash.slice(5), 'base64');
    if (digest.length !== 20) throw new ConfigError(param, `${where}: {SHA} value is not a base64 SHA-1 digest`);
    return { kind: 'sha1', digest };
  }
  // The value is not echoed: for a plain-text line it is the password itself.
  throw new ConfigError(
    param,
    `${where}: unsupported password hash (plain text, crypt(3) and other schemes are refused); ` +
      'create it with htpasswd -B (bcrypt), -m (Apache MD5) or -s (SHA)',
  );
}

function checkUserName(user: string, param: string, where: string): void {
  // RFC 1929 carries user names of 1-255 bytes; no control characters so names stay loggable.
  // eslint-disable-next-line no-control-regex
  if (user.length === 0 || Buffer.byteLength(user) > 255 || /[\x00-\x1f\x7f]/.test(user)) {
    throw new ConfigError(param, `${where}: bad user name`);
  }
}

class AccountTable implements Accounts {
  /** HMAC key for the bcrypt cache: entries can't be turned back into passwords. */
  private readonly cacheKey = randomBytes(32);
  private readonly bcryptCache = new Map<string, { ok: boolean; until: number }>();

  constructor(
    readonly source: string,
    private readonly creds: ReadonlyMap<string, Credential>,
  ) {}

  has(user: string): boolean {
    return this.creds.has(user);
  }

  verify(user: string, password: string): boolean {
    const cred = this.creds.get(user);
    if (!cred) {
      timingSafeEqual(DUMMY, sha256(password));
      return false;
    }
    switch (cred.kind) {
      case 'plain':
        return timingSafeEqual(cred.digest, sha256(password));
      case 'sha1':
        return timingSafeEqual(cred.digest, createHash('sha1').update(password, 'utf8').digest());
      case 'apr1':
        return equalStrings(apr1Crypt(password, cred.salt), cred.hash);
      case 'bcrypt':
        return this.verifyBcrypt(user, password, cred.hash);
    }
  }

  private verifyBcrypt(user: string, password: string, hash: string): boolean {
    const key = createHmac('sha256', this.cacheKey).update(user).update('\0').update(password).update('\0').update(hash).digest('base64');
    const now = Date.now();
    const hit = this.bcryptCache.get(key);
    if (hit && hit.until > now) return hit.ok;
    let ok: boolean;
    try {
      ok = bcrypt.compareSync(password, hash);
    } catch {
      ok = false;
    }
    if (hit) this.bcryptCache.delete(key);
    if (this.bcryptCache.size >= BCRYPT_CACHE_ENTRIES) {
      // Map keeps insertion order: the first key is the oldest entry.
      this.bcryptCache.delete(this.bcryptCache.keys().next().value!);
    }
    this.bcryptCache.set(key, { ok, until: now + BCRYPT_CACHE_MS });
    return ok;
  }

  toString(): string {
    return this.source;
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function equalStrings(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

const ITOA64 = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/**
 * Apache's `$apr1$` hash: Poul-Henning Kamp's FreeBSD MD5-crypt with the magic "$apr1$"
 * (the algorithm of apr_md5_encode in APR's crypto/apr_md5.c). Returns `$apr1$SALT$HASH`.
 */
export function apr1Crypt(password: string, salt: string): string {
  const magic = '$apr1$';
  const pw = Buffer.from(password, 'utf8');
  const s = Buffer.from(salt.slice(0, 8), 'utf8');
  const md5 = () => createHash('md5');

  const alternate = md5().update(pw).update(s).update(pw).digest();
  const ctx = md5().update(pw).update(magic).update(s);
  for (let i = pw.length; i > 0; i -= 16) ctx.update(alternate.subarray(0, Math.min(16, i)));
  // For each bit of the length: a zero byte when set, the password's first byte when clear.
  for (let i = pw.length; i > 0; i >>= 1) ctx.update(i & 1 ? Buffer.alloc(1) : pw.subarray(0, 1));
  let final = ctx.digest();

  // 1000 rounds, to make brute force slower (as the original).
  for (let i = 0; i < 1000; i++) {
    const round = md5();
    round.update(i & 1 ? pw : final);
    if (i % 3) round.update(s);
    if (i % 7) round.update(pw);
    round.update(i & 1 ? final : pw);
    final = round.digest();
  }

  const to64 = (value: number, n: number): string => {
    let out = '';
    for (let v = value; n-- > 0; v >>= 6) out += ITOA64[v & 0x3f];
    return out;
  };
  const f = final;
  const encoded =
    to64((f[0]! << 16) | (f[6]! << 8) | f[12]!, 4) +
    to64((f[1]! << 16) | (f[7]! << 8) | f[13]!, 4) +
    to64((f[2]! << 16) | (f[8]! << 8) | f[14]!, 4) +
    to64((f[3]! << 16) | (f[9]! << 8) | f[15]!, 4) +
    to64((f[4]! << 16) | (f[10]! << 8) | f[5]!, 4) +
    to64(f[11]!, 2);
  return `${magic}${salt.slice(0, 8)}$${encoded}`;
}
