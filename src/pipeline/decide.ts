/**
 * What the plan is told: the executor's side of pipeline/plan.ts. `planFor` gathers the facts of
 * one tunnel (its name resolved once through the name cache and pinned to the session, the time,
 * QUOTA= usage, the registry of expected tunnels) and asks `planTunnel`; a claimed expected
 * tunnel is taken in the same turn. `authorize` is checkpoint 2 alone, for the destinations taps
 * ask about (a TLS server name, a request's host).
 */
import type { Config, HostPort, TapRule } from '../config/types.js';
import type { ExpectedTunnel } from '../core/expected.js';
import { toProxyError, type ProxyError } from '../core/errors.js';
import type { Plan } from '../core/plan.js';
import type { Session, TunnelCommand } from '../core/session.js';
import { normaliseDst, resolveForSession, type Resolution } from '../net/destination.js';
import { limitSubject } from './accounting.js';
import type { PipelineDeps } from './deps.js';
import type { Expectations } from './expectations.js';
import { checkpoint, needsAddresses, planTunnel, ruleFor } from './plan.js';

export class Decider {
  constructor(
    private readonly deps: PipelineDeps,
    private readonly expectations: Expectations,
  ) {}

  private quota(base: Config, session: Session): (rule: TapRule | null) => ProxyError | null {
    return (rule) => {
      try {
        this.deps.quotas?.check(base, limitSubject(session), rule);
        return null;
      } catch (err) {
        return toProxyError(err);
      }
    };
  }

  /**
   * The plan of one tunnel under `config`. `claim`: take the expected tunnel the plan says this is
   * (the JavaScript pipeline, which then runs it); the native accept path only asks.
   */
  async planFor(
    config: Config,
    session: Session,
    tunnel: { command: TunnelCommand; dst: HostPort; tags: readonly string[] },
    claim: boolean,
  ): Promise<{ plan: Plan; claimed: ExpectedTunnel | null }> {
    const { command, dst, tags } = tunnel;
    const rule = ruleFor(config, session, dst);
    const name = normaliseDst(dst).host;
    const resolution = needsAddresses(config, session, dst, rule) ? await resolveForSession(session, this.deps.runtime.names(config.dns), name) : null;
    const q = { clientAddress: session.clientAddress, dst, command };
    const plan = planTunnel(config, session, {
      command,
      dst,
      tags,
      resolution,
      now: new Date(),
      own: this.deps.ownAddresses?.() ?? [],
      expected: this.expectations.expects(q),
      quota: this.quota(config, session),
      addressesKeepMs: this.deps.runtime.names(config.dns).remainingMs(dst.host),
    });
    const expected = plan.kind === 'expected' || (plan.kind === 'bind' && plan.expected);
    return { plan, claimed: claim && expected ? this.expectations.claim(q) : null };
  }

  /**
   * Checkpoint 2 for a destination; throws EDENIED/ELIMIT/EQUOTA when refused. Returns the
   * resolution the rules checked (null when the name was not resolved here). `nameOnly`: a name
   * the tunnel is not dialed by (a TLS server name), checked by the rules only. `rule`: the
   * SOCKSTAP rule that picked the tunnel, whose PERMIT/REJECT come first and whose QUOTA= count too.
   */
  async authorize(session: Session, tags: readonly string[], rawDst: HostPort, rule?: TapRule | null, nameOnly = false): Promise<Resolution | null> {
    const base = this.deps.config();
    const dst = normaliseDst(rawDst);
    const r = rule ?? null;
    const resolution = needsAddresses(base, session, dst, r, nameOnly) ? await resolveForSession(session, this.deps.runtime.names(base.dns), dst.host) : null;
    const refused = checkpoint(base, session, r, { dst, tags, resolution, now: new Date(), own: this.deps.ownAddresses?.() ?? [], quota: this.quota(base, session), nameOnly });
    if (refused) throw refused;
    return resolution;
  }
}
