/**
 * What is in force, in words: the one line printed at start (doors, taps, cache, admin, state) and
 * the longer listing of `sockstap check`. Never prints a password: accounts and upstreams appear
 * by what they are, not by their text.
 */
import { relative } from 'node:path';
import type { Config } from './types.js';
import { redisLabel, TAP_PROTOCOLS } from './params.js';
import { formatHostPort } from '../core/session.js';

export interface BoundDoor {
  door: string;
  host: string;
  port: number;
  tls?: boolean;
}

/** 120000 → 2m; 300 → 300ms. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0';
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000}d`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** 1073741824 → 1g. */
export function formatSize(n: number): string {
  for (const [unit, f] of [
    ['t', 1024 ** 4],
    ['g', 1024 ** 3],
    ['m', 1024 ** 2],
    ['k', 1024],
  ] as const) {
    if (n >= f && n % f === 0) return `${n / f}${unit}`;
  }
  return String(n);
}

/** A path as the user would type it: relative to the working directory when under it. */
function shortPath(path: string, cwd: string): string {
  const r = relative(cwd, path);
  return r === '' ? '.' : r.startsWith('..') || r.startsWith('/') ? path : `./${r}`;
}

export function describeDoors(config: Config, bound?: readonly BoundDoor[]): string {
  const doors = bound ?? config.listen.map((l) => ({ door: l.door, host: l.host, port: l.port, ...(l.tls ? { tls: true } : {}) }));
  return doors
    .map((d, i) => {
      const target = bound ? undefined : config.listen[i]?.target;
      return `${d.tls ? (d.door === 'http' ? 'https' : `${d.door}+tls`) : d.door} door on ${formatHostPort(d.host || '*', d.port)}${target ? ` to ${formatHostPort(target.host, target.port)}` : ''}`;
    })
    .join(', ');
}

export function describeTaps(config: Config): string {
  if (config.taps.length === 0) return 'taps none (tunnels relayed as they are)';
  const all = TAP_PROTOCOLS.length;
  const rules = config.taps.map((t) => {
    const protos = t.protocols.length === all ? 'all' : t.protocols.join(',');
    const dst = t.dst.source === '*' ? '' : ` to ${t.dst.source}`;
    const src = t.src.source === '*' ? '' : ` from ${t.src.source}`;
    const params = Object.keys(t.params).length > 0 ? ` with ${Object.entries(t.params).map(([k, v]) => `${k}=${v}`).join(' ')}` : '';
    return `${protos}${dst}${src}${params}`;
  });
  return `taps ${rules.join('; ')}`;
}

export function describeCache(config: Config, cwd: string): string {
  const perRule = config.taps.some((t) => (t.params.CACHE ?? '').toLowerCase() === 'do');
  if (!config.cache.enabled && !perRule) return 'cache off';
  return `cache ${config.cache.enabled ? 'on' : 'per rule'} (${shortPath(config.cache.dir, cwd)}, max ${formatSize(config.cache.size)})`;
}

export function describeAdmin(config: Config, url?: string | null): string {
  if (url) return `admin ${url}`;
  return config.admin ? `admin http://${formatHostPort(config.admin.host, config.admin.port)}/` : 'admin off';
}

/** The start line: `doors ...; taps ...; cache ...; admin ...; state ..., logs ...`. */
export function summaryLine(config: Config, bound?: readonly BoundDoor[], adminUrl?: string | null): string {
  const cwd = config.origin.cwd;
  return [
    describeDoors(config, bound),
    describeTaps(config),
    describeCache(config, cwd),
    describeAdmin(config, adminUrl),
    `state ${shortPath(config.stateDir, cwd)}, logs ${shortPath(config.logDir, cwd)}`,
  ].join('; ');
}

/** `sockstap check`: every effective setting, one per line. */
export function describeConfig(config: Config): string {
  const cwd = config.origin.cwd;
  const lines: [string, string][] = [];
  const add = (k: string, v: string): void => void lines.push([k, v]);
  add('doors', describeDoors(config));
  add('taps', describeTaps(config).replace(/^taps /, ''));
  add('cache', describeCache(config, cwd).replace(/^cache /, '') + (config.cache.expire !== undefined ? `, heuristic ${formatDuration(config.cache.expire)}` : ''));
  add('admin', describeAdmin(config).replace(/^admin /, '') + (config.admin && config.adminAuth ? ' (with accounts)' : ''));
  add('state', shortPath(config.stateDir, cwd));
  add('logs', `${shortPath(config.logDir, cwd)} (access.log ${config.logFormat}, sessions.jsonl, xferlog, sockstap.log)`);
  add('reliable', config.reliable.source);
  add('rules', config.rules.length === 0 ? 'none (everything RELIABLE may use is permitted)' : config.rules.map((r) => r.source).join('  '));
  add('accounts', config.accounts ? 'on (AUTHORIZER)' : 'none');
  add('ident', config.ident ? 'do' : 'no');
  add(
    'upstreams',
    config.upstreams.length === 0 ? 'none (direct)' : config.upstreams.map((u) => `${u.kind === 'http' ? 'PROXY' : 'SOCKS'}=${formatHostPort(u.host, u.port)}${u.user ? ' (with a password)' : ''}`).join('  '),
  );
  if (config.redis) add('redis', `${redisLabel(config.redis)} (MAXIMA, BANDWIDTH and QUOTA shared by the fleet)`);
  if (config.routes) add('routes', `${config.routes.length} route rule${config.routes.length === 1 ? '' : 's'}`);
  if (config.dns) {
    const hosts = Object.entries(config.dns.hosts).map(([n, a]) => `${n}/${a.join(',')}`);
    add('dns', `ttl ${formatDuration(config.dns.ttlMs)}, order ${config.dns.order}${hosts.length ? `, hosts ${hosts.join(' ')}` : ''}`);
  }
  if (config.mounts.length > 0) add('mounts', config.mounts.map((m) => `${m.from} ${m.to}`).join('  '));
  add(
    'timeouts',
    Object.entries(config.timeouts)
      .map(([k, v]) => `${k}:${formatDuration(v as number)}`)
      .join(','),
  );
  add(
    'maxima',
    Object.entries(config.maxima)
      .filter(([, v]) => v !== undefined)
      .flatMap(([k, v]) => (typeof v === 'object' ? Object.entries(v).map(([g, n]) => `group:${g}:${n}`) : [`${k}:${v}`]))
      .join(',') + ' (0 = unlimited)',
  );
  add('bandwidth', config.bandwidth.length ? config.bandwidth.join('  ') : 'unlimited');
  add('quota', config.quota.length ? config.quota.join('  ') : 'none');
  add('relay', config.relay);
  add('workers', String(config.workers));
  if (config.timeZone) add('timezone', config.timeZone);
  if (config.spoof) add('spoof', 'client');
  if (config.proxyProtocol) add('proxyprotocol', config.proxyProtocol.source);
  const width = Math.max(...lines.map(([k]) => k.length)) + 2;
  return lines.map(([k, v]) => `${k.padEnd(width)}${v}\n`).join('');
}
