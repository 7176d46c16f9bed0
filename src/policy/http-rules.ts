/**
 * Checkpoint 3 for HTTP: PERMIT/REJECT decided per request, on the request's URL and method, for
 * the HTTP door and the HTTP tap alike. Pure: no sockets, no name resolution.
 *
 * Only *request rules* are asked here: rules whose protocol list names `http` (or `*`) and whose
 * destination list has a URL element (`http://host/path*`), and rules whose protocol list names a
 * method (`http/POST`). Every other rule was already decided at checkpoint 2, when the destination
 * became known, and asking it again without the destination's addresses could change its answer.
 * Among request rules the first match wins; none matching permits.
 *
 *   REJECT=http:http://ads.test/*:*             every request under that site
 *   REJECT=http/post,http/put:http://wiki.test/*:*   those methods only
 *   REJECT=http/post,http/put,http/delete:*:*         a read-only web for everyone
 */
import { isIP } from 'node:net';
import type { AccessRule, Config } from '../config/types.js';
import { accessDecision, type Decision } from './acl.js';
import { firstMatch } from '../config/first-match.js';

export interface HttpRequestQuery {
  clientAddress: string;
  user: string | null;
  method: string;
  /** The absolute request URL after MOUNT: http://host:port/path?query */
  url: string;
  host: string;
  port: number;
  now?: Date;
}

const URL_ELEMENT = /(^|[,{!\s])[a-z][a-z0-9+.-]*:\/\//i;

/** Per rules array: which rules are request rules (configs are immutable). */
const requestRulesCache = new WeakMap<readonly AccessRule[], AccessRule[]>();

function isMethodElement(p: string): boolean {
  return p.startsWith('http/');
}

function isRequestRule(rule: AccessRule): boolean {
  if (rule.protocols.some(isMethodElement)) return true;
  const http = rule.protocols.includes('*') || rule.protocols.includes('http');
  return http && URL_ELEMENT.test(rule.dst.source);
}

export function requestRules(config: Config): AccessRule[] {
  let list = requestRulesCache.get(config.rules);
  if (!list) {
    list = config.rules.filter(isRequestRule);
    requestRulesCache.set(config.rules, list);
  }
  return list;
}

function protocolMatches(rule: AccessRule, method: string): boolean {
  const methodTag = `http/${method.toLowerCase()}`;
  let named = false;
  for (const p of rule.protocols) {
    if (isMethodElement(p)) {
      named = true;
      if (p === methodTag) return true;
    }
  }
  // A rule that names methods applies to those only; otherwise `http` or `*` matched the rule in.
  return !named;
}

/** Checkpoint 3: may this HTTP request go on? */
export function checkHttpRequest(config: Config, q: HttpRequestQuery): Decision {
  const rules = requestRules(config);
  if (rules.length === 0) return accessDecision(null);
  const now = q.now ?? new Date();
  const user = q.user ?? undefined;
  const addresses = isIP(q.host) ? [q.host] : undefined;
  const rule = firstMatch(
    rules,
    (rule) =>
      protocolMatches(rule, q.method) &&
      (!rule.when || rule.when.contains(now)) &&
      rule.src.matches({ host: q.clientAddress, addresses: [q.clientAddress], user }) &&
      rule.dst.matches({ host: q.host, addresses, port: q.port, user, url: q.url }),
  );
  return accessDecision(rule);
}

export interface DestinationQuery {
  clientAddress: string;
  user: string | null;
  host: string;
  port: number;
  now?: Date;
}

/** `http://AUTHORITY/...` elements of a host list's text, as globs on the authority. */
function urlAuthorities(source: string): RegExp[] {
  const out: RegExp[] = [];
  for (const m of source.matchAll(/[a-z][a-z0-9+.-]*:\/\/([^/,\s{}]*)/gi)) {
    const body = m[1]!
      .split('*')
      .map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*');
    out.push(new RegExp(`^${body}$`, 'i'));
  }
  return out;
}

/**
 * Whether some request rule could decide a request on a tunnel to this destination: the tap must
 * then interpret the stream or refuse it (fail closed), since a stream it cannot read would carry
 * requests no rule saw. Errs on the side of "yes" (a negated element, a method rule for every site).
 */
export function requestRulesMayApply(config: Config, q: DestinationQuery): boolean {
  const rules = requestRules(config);
  if (rules.length === 0) return false;
  const now = q.now ?? new Date();
  const user = q.user ?? undefined;
  const host = q.host.toLowerCase().replace(/\.$/, '');
  const addresses = isIP(host) ? [host] : undefined;
  for (const rule of rules) {
    if (rule.when && !rule.when.contains(now)) continue;
    if (!rule.src.matches({ host: q.clientAddress, addresses: [q.clientAddress], user })) continue;
    const source = rule.dst.source;
    if (source.includes('!')) return true;
    // Elements that are not URLs (a method rule's `*`, names, addresses) match as for a tunnel.
    if (rule.dst.matches({ host, addresses, port: q.port, user })) return true;
    const authority = q.host.includes(':') ? `[${host}]` : host;
    for (const re of urlAuthorities(source)) {
      if (re.test(authority) || re.test(`${authority}:${q.port}`)) return true;
    }
  }
  return false;
}
