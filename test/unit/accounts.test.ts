import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { ConfigError } from '../../src/config/types.js';
import { accountsFromMap, apr1Crypt, parseAuthorizer } from '../../src/policy/accounts.js';

const dir = mkdtempSync(join(tmpdir(), 'sockstap-accounts-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function openssl(args: string[]): string | undefined {
  try {
    return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

test('apr1 matches known vectors (openssl passwd -apr1)', () => {
  assert.equal(apr1Crypt('secret', 'saltsalt'), '$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0');
  assert.equal(apr1Crypt('', 'ab'), '$apr1$ab$S8K6Sgp3W8c9Jb6LxgywZ.');
  // Passwords longer than 16 bytes and with non-ASCII, against the real tool when it is there.
  for (const [pw, salt] of [['a much longer password than sixteen', 'Xy./9zQ1'], ['pässwörd', 'abc']] as const) {
    const expected = openssl(['passwd', '-apr1', '-salt', salt, pw]);
    if (expected !== undefined) assert.equal(apr1Crypt(pw, salt), expected);
  }
});

test('-list{} accounts verify exactly', () => {
  const a = parseAuthorizer('-list{alice:s3cret,bob:pa:ss:wd}', 'AUTHORIZER', dir);
  assert.ok(a.has('alice') && a.has('bob') && !a.has('carol'));
  assert.ok(a.verify('alice', 's3cret'));
  assert.ok(!a.verify('alice', 's3cret '));
  assert.ok(!a.verify('alice', ''));
  assert.ok(a.verify('bob', 'pa:ss:wd'), 'a password may contain colons');
  assert.ok(!a.verify('carol', 's3cret'));
  assert.ok(!a.source.includes('s3cret'), 'the source names users only');
  assert.equal(a.source, '-list{alice,bob}');
});

test('htpasswd with bcrypt, apr1 and {SHA}', () => {
  const bcryptHash = bcrypt.hashSync('bcrypt-pw', 4).replace(/^\$2[ab]\$/, '$2y$');
  const apr1Hash = openssl(['passwd', '-apr1', 'apr1-pw']) ?? apr1Crypt('apr1-pw', 'q1w2e3r4');
  const shaHash = '{SHA}' + createHash('sha1').update('sha-pw').digest('base64');
  const file = join(dir, 'users.htpasswd');
  writeFileSync(file, `# comment\n\nbee:${bcryptHash}\napr:${apr1Hash}\r\nsha:${shaHash}\n`);
  const a = parseAuthorizer('-htpasswd{users.htpasswd}', 'AUTHORIZER', dir);
  assert.equal(a.source, `-htpasswd{${file}}`);
  assert.ok(a.verify('bee', 'bcrypt-pw'));
  assert.ok(a.verify('bee', 'bcrypt-pw'), 'a cached answer is the same answer');
  assert.ok(!a.verify('bee', 'bcrypt-pX'), 'the cache is keyed by the password too');
  assert.ok(!a.verify('bee', 'apr1-pw'));
  assert.ok(a.verify('apr', 'apr1-pw'));
  assert.ok(!a.verify('apr', 'apr1-pX'));
  assert.ok(a.verify('sha', 'sha-pw'));
  assert.ok(!a.verify('sha', 'sha-pX'));
  assert.ok(!a.verify('nobody', 'sha-pw'));
  // $2a$ and $2b$ prefixes too.
  writeFileSync(file, `u:${bcrypt.hashSync('x', 4)}\n`);
  assert.ok(parseAuthorizer(`-htpasswd{${file}}`, 'AUTHORIZER', '/').verify('u', 'x'));
});

test('plain text and crypt(3) lines are refused naming the line, never the value', () => {
  const file = join(dir, 'plain.htpasswd');
  writeFileSync(file, `ok:{SHA}${createHash('sha1').update('x').digest('base64')}\nbob:hunter2\n`);
  assert.throws(
    () => parseAuthorizer(`-htpasswd{${file}}`, 'AUTHORIZER', dir),
    (e: unknown) =>
      e instanceof ConfigError && e.param === 'AUTHORIZER' && /line 2/.test(e.message) && /bob/.test(e.message) && !e.message.includes('hunter2'),
  );
  writeFileSync(file, 'carol:rqXexS6ZhobKA\n'); // DES crypt
  assert.throws(() => parseAuthorizer(`-htpasswd{${file}}`, 'AUTHORIZER', dir), (e: unknown) => e instanceof ConfigError && /line 1/.test(e.message) && !e.message.includes('rqXexS6ZhobKA'));
  writeFileSync(file, 'dave:$6$salt$abc\n'); // sha512-crypt: not an htpasswd scheme
  assert.throws(() => parseAuthorizer(`-htpasswd{${file}}`, 'AUTHORIZER', dir), ConfigError);
});

test('bad AUTHORIZER values throw ConfigError without the password', () => {
  const bad = ['', '-list', '-list{}', '-list{alice}', '-list{:pw1}', '-list{a:pw1,a:pw2}', '-list{a:}', '-htpasswd{}', `-htpasswd{${join(dir, 'missing')}}`, 'list{a:b}', '-md5{x}'];
  for (const v of bad) {
    assert.throws(
      () => parseAuthorizer(v, 'AUTHORIZER', dir),
      (e: unknown) => e instanceof ConfigError && e.param === 'AUTHORIZER' && !/pw1|pw2/.test(e.message),
      JSON.stringify(v),
    );
  }
  const empty = join(dir, 'empty.htpasswd');
  writeFileSync(empty, '# nobody\n');
  assert.throws(() => parseAuthorizer(`-htpasswd{${empty}}`, 'AUTHORIZER', dir), /holds no account/);
});

test('the YAML users map', () => {
  const a = accountsFromMap({ alice: 'pw' }, 'authorizer.users');
  assert.ok(a.verify('alice', 'pw') && !a.verify('alice', 'PW'));
  assert.throws(() => accountsFromMap({ alice: '' }, 'authorizer.users'), /authorizer\.users: /);
  assert.throws(() => accountsFromMap({}, 'authorizer.users'), ConfigError);
});
