/**
 * Access control at the first two checkpoints: on accept (the source, RELIABLE) and when the
 * destination is known (PERMIT/REJECT on protocol, destination, source, user and time). Pure
 * decisions over the Config: no sockets, no I/O except the name resolution a rule may need.
 */
import { isIP } from 'node:net';
import type { AccessRule, Config, HostPort } from '../config/types.js';
import type { NameCache } from '../net/dns.js';
import { firstMatch } from '../config/first-match.js';
import { groupsOf } from './groups.js';

export interface Decision {
  allowed: boolean;
  /** The rule or parameter that decided, for the log line ("RELIABLE", "REJECT=http:*.bad:*"). */
  by: string;
}

const ALLOW_DEFAULT: Decision = { allowed: true, by: 'default' };

/** Checkpoint 1: may this source use the proxy at all? */
export function checkSource(config: Config, clientAddress: string): Decision {
  if (config.reliable.matches({ host: clientAddress, addresses: [clientAddress] })) return ALLOW_DEFAULT;
  return { allowed: false, by: `RELIABLE=${config.reliable.source}` };
}

export interface DestinationQuery {
  /** Protocol tags of the request (door and front protocol; later the application protocol). */
  tags: readonly string[];
  clientAddress: string;
  user: string | null;
  dst: HostPort;
  /**
   * Addresses the destination reaches (net/destination.ts reachedAddresses: the name's answer
   * from the name cache, the unspecified addresses as loopback), when a rule needs them. Each is
   * checked on its own: the destination is refused when any of them is.
   */
  dstAddresses?: readonly string[];
  now?: Date;
}

function protocolMatches(rule: AccessRule, tags: readonly string[]): boolean {
  for (const p of rule.protocols) {
    if (p === '*' || tags.includes(p)) return true;
  }
  return false;
}

/**
 * Checkpoint 2: first matching PERMIT/REJECT rule wins; no match permits. With several
 * addresses, every one must be permitted (the dialer may connect to any of them).
 */
export function checkDestination(config: Config, q: DestinationQuery): Decision {
  const list = q.dstAddresses;
  if (!list || list.length <= 1 || !rulesNeedAddresses(config)) return checkOne(config, q, list);
  let first: Decision | null = null;
  for (const a of list) {
    const d = checkOne(config, q, [a]);
    if (!d.allowed) return d;
    first ??= d;
  }
  return first!;
}

function checkOne(config: Config, q: DestinationQuery, dstAddresses: readonly string[] | undefined): Decision {
  const now = q.now ?? new Date();
  const user = q.user ?? undefined;
  const groups = groupsOf(config, user);
  const rule = firstMatch(
    config.rules,
    (rule) =>
      protocolMatches(rule, q.tags) &&
      (!rule.when || rule.when.contains(now)) &&
      rule.src.matches({ host: q.clientAddress, addresses: [q.clientAddress], user, groups }) &&
      rule.dst.matches({ host: q.dst.host, addresses: dstAddresses, port: q.dst.port, user, groups }),
  );
  return accessDecision(rule);
}

/** What the first matching PERMIT/REJECT rule says; no rule permits. */
export function accessDecision(rule: AccessRule | null): Decision {
  return rule ? { allowed: rule.action === 'permit', by: rule.source } : ALLOW_DEFAULT;
}

/** Whether any destination list of the rules needs the addresses of a named destination. */
export function rulesNeedAddresses(config: Config): boolean {
  return config.rules.some((r) => r.dst.needsAddresses);
}

/**
 * Resolve a destination name through the name cache (HOSTS, YAML `dns:`), as the dialer does; an
 * IP literal is itself; [] when it cannot be resolved.
 */
export async function destinationAddresses(host: string, names: NameCache): Promise<string[]> {
  if (isIP(host)) return [host];
  try {
    const found = await names.resolve(host);
    return found.map((a) => a.address);
  } catch {
    return [];
  }
}
