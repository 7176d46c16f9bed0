/** QuotaService over a real usage database in a temporary directory: periods, scopes, meters, status. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { ProxyError } from '../../src/core/errors.js';
import { periodStart, QuotaService } from '../../src/policy/quota.js';
import { scopeKey } from '../../src/policy/shaping.js';
import { UsageStore } from '../../src/policy/usage.js';
import { parseQuota } from '../../src/config/limits.js';
import { formatReport, parseSince, readReport } from '../../src/report.js';

const dir = mkdtempSync(join(tmpdir(), 'sockstap-quota-unit-'));
after(() => rmSync(dir, { recursive: true, force: true }));

it('calendar periods start at the hour, local midnight, Monday and the 1st', () => {
  const t = new Date(2026, 10, 19, 15, 42, 7).getTime(); // Thursday 19 November 2026
  assert.equal(periodStart('hour', t), new Date(2026, 10, 19, 15).getTime());
  assert.equal(periodStart('day', t), new Date(2026, 10, 19).getTime());
  assert.equal(periodStart('week', t), new Date(2026, 10, 16).getTime());
  assert.equal(periodStart('month', t), new Date(2026, 10, 1).getTime());
});

it('scopes: a user list gives each user their own key, a source list one shared key', () => {
  const who = { user: 'bob', clientAddress: '10.1.2.3', doorPort: 1080 };
  assert.equal(scopeKey(parseQuota('1g/day:user:alice,bob', 'Q').scope, who), 'user:bob');
  assert.equal(scopeKey(parseQuota('1g/day:user:alice', 'Q').scope, who), null);
  assert.equal(scopeKey(parseQuota('1g/day:src:10.0.0.0/8', 'Q').scope, who), 'src:10.0.0.0/8');
  assert.equal(scopeKey(parseQuota('1g/day:door:1080', 'Q').scope, who), 'door:1080');
  assert.equal(scopeKey(parseQuota('1g/day:all', 'Q').scope, who), 'all');
});

it('a meter cuts at the limit, the store keeps the total, new connections are refused, status reports it', () => {
  const capped = loadConfig(['QUOTA=1m/day/down:user:alice', 'QUOTA=100k/hour:conn', `STATEDIR=${dir}`], { cwd: dir });
  const config = loadConfig(['QUOTA=1m/day/down:user:alice', `STATEDIR=${dir}`], { cwd: dir });
  const store = new UsageStore(dir);
  const quotas = new QuotaService(store);
  const who = { user: 'alice', clientAddress: '127.0.0.1', doorPort: 1080 };
  const meter = quotas.admit(capped, who)!;
  // The per-connection cap (100k, both directions) is reached first.
  assert.equal(meter.up!(50 * 1024), true);
  assert.equal(meter.down!(50 * 1024), false);
  meter.release();
  const second = quotas.admit(config, who)!;
  let ok = true;
  for (let i = 0; i < 20 && ok; i++) ok = second.down!(64 * 1024);
  second.release();
  assert.equal(ok, false, 'the daily download quota ends the connection');
  assert.throws(() => quotas.check(config, who), (e: unknown) => e instanceof ProxyError && e.code === 'EQUOTA');
  // Up bytes do not count toward a /down quota; another user is not covered.
  assert.equal(quotas.admit(config, { ...who, user: 'bob' }), null);
  const [status] = quotas.status(config);
  assert.equal(status!.scope, 'user:alice');
  assert.equal(status!.limitBytes, 1024 * 1024);
  assert.ok(status!.usedBytes >= 1024 * 1024);
  quotas.recordSession('alice', 'example.test:80', 10, 20, Date.now());
  quotas.close();
  store.close();

  // A second service on the same database (another process, or a restart) sees the same total.
  const again = new QuotaService(new UsageStore(dir));
  assert.throws(() => again.check(config, who), /used up/);
  again.close();

  const report = readReport(dir, parseSince('today'));
  assert.deepEqual(report.users.map((u) => [u.name, u.up, u.down, u.sessions]), [['alice', 10, 20, 1]]);
  assert.match(formatReport(report, 'table'), /example\.test:80/);
  assert.match(formatReport(report, 'csv'), /^user,alice,1,10,20,30$/m);
  assert.throws(() => parseSince('yesterday-ish'), /--since/);
});
