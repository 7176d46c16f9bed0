/**
 * The tap decision: which SOCKSTAP rule (if any) picks a tunnel. First matching rule wins, as for
 * PERMIT/REJECT. A tunnel no rule picks stays on the plain relay and pays nothing more.
 */
import type { Config, HostPort, TapRule } from '../config/types.js';

export interface TapQuery {
  clientAddress: string;
  user: string | null;
  dst: HostPort;
}

export function pickTapRule(config: Config, q: TapQuery): TapRule | null {
  if (config.taps.length === 0) return null;
  const user = q.user ?? undefined;
  for (const rule of config.taps) {
    if (!rule.src.matches({ host: q.clientAddress, addresses: [q.clientAddress], user })) continue;
    if (!rule.dst.matches({ host: q.dst.host, port: q.dst.port, user })) continue;
    return rule;
  }
  return null;
}

/** Ports whose servers speak first (FTP, SMTP, POP3, IMAP, NNTP, SSH and their TLS-less kin). */
export const SERVER_FIRST_PORTS: ReadonlySet<number> = new Set([21, 22, 25, 110, 119, 143, 587, 2525, 8021]);

/** The rule's CACHE= param wins over the global CACHE. */
export function ruleCaches(config: Config, rule: TapRule): boolean {
  return rule.set.cache ?? config.cache.enabled;
}
