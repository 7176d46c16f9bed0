/**
 * One plan per tunnel: `planTunnel(config, session, request)` says, without side effects, what
 * becomes of a tunnel (core/plan.ts). Every condition of the decision is here, once: checkpoint 2
 * (sockstap's own addresses, PERMIT/REJECT of the SOCKSTAP rule then the global ones, the user's
 * time window, QUOTA=), the expected tunnels, BIND and UDP, the tap rule, the route, and what keeps
 * a direct tunnel from the relay thread (RELAY=js, BANDWIDTH=/QUOTA=, a user, two address
 * families, SRCIF=) with how long its plan may be remembered (MAXIMA, time windows, the name's
 * TTL; plan-memory.ts). What the plan needs to know of the world (the name's addresses, the time,
 * quota usage, the registry of expected tunnels) comes in the request, gathered by the executor
 * (pipeline.ts `planFor`), so the JavaScript pipeline and the native accept path ask the same
 * question and get the same answer.
 */
import type { LookupAddress } from 'node:dns';
import { isIP } from 'node:net';
import type { Config, HostPort, TapRule } from '../config/types.js';
import { ProxyError } from '../core/errors.js';
import type { Plan } from '../core/plan.js';
import { formatHostPort, type Session, type TunnelCommand } from '../core/session.js';
import { addressesOf, literalReach, normaliseDst, ownDestination, reachedAddresses, type OwnAddress, type Resolution } from '../net/destination.js';
import { checkDestination, rulesNeedAddresses } from '../policy/acl.js';
import { pickTapRule, ruleStrategy } from '../taps/rules.js';
import { srcifFor } from '../upstream/srcif.js';
import { queryFor, routesDirect } from '../upstream/router.js';
import { rememberMs } from './plan-memory.js';

export type { Plan, RouteReason } from '../core/plan.js';

/** What is known of one tunnel when it is planned. */
export interface PlanRequest {
  command: TunnelCommand;
  /** The destination as the client named it. */
  dst: HostPort;
  /** The door's protocol tags (PERMIT/REJECT protocol lists). */
  tags: readonly string[];
  /**
   * What the destination name resolved to for this connection (through the name cache, pinned to
   * the session), when `needsAddresses` said so; null when not resolved (an address, or a name an
   * upstream resolves).
   */
  resolution: Resolution | null;
  /** The time the rules' windows are read at. */
  now: Date;
  /** sockstap's own listeners and admin address: never a destination. */
  own: readonly OwnAddress[];
  /** Whether the registry of expected tunnels expects this tunnel (pipeline/expectations.ts). */
  expected: boolean;
  /** QUOTA= now: the refusal when a quota covering this session (and rule) is used up, else null. */
  quota(rule: TapRule | null): ProxyError | null;
  /** How much longer the name cache keeps the destination's answer (ms). */
  addressesKeepMs: number;
}

/** The SOCKSTAP rule that picks a tunnel (a pure decision): its PERMIT/REJECT and QUOTA= apply from checkpoint 2 on. */
export function ruleFor(config: Config, session: Session, dst: HostPort): TapRule | null {
  return pickTapRule(config, { clientAddress: session.clientAddress, user: session.user, dst });
}

/**
 * The configuration as a SOCKSTAP rule's tunnels see it: the rule's compiled timeouts, mounts and
 * access rules (TapRule, filled at load) in place of the global ones, so taps, checkpoint 3 and
 * MOUNT need no per-rule code. One object per rule and configuration; nothing is parsed here.
 */
const views = new WeakMap<TapRule, { base: Config; view: Config }>();

export function ruleView(base: Config, rule: TapRule): Config {
  const known = views.get(rule);
  if (known && known.base === base) return known.view;
  const view: Config = { ...base, timeouts: rule.timeouts, mounts: rule.mounts, rules: rule.rules };
  if (rule.set.expire !== undefined) view.cache = { ...base.cache, expire: rule.set.expire };
  views.set(rule, { base, view });
  return view;
}

/** Whether sockstap itself resolves and dials this destination (no upstream proxy on its route). */
export function resolvesHere(config: Config, session: Session, dst: HostPort): boolean {
  if (session.door === 'transparent' && config.spoof) return true;
  return routesDirect(config, queryFor(session, dst, ruleFor(config, session, dst)));
}

/**
 * Whether checkpoint 2 for `dst` needs its name resolved first: a name (not an address) that
 * sockstap dials itself or that a rule matches on addresses. `nameOnly`: a name the tunnel is not
 * dialed by (a TLS server name), checked by the rules only.
 */
export function needsAddresses(base: Config, session: Session, rawDst: HostPort, rule: TapRule | null, nameOnly = false): boolean {
  const config = rule ? ruleView(base, rule) : base;
  const dst = normaliseDst(rawDst);
  if (isIP(dst.host) !== 0) return false;
  return rulesNeedAddresses(config) || (!nameOnly && resolvesHere(config, session, dst));
}

/** The refusal when `dst` (reaching these addresses) is sockstap's own listener or admin, else null. */
export function ownRefusal(own: readonly OwnAddress[], dst: HostPort, reached: readonly string[]): ProxyError | null {
  const hit = ownDestination(own, reached, dst.port);
  if (!hit) return null;
  const via = reached[0] !== undefined && reached[0] !== dst.host ? ` (${reached[0]})` : '';
  return new ProxyError('EDENIED', `destination ${formatHostPort(dst.host, dst.port)}${via} is sockstap's own ${hit.what}: the proxy never relays to itself`);
}

/** What checkpoint 2 reads, for a tunnel or for a destination a tap asks about. */
export interface CheckpointQuery {
  dst: HostPort;
  tags: readonly string[];
  resolution: Resolution | null;
  now: Date;
  own: readonly OwnAddress[];
  quota(rule: TapRule | null): ProxyError | null;
  /** A name the tunnel is not dialed by (a TLS server name): no own-address check. */
  nameOnly?: boolean;
}

/**
 * Checkpoint 2: the refusal for `q.dst`, or null. In order: sockstap's own addresses, PERMIT/
 * REJECT (the rule's first, as its view of the configuration says), the user's time window,
 * QUOTA= (the global ones and the rule's).
 */
export function checkpoint(base: Config, session: Session, rule: TapRule | null, q: CheckpointQuery): ProxyError | null {
  const config = rule ? ruleView(base, rule) : base;
  const dst = normaliseDst(q.dst);
  let reached: string[] | undefined;
  if (isIP(dst.host) !== 0) reached = reachedAddresses([dst.host]);
  else if (q.resolution) reached = reachedAddresses(addressesOf(q.resolution));
  if (!q.nameOnly) {
    const own = ownRefusal(q.own, dst, reached ?? literalReach(dst.host));
    if (own) return own;
  }
  const decision = checkDestination(config, {
    tags: q.tags,
    clientAddress: session.clientAddress,
    user: session.user,
    dst,
    dstAddresses: rulesNeedAddresses(config) ? reached : undefined,
    now: q.now,
  });
  if (!decision.allowed) return new ProxyError('EDENIED', `destination ${dst.host}:${dst.port} refused by ${decision.by}`);
  const window = session.user !== null ? config.userWindows?.[session.user] : undefined;
  if (window && !window.contains(q.now)) return new ProxyError('EDENIED', `user ${session.user} is outside their time window ${window.source}`);
  return q.quota(rule);
}

function refuse(e: ProxyError): Plan {
  return { kind: 'refuse', code: e.code, reason: e.message };
}

/** The addresses a direct tunnel dials: the resolution, or an address literal itself. */
function dialAddresses(dst: HostPort, resolution: Resolution | null): readonly LookupAddress[] | ProxyError | null {
  if (resolution) return resolution;
  const family = isIP(dst.host);
  return family !== 0 ? [{ address: dst.host, family }] : null;
}

/** What becomes of this tunnel (see the file comment). */
export function planTunnel(config: Config, session: Session, request: PlanRequest): Plan {
  const rule = ruleFor(config, session, request.dst);
  const refused = checkpoint(config, session, rule, request);
  if (refused) return refuse(refused);
  if (request.command === 'bind') return { kind: 'bind', rule, expected: request.expected };
  if (request.command === 'udp') return { kind: 'udp' };
  if (request.expected) return { kind: 'expected', rule };
  if (rule) return { kind: 'tap', rule, strategy: ruleStrategy(rule) };
  const dst = normaliseDst(request.dst);
  if (!resolvesHere(config, session, dst) || (session.door === 'transparent' && config.spoof)) return { kind: 'route', why: 'upstream' };
  if (config.relay === 'js') return { kind: 'route', why: 'relay-js' };
  if (config.bandwidth.length > 0 || config.quota.length > 0) return { kind: 'route', why: 'limits' };
  if (session.user !== null) return { kind: 'route', why: 'user' };
  const found = dialAddresses(dst, request.resolution);
  if (found instanceof ProxyError) return { kind: 'unreachable', code: found.code, reason: found.message };
  if (!found) return { kind: 'route', why: 'upstream' }; // not resolved here: nothing to dial by address
  // Two families: Node's Happy Eyeballs races them (upstream/direct.ts); the thread would not.
  const family = found[0]?.family;
  if (family === undefined || found.some((a) => a.family !== family)) return { kind: 'route', why: 'dual-stack' };
  // SRCIF= binds the source address, which the thread's dial does not.
  if (srcifFor(config.srcif, { dst, addresses: found, clientAddress: session.clientAddress, user: session.user })) return { kind: 'route', why: 'srcif' };
  return {
    kind: 'direct',
    addresses: found.map((a) => a.address),
    timeoutMs: config.timeouts.connect,
    idleMs: config.timeouts.idle,
    rememberMs: rememberMs(config, request.addressesKeepMs),
  };
}
