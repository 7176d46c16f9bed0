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

/**
 * A shared-cache policy whose heuristic freshness can be a fixed duration (EXPIRE).
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

  override maxAge(): number {
    const explicitOrLibrary = super.maxAge();
    return this.heuristicSeconds > explicitOrLibrary ? this.heuristicSeconds : explicitOrLibrary;
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
  const on = new CachePolicy(req, probe, { shared: true, cacheHeuristic: 1 }).maxAge();
  const off = new CachePolicy(req, probe, { shared: true, cacheHeuristic: 0 }).maxAge();
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
  const m = KEY_URL.exec(url);
  if (!m) return null;
  const scheme = m[1]!.toLowerCase();
  if (scheme !== 'http' && scheme !== 'https' && scheme !== 'ftp') return null;
  let authority: URL;
  try {
    // The authority alone goes through the URL parser; the path never does.
    authority = new URL(`${scheme}://${m[2]!}/`);
  } catch {
    return null;
  }
  if (authority.hostname === '') return null;
  let path = m[3]!;
  if (path === '') path = '/';
  else if (!path.startsWith('/')) path = `/${path}`;
  const origin = `${scheme}://${authority.host}`;
  return { href: `${origin}${path}`, host: authority.host, origin };
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
