/**
 * The tap decision: which SOCKSTAP rule (if any) picks a tunnel. First matching rule wins, as for
 * PERMIT/REJECT. A tunnel no rule picks stays on the plain relay and pays nothing more.
 */
import type { Config, HostPort, TapRule } from '../config/types.js';
import type { StrategyPin } from '../core/destinations.js';
import { firstMatch } from '../config/first-match.js';

export interface TapQuery {
  clientAddress: string;
  user: string | null;
  dst: HostPort;
}

export function pickTapRule(config: Config, q: TapQuery): TapRule | null {
  if (config.taps.length === 0) return null;
  const user = q.user ?? undefined;
  return firstMatch(
    config.taps,
    (rule) => rule.src.matches({ host: q.clientAddress, addresses: [q.clientAddress], user }) && rule.dst.matches({ host: q.dst.host, port: q.dst.port, user }),
  );
}

/**
 * The rule's STRATEGY= param: `dial-first` pins its tunnels to be dialed before the door replies
 * (the client always gets the real outcome), `cache-first` to be answered at once; `auto` (the
 * default) lets the connect strategy decide from what the destination spoke before (core/destinations.ts).
 */
export function ruleStrategy(rule: TapRule): StrategyPin {
  return rule.set.strategy ?? 'auto';
}

/** The rule's CACHE= param wins over the global CACHE. */
export function ruleCaches(config: Config, rule: TapRule): boolean {
  return rule.set.cache ?? config.cache.enabled;
}
