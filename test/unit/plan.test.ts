/**
 * planTunnel (src/pipeline/plan.ts): every condition of the decision, enumerated once. The
 * JavaScript pipeline executes these plans and the native accept path remembers the `direct`
 * ones, so a condition tested here holds for both (test/integration/plan-both-paths.test.ts).
 */
import assert from 'node:assert/strict';
import type { LookupAddress } from 'node:dns';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import type { Config, TapRule } from '../../src/config/types.js';
import { ProxyError } from '../../src/core/errors.js';
import { Session } from '../../src/core/session.js';
import type { TunnelCommand } from '../../src/core/session.js';
import { needsAddresses, planTunnel, type PlanRequest } from '../../src/pipeline/plan.js';
import { rememberMs } from '../../src/pipeline/plan-memory.js';
import type { Resolution } from '../../src/net/destination.js';
import type { TimeWindow } from '../../src/config/types.js';

const A: LookupAddress[] = [{ address: '192.0.2.10', family: 4 }];

function session(user: string | null = null, door: 'socks' | 'transparent' = 'socks'): Session {
  const s = new Session({ clientAddress: '127.0.0.1', clientPort: 40000, door, listen: '127.0.0.1:1080' });
  s.user = user;
  return s;
}

function request(over: Partial<PlanRequest> & { host?: string; port?: number; command?: TunnelCommand; resolution?: Resolution | null } = {}): PlanRequest {
  const { host = 'www.example.test', port = 80, ...rest } = over;
  return {
    command: 'connect',
    dst: { host, port },
    tags: ['socks', 'socks5'],
    resolution: A,
    now: new Date(),
    own: [],
    expected: false,
    quota: () => null,
    addressesKeepMs: 30_000,
    ...rest,
  };
}

const plan = (args: string[], req: Partial<Parameters<typeof request>[0]> = {}, s = session()) => planTunnel(loadConfig(args), s, request(req));

describe('planTunnel: refusals (checkpoint 2)', () => {
  it('a REJECTed destination is refused with EDENIED and the rule that did it', () => {
    const p = plan(['REJECT=*:www.example.test:*']);
    assert.equal(p.kind, 'refuse');
    assert.ok(p.kind === 'refuse' && p.code === 'EDENIED' && /refused by REJECT/.test(p.reason), JSON.stringify(p));
  });

  it('the first matching PERMIT/REJECT wins', () => {
    assert.equal(plan(['PERMIT=*:other.test:*', 'REJECT=*:*:*']).kind, 'refuse');
    assert.equal(plan(['PERMIT=*:www.example.test:*', 'REJECT=*:*:*']).kind, 'direct');
  });

  it('a rule on addresses is checked against the resolution', () => {
    assert.equal(plan(['REJECT=*:192.0.2.0/24:*']).kind, 'refuse');
    assert.equal(plan(['REJECT=*:198.51.100.0/24:*']).kind, 'direct');
  });

  it("sockstap's own listener is never a destination", () => {
    const p = plan([], { host: '127.0.0.1', port: 1080, resolution: null, own: [{ host: '127.0.0.1', port: 1080, what: 'listener' }] });
    assert.ok(p.kind === 'refuse' && /sockstap's own listener/.test(p.reason), JSON.stringify(p));
  });

  it("a user outside their time window is refused", () => {
    const config = loadConfig([]);
    const closed = { contains: () => false, source: '09:00-17:00' } as unknown as TimeWindow;
    const p = planTunnel({ ...config, userWindows: { alice: closed } }, session('alice'), request());
    assert.ok(p.kind === 'refuse' && /outside their time window/.test(p.reason), JSON.stringify(p));
    assert.equal(planTunnel({ ...config, userWindows: { alice: closed } }, session('bob'), request()).kind, 'route');
  });

  it('a used-up QUOTA= refuses, with the SOCKSTAP rule passed to the quota check', () => {
    let asked: TapRule | null | undefined;
    const p = plan(['SOCKSTAP=http'], {
      port: 80,
      quota: (rule) => {
        asked = rule;
        return new ProxyError('EQUOTA', 'used up');
      },
    });
    assert.ok(p.kind === 'refuse' && p.code === 'EQUOTA');
    assert.ok(asked, 'the rule that picked the tunnel');
  });

  it('a refusal comes before a tap, an upstream, BIND and an expected tunnel', () => {
    assert.equal(plan(['REJECT=*:*:*', 'SOCKSTAP=all']).kind, 'refuse');
    assert.equal(plan(['REJECT=*:*:*', 'PROXY=127.0.0.1:3128']).kind, 'refuse');
    assert.equal(plan(['REJECT=*:*:*'], { command: 'bind' }).kind, 'refuse');
    assert.equal(plan(['REJECT=*:*:*'], { expected: true }).kind, 'refuse');
  });
});

describe('planTunnel: what the pipeline does', () => {
  it('BIND and UDP ASSOCIATE', () => {
    assert.deepEqual(plan([], { command: 'bind' }), { kind: 'bind', rule: null, expected: false });
    assert.deepEqual(plan([], { command: 'bind', expected: true }), { kind: 'bind', rule: null, expected: true });
    assert.deepEqual(plan([], { command: 'udp' }), { kind: 'udp' });
  });

  it('an expected tunnel (an FTP data connection) goes to its expecter, before the tap rule', () => {
    assert.deepEqual(plan([], { expected: true }), { kind: 'expected', rule: null });
    const p = plan(['SOCKSTAP=all'], { expected: true });
    assert.ok(p.kind === 'expected' && p.rule !== null);
  });

  it('a SOCKSTAP rule taps, with its strategy', () => {
    const p = plan(['SOCKSTAP=http']);
    assert.ok(p.kind === 'tap' && p.strategy === 'auto', JSON.stringify(p.kind));
    assert.equal(plan(['SOCKSTAP=http:other.test']).kind, 'direct', 'a rule for another destination');
  });

  it('an upstream proxy routes it', () => {
    assert.deepEqual(plan(['PROXY=127.0.0.1:3128']), { kind: 'route', why: 'upstream' });
    assert.deepEqual(plan(['SOCKS=127.0.0.1:1081']), { kind: 'route', why: 'upstream' });
  });

  it('SPOOF=client on the transparent door dials in JavaScript', () => {
    const config = { ...loadConfig([]), spoof: true } as Config;
    assert.deepEqual(planTunnel(config, session(null, 'transparent'), request()), { kind: 'route', why: 'upstream' });
  });

  it('what keeps a direct tunnel from the relay thread', () => {
    assert.deepEqual(plan(['RELAY=js']), { kind: 'route', why: 'relay-js' });
    assert.deepEqual(plan(['BANDWIDTH=1m:conn']), { kind: 'route', why: 'limits' });
    assert.deepEqual(plan(['QUOTA=1g/day:all']), { kind: 'route', why: 'limits' });
    assert.deepEqual(plan([], {}, session('alice')), { kind: 'route', why: 'user' });
    const both: LookupAddress[] = [...A, { address: '2001:db8::1', family: 6 }];
    assert.deepEqual(plan([], { resolution: both }), { kind: 'route', why: 'dual-stack' });
    assert.deepEqual(plan(['SRCIF=127.0.0.1']), { kind: 'route', why: 'srcif' });
  });

  it('a name that does not resolve is unreachable, with the resolver\'s code', () => {
    const p = plan([], { resolution: new ProxyError('ENOTFOUND', 'cannot resolve www.example.test') });
    assert.deepEqual(p, { kind: 'unreachable', code: 'ENOTFOUND', reason: 'cannot resolve www.example.test' });
  });

  it('direct: the addresses, the timeouts, and how long it may be remembered', () => {
    const p = plan(['TIMEOUT=connect:7s,idle:9s']);
    assert.deepEqual(p, { kind: 'direct', addresses: ['192.0.2.10'], timeoutMs: 7000, idleMs: 9000, rememberMs: 30_000 });
    const literal = plan([], { host: '192.0.2.20', resolution: null });
    assert.ok(literal.kind === 'direct' && literal.addresses[0] === '192.0.2.20');
  });

  it('MAXIMA and time-windowed rules: decided every time (rememberMs 0)', () => {
    for (const args of [['MAXIMA=conn:10'], ['MAXIMA=persrc:3'], ['MAXIMA=peruser:3'], ['PERMIT=*:*:*:0000-2400']]) {
      const p = plan(args);
      assert.ok(p.kind === 'direct' && p.rememberMs === 0, `${args.join(' ')}: ${JSON.stringify(p)}`);
      assert.equal(rememberMs(loadConfig(args), 5000), 0);
    }
    assert.equal(rememberMs(loadConfig([]), 5000), 5000);
  });
});

describe('needsAddresses: when the executor resolves before planning', () => {
  it('a name dialed here, or matched by address rules; never an address; not a name an upstream dials', () => {
    const s = session();
    assert.equal(needsAddresses(loadConfig([]), s, { host: 'www.example.test', port: 80 }, null), true);
    assert.equal(needsAddresses(loadConfig([]), s, { host: '192.0.2.1', port: 80 }, null), false);
    assert.equal(needsAddresses(loadConfig(['PROXY=127.0.0.1:3128']), s, { host: 'www.example.test', port: 80 }, null), false);
    assert.equal(needsAddresses(loadConfig(['PROXY=127.0.0.1:3128', 'REJECT=*:10.0.0.0/8:*']), s, { host: 'www.example.test', port: 80 }, null), true);
    assert.equal(needsAddresses(loadConfig([]), s, { host: 'tls.example.test', port: 443 }, null, true), false, 'a TLS server name');
  });
});
