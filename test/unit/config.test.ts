import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { HELP_TEXT } from '../../src/config/help.js';
import { DEFAULT_JOB, loadConfig } from '../../src/config/load.js';
import { PARAMETERS, TAP_PARAMETERS } from '../../src/config/params.js';
import { PARAMETER_TABLE } from '../../src/config/table.js';
import { configJsonSchemaText } from '../../src/config/schema.js';
import { ConfigError, type Config, type TapRule } from '../../src/config/types.js';

const dir = mkdtempSync(join(tmpdir(), 'sockstap-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const load = (argv: string[]): Config => loadConfig(argv, { cwd: dir });

/** Assert a ConfigError whose parameter (or YAML path) and message match. */
function rejects(argv: string[], param: string | RegExp, message?: RegExp): void {
  assert.throws(
    () => load(argv),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError, `${JSON.stringify(argv)} threw ${String(e)}`);
      if (typeof param === 'string') assert.equal(e.param, param);
      else assert.match(e.param, param);
      if (message) assert.match(e.message, message);
      return true;
    },
    JSON.stringify(argv),
  );
}

/** A comparable view: matchers and accounts by their source text. */
function plain(c: Config): unknown {
  return JSON.parse(
    JSON.stringify({ ...c, origin: undefined }, (_k, v: unknown) => {
      if (v && typeof v === 'object' && 'source' in v && ('matches' in v || 'verify' in v || 'contains' in v)) {
        return `<${(v as { source: string }).source}>`;
      }
      return v;
    }),
  );
}

test('the seed command lines parse', () => {
  const c = load(['-P1080', 'SERVER=socks', 'CACHE=do', 'SOCKSTAP=http,ftp']);
  assert.deepEqual(c.listen, [{ host: '', port: 1080, door: 'socks' }]);
  assert.equal(c.server, 'socks');
  assert.equal(c.cache.enabled, true);
  assert.deepEqual(c.taps.map((t) => t.protocols), [['http', 'ftp']]);
  assert.ok(c.taps[0]!.dst.matches({ host: 'anything' }));
  const all = load(['-P1080', 'SERVER=socks', 'CACHE=do', 'SOCKSTAP=all']);
  assert.deepEqual(all.taps[0]!.protocols, ['http', 'tls', 'ftp', 'smtp', 'pop3', 'imap', 'nntp', 'ssh', 'telnet']);
});

test('defaults', () => {
  const c = load([]);
  assert.deepEqual(c.listen, [{ host: '127.0.0.1', port: 1080, door: 'auto' }]);
  assert.equal(c.server, 'auto');
  assert.deepEqual(c.timeouts, { connect: 120_000, handshake: 10_000, idle: 900_000, sniff: 300, drain: 10_000 });
  assert.deepEqual(c.maxima, { conn: 0, peruser: 0, persrc: 0 });
  assert.equal(c.stateDir, join(dir, 'var'));
  assert.equal(c.logDir, join(dir, 'var', 'log'));
  assert.deepEqual(c.cache, { enabled: false, dir: join(dir, 'var', 'cache'), size: 1024 ** 3, mem: 64 * 1024 ** 2 });
  assert.equal(c.reliable.source, '.localnet');
  assert.ok(c.reliable.matches({ host: '127.0.0.1' }) && c.reliable.matches({ host: '::1' }));
  assert.equal(c.logFormat, 'squid');
  assert.equal(c.accounts, null);
  assert.equal(c.admin, undefined);
  assert.deepEqual(c.origin, { argv: [], cwd: dir });
  // SERVER decides the door of the default port.
  assert.deepEqual(load(['SERVER=http']).listen, [{ host: '127.0.0.1', port: 1080, door: 'http' }]);
});

test('DEFAULT_JOB is the npm start job', () => {
  const c = load(DEFAULT_JOB);
  assert.deepEqual(c.listen, [{ host: '127.0.0.1', port: 1080, door: 'auto' }]);
  assert.equal(c.cache.enabled, true);
  assert.equal(c.taps.length, 1);
  assert.deepEqual(c.admin, { host: '127.0.0.1', port: 9180 });
  assert.equal(c.stateDir, join(dir, 'var'));
});

test('every parameter of the interface', () => {
  const c = load([
    '-P[::1]:0/http',
    '-P0.0.0.0:1081',
    '-P8080/tcprelay',
    '-P8081/udprelay://dns.example:53',
    'SERVER=tcprelay://origin.example:80',
    'SOCKSTAP=http,pop:{*:80,*:8080}:.localnet:CACHE=do PROXY=up.example:3128',
    'cache=do',
    'CACHEDIR=/srv/cache',
    'CACHESIZE=512m',
    'CACHEMEM=16m',
    'EXPIRE=1h',
    'STATEDIR=state',
    'LOGFORMAT=combined',
    'RELIABLE=127.0.0.1,10.0.0.0/8',
    'PERMIT=http,connect:{*:443,*:80}:.localnet:mon-fri/0900-1800',
    'REJECT=smtp:blocked@example.test:*',
    'PERMIT=*:*:*',
    'AUTHORIZER=-list{alice:pw}',
    'PROXY=user:p%40ss@up.example:3128:*.example.com',
    'SOCKS=[::1]:1080/4a',
    'MOUNT=/mnt/* http://origin.example:8080/static/*',
    'TIMEOUT=connect:30s,idle:1h',
    'TIMEOUT=sniff:500ms',
    'MAXIMA=conn:100,persrc:10',
    'IDENT=do',
    'SPOOF=client',
    'BANDWIDTH=512k/up:user:alice,bob',
    'QUOTA=1g/day:src:10.0.0.0/8',
    'ADMIN=127.0.0.1:0',
    'ADMINAUTH=-list{root:pw2}',
  ]);
  assert.deepEqual(c.listen, [
    { host: '::1', port: 0, door: 'http' },
    { host: '0.0.0.0', port: 1081, door: 'tcprelay', target: { host: 'origin.example', port: 80 } },
    { host: '', port: 8080, door: 'tcprelay', target: { host: 'origin.example', port: 80 } },
    { host: '', port: 8081, door: 'udprelay', target: { host: 'dns.example', port: 53 } },
  ]);
  assert.deepEqual(c.serverTarget, { host: 'origin.example', port: 80 });
  const tap = c.taps[0]!;
  assert.deepEqual(tap.protocols, ['http', 'pop3']);
  assert.deepEqual(tap.params, { CACHE: 'do', PROXY: 'up.example:3128' });
  assert.ok(tap.dst.matches({ host: 'x', port: 8080 }) && !tap.dst.matches({ host: 'x', port: 443 }));
  assert.deepEqual(c.cache, { enabled: true, dir: '/srv/cache', size: 512 * 1024 ** 2, mem: 16 * 1024 ** 2, expire: 3_600_000 });
  assert.equal(c.stateDir, join(dir, 'state'));
  assert.equal(c.logDir, join(dir, 'state', 'log'));
  assert.equal(c.logFormat, 'combined');
  assert.ok(c.reliable.matches({ host: '10.2.3.4' }) && !c.reliable.matches({ host: '11.2.3.4' }));
  assert.deepEqual(
    c.rules.map((r) => [r.action, r.protocols, r.source]),
    [
      ['permit', ['http', 'connect'], 'PERMIT=http,connect:{*:443,*:80}:.localnet:mon-fri/0900-1800'],
      ['reject', ['smtp'], 'REJECT=smtp:blocked@example.test:*'],
      ['permit', ['*'], 'PERMIT=*:*:*'],
    ],
  );
  assert.equal(c.rules[0]!.when?.source, 'mon-fri/0900-1800');
  assert.ok(c.accounts?.verify('alice', 'pw'));
  assert.deepEqual(
    c.upstreams.map((u) => [u.kind, u.host, u.port, u.user, u.password, u.version, u.dst.source]),
    [
      ['http', 'up.example', 3128, 'user', 'p@ss', undefined, '*.example.com'],
      ['socks', '::1', 1080, undefined, undefined, '4a', '*'],
    ],
  );
  assert.ok(!c.upstreams[0]!.source.includes('p%40ss'), 'an upstream source carries no password');
  assert.deepEqual(c.mounts, [{ from: '/mnt/*', to: 'http://origin.example:8080/static/*', options: [] }]);
  assert.deepEqual(c.timeouts, { connect: 30_000, handshake: 10_000, idle: 3_600_000, sniff: 500, drain: 10_000 });
  assert.deepEqual(c.maxima, { conn: 100, peruser: 0, persrc: 10 });
  assert.equal(c.ident, true);
  assert.equal(c.spoof, true);
  assert.deepEqual(c.bandwidth, ['512k/up:user:alice,bob']);
  assert.deepEqual(c.quota, ['1g/day:src:10.0.0.0/8']);
  assert.deepEqual(c.admin, { host: '127.0.0.1', port: 0 });
  assert.ok(c.adminAuth?.verify('root', 'pw2'));
});

test('errors name the parameter and what was expected', () => {
  rejects(['TIMEOUT=conect:1s'], 'TIMEOUT', /unknown timeout "conect"; expected connect, handshake, idle, sniff or drain/);
  rejects(['TIMEOUT=connect:soon'], 'TIMEOUT connect', /duration/);
  rejects(['MAXIMA=conn:-1'], 'MAXIMA conn');
  rejects(['MAXIMA=connections:1'], 'MAXIMA', /expected conn, peruser, persrc or perdoor/);
  rejects(['-P'], '-P');
  rejects(['-Pabc'], '-Pabc', /port/);
  rejects(['-P70000'], '-P70000', /port/);
  rejects(['-P::1:1080'], '-P::1:1080', /brackets/);
  rejects(['-P1080/sock'], '-P1080/sock', /unknown door "sock"/);
  rejects(['-P1080', '-P1080'], '-P1080', /twice/);
  rejects(['-P9000/udprelay'], '-P9000/udprelay', /udprelay:\/\/HOST:PORT/);
  rejects(['-f'], '-f');
  rejects(['-x'], '-x', /unknown option/);
  rejects(['hello'], '"hello"', /NAME=VALUE/);
  rejects(['=x'], '"=x"');
  rejects(['CACHE_DIR=/x'], 'CACHE_DIR', /unknown parameter/);
  rejects(['SERVER=sox'], 'SERVER', /socks, http, auto/);
  rejects(['SERVER=tcprelay://nohost'], 'SERVER', /HOST:PORT/);
  rejects(['SOCKSTAP=htp'], 'SOCKSTAP', /unknown protocol "htp"/);
  rejects(['SOCKSTAP=http:::STATEDIR=/x'], 'SOCKSTAP', /cannot be set per tunnel/);
  rejects(['SOCKSTAP=http:::CACHE=maybe'], 'SOCKSTAP CACHE', /do or no/);
  rejects(['SOCKSTAP=http:::junk'], 'SOCKSTAP', /NAME=VALUE/);
  rejects(['SOCKSTAP=http:bad host'], 'SOCKSTAP', /host list/);
  rejects(['CACHE=maybe'], 'CACHE', /do or no/);
  rejects(['CACHESIZE=lots'], 'CACHESIZE', /size/);
  rejects(['CACHEMEM=lots'], 'CACHEMEM', /size/);
  rejects(['EXPIRE=1y'], 'EXPIRE', /duration/);
  rejects(['LOGFORMAT=json'], 'LOGFORMAT', /squid, common or combined/);
  rejects(['RELIABLE='], 'RELIABLE', /empty host list/);
  rejects(['PERMIT=http:*.x:*:1000-1200:extra'], 'PERMIT', /braces/);
  rejects(['PERMIT=htp:*:*'], 'PERMIT', /unknown protocol/);
  rejects(['REJECT=*:*:*:someday'], 'REJECT', /time window/);
  rejects(['AUTHORIZER=alice:pw'], 'AUTHORIZER', /-list/);
  rejects(['PROXY=up.example'], 'PROXY', /HOST:PORT/);
  rejects(['PROXY=u:secretpw@up.example'], 'PROXY', /^(?!.*secretpw)/s);
  rejects(['SOCKS=up.example:1080/6'], 'SOCKS', /\/4\|\/4a\|\/5/);
  rejects(['MOUNT=/only-one'], 'MOUNT', /vURL rURL/);
  rejects(['MOUNT=/a/* not-a-url'], 'MOUNT', /absolute URL/);
  rejects(['IDENT=sure'], 'IDENT');
  rejects(['SPOOF=server'], 'SPOOF', /client/);
  rejects(['BANDWIDTH=fast:conn'], 'BANDWIDTH', /size/);
  rejects(['BANDWIDTH=1m/sideways:conn'], 'BANDWIDTH', /up or \/down/);
  rejects(['BANDWIDTH=1m:everyone'], 'BANDWIDTH', /scope/);
  rejects(['BANDWIDTH=1m'], 'BANDWIDTH', /RATE/);
  rejects(['QUOTA=1g/fortnight:all'], 'QUOTA', /hour, day, week or month/);
  rejects(['QUOTA=1g:all'], 'QUOTA', /PERIOD/);
  rejects(['ADMIN=9180'], 'ADMIN', /HOST:PORT/);
  rejects(['ADMINAUTH=-list{}'], 'ADMINAUTH');
});

test('names are case-insensitive; repeatable parameters accumulate, others replace', () => {
  const c = load(['server=http', 'Cache=do', 'socksTap=ftp', 'SOCKSTAP=smtp', 'LOGFORMAT=common', 'LOGFORMAT=squid']);
  assert.equal(c.server, 'http');
  assert.equal(c.cache.enabled, true);
  assert.equal(c.taps.length, 2);
  assert.equal(c.logFormat, 'squid');
});

test('YAML: an empty file and {} are valid', () => {
  writeFileSync(join(dir, 'empty.yaml'), '');
  writeFileSync(join(dir, 'map.yaml'), '{}\n');
  writeFileSync(join(dir, 'comment.yaml'), '# nothing here\n');
  const base = plain(load([]));
  for (const f of ['empty.yaml', 'map.yaml', 'comment.yaml']) {
    const c = load(['-f', f]);
    assert.deepEqual(plain(c), base, f);
    assert.equal(c.origin.file, join(dir, f));
  }
  assert.equal(load([`-f${join(dir, 'map.yaml')}`]).origin.file, join(dir, 'map.yaml'));
});

test('YAML: the structured form gives the same Config as the parameters', () => {
  const sub = join(dir, 'etc');
  mkdirSync(sub, { recursive: true });
  writeFileSync(join(sub, 'users.htpasswd'), `alice:{SHA}${'Hx7gT/mIsC6RYY7ZqKH5PYg9ZpA='}\n`);
  writeFileSync(
    join(sub, 'sockstap.yaml'),
    `# every key
listen:
  - "[::1]:0/http"
  - { host: 127.0.0.1, port: 0, door: socks }
  - { port: 9000, door: tcprelay, target: "origin.example:80" }
server: auto
reliable: [127.0.0.1, 10.0.0.0/8]
rules:
  - permit: "http:{*:443,*:80}:.localnet:mon-fri/0900-1800"
  - reject: "*:*.ads.example:*"
authorizer: { htpasswd: users.htpasswd }
timeouts: { connect: 30s, sniff: 0.5 }
maxima: { conn: 100 }
statedir: state
logdir: /var/tmp/sockstap-logs
logformat: common
cache: { enabled: true, dir: cache, size: 64m, expire: 1h }
sockstap:
  - "http,ftp"
  - { protocols: [smtp], dst: "*.example", params: { CACHE: "no" } }
proxy: "up.example:3128"
socks: ["[::1]:1080/4a", "s.example:1080"]
mount: "/mnt/* http://origin.example/static/*"
bandwidth: [ "1m:conn" ]
quota: [ "1g/day:all" ]
admin: "127.0.0.1:0"
adminauth: { users: { root: pw } }
ident: true
spoof: client
`,
  );
  const fromFile = load(['-f', 'etc/sockstap.yaml']);
  const fromArgs = loadConfig(
    [
      '-P[::1]:0/http',
      '-P127.0.0.1:0/socks',
      '-P9000/tcprelay://origin.example:80',
      'SERVER=auto',
      'RELIABLE=127.0.0.1,10.0.0.0/8',
      'PERMIT=http:{*:443,*:80}:.localnet:mon-fri/0900-1800',
      'REJECT=*:*.ads.example:*',
      'AUTHORIZER=-htpasswd{users.htpasswd}',
      'TIMEOUT=connect:30s,sniff:500ms',
      'MAXIMA=conn:100',
      'STATEDIR=state',
      'LOGDIR=/var/tmp/sockstap-logs',
      'LOGFORMAT=common',
      'CACHE=do',
      'CACHEDIR=cache',
      'CACHESIZE=64m',
      'EXPIRE=1h',
      'SOCKSTAP=http,ftp',
      'SOCKSTAP=smtp:{*.example}:{*}:CACHE="no"',
      'PROXY=up.example:3128',
      'SOCKS=[::1]:1080/4a',
      'SOCKS=s.example:1080',
      'MOUNT=/mnt/* http://origin.example/static/*',
      'BANDWIDTH=1m:conn',
      'QUOTA=1g/day:all',
      'ADMIN=127.0.0.1:0',
      'ADMINAUTH=-list{root:pw}',
      'IDENT=do',
      'SPOOF=client',
    ],
    // Relative paths in the file resolve against the file's directory.
    { cwd: sub },
  );
  const a = plain(fromFile) as Record<string, unknown>;
  const b = plain(fromArgs) as Record<string, unknown>;
  // The structured tap rule's source spells its lists in braces; everything else is identical.
  (a.taps as { source: string }[])[1]!.source = (b.taps as { source: string }[])[1]!.source;
  assert.deepEqual(a, b);
  assert.equal(fromFile.stateDir, join(sub, 'state'));
  assert.equal(fromFile.cache.dir, join(sub, 'cache'));
  assert.ok(fromFile.accounts?.verify('alice', 'Secret123') === fromArgs.accounts?.verify('alice', 'Secret123'));
  assert.ok(fromFile.adminAuth?.verify('root', 'pw'));
});

test('YAML: structured rules and authorizer forms', () => {
  writeFileSync(
    join(dir, 'rules.yaml'),
    `rules:
  - { action: reject, protocols: [http, tls], dst: ["*.bad.example", "10.0.0.0/8"], when: "sat,sun" }
  - { action: permit }
authorizer: "-list{bob:pw}"
cache: "do"
`,
  );
  const c = load(['-f', 'rules.yaml']);
  const [r0, r1] = c.rules;
  assert.equal(r0!.action, 'reject');
  assert.deepEqual(r0!.protocols, ['http', 'tls']);
  assert.ok(r0!.dst.matches({ host: 'x.bad.example' }) && r0!.dst.matches({ host: '10.1.1.1' }));
  assert.ok(r0!.src.matches({ host: '192.0.2.9' }));
  assert.equal(r0!.when?.source, 'sat,sun');
  assert.deepEqual(r1!.protocols, ['*']);
  assert.ok(c.accounts?.verify('bob', 'pw'));
  assert.equal(c.cache.enabled, true);
});

test('YAML: the command line overrides the file; its lists replace the file lists', () => {
  writeFileSync(
    join(dir, 'base.yaml'),
    `listen: ["0"]
server: socks
timeouts: { connect: 5s, idle: 1m }
maxima: { conn: 7, persrc: 3 }
rules: [ { reject: "*:a.example:*" }, { reject: "*:b.example:*" } ]
cache: do
`,
  );
  const c = load(['-f', 'base.yaml', '-P127.0.0.1:0/http', 'SERVER=http', 'TIMEOUT=idle:2m', 'MAXIMA=conn:9', 'PERMIT=*:c.example:*', 'CACHE=no']);
  assert.deepEqual(c.listen, [{ host: '127.0.0.1', port: 0, door: 'http' }]);
  assert.equal(c.server, 'http');
  assert.deepEqual(c.timeouts, { connect: 5_000, handshake: 10_000, idle: 120_000, sniff: 300, drain: 10_000 });
  assert.deepEqual(c.maxima, { conn: 9, peruser: 0, persrc: 3 });
  assert.deepEqual(c.rules.map((r) => r.source), ['PERMIT=*:c.example:*']);
  assert.equal(c.cache.enabled, false);
  const fileOnly = load(['-f', 'base.yaml']);
  assert.deepEqual(fileOnly.listen, [{ host: '', port: 0, door: 'socks' }], 'a file port takes the file server');
  assert.equal(fileOnly.rules.length, 2);
  assert.deepEqual(fileOnly.origin, { argv: ['-f', 'base.yaml'], file: join(dir, 'base.yaml'), cwd: dir });
});

test('YAML errors name the YAML path', () => {
  const cases: [string, string | RegExp, RegExp?][] = [
    ['rules:\n  - permit: "*:*:*"\n  - permit: "*:*:*"\n  - permt: "*:*:*"\n', 'rules[2].permt', /unknown key/],
    ['rules:\n  - permit: "htp:*:*"\n', 'rules[0].permit', /unknown protocol/],
    ['rules:\n  - { action: permit, dst: "bad host" }\n', 'rules[0].dst', /host list/],
    ['rules:\n  - { action: allow }\n', 'rules[0].action'],
    ['timeouts: { conect: 1s }\n', 'timeouts.conect', /unknown key/],
    ['timeouts: { connect: soon }\n', 'timeouts.connect', /duration/],
    ['maxima: { conn: -1 }\n', 'maxima.conn'],
    ['frobnicate: 1\n', 'frobnicate', /unknown key/],
    ['listen: [ { port: 1080, door: sock } ]\n', 'listen[0].door'],
    ['listen: [ "1080/sock" ]\n', 'listen[0]', /unknown door/],
    ['listen: [ { port: 99999 } ]\n', 'listen[0].port'],
    ['cache: { enabled: yes }\n', 'cache.enabled'],
    ['cache: { size: huge }\n', 'cache.size', /size/],
    ['authorizer: { htpasswd: missing.htpasswd }\n', 'authorizer.htpasswd', /cannot read/],
    ['authorizer: { users: { a: "" } }\n', 'authorizer.users'],
    ['sockstap: [ { protocols: htp } ]\n', 'sockstap[0]', /unknown protocol/],
    ['sockstap: [ { protocols: http, extra: 1 } ]\n', 'sockstap[0].extra', /unknown key/],
    ['proxy: [ "up.example:3128", "nope" ]\n', 'proxy[1]', /HOST:PORT/],
    ['ident: "do"\n', 'ident'],
    ['- just\n- a list\n', /\.yaml$/],
    ['a: [\n', '-f', /not valid YAML/],
    ['a: 1\na: 2\n', '-f', /not valid YAML/],
  ];
  cases.forEach(([yaml, param, message], i) => {
    const f = join(dir, `bad${i}.yaml`);
    writeFileSync(f, yaml);
    rejects(['-f', f], param, message);
  });
  rejects(['-f', 'does-not-exist.yaml'], '-f', /cannot read/);
  rejects(['-f', 'a.yaml', '-f', 'b.yaml'], '-f', /twice/);
});

test('the examples of docs/configuration.md load', () => {
  const doc = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
  const sample = /```yaml\n([\s\S]*?)```/.exec(doc)![1]!;
  const sub = join(dir, 'docs-sample');
  mkdirSync(sub, { recursive: true });
  writeFileSync(join(sub, 'users.htpasswd'), `alice:{SHA}${'qUqP5cyxm6YcTAhz05Hph5gvu9M='}\n`);
  writeFileSync(join(sub, 'sample.yaml'), sample);
  const c = load(['-f', join(sub, 'sample.yaml')]);
  // three listen entries, and the portmap's 11 TCP ports (9000-9010) and one UDP port
  assert.equal(c.listen.length, 3 + 11 + 1);
  assert.equal(c.rules.length, 2);
  assert.ok(c.accounts?.verify('alice', 'test'));
  const block = /```\n(PERMIT=[\s\S]*?)```/.exec(doc)![1]!;
  const examples = [...block.matchAll(/(?:PERMIT|REJECT)=\S+/g)].map((m) => m[0]);
  assert.equal(examples.length, 5);
  assert.equal(load(examples).rules.length, 5);
});

test('schema/sockstap.schema.json is what scripts/gen-schema.ts produces now', () => {
  const committed = readFileSync(new URL('../../schema/sockstap.schema.json', import.meta.url), 'utf8');
  assert.equal(committed, configJsonSchemaText(), 'run: npx tsx scripts/gen-schema.ts');
  const schema = JSON.parse(committed) as { properties: Record<string, unknown>; additionalProperties: boolean };
  assert.equal(schema.additionalProperties, false);
  assert.ok('listen' in schema.properties && 'rules' in schema.properties);
});

test('the help text names every parameter, the exit codes and an example', () => {
  for (const name of Object.keys(PARAMETERS)) assert.match(HELP_TEXT, new RegExp(`^  ${name}=`, 'm'), name);
  assert.match(HELP_TEXT, /-P\[HOST:\]PORT\[\/DOOR\]/);
  assert.match(HELP_TEXT, /-f FILE\.yaml/);
  assert.match(HELP_TEXT, /Exit status: 0 .*, 1 .*, 2 configuration error/);
  assert.match(HELP_TEXT, /sockstap -P1080 SERVER=socks CACHE=do SOCKSTAP=http,ftp/);
});

test('the parameter table and PARAMETERS name the same parameters, alike repeatable; --help lists the per-rule ones', () => {
  const global = PARAMETER_TABLE.filter((p) => !p.ruleOnly);
  assert.deepEqual(global.map((p) => p.name).sort(), Object.keys(PARAMETERS).sort());
  for (const p of global) assert.equal(p.repeatable, PARAMETERS[p.name as keyof typeof PARAMETERS], p.name);
  assert.deepEqual([...TAP_PARAMETERS], PARAMETER_TABLE.filter((p) => p.perRule).map((p) => p.name));
  const sockstap = HELP_TEXT.slice(HELP_TEXT.indexOf('  SOCKSTAP='), HELP_TEXT.indexOf('  CACHE='));
  for (const name of TAP_PARAMETERS) assert.match(sockstap, new RegExp(`\\b${name}\\b`), name);
});

test('per-rule parameters are compiled once into typed values, the rule\'s own over the global ones', () => {
  const c = load([
    'TIMEOUT=connect:30s,idle:10m',
    'MOUNT=/g/* http://global.test/*',
    'REJECT=*:bad.test:*',
    'SOCKSTAP=http:*.example:*:CACHE=no EXPIRE=1h TIMEOUT=idle:5s MOUNT="/a/* http://b.test/x/*" BANDWIDTH=1m:conn QUOTA=1g/day:all PERMIT=*:*:* PROXY=up.test:3128 SOCKS=s.test:1080 MAXSIZE=10k',
    'SOCKSTAP=all',
  ]);
  const [rule, all] = c.taps as [TapRule, TapRule];
  assert.equal(rule.set.cache, false);
  assert.equal(rule.set.expire, 3_600_000);
  assert.equal(rule.set.maxSize, 10 * 1024);
  assert.deepEqual(rule.timeouts, { ...c.timeouts, idle: 5000 });
  assert.equal(rule.timeouts.connect, 30_000);
  assert.deepEqual(rule.mounts.map((m) => m.from), ['/a/*', '/g/*']);
  assert.deepEqual(rule.rules.map((r) => r.source), ['PERMIT=*:*:*', 'REJECT=*:bad.test:*']);
  assert.deepEqual(rule.set.upstreams?.map((u) => [u.kind, u.host, u.port]), [['http', 'up.test', 3128], ['socks', 's.test', 1080]]);
  assert.equal(rule.set.bandwidth?.[0]?.rate, 1024 ** 2);
  assert.equal(rule.set.bandwidth?.[0]?.group, rule.source);
  assert.equal(rule.set.quota?.[0]?.size, 1024 ** 3);
  // A rule that sets nothing has the global values themselves.
  assert.equal(all.timeouts.idle, 600_000);
  assert.equal(all.mounts, c.mounts);
  assert.equal(all.rules, c.rules);
  assert.equal(c.limits.bandwidth.length, 0);
});

test('a per-rule parameter no tunnel can have of its own is refused at load (exit 2)', () => {
  assert.throws(() => load(['SOCKSTAP=http:::TIMEOUT=drain:1s']), (e: unknown) => e instanceof ConfigError && /drain cannot be set per tunnel/.test(e.message));
  assert.throws(() => load(['SOCKSTAP=http:::WORKERS=2']), (e: unknown) => e instanceof ConfigError && /cannot be set per tunnel/.test(e.message));
  assert.throws(() => load(['SOCKSTAP=http:::BANDWIDTH=0:conn']), ConfigError);
});

test('fuzz: random command lines parse or throw ConfigError, never anything else', () => {
  let seed = 0xc0ffee;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const names = [...Object.keys(PARAMETERS), '-P', '-f', 'X', ''];
  const pieces = ['*', ':', ',', '/', '=', '{', '}', '[', ']', '::1', '1080', 'http', 'do', '-list{', 'a:b', '10.0.0.0/8', 'mon-fri', '0900-1800', 's', '1m', 'conn', '@', '"', ' ', '\u0000', 'é', 'tcprelay://', 'user:', '-htpasswd{', '.localnet', '!'];
  for (let i = 0; i < 2000; i++) {
    const argv: string[] = [];
    for (let n = rand(3) + 1; n > 0; n--) {
      const name = names[rand(names.length)]!;
      let value = '';
      for (let j = rand(7); j > 0; j--) value += pieces[rand(pieces.length)];
      argv.push(name.startsWith('-') ? name + value : `${name}=${value}`);
    }
    try {
      load(argv);
    } catch (e) {
      assert.ok(e instanceof ConfigError, `${JSON.stringify(argv)} threw ${e instanceof Error ? e.stack : String(e)}`);
    }
  }
});

test('fuzz: random YAML documents load or throw ConfigError, never anything else', () => {
  let seed = 0xbadcafe;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const keys = ['listen', 'server', 'reliable', 'rules', 'authorizer', 'timeouts', 'maxima', 'statedir', 'cache', 'sockstap', 'proxy', 'socks', 'mount', 'bandwidth', 'quota', 'admin', 'adminauth', 'ident', 'spoof', 'permit', 'reject', 'action', 'protocols', 'dst', 'src', 'when', 'host', 'port', 'door', 'target', 'users', 'htpasswd', 'connect', 'conn', 'enabled', 'size', 'expire', 'params', 'x'];
  const scalars: unknown[] = ['*', 'http', '1080', 1080, -1, 0.5, true, null, '', 'do', '-list{a:b}', '127.0.0.1:0', '{*:80}', 'mon/0900-1000', '1m:conn', 'socks', '[::1]:1', 'tcprelay://h:1'];
  const value = (depth: number): unknown => {
    const r = rand(depth > 2 ? 1 : 3);
    if (r === 0) return scalars[rand(scalars.length)];
    if (r === 1) return Array.from({ length: rand(3) }, () => value(depth + 1));
    return Object.fromEntries(Array.from({ length: rand(3) }, () => [keys[rand(keys.length)]!, value(depth + 1)]));
  };
  const f = join(dir, 'fuzz.yaml');
  for (let i = 0; i < 600; i++) {
    const doc = Object.fromEntries(Array.from({ length: rand(3) + 1 }, () => [keys[rand(keys.length)]!, value(0)]));
    writeFileSync(f, JSON.stringify(doc));
    try {
      load(['-f', f]);
    } catch (e) {
      assert.ok(e instanceof ConfigError, `${JSON.stringify(doc)} threw ${e instanceof Error ? e.stack : String(e)}`);
    }
  }
});
