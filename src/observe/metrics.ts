/**
 * Prometheus metrics of the proxy (GET /metrics), through prom-client on a registry of our own
 * (never the global one, so several proxies in one process do not mix their figures).
 *
 * Counters mirror `ProxyStats`, which counts from the lifecycle events and from sampling live
 * sessions at scrape time; histograms are observed from the events. Nothing is done per chunk.
 * docs/admin.md lists every name and what it means.
 */
import type { UpstreamHealthTable } from '../upstream/pool.js';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { HttpCache } from '../cache/http-cache.js';
import type { Session } from '../core/session.js';
import { nativeDoorStats, type NativeDoorStats } from '../native/door.js';
import type { AccessRecord, LogFileRecord, ProxyEvents } from './events.js';
import { cacheOutcome, doorOf, type ProxyStats } from './stats.js';

export interface MetricsSource {
  stats: ProxyStats;
  events: ProxyEvents;
  cache(): Pick<HttpCache, 'stats'> | null;
  /** The running instance's upstream health (upstream/pool.ts); absent: no upstream figures. */
  upstreams?: UpstreamHealthTable;
  /** The native accept path's figures, when not this process's own (WORKERS=N: the workers' sum). */
  native?(): NativeDoorStats;
}

export interface ProxyMetrics {
  readonly registry: Registry;
  readonly contentType: string;
  /** Sample the live sessions, then render the exposition text. */
  render(): Promise<string>;
  close(): void;
}

type Labels<K extends string> = Partial<Record<K, string | number>>;

/** Set a counter to absolute values that only ever grow (they come from ProxyStats). */
function mirror<K extends string>(counter: Counter<K>, rows: Iterable<[Labels<K>, number]>): void {
  counter.reset();
  for (const [labels, value] of rows) counter.inc(labels, value);
}

const DURATION_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600];
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createMetrics(source: MetricsSource): ProxyMetrics {
  const { stats } = source;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // prom-client's nodejs_active_{handles,requests,resources}_total are gauges with a counter's
  // suffix, which `promtool check metrics` refuses; they are the sums of the per-type
  // nodejs_active_* gauges (label `type`), which stay.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(name);
  }

  new Counter({
    name: 'sockstap_connections_total',
    help: 'Client connections accepted, by the protocol the client spoke (counted once the door knows it, or at the end).',
    labelNames: ['door'] as const,
    registers: [registry],
    collect() {
      mirror(this, [...stats.connections].map(([door, n]) => [{ door }, n]));
    },
  });
  new Gauge({
    name: 'sockstap_connections_live',
    help: 'Client connections open now, by door and by the protocol found in the tunnel.',
    labelNames: ['door', 'proto'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const r of stats.liveByDoorProto()) this.set({ door: r.door, proto: r.proto }, r.count);
    },
  });
  new Counter({
    name: 'sockstap_connections_ended_total',
    help: 'Client connections finished, by door and by the protocol found in the tunnel (raw: none).',
    labelNames: ['door', 'proto'] as const,
    registers: [registry],
    collect() {
      mirror(this, [...stats.ended.values()].map((e) => [{ door: e.door, proto: e.proto }, e.count]));
    },
  });
  new Counter({
    name: 'sockstap_bytes_total',
    help: 'Bytes relayed: up = client to server, down = server to client (live sessions sampled at scrape).',
    labelNames: ['direction', 'door'] as const,
    registers: [registry],
    collect() {
      const rows: Array<[Labels<'direction' | 'door'>, number]> = [];
      for (const [door, f] of stats.byDoor) rows.push([{ direction: 'up', door }, f.bytesUp], [{ direction: 'down', door }, f.bytesDown]);
      mirror(this, rows);
    },
  });
  new Counter({
    name: 'sockstap_protocol_bytes_total',
    help: 'Bytes relayed by the protocol found in the tunnel (raw: none).',
    labelNames: ['direction', 'proto'] as const,
    registers: [registry],
    collect() {
      const rows: Array<[Labels<'direction' | 'proto'>, number]> = [];
      for (const [proto, f] of stats.byProto) rows.push([{ direction: 'up', proto }, f.bytesUp], [{ direction: 'down', proto }, f.bytesDown]);
      mirror(this, rows);
    },
  });
  new Counter({
    name: 'sockstap_http_requests_total',
    help: 'HTTP requests and CONNECTs written to access.log, by Squid result code.',
    labelNames: ['result_code'] as const,
    registers: [registry],
    collect() {
      mirror(this, [...stats.httpByResultCode].map(([code, n]) => [{ result_code: code }, n]));
    },
  });
  new Counter({
    name: 'sockstap_cache_hits_total',
    help: 'HTTP requests answered from the cache (TCP_HIT, TCP_MEM_HIT, TCP_REFRESH_UNMODIFIED, ...), by Squid result code.',
    labelNames: ['result_code'] as const,
    registers: [registry],
    collect() {
      mirror(this, [...stats.httpByResultCode].filter(([c]) => cacheOutcome(c) === 'hit').map(([code, n]) => [{ result_code: code }, n]));
    },
  });
  new Counter({
    name: 'sockstap_cache_misses_total',
    help: 'HTTP requests the origin answered (TCP_MISS, TCP_REFRESH_MODIFIED, ...), by Squid result code.',
    labelNames: ['result_code'] as const,
    registers: [registry],
    collect() {
      mirror(this, [...stats.httpByResultCode].filter(([c]) => cacheOutcome(c) === 'miss').map(([code, n]) => [{ result_code: code }, n]));
    },
  });
  new Counter({
    name: 'sockstap_refusals_total',
    help: 'Connections and tunnels refused by policy, by door and code (EDENIED, EAUTH, ELIMIT, EQUOTA, ...).',
    labelNames: ['door', 'code'] as const,
    registers: [registry],
    collect() {
      mirror(this, [...stats.refusals.values()].map((r) => [{ door: r.door, code: r.code }, r.count]));
    },
  });
  new Counter({
    name: 'sockstap_errors_total',
    help: 'Sessions that ended in an error, by code (ECONNREFUSED, ETIMEDOUT, EUPSTREAM, idle, handshake-timeout, ...).',
    labelNames: ['code'] as const,
    registers: [registry],
    collect() {
      mirror(this, [...stats.errors].map(([code, n]) => [{ code }, n]));
    },
  });
  new Counter({
    name: 'sockstap_sniff_outcomes_total',
    help: 'Finished CONNECT tunnels by the protocol the sniffer found (raw: nothing found, or not tapped).',
    labelNames: ['proto'] as const,
    registers: [registry],
    collect() {
      mirror(this, [...stats.sniffOutcomes].map(([proto, n]) => [{ proto }, n]));
    },
  });
  new Gauge({
    name: 'sockstap_cache_stored_bytes',
    help: 'Bytes of responses stored in the HTTP cache (0 when no cache is open).',
    registers: [registry],
    collect() {
      this.set(source.cache()?.stats().bytes ?? 0);
    },
  });
  new Gauge({
    name: 'sockstap_cache_entries',
    help: 'Responses stored in the HTTP cache (0 when no cache is open).',
    registers: [registry],
    collect() {
      this.set(source.cache()?.stats().entries ?? 0);
    },
  });
  new Gauge({
    name: 'sockstap_cache_memory_bytes',
    help: 'Bytes of bodies held by the HTTP cache memory tier (CACHEMEM; 0 when no cache is open).',
    registers: [registry],
    collect() {
      this.set(source.cache()?.stats().memBytes ?? 0);
    },
  });

  // The native accept path's figures belong to the process (one relay thread serves every proxy in it).
  const native: [string, string, keyof NativeDoorStats][] = [
    ['sockstap_native_accepted_total', 'Connections the relay thread accepted on socks, auto and http listeners (the native accept path).', 'accepted'],
    ['sockstap_native_handed_off_total', 'Of those, connections handed to the JavaScript doors as sockets (a new source, SOCKS4, HTTP, BIND, UDP, a tapped CONNECT...).', 'handedOff'],
    ['sockstap_native_remembered_total', 'CONNECTs the relay thread dialed on a remembered decision, without asking JavaScript first.', 'remembered'],
    ['sockstap_native_cache_hits_total', 'HTTP cache hits the relay thread answered itself (the native hit path; also counted in access.log as TCP_MEM_HIT).', 'hits'],
  ];
  for (const [name, help, key] of native) {
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        mirror(this, [[{}, (source.native?.() ?? nativeDoorStats())[key]]]);
      },
    });
  }
  // Upstream proxies (upstream/pool.ts): figures of this instance, by chain label (no credentials).
  const upstreamHealth = (): ReturnType<UpstreamHealthTable['all']> => source.upstreams?.all() ?? [];
  new Counter({
    name: 'sockstap_upstream_connections_total',
    help: 'Connections sockstap tried to an upstream proxy (its first hop), by upstream.',
    labelNames: ['upstream'] as const,
    registers: [registry],
    collect() {
      mirror(this, upstreamHealth().map((h) => [{ upstream: h.upstream }, h.connections]));
    },
  });
  new Counter({
    name: 'sockstap_upstream_failures_total',
    help: 'Of those, the ones where the upstream could not be reached (refused, unreachable, timed out).',
    labelNames: ['upstream'] as const,
    registers: [registry],
    collect() {
      mirror(this, upstreamHealth().map((h) => [{ upstream: h.upstream }, h.failures]));
    },
  });
  new Counter({
    name: 'sockstap_upstream_marked_dead_total',
    help: 'Times an upstream was marked dead (maxfails consecutive failures).',
    labelNames: ['upstream'] as const,
    registers: [registry],
    collect() {
      mirror(this, upstreamHealth().map((h) => [{ upstream: h.upstream }, h.markedDead]));
    },
  });
  new Gauge({
    name: 'sockstap_upstream_up',
    help: '1 when the upstream is live, 0 while it is marked dead (until failtimeout, then probed back).',
    labelNames: ['upstream'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const h of upstreamHealth()) this.set({ upstream: h.upstream }, source.upstreams?.isDead(h.upstream) ? 0 : 1);
    },
  });
  new Gauge({
    name: 'sockstap_native_handshakes',
    help: 'SOCKS5 handshakes the relay thread is reading or deciding now.',
    registers: [registry],
    collect() {
      this.set((source.native?.() ?? nativeDoorStats()).handshakes);
    },
  });

  const duration = new Histogram({
    name: 'sockstap_session_duration_seconds',
    help: 'How long client connections lasted, from accept to close.',
    labelNames: ['door'] as const,
    buckets: DURATION_BUCKETS,
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'sockstap_relay_latency_seconds',
    help: 'Time from accepting a client connection to the front door\u2019s success reply for its tunnel (handshake, policy and dial to the server).',
    labelNames: ['door'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const httpDuration = new Histogram({
    name: 'sockstap_http_request_duration_seconds',
    help: 'Time to answer an HTTP request (access.log elapsed), by cache outcome (hit, miss, none).',
    labelNames: ['cache'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });

  const logErrors = new Counter({
    name: 'sockstap_log_write_errors_total',
    help: 'Failed attempts to open or write a log file (ENOSPC, EACCES, ...), by file; its lines are kept and retried every second.',
    labelNames: ['file'] as const,
    registers: [registry],
  });
  const logDropped = new Counter({
    name: 'sockstap_log_lines_dropped_total',
    help: 'Log lines lost because their file could not be written for long enough to fill its 8 MiB backlog, by file.',
    labelNames: ['file'] as const,
    registers: [registry],
  });
  const logFailing = new Gauge({
    name: 'sockstap_log_file_failing',
    help: '1 while a log file cannot be written (its lines wait in memory), 0 once it can again.',
    labelNames: ['file'] as const,
    registers: [registry],
  });
  for (const file of ['access.log', 'sessions.jsonl', 'xferlog', 'sockstap.log']) {
    logErrors.inc({ file }, 0);
    logDropped.inc({ file }, 0);
    logFailing.set({ file }, 0);
  }
  const onLogFile = (r: LogFileRecord): void => {
    if (r.event === 'error') {
      logErrors.inc({ file: r.file });
      logFailing.set({ file: r.file }, 1);
    } else if (r.event === 'recovered') logFailing.set({ file: r.file }, 0);
    else logDropped.inc({ file: r.file }, r.lines);
  };

  const onEnd = (s: Session): void => {
    duration.observe({ door: doorOf(s) }, Math.max(0, (s.endMs || Date.now()) - s.startMs) / 1000);
  };
  const onEstablished = (s: Session): void => {
    latency.observe({ door: doorOf(s) }, Math.max(0, Date.now() - s.startMs) / 1000);
  };
  const onAccess = (r: AccessRecord): void => {
    // CONNECT tunnels are logged when they end: their elapsed time is the tunnel's life, not a latency.
    if (r.resultCode === 'TCP_TUNNEL') return;
    httpDuration.observe({ cache: cacheOutcome(r.resultCode) }, Math.max(0, r.elapsedMs) / 1000);
  };
  source.events.on('session-end', onEnd);
  source.events.on('established', onEstablished);
  source.events.on('access', onAccess);
  source.events.on('log-file', onLogFile);

  return {
    registry,
    contentType: registry.contentType,
    async render() {
      stats.sample();
      return registry.metrics();
    },
    close() {
      source.events.off('session-end', onEnd);
      source.events.off('established', onEstablished);
      source.events.off('access', onAccess);
      source.events.off('log-file', onLogFile);
      registry.clear();
    },
  };
}
