/**
 * When a remembered plan is forgotten: the one place that says so. The native accept path's
 * thread may remember a `direct` plan (core/plan.ts) for the same source, destination and port,
 * and dial the next such CONNECT without asking. A remembered plan lasts
 *
 * - no longer than the name cache keeps the destination's addresses (its TTL: `rememberMs`), and
 *   not at all while MAXIMA counts connections or a rule or route depends on the time of day;
 * - until the configuration is reloaded (`reloaded()`);
 * - until a tunnel comes to be expected (`announced()`: an FTP data connection announced by a
 *   tapped control session, which a remembered CONNECT would bypass);
 * - until its dial fails (the thread forgets that one entry and asks again).
 *
 * Whoever remembers plans (frontdoors/native-socks.ts, through TunnelSink.watchPlans) forgets
 * them all when `watch`'s function runs.
 */
import type { Config } from '../config/types.js';

/**
 * Whether a direct plan stays true until the configuration changes (or its name's addresses do):
 * not when a rule or route depends on the time of day, nor when MAXIMA counts connections.
 */
function plansKeep(config: Config): boolean {
  const m = config.maxima;
  if (m.conn > 0 || m.peruser > 0 || m.persrc > 0 || (m.perdoor ?? 0) > 0) return false;
  return !config.rules.some((r) => r.when) && !(config.routes ?? []).some((r) => r.when);
}

/** How long a direct plan may be remembered, given how long the name cache keeps its addresses. */
export function rememberMs(config: Config, addressesKeepMs: number): number {
  return plansKeep(config) ? addressesKeepMs : 0;
}

export type ForgetReason = 'reload' | 'expected';

/** One per running instance (its Pipeline): tells whoever remembers plans to forget them. */
export class PlanMemory {
  private readonly watchers = new Set<(why: ForgetReason) => void>();

  /** `fn` runs whenever plans made before may no longer hold. Returns the undo. */
  watch(fn: (why: ForgetReason) => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }

  /** A new configuration is in force. */
  reloaded(): void {
    this.forget('reload');
  }

  /** A tunnel is expected that was not before (pipeline/expectations.ts). */
  announced(): void {
    this.forget('expected');
  }

  private forget(why: ForgetReason): void {
    for (const fn of this.watchers) fn(why);
  }
}
