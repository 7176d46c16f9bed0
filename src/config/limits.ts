/**
 * BANDWIDTH= and QUOTA= values, parsed once at load into Config.limits (global) and a SOCKSTAP
 * rule's `set.bandwidth`/`set.quota` (per rule); the policy services take these typed limits.
 *
 *   BANDWIDTH=RATE[/up|/down]:SCOPE          RATE in bytes per second: 512k, 1m
 *   QUOTA=SIZE/PERIOD[/up|/down]:SCOPE       PERIOD hour, day, week, month
 *   SCOPE: conn | all | user:NAME[,NAME] | group:NAME[,NAME] | src:hostList | door:PORT
 */
import type { HostList } from './types.js';
import { ConfigError } from './types.js';
import { parseHostList } from './hostlist.js';
import { splitTopLevel } from './split.js';
import { parsePort, parseSize } from './units.js';

export type Direction = 'both' | 'up' | 'down';

export type LimitScope =
  | { kind: 'conn' }
  | { kind: 'all' }
  | { kind: 'user'; users: readonly string[] }
  | { kind: 'src'; hosts: HostList }
  | { kind: 'door'; port: number }
  | { kind: 'group'; groups: readonly string[] };

export interface BandwidthLimit {
  /** bytes per second */
  rate: number;
  direction: Direction;
  scope: LimitScope;
  source: string;
  /**
   * A SOCKSTAP rule's limit: the rule's source, which prefixes its bucket and usage keys, so a
   * rule's `user:alice` counts only the tunnels that rule picks. Absent for global limits.
   */
  group?: string;
}

export type QuotaPeriod = 'hour' | 'day' | 'week' | 'month';

export interface QuotaLimit {
  /** bytes per period */
  size: number;
  period: QuotaPeriod;
  direction: Direction;
  scope: LimitScope;
  source: string;
  /** As BandwidthLimit.group. */
  group?: string;
}

export function parseBandwidth(text: string, param: string): BandwidthLimit {
  const [amount, scopeText] = splitAmount(text, param, 'RATE[/up|/down]:SCOPE');
  const parts = amount.split('/');
  if (parts.length > 2) throw new ConfigError(param, `expected RATE[/up|/down], got ${JSON.stringify(amount)}`);
  const rate = parseSize(parts[0]!, param);
  if (rate === 0) throw new ConfigError(param, 'a rate of 0 would stop all traffic; give a positive rate');
  return { rate, direction: parseDirection(parts[1], param), scope: parseScope(scopeText, param), source: text };
}

export function parseQuota(text: string, param: string): QuotaLimit {
  const [amount, scopeText] = splitAmount(text, param, 'SIZE/PERIOD[/up|/down]:SCOPE');
  const parts = amount.split('/');
  if (parts.length < 2 || parts.length > 3) {
    throw new ConfigError(param, `expected SIZE/PERIOD[/up|/down] such as 1g/day, got ${JSON.stringify(amount)}`);
  }
  const size = parseSize(parts[0]!, param);
  const period = parts[1]!.trim().toLowerCase();
  if (period !== 'hour' && period !== 'day' && period !== 'week' && period !== 'month') {
    throw new ConfigError(param, `unknown period ${JSON.stringify(parts[1])}; expected hour, day, week or month`);
  }
  return { size, period, direction: parseDirection(parts[2], param), scope: parseScope(scopeText, param), source: text };
}

function splitAmount(text: string, param: string, expected: string): [string, string] {
  const fields = splitTopLevel(text.trim(), ':', { limit: 2 });
  if (fields.length !== 2 || fields[0] === '' || fields[1] === '') {
    throw new ConfigError(param, `expected ${expected}, got ${JSON.stringify(text)}`);
  }
  return [fields[0]!, fields[1]!];
}

function parseDirection(text: string | undefined, param: string): Direction {
  if (text === undefined) return 'both';
  const d = text.trim().toLowerCase();
  if (d === 'up' || d === 'down') return d;
  throw new ConfigError(param, `expected /up or /down, got ${JSON.stringify('/' + text)}`);
}

function parseScope(text: string, param: string): LimitScope {
  const t = text.trim();
  const lower = t.toLowerCase();
  if (lower === 'conn') return { kind: 'conn' };
  if (lower === 'all') return { kind: 'all' };
  const colon = t.indexOf(':');
  const kind = colon < 0 ? lower : lower.slice(0, colon);
  const arg = colon < 0 ? '' : t.slice(colon + 1).trim();
  if (kind === 'user' && arg !== '') {
    const users = arg.split(',').map((u) => u.trim());
    if (users.some((u) => u === '')) throw new ConfigError(param, `empty user name in scope ${JSON.stringify(t)}`);
    return { kind: 'user', users };
  }
  if (kind === 'group' && arg !== '') {
    const groups = arg.split(',').map((g) => g.trim());
    if (groups.some((g) => g === '')) throw new ConfigError(param, `empty group name in scope ${JSON.stringify(t)}`);
    return { kind: 'group', groups };
  }
  if (kind === 'src' && arg !== '') return { kind: 'src', hosts: parseHostList(arg, param) };
  if (kind === 'door' && arg !== '') return { kind: 'door', port: parsePort(arg, param) };
  throw new ConfigError(
    param,
    `unknown scope ${JSON.stringify(t)}; expected conn, all, user:NAME[,NAME], group:NAME[,NAME], src:hostList or door:PORT`,
  );
}
