/**
 * REDIS=redis://[USER:PASS@]HOST:PORT[/DB]: MAXIMA, BANDWIDTH and QUOTA for a fleet of nodes on
 * one Redis (through ioredis). Keys, all under `sockstap:`:
 *
 *   nodes               sorted set of live nodes, scored by when their lease expires
 *   lease:NODE          hash counter → connections NODE holds (MAXIMA), PEXPIRE 3 s, renewed
 *                       every 250 ms: a node that dies frees its counts when its lease expires
 *   bucket:ID           hash tokens/last/rate: one token bucket per BANDWIDTH limit and scope;
 *                       nodes take tokens in chunks of 50 ms of the rate (a Lua script, TIME of Redis)
 *   quota:SCOPE         hash HOUR:up / HOUR:down → bytes (QUOTA usage), HINCRBY'd every 250 ms
 *
 * The scripts name keys they compute, so Redis Cluster is not supported (one Redis, or a primary
 * with replicas behind Sentinel's address). While Redis is unreachable the node serves with what
 * it knew last (other nodes' counts, the fleet's quota usage; buckets shape locally at the rate
 * divided by the nodes last seen), logs it once, counts the failures in /metrics, keeps its usage
 * and pushes it when Redis answers again.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { createRequire } from 'node:module';
import type { Redis } from 'ioredis';
import { Counter, Gauge, type Registry } from 'prom-client';
import { redisLabel } from '../config/params.js';
import type { RedisTarget } from '../config/types.js';
import { TokenBucket } from '../net/throttle.js';
import type { Logger } from '../observe/log.js';
import { hourOf, type QuotaDelta, type TrafficDelta } from '../policy/usage.js';
import { SharedBucket, type SharedLimits, type UsageBackend } from './shared-limits.js';

const PREFIX = 'sockstap:';
const SYNC_MS = 250;
const LEASE_MS = 3000;
/** Quota hours are kept a little longer than the longest period (a month). */
const QUOTA_TTL_S = 40 * 24 * 3600;

const LEASE_SCRIPT = `
local prefix, node, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mine = prefix .. 'lease:' .. node
redis.call('DEL', mine)
for i = 4, #ARGV, 2 do redis.call('HSET', mine, ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', mine, ttl)
local nodes = prefix .. 'nodes'
redis.call('ZADD', nodes, now + ttl, node)
redis.call('ZREMRANGEBYSCORE', nodes, '-inf', now)
local live = redis.call('ZRANGE', nodes, 0, -1)
local sums = {}
for _, n in ipairs(live) do
  if n ~= node then
    local h = redis.call('HGETALL', prefix .. 'lease:' .. n)
    for i = 1, #h, 2 do sums[h[i]] = (sums[h[i]] or 0) + tonumber(h[i + 1]) end
  end
end
local out = { #live }
for k, v in pairs(sums) do out[#out + 1] = k; out[#out + 1] = v end
return out`;

const TAKE_SCRIPT = `
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local v = redis.call('HMGET', KEYS[1], 'tokens', 'last', 'rate')
local tokens, last = tonumber(v[1]), tonumber(v[2])
if tokens == nil or last == nil or tonumber(v[3]) ~= rate then tokens = burst; last = now end
tokens = math.min(burst, tokens + (now - last) * rate / 1000) - n
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', tostring(now), 'rate', tostring(rate))
redis.call('PEXPIRE', KEYS[1], 60000)
if tokens >= 0 then return 0 end
return math.ceil(-tokens * 1000 / rate)`;

const USAGE_SCRIPT = `
local prefix, ttl, nd = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local i = 4
for d = 1, nd do
  local key = prefix .. 'quota:' .. ARGV[i]
  redis.call('HINCRBY', key, ARGV[i + 1] .. ':up', ARGV[i + 2])
  redis.call('HINCRBY', key, ARGV[i + 1] .. ':down', ARGV[i + 3])
  redis.call('EXPIRE', key, ttl)
  i = i + 4
end
local out = {}
while i <= #ARGV do
  local h = redis.call('HGETALL', prefix .. 'quota:' .. ARGV[i])
  local from = tonumber(ARGV[i + 1])
  local up, down = 0, 0
  for j = 1, #h, 2 do
    local hour, dir = string.match(h[j], '^(%d+):(%a+)$')
    if hour and tonumber(hour) >= from then
      if dir == 'up' then up = up + tonumber(h[j + 1]) else down = down + tonumber(h[j + 1]) end
    end
  end
  out[#out + 1] = up
  out[#out + 1] = down
  i = i + 2
end
return out`;

type ScriptedRedis = Redis & {
  sockstapLease(...args: (string | number)[]): Promise<unknown[]>;
  sockstapTake(key: string, rate: number, burst: number, bytes: number): Promise<number>;
  sockstapUsage(...args: (string | number)[]): Promise<number[]>;
};

export class RedisLimits implements SharedLimits {
  readonly kind = 'redis' as const;
  readonly commitMs = 250;
  readonly node = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  private readonly redis: ScriptedRedis;
  private readonly label: string;
  private up = false;
  /** Whether an outage was logged (so it is logged once, and its end too). */
  private down = false;
  private failures = 0;
  private nodes = 1;
  private readonly own = new Map<string, number>();
  private others = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;
  private syncing: Promise<void> | null = null;
  private soon: NodeJS.Timeout | null = null;
  private readyWaiters: (() => void)[] = [];
  private closed = false;
  private readonly since = Date.now();
  private readonly usageView: RedisUsage;

  constructor(
    target: RedisTarget,
    private readonly log: Logger,
  ) {
    this.label = redisLabel(target);
    // ioredis (about 24 MiB) is loaded only by a node that has REDIS= set.
    const { Redis: RedisClient } = createRequire(import.meta.url)('ioredis') as typeof import('ioredis');
    this.redis = new RedisClient({
      host: target.host,
      port: target.port,
      db: target.db,
      ...(target.user !== undefined ? { username: target.user } : {}),
      ...(target.password !== undefined ? { password: target.password } : {}),
      // Fail at once while disconnected: the node then serves from what it knows.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: 1000,
      connectTimeout: 2000,
      retryStrategy: (times) => Math.min(100 * times, 1000),
    }) as ScriptedRedis;
    this.redis.defineCommand('sockstapLease', { numberOfKeys: 0, lua: LEASE_SCRIPT });
    this.redis.defineCommand('sockstapTake', { numberOfKeys: 1, lua: TAKE_SCRIPT });
    this.redis.defineCommand('sockstapUsage', { numberOfKeys: 0, lua: USAGE_SCRIPT });
    this.redis.on('error', (err: Error) => this.failed(err));
    this.redis.on('ready', () => this.schedule(0));
    this.usageView = new RedisUsage();
    this.timer = setInterval(() => void this.sync(), SYNC_MS);
    this.timer.unref();
    this.log.info('shared limits on redis', { redis: this.label, node: this.node });
  }

  elsewhere(key: string): number {
    return this.others.get(key) ?? 0;
  }

  held(key: string, n: number): void {
    if (n > 0) this.own.set(key, n);
    else this.own.delete(key);
    this.schedule(10);
  }

  bucket(id: string, rate: number): TokenBucket {
    let local: TokenBucket | null = null;
    const key = `${PREFIX}bucket:${id.replaceAll('\u0000', '|')}`;
    return new SharedBucket(
      key,
      rate,
      (k, r, burst, bytes) =>
        this.redis.sockstapTake(k, r, burst, bytes).then(
          (wait) => Number(wait),
          (err: unknown) => {
            this.failed(err);
            throw err;
          },
        ),
      () => {
        const share = Math.max(1, Math.floor(rate / this.nodes));
        if (local?.rate !== share) local = new TokenBucket(share);
        return local;
      },
    );
  }

  usage(local: UsageBackend | null): UsageBackend {
    this.usageView.local = local;
    return this.usageView;
  }

  ready(timeoutMs: number, prefetch?: () => unknown): Promise<void> {
    prefetch?.();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.readyWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
      this.schedule(0);
    });
  }

  registerMetrics(registry: Registry): void {
    const self = this;
    new Gauge({
      name: 'sockstap_redis_up',
      help: 'Whether the last exchange with REDIS= succeeded (1) or the node serves from its last known limits (0).',
      registers: [registry],
      collect() {
        this.set(self.up ? 1 : 0);
      },
    });
    new Counter({
      name: 'sockstap_redis_failures_total',
      help: 'Exchanges with REDIS= that failed (connection lost, refused, timed out).',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(self.failures);
      },
    });
    new Gauge({
      name: 'sockstap_redis_unflushed_bytes',
      help: 'Quota usage counted here and not yet in Redis (pushed when Redis answers).',
      registers: [registry],
      collect() {
        this.set(self.usageView.unflushedBytes());
      },
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    if (this.soon) clearTimeout(this.soon);
    await this.syncing;
    // Push what is left and give the counts back at once (rather than at the lease's expiry).
    this.own.clear();
    if (this.up) {
      await this.syncOnce().catch(() => {});
      await this.redis.multi().del(`${PREFIX}lease:${this.node}`).zrem(`${PREFIX}nodes`, this.node).exec().catch(() => {});
    }
    this.redis.disconnect();
  }

  private schedule(ms: number): void {
    if (this.soon || this.closed) return;
    this.soon = setTimeout(() => {
      this.soon = null;
      void this.sync();
    }, ms);
    this.soon.unref();
  }

  private sync(): Promise<void> {
    if (this.syncing || this.closed) return this.syncing ?? Promise.resolve();
    this.syncing = this.syncOnce()
      .catch((err: unknown) => this.failed(err))
      .finally(() => {
        this.syncing = null;
      });
    return this.syncing;
  }

  /** One exchange: renew the lease with this node's counts, learn the others', push usage, read the totals. */
  private async syncOnce(): Promise<void> {
    if (this.redis.status !== 'ready') {
      // Still connecting for the first time: not an outage yet.
      if (!this.up && !this.down && Date.now() - this.since < 2000) return;
      throw new Error(`not connected (${this.redis.status})`);
    }
    const args: (string | number)[] = [PREFIX, this.node, LEASE_MS];
    for (const [k, n] of this.own) args.push(k, n);
    const usage = this.usageView.begin();
    const pushing = this.redis.sockstapUsage(PREFIX, QUOTA_TTL_S, ...usage.args).then(
      (totals) => this.usageView.done(usage, totals),
      (err: unknown) => {
        this.usageView.failed(usage);
        throw err;
      },
    );
    const [lease, pushed] = await Promise.all([this.redis.sockstapLease(...args), pushing]);
    const others = new Map<string, number>();
    this.nodes = Math.max(1, Number(lease[0]));
    for (let i = 1; i + 1 < lease.length; i += 2) others.set(String(lease[i]), Number(lease[i + 1]));
    this.others = others;
    if (!this.up) {
      this.up = true;
      if (this.down) {
        this.down = false;
        this.log.info('redis reachable again; usage pushed', { redis: this.label, bytes: pushed, nodes: this.nodes });
      }
    }
    for (const w of this.readyWaiters.splice(0)) w();
  }

  private failed(err: unknown): void {
    this.failures++;
    this.up = false;
    if (this.down || this.closed) return;
    this.down = true;
    this.log.error('redis unreachable; serving with the last known limits', {
      redis: this.label,
      error: err instanceof Error ? err.message : String(err),
    });
  }
}

interface UsageExchange {
  sent: QuotaDelta[];
  queries: { id: string; scope: string; from: number }[];
  args: (string | number)[];
}

/**
 * QUOTA usage on Redis: the quota service commits here (the local database keeps the node's
 * own record for `sockstap report`); usage waits in `unflushed` for the next exchange, and a
 * scope's use is the fleet's total as Redis last said plus what this node has not pushed yet.
 */
class RedisUsage implements UsageBackend {
  local: UsageBackend | null = null;
  private unflushed = new Map<string, QuotaDelta>();
  private inflight: QuotaDelta[] = [];
  private readonly known = new Map<string, { up: number; down: number }>();
  private readonly interest = new Map<string, { scope: string; from: number }>();
  private refresh: (() => void) | null = null;

  commit(quota: readonly QuotaDelta[], traffic: readonly TrafficDelta[]): void {
    // The local record first: if it throws, the quota service keeps its counts and tries again.
    this.local?.commit(quota, traffic);
    for (const q of quota) {
      const id = `${q.scope}\u0000${q.hour}`;
      const u = this.unflushed.get(id);
      if (u) {
        u.up += q.up;
        u.down += q.down;
      } else this.unflushed.set(id, { ...q });
    }
  }

  quotaUsed(scope: string, since: number): { up: number; down: number } {
    const from = hourOf(since);
    const id = `${scope}\u0000${from}`;
    if (!this.interest.has(id)) this.interest.set(id, { scope, from });
    const base = this.known.get(id) ?? { up: 0, down: 0 };
    let up = base.up;
    let down = base.down;
    for (const q of [...this.unflushed.values(), ...this.inflight]) {
      if (q.scope !== scope || q.hour < from) continue;
      up += q.up;
      down += q.down;
    }
    return { up, down };
  }

  onUpdate(refresh: () => void): void {
    this.refresh = refresh;
  }

  unflushedBytes(): number {
    let n = 0;
    for (const q of [...this.unflushed.values(), ...this.inflight]) n += q.up + q.down;
    return n;
  }

  begin(): UsageExchange {
    const sent = [...this.unflushed.values()];
    this.unflushed = new Map();
    this.inflight.push(...sent);
    const args: (string | number)[] = [sent.length];
    for (const q of sent) args.push(q.scope, q.hour, q.up, q.down);
    const queries = [...this.interest].map(([id, q]) => ({ id, ...q }));
    for (const q of queries) args.push(q.scope, q.from);
    return { sent, queries, args };
  }

  /** The exchange failed: what it carried waits for the next one. */
  failed(x: UsageExchange): void {
    this.inflight = this.inflight.filter((q) => !x.sent.includes(q));
    for (const q of x.sent) {
      const id = `${q.scope}\u0000${q.hour}`;
      const u = this.unflushed.get(id);
      if (u) {
        u.up += q.up;
        u.down += q.down;
      } else this.unflushed.set(id, q);
    }
  }

  /** Redis has the usage `x` carried; the totals it answered are the fleet's. Returns the bytes pushed. */
  done(x: UsageExchange, totals: number[]): number {
    this.inflight = this.inflight.filter((q) => !x.sent.includes(q));
    x.queries.forEach((q, i) => this.known.set(q.id, { up: Number(totals[2 * i] ?? 0), down: Number(totals[2 * i + 1] ?? 0) }));
    if (x.queries.length > 0) this.refresh?.();
    return x.sent.reduce((n, q) => n + q.up + q.down, 0);
  }
}
