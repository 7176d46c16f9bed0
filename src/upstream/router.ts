/**
 * The router: which chains a connection may take, in the order to try them, and the dial that
 * walks that list until one connects (DeleGate's CONNECT= order). Candidates, first source that
 * has any wins:
 *
 *   1. the SOCKSTAP rule that picked the tunnel, when its params name PROXY=/SOCKS=;
 *   2. the first YAML `routes:` rule whose conditions (dst, src, user, sniffed protocol, front
 *      protocol, time of day) all hold: its `via` list;
 *   3. PROXY=/SOCKS= parameters whose dstHostList matches, in the order given;
 *   4. direct.
 *
 * `session.route` records the chain taken (`direct`, `socks5://up:1080`,
 * `http://sq:3128,socks5://b:1080`), never credentials. docs/routing.md is the user's view.
 */
import type { LookupFunction, Socket } from 'node:net';
import type { Config, HostPort, RouteRule, TapRule, Upstream } from '../config/types.js';
import { ProxyError, toProxyError } from '../core/errors.js';
import { normalizeAddress, type Session } from '../core/session.js';
import type { NameCache } from '../net/dns.js';
import { clientEndpoints } from '../net/proxy-accept.js';
import { encodeProxyHeader } from '../net/proxy-protocol.js';
import { dialChain, type ChainOptions } from './chain.js';
import { chainLabel, hopFromUpstream, type Chain, type Hop } from './hop.js';
import { tlsToHop } from './tls-hop.js';
import { basicCredentials } from './http-connect.js';
import type { UpstreamHealthTable } from './pool.js';
import { firstMatch } from '../config/first-match.js';

export interface RouteQuery {
  dst: HostPort;
  clientAddress: string;
  user: string | null;
  /** What the sniffer found, when known (null before sniffing or when nothing matched). */
  proto: string | null;
  /** The front protocol: socks5, connect, http, tcprelay, ... */
  door: string;
  /** The SOCKSTAP rule that picked the tunnel, if any. */
  tapRule?: TapRule | null;
  now?: Date;
}

export interface RoutePlan {
  /** Tried in order; an empty chain is direct. */
  chains: readonly Chain[];
  /** What chose them: `SOCKSTAP=...`, `routes[1]`, `PROXY=...`, `default`. */
  by: string;
  /** The routing rule that chose them, when one did. */
  rule?: RouteRule;
}

const DIRECT: RoutePlan = { chains: [[]], by: 'default' };

/** PROXY=/SOCKS= of a SOCKSTAP rule, in the order given (parsed at load). */
function upstreamsOfRule(rule: TapRule): readonly Upstream[] {
  return rule.set.upstreams ?? [];
}

function matchingUpstreams(list: readonly Upstream[], dst: HostPort): Chain[] {
  return list.filter((u) => u.dst.matches({ host: dst.host, port: dst.port })).map((u) => [hopFromUpstream(u)]);
}

/** Whether every condition of a routing rule holds for the query. */
export function routeMatches(rule: RouteRule, q: RouteQuery): boolean {
  const user = q.user ?? undefined;
  if (rule.dst && !rule.dst.matches({ host: q.dst.host, port: q.dst.port, user })) return false;
  if (rule.src && !rule.src.matches({ host: q.clientAddress, addresses: [q.clientAddress], user })) return false;
  if (rule.users) {
    const ok = rule.users.some((u) => (u === '*' ? q.user !== null : u === '-' ? q.user === null : u === q.user));
    if (!ok) return false;
  }
  if (rule.protocols && (q.proto === null || !rule.protocols.includes(q.proto))) return false;
  if (rule.doors && !rule.doors.includes(q.door)) return false;
  if (rule.when && !rule.when.contains(q.now ?? new Date())) return false;
  return true;
}

/** The candidate chains for a connection, in the order to try them. */
export function planRoute(config: Config, q: RouteQuery): RoutePlan {
  if (q.tapRule) {
    const own = upstreamsOfRule(q.tapRule);
    if (own.length > 0) {
      const chains = matchingUpstreams(own, q.dst);
      if (chains.length > 0) return { chains, by: q.tapRule.source };
    }
  }
  const rule = firstMatch(config.routes, (r) => routeMatches(r, q));
  if (rule) return { chains: rule.via, by: rule.source, rule };
  if (config.upstreams.length > 0) {
    const chains = matchingUpstreams(config.upstreams, q.dst);
    if (chains.length > 0) return { chains, by: chains.length === 1 ? config.upstreams.find((u) => u.dst.matches(q.dst))!.source : 'PROXY/SOCKS' };
  }
  return DIRECT;
}

/**
 * planRoute() for a connection about to dial: a pooled route's chains in this connection's order
 * (upstream/pool.ts; a round-robin turn is taken here, so only dials ask this).
 */
export function dialPlan(config: Config, q: RouteQuery, upstreams: UpstreamHealthTable): RoutePlan {
  const plan = planRoute(config, q);
  if (!plan.rule?.pool) return plan;
  return { ...plan, chains: upstreams.orderPool(plan.rule, { clientAddress: q.clientAddress, dstHost: q.dst.host }) };
}

/** Chain options naming the client, for a chain with a `/proxy-v1|/proxy-v2` hop (its PROXY header). */
function proxyHeaderOf(chain: Chain, session: Session): Pick<ChainOptions, 'client'> {
  return chain.some((h) => h.proxyProtocol) ? { client: clientEndpoints(session) } : {};
}

/**
 * A pooled HTTP connection through a hop that was sent a PROXY header speaks for one client:
 * its pool key names the client, so no other client's request reuses it.
 */
function poolClient(chain: Chain, session: Session): string {
  if (!chain.some((h) => h.proxyProtocol)) return '';
  const c = clientEndpoints(session).source;
  return `|pp:${c.address}:${c.port}`;
}

/** Chain options that report the first hop's health. */
function healthHook(chain: Chain, plan: RoutePlan, upstreams: UpstreamHealthTable): Pick<ChainOptions, 'onFirstHop'> {
  return chain.length === 0 ? {} : { onFirstHop: (ok) => upstreams.recordReach(chain, ok, plan.rule?.pool) };
}

/** Whether this connection goes direct (no upstream proxy on its route). */
export function routesDirect(config: Config, q: RouteQuery): boolean {
  return planRoute(config, q) === DIRECT;
}

/** The query for a session at dial time. */
export function queryFor(session: Session, dst: HostPort, tapRule?: TapRule | null): RouteQuery {
  return {
    dst,
    clientAddress: session.clientAddress,
    user: session.user,
    proto: session.command === 'http' ? 'http' : session.proto !== 'raw' ? session.proto : null,
    door: session.frontProtocol || session.door,
    tapRule: tapRule ?? null,
  };
}

/** SRCIF= rules and who dials, for a direct connection (upstream/srcif.ts). */
function srcifOf(config: Config, session: Session): ChainOptions['srcif'] {
  return config.srcif && config.srcif.length > 0 ? { rules: config.srcif, clientAddress: session.clientAddress, user: session.user } : undefined;
}

export interface RouteDialOptions {
  /** For each chain tried, ms (TIMEOUT=connect). */
  timeoutMs: number;
  signal?: AbortSignal;
  tapRule?: TapRule | null;
  /** The lookup for names dialed directly (net/destination.ts pins them per connection). */
  lookup?: LookupFunction;
  /** The running instance's name cache (HOSTS=, YAML `dns:`) for names a hop resolves here. */
  names: NameCache;
  /** The running instance's upstream health marks and pool turns (upstream/pool.ts). */
  upstreams: UpstreamHealthTable;
  /** Told about each chain that failed before the next is tried. */
  onFallback?: (failed: string, err: ProxyError, next: string) => void;
}

/**
 * Dial `dst` for `session` along its route, trying each candidate chain in turn. Sets
 * `session.route` to the chain that connected (or, when all failed, to the last one tried) and
 * rejects with the last chain's error.
 */
export async function dialRoute(config: Config, dst: HostPort, session: Session, options: RouteDialOptions): Promise<Socket> {
  const plan = dialPlan(config, queryFor(session, dst, options.tapRule), options.upstreams);
  const names = options.names;
  // Built only on failure: an Error captures a stack trace, too dear for every dial.
  let last: ProxyError | null = null;
  for (let i = 0; i < plan.chains.length; i++) {
    const chain = plan.chains[i]!;
    session.route = chainLabel(chain);
    try {
      const socket = await dialChain(chain, dst, {
        timeoutMs: options.timeoutMs,
        signal: options.signal,
        names,
        ...(options.lookup ? { lookup: options.lookup } : {}),
        srcif: srcifOf(config, session),
        ...healthHook(chain, plan, options.upstreams),
        ...proxyHeaderOf(chain, session),
      });
      session.peer = chain[0]?.host ?? normalizeAddress(socket.remoteAddress ?? dst.host);
      return socket;
    } catch (err) {
      last = toProxyError(err);
      if (last.code === 'ESHUTDOWN' || options.signal?.aborted) throw last;
      const next = plan.chains[i + 1];
      if (next) options.onFallback?.(session.route, last, chainLabel(next));
    }
  }
  throw last ?? new ProxyError('EUPSTREAM', `no route to ${dst.host}:${dst.port}`);
}

/**
 * For the HTTP forwarding engine (taps/http/forward.ts): when the first candidate chain of a
 * request ends in an HTTP proxy, the request should go to that proxy in absolute-form (so an
 * upstream cache such as Squid can cache it) instead of through a CONNECT tunnel. Returns how:
 * `dial()` reaches the proxy itself (through the chain's earlier hops), `authorization` is the
 * Proxy-Authorization value to add, `key` separates pooled connections per proxy and
 * credentials, `route` is what `session.route` should say. Null: dial the origin as usual.
 */
export interface HttpUpstream {
  route: string;
  key: string;
  authorization?: string;
  dial(): Promise<Socket>;
}

export function httpUpstreamFor(config: Config, dst: HostPort, session: Session, options: RouteDialOptions): HttpUpstream | null {
  const plan = dialPlan(config, queryFor(session, dst, options.tapRule), options.upstreams);
  const chain = plan.chains[0];
  const proxy = chain?.[chain.length - 1];
  if (!chain || !proxy || proxy.kind !== 'http') return null;
  return absoluteFormRoute(config, chain, proxy, options, plan, session);
}

function absoluteFormRoute(config: Config, chain: Chain, proxy: Hop, options: RouteDialOptions, plan: RoutePlan, session: Session): HttpUpstream & HttpRoute {
  const before = chain.slice(0, -1);
  const route = chainLabel(chain);
  const authorization = basicCredentials(proxy);
  const out: HttpUpstream & HttpRoute = {
    route,
    form: 'absolute',
    proxy: { host: proxy.host, port: proxy.port },
    // The user name separates pools of different credentials without putting the password in a key.
    key: `${route}|${proxy.user ?? ''}${poolClient(chain, session)}`,
    dial: () =>
      dialChain(
        before,
        { host: proxy.host, port: proxy.port },
        {
          timeoutMs: options.timeoutMs,
          signal: options.signal,
          names: options.names,
          // An absolute-form route to one proxy dials it directly: that dial is the first hop's.
          ...(before.length === 0 ? { onFirstHop: undefined } : healthHook(chain, plan, options.upstreams)),
          ...proxyHeaderOf(chain, session),
        },
      ).then(
        (s) => {
          if (before.length === 0) options.upstreams.recordReach(chain, true, plan.rule?.pool);
          // The proxy takes the PROXY protocol: the header goes first, before any TLS.
          if (proxy.proxyProtocol) {
            const c = clientEndpoints(session);
            s.write(encodeProxyHeader(proxy.proxyProtocol, c.source, c.destination));
          }
          // An `https://` proxy: the absolute-form requests travel inside TLS too.
          return proxy.tls ? tlsToHop(s, proxy) : s;
        },
        (err: unknown) => {
          if (before.length === 0 && !options.signal?.aborted) options.upstreams.recordReach(chain, false, plan.rule?.pool);
          throw err;
        },
      ),
  };
  if (authorization) out.authorization = authorization;
  return out;
}

/**
 * One route of a plain HTTP request, for the forwarding engine (taps/http/forward.ts):
 * `absolute` — the chain ends in an HTTP proxy, the request goes to it in absolute-form over a
 * connection `dial()` makes to the proxy (`proxy` names it, `authorization` is the
 * Proxy-Authorization to add); `origin` — the chain (direct, SOCKS, or CONNECT through a proxy
 * that is not its last hop) reaches the origin itself, the request goes in origin-form.
 */
export interface HttpRoute {
  route: string;
  form: 'absolute' | 'origin';
  /** Pool key: connections are reused only between requests of the same key (and, origin-form, origin). */
  key: string;
  proxy?: HostPort;
  authorization?: string;
  dial(): Promise<Socket>;
}

export interface HttpRouteOptions extends RouteDialOptions {
  /** The protocol to route for when the session does not know it yet (a tunnel before sniffing). */
  proto?: string;
}

/**
 * The routes of a plain HTTP request to `dst`, in the order to try them, when the first of them
 * ends in an HTTP proxy; null otherwise (the request takes `dialRoute()` like any connection).
 * Later routes of the list are what `dialRoute()` would fall back to: each HTTP-proxy route in
 * absolute-form, every other in origin-form through its chain.
 */
export function httpRoutesFor(config: Config, dst: HostPort, session: Session, options: HttpRouteOptions): HttpRoute[] | null {
  const q = queryFor(session, dst, options.tapRule);
  if (options.proto !== undefined && q.proto === null) q.proto = options.proto;
  const plan = dialPlan(config, q, options.upstreams);
  const first = plan.chains[0];
  if (!first || first[first.length - 1]?.kind !== 'http') return null;
  const names = options.names;
  return plan.chains.map((chain): HttpRoute => {
    const last = chain[chain.length - 1];
    if (last?.kind === 'http') return absoluteFormRoute(config, chain, last, options, plan, session);
    const route = chainLabel(chain);
    return {
      route,
      form: 'origin',
      key: `${route}|${chain.map((h) => h.user ?? '').join(',')}${poolClient(chain, session)}`,
      dial: () =>
        dialChain(chain, dst, {
          timeoutMs: options.timeoutMs,
          signal: options.signal,
          names,
          ...(options.lookup ? { lookup: options.lookup } : {}),
          srcif: srcifOf(config, session),
          ...healthHook(chain, plan, options.upstreams),
          ...proxyHeaderOf(chain, session),
        }),
    };
  });
}

/** Whether any HTTP proxy is configured at all (PROXY=, a route's hop, a SOCKSTAP rule's PROXY=). */
const httpProxyConfigured = new WeakMap<Config, boolean>();

/**
 * A cheap first test for the HTTP request path: false means no request can go to an HTTP upstream
 * in absolute-form under this configuration, so `httpRoutesFor()` need not be asked.
 */
export function mayRouteHttpToProxy(config: Config): boolean {
  let known = httpProxyConfigured.get(config);
  if (known === undefined) {
    known =
      config.upstreams.some((u) => u.kind === 'http') ||
      (config.routes ?? []).some((r) => r.via.some((chain) => chain[chain.length - 1]?.kind === 'http')) ||
      config.taps.some((t) => (t.set.upstreams ?? []).some((u) => u.kind === 'http'));
    httpProxyConfigured.set(config, known);
  }
  return known;
}
