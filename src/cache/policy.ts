/**
 * The bridge between sockstap's requests and `http-cache-semantics`, which owns every RFC 9111
 * rule (storability, freshness, Vary matching, validation, 304 merging). This file only adapts
 * types, pins the cache key's authority, and plugs EXPIRE into the library's heuristic.
 */
import type { IncomingHttpHeaders } from 'node:http';
import CachePolicy from 'http-cache-semantics';

export interface CacheRequest {
  method: string;
  /** The cache key URL: scheme://authority-really-reached/path?query. */
  url: string;
  headers: IncomingHttpHeaders;
  /**
   * EXPIRE for this request (a SOCKSTAP rule's `EXPIRE=`): the heuristic freshness its lookup and
   * store use instead of the cache's own; absent = the cache's.
   */
  heuristicMs?: number;
}

export interface CacheResponseHead {
  status: number;
  /** End-to-end fields only. */
  headers: IncomingHttpHeaders;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAY = '(Mon|Tue|Wed|Thu|Fri|Sat|Sun)';
const LONG_DAY = '(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)';
const MONTH = '(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)';
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})';
const IMF_FIXDATE = new RegExp(`^${DAY}, (\\d{2}) ${MONTH} (\\d{4}) ${TIME} GMT$`);
const RFC850_DATE = new RegExp(`^${LONG_DAY}, (\\d{2})-${MONTH}-(\\d{2}) ${TIME} GMT$`);
const ASCTIME_DATE = new RegExp(`^${DAY} ${MONTH} ([ \\d]\\d) ${TIME} (\\d{4})$`);

function utc(year: number, month: string, day: number, h: number, m: number, s: number): number {
  if (day < 1 || day > 31 || h > 23 || m > 59 || s > 60) return NaN;
  const t = Date.UTC(year, MONTHS.indexOf(month), day, h, m, Math.min(s, 59));
  // 31 Feb and the like roll over into the next month: not a date.
  return new Date(t).getUTCDate() === day ? t : NaN;
}

/**
 * An HTTP-date (RFC 9110 §5.6.7) in ms since the epoch, NaN when the value is not one. Strict: the
 * preferred IMF-fixdate and the two obsolete forms a recipient must still accept (rfc850-date,
 * asctime-date), nothing else — not `UTC` for `GMT`, not a missing comma, extra spaces, a one-digit
 * hour or trailing text, all of which `Date.parse` (what http-cache-semantics uses) accepts.
 */
export function parseHttpDate(value: string | string[] | undefined): number {
  if (typeof value !== 'string') return NaN;
  let m = IMF_FIXDATE.exec(value);
  if (m) return utc(Number(m[4]), m[3]!, Number(m[2]), Number(m[5]), Number(m[6]), Number(m[7]));
  m = RFC850_DATE.exec(value);
  if (m) {
    // RFC 9110 §5.6.7: a two-digit year more than 50 years in the future is the most recent past
    // year with those digits.
    const nowYear = new Date().getUTCFullYear();
    let year = Math.floor(nowYear / 100) * 100 + Number(m[4]);
    if (year > nowYear + 50) year -= 100;
    return utc(year, m[3]!, Number(m[2]), Number(m[5]), Number(m[6]), Number(m[7]));
  }
  m = ASCTIME_DATE.exec(value);
  if (m) return utc(Number(m[7]), m[2]!, Number(m[3]!.trim()), Number(m[4]), Number(m[5]), Number(m[6]));
  return NaN;
}

/**
 * Cache-Control as the library parses it, but with directive names case-insensitive (RFC 9111
 * §5.2: "Cache directives are identified by a token, to be compared case-insensitively"); the
 * library keeps the names as sent, so `No-CaChE` was no directive at all.
 */
export function parseCacheControl(header: string | string[] | undefined): Record<string, string | true> {
  const cc: Record<string, string | true> = {};
  if (header === undefined) return cc;
  const joined = Array.isArray(header) ? header.join(',') : header;
  if (joined.trim() === '') return cc;
  for (const part of joined.trim().split(',')) {
    const [k, v] = part.split('=', 2) as [string, string | undefined];
    const name = k.trim().toLowerCase();
    if (name === '') continue;
    cc[name] = v === undefined ? true : v.trim().replace(/^"|"$/g, '');
  }
  return cc;
}

/** The library's private state this file corrects (http-cache-semantics 4.x field names). */
interface LibraryState {
  _resHeaders: Record<string, string | string[] | undefined>;
  _rescc: Record<string, string | true>;
  _reqcc: Record<string, string | true>;
  _isShared: boolean;
  _responseTime: number;
}

/** The response fields as the library should read them for freshness: see `ProxyCachePolicy.maxAge`. */
const libraryViews = new WeakMap<object, Record<string, string | string[] | undefined>>();

function libraryView(h: Record<string, string | string[] | undefined>): Record<string, string | string[] | undefined> {
  let view = libraryViews.get(h);
  if (view) return view;
  view = { ...h };
  for (const name of ['date', 'last-modified', 'expires']) {
    if (h[name] === undefined) continue;
    const t = parseHttpDate(h[name]);
    if (Number.isFinite(t)) view[name] = new Date(t).toUTCString();
    // RFC 9111 §5.3: an invalid Expires (not an HTTP-date, "0" included) means already expired;
    // the library takes any value Date.parse cannot read as that.
    else if (name === 'expires') view[name] = 'invalid';
    // An invalid Date or Last-Modified is treated as absent (RFC 9110 §5.6.7, §6.6.1).
    else delete view[name];
  }
  libraryViews.set(h, view);
  return view;
}

/**
 * A shared-cache policy whose heuristic freshness can be a fixed duration (EXPIRE), with the
 * corrections RFC 9111 makes to http-cache-semantics 4.3 (each named at its method).
 *
 * The library's own heuristic (RFC 9111 §4.2.2) is a fraction (`cacheHeuristic`, 10%) of
 * Date − Last-Modified, and nothing without Last-Modified; `immutableMinTimeToLive` only applies to
 * `immutable` responses. EXPIRE is a duration for every response that may get heuristic freshness,
 * so the policy is built with `cacheHeuristic: 0` and this floor is applied to `maxAge()`, which all
 * of the library's freshness decisions (evaluateRequest, stale, timeToLive, Age warnings) go through.
 * `heuristicSeconds` is set only for responses the library itself would give heuristic freshness
 * (see `heuristicAllowed`), so explicit Cache-Control/Expires always win.
 */
export class ProxyCachePolicy extends CachePolicy {
  heuristicSeconds = 0;

  constructor(req: CachePolicy.Request, res: CachePolicy.Response, options?: CachePolicy.Options) {
    super(req, res, options);
    // RFC 9111 §5.2: directive names are case-insensitive (the library compares them as sent).
    // Not when restored from an object: its directives were parsed when it was stored.
    if (res?.headers) {
      const self = this as unknown as LibraryState;
      const cc = parseCacheControl(res.headers['cache-control']);
      // The library's one addition to Cache-Control: Pragma: no-cache without Cache-Control.
      if (self._rescc['no-cache'] === true && res.headers['cache-control'] === undefined) cc['no-cache'] = true;
      self._rescc = cc;
      self._reqcc = parseCacheControl(req.headers['cache-control']);
    }
  }

  private get state(): LibraryState {
    return this as unknown as LibraryState;
  }

  /**
   * RFC 9111 §5.2.2.2 (must-revalidate), §5.2.2.8 (proxy-revalidate, for a shared cache) and
   * §5.2.2.10 (s-maxage implies proxy-revalidate): these only bind once the response is stale.
   */
  private revalidateWhenStale(): boolean {
    const cc = this.state._rescc;
    return cc['must-revalidate'] !== undefined || (this.state._isShared && (cc['proxy-revalidate'] !== undefined || cc['s-maxage'] !== undefined));
  }

  override maxAge(): number {
    // Read the library's freshness rules over strictly parsed dates (RFC 9110 §5.6.7, RFC 9111
    // §5.3), and without proxy-revalidate, which the library takes as "never fresh" in a shared
    // cache while RFC 9111 §5.2.2.8 only forbids serving it stale (see evaluateRequest).
    const self = this.state;
    const headers = self._resHeaders;
    const cc = self._rescc;
    self._resHeaders = libraryView(headers);
    if (cc['proxy-revalidate'] !== undefined) {
      const { 'proxy-revalidate': _dropped, ...rest } = cc;
      self._rescc = rest;
    }
    let explicitOrLibrary: number;
    try {
      explicitOrLibrary = super.maxAge();
    } finally {
      self._resHeaders = headers;
      self._rescc = cc;
    }
    return this.heuristicSeconds > explicitOrLibrary ? this.heuristicSeconds : explicitOrLibrary;
  }

  /**
   * The library answers every request for a must-revalidate response with a revalidation, fresh
   * or not. RFC 9111 §5.2.2.2: must-revalidate only forbids reusing it once stale (and then
   * without validation even where max-stale or stale-if-error would allow it), so a fresh one is
   * evaluated as if the directive were absent, and a stale one keeps the directive.
   */
  override evaluateRequest(req: CachePolicy.HttpRequest): CachePolicy.EvaluateRequestResult {
    const self = this.state;
    const cc = self._rescc;
    if (cc['must-revalidate'] === undefined && !(self._isShared && cc['proxy-revalidate'] !== undefined)) {
      return super.evaluateRequest(req);
    }
    if (this.stale()) {
      // Stale: the library's must-revalidate branch (always validate) applies.
      self._rescc = { ...cc, 'must-revalidate': true };
    } else {
      const { 'must-revalidate': _m, 'proxy-revalidate': _p, ...rest } = cc;
      self._rescc = rest;
    }
    try {
      return super.evaluateRequest(req);
    } finally {
      self._rescc = cc;
    }
  }

  /** RFC 9111 §5.2.2.2, §5.2.2.8: never served stale on an error either (RFC 5861 §4 defers to them). */
  _useStaleIfError(): boolean {
    if (this.revalidateWhenStale()) return false;
    return (CachePolicy.prototype as unknown as { _useStaleIfError(this: CachePolicy): boolean })._useStaleIfError.call(this);
  }

  /** RFC 5861 §3 defers to must-revalidate and proxy-revalidate as well. */
  useStaleWhileRevalidate(): boolean {
    if (this.revalidateWhenStale()) return false;
    return (CachePolicy.prototype as unknown as { useStaleWhileRevalidate(this: CachePolicy): boolean }).useStaleWhileRevalidate.call(this);
  }

  /**
   * RFC 9111 §5.1: Age is delta-seconds (digits only); any other value, a fraction included, is
   * invalid and ignored (the library's parseInt read "7200.5" as 7200).
   */
  _ageValue(): number {
    const v = this.state._resHeaders.age;
    const s = Array.isArray(v) ? v[0] : v;
    if (typeof s !== 'string' || !/^\s*\d+\s*$/.test(s)) return 0;
    return Math.min(Number(s), 2 ** 31);
  }

  /** When this response was received (ms since the epoch). */
  responseTime(): number {
    return this.state._responseTime;
  }

  /** The stored response fields, as received (after any 304 merges). */
  storedHeaders(): Record<string, string | string[] | undefined> {
    return this.state._resHeaders;
  }
}

/** Options every policy of this cache is built with: a proxy is a shared cache (RFC 9111 §1). */
export function policyOptions(heuristicMs: number | undefined): CachePolicy.Options {
  // With EXPIRE set it replaces the Last-Modified fraction; without it, the library's default (10%).
  return heuristicMs === undefined ? { shared: true } : { shared: true, cacheHeuristic: 0 };
}

/** Why the probe spans 100 days: long enough that any heuristic fraction > 0 yields a positive lifetime. */
const PROBE_LAST_MODIFIED_AGE_MS = 100 * 24 * 3600 * 1000;

/**
 * Whether RFC 9111 §4.2.2 lets this response have heuristic freshness, as the library decides it:
 * no explicit expiration (max-age, s-maxage, Expires), a status cacheable by default or `public`,
 * and none of no-cache, proxy-revalidate, Vary: *, or (the library's shared-cache rule) Set-Cookie.
 * Asked by giving the library a synthetic Last-Modified and comparing the lifetime it computes with
 * its heuristic on and off: they differ only when the heuristic branch was reached.
 */
export function heuristicAllowed(req: CachePolicy.HttpRequest, res: CachePolicy.HttpResponse): boolean {
  const now = Date.now();
  const headers = {
    ...res.headers,
    date: new Date(now).toUTCString(),
    'last-modified': new Date(now - PROBE_LAST_MODIFIED_AGE_MS).toUTCString(),
  };
  const probe = { status: res.status, headers };
  const on = new ProxyCachePolicy(req, probe, { shared: true, cacheHeuristic: 1 }).maxAge();
  const off = new ProxyCachePolicy(req, probe, { shared: true, cacheHeuristic: 0 }).maxAge();
  return on > off;
}

/** Attach EXPIRE to a policy when the response may have heuristic freshness. */
export function applyHeuristic(policy: ProxyCachePolicy, allowed: boolean, heuristicMs: number | undefined): void {
  policy.heuristicSeconds = allowed && heuristicMs !== undefined ? heuristicMs / 1000 : 0;
}

/**
 * The library parses field values as strings (Node joins most repeated fields already); a list is
 * joined with ", " (RFC 9110 §5.3), except Set-Cookie, which cannot be joined and stays a list.
 */
export function libraryHeaders(h: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(h)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) out[name] = name === 'set-cookie' ? [...value] : value.join(', ');
    else out[name] = value;
  }
  return out;
}

/** Back to Node's header type: Set-Cookie is always a list there. */
export function nodeHeaders(h: CachePolicy.Headers): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  for (const [name, value] of Object.entries(h)) {
    if (value === undefined) continue;
    if (name === 'set-cookie') out['set-cookie'] = Array.isArray(value) ? [...value] : [value];
    else out[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

/** A cache key: the canonical URL (`href`), its authority (`host`) and its origin. */
export interface CacheKey {
  href: string;
  /** host[:port] as in a URL (port omitted when it is the scheme's default). */
  host: string;
  /** scheme://host[:port] */
  origin: string;
}

const KEY_URL = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^#]*)/;

/**
 * The canonical form of a cache key URL, or null when it is not an absolute http(s)/ftp URL.
 * Only the scheme and the authority are canonicalised (lower case, IDNA, IPv6 compressed, no
 * default port, no user information); the path and query are kept **byte for byte as sent** —
 * no removal of `.`/`..` segments, no decoding of `%2e`, no re-encoding — because that is what
 * the origin receives: a key built with `new URL()` stored the answer to
 * `/a/x/%2e%2e/%2e%2e/a/v1` under `/a/v1` (issue 13, finding 2). The fragment is dropped.
 */
export function canonicalKey(url: string): CacheKey | null {
  const parts = keyParts(url);
  if (!parts) return null;
  const scheme = parts.scheme.toLowerCase();
  if (scheme !== 'http' && scheme !== 'https' && scheme !== 'ftp') return null;
  const authority = canonicalAuthority(scheme, parts.authority);
  if (!authority) return null;
  let path = parts.rest;
  if (path === '') path = '/';
  else if (!path.startsWith('/')) path = `/${path}`;
  return { href: `${authority.origin}${path}`, host: authority.host, origin: authority.origin };
}

/**
 * KEY_URL's three parts (scheme, authority, path and query without the fragment), read without
 * the regular expression for the URLs every lookup builds (`http://host:port/path`); anything
 * else goes through KEY_URL itself.
 */
function keyParts(url: string): { scheme: string; authority: string; rest: string } | null {
  const colon = url.indexOf('://');
  if (colon > 0 && colon <= 5) {
    const scheme = url.slice(0, colon);
    if (scheme === 'http' || scheme === 'https') {
      const start = colon + 3;
      let end = start;
      while (end < url.length) {
        const c = url.charCodeAt(end);
        if (c === 0x2f || c === 0x3f || c === 0x23) break; // / ? #
        end++;
      }
      const hash = url.indexOf('#', end);
      return { scheme, authority: url.slice(start, end), rest: hash < 0 ? url.slice(end) : url.slice(end, hash) };
    }
  }
  const m = KEY_URL.exec(url);
  return m ? { scheme: m[1]!, authority: m[2]!, rest: m[3]! } : null;
}

/**
 * The authorities canonicalKey has seen, canonical (a hit asks for the same few hosts again and
 * again; the URL parser is the most expensive step of a lookup). Bounded: emptied when full.
 */
const authorities = new Map<string, { host: string; origin: string } | null>();
const MAX_AUTHORITIES = 4096;

function canonicalAuthority(scheme: string, raw: string): { host: string; origin: string } | null {
  const memo = `${scheme}://${raw}`;
  const known = authorities.get(memo);
  if (known !== undefined) return known;
  let result: { host: string; origin: string } | null = null;
  try {
    // The authority alone goes through the URL parser; the path never does.
    const authority = new URL(`${memo}/`);
    if (authority.hostname !== '') result = { host: authority.host, origin: `${scheme}://${authority.host}` };
  } catch {
    result = null;
  }
  if (authorities.size >= MAX_AUTHORITIES) authorities.clear();
  authorities.set(memo, result);
  return result;
}

/**
 * The request as the library sees it. `Host` is replaced by the key's authority: the library
 * matches stored responses by URL and Host, and the key's authority is the one the connection
 * really reaches, so a forged Host header can neither select nor create another host's entry.
 * HEAD is evaluated as GET, because a HEAD is answered from the stored GET response (RFC 9110 §9.3.2).
 */
export function libraryRequest(req: CacheRequest, key: CacheKey): CachePolicy.HttpRequest {
  const headers = libraryHeaders(req.headers);
  headers.host = key.host;
  // RFC 9111 §5.2: request directive names are case-insensitive too; the library reads them as sent.
  const cc = headers['cache-control'];
  if (typeof cc === 'string' && /[A-Z]/.test(cc)) headers['cache-control'] = cc.replace(/(^|,)\s*([^=,]+)/g, (m) => m.toLowerCase());
  const method = req.method.toUpperCase();
  return { method: method === 'HEAD' ? 'GET' : method, url: key.href, headers };
}

/** Fields named by Vary (lower case), or null for `Vary: *`, which never matches (RFC 9111 §4.1). */
function varyFields(vary: string | string[] | undefined): string[] | null {
  if (vary === undefined) return [];
  const joined = Array.isArray(vary) ? vary.join(',') : vary;
  const names = joined
    .toLowerCase()
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (names.includes('*')) return null;
  return [...new Set(names)].sort();
}

/**
 * The secondary key of a stored response (RFC 9111 §4.1): the request's values of the fields its
 * Vary names, compared exactly as the library compares them. Used to replace the older response of
 * the same variant and to pick a stale variant to revalidate; null for `Vary: *`.
 */
export function varyKey(vary: string | string[] | undefined, reqHeaders: CachePolicy.Headers): string | null {
  const fields = varyFields(vary);
  if (fields === null) return null;
  return JSON.stringify(fields.map((f) => [f, reqHeaders[f] ?? null]));
}

/** Hop-by-hop fields (RFC 9110 §7.6.1), never stored for forwarding nor served from the cache. */
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * The head a stored response is served with (RFC 9111 §4): its fields as stored, without the
 * hop-by-hop ones, and Age computed for now (§4.2.3, §5.1). Unlike the library's
 * `responseHeaders()`, which sets Date to now, the stored Date is kept: it says when the origin
 * generated the response (RFC 9110 §6.6.1), and a client computes the age from it. A response that
 * arrived without Date gets the time it was received (RFC 9110 §6.6.1: a recipient with a clock
 * that caches a response without Date appends one).
 */
export function servedHeaders(policy: ProxyCachePolicy): IncomingHttpHeaders {
  const out = servedHeadersWithoutAge(policy);
  out.age = String(Math.floor(policy.age()));
  return out;
}

/** `servedHeaders` before Age is added: what an entry keeps ready between stores and revalidations. */
export function servedHeadersWithoutAge(policy: ProxyCachePolicy): IncomingHttpHeaders {
  const stored = policy.storedHeaders();
  const out: IncomingHttpHeaders = {};
  const connection = stored.connection;
  const named = new Set(
    (Array.isArray(connection) ? connection.join(',') : (connection ?? ''))
      .toLowerCase()
      .split(',')
      .map((t) => t.trim())
      .filter(Boolean),
  );
  for (const [name, value] of Object.entries(stored)) {
    if (value === undefined || HOP_BY_HOP.has(name) || named.has(name)) continue;
    if (name === 'set-cookie') out['set-cookie'] = Array.isArray(value) ? [...value] : [value];
    else out[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  if (out.date === undefined) out.date = new Date(policy.responseTime()).toUTCString();
  delete out.age;
  return out;
}
