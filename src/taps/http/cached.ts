/**
 * The one request path of proxied HTTP: the HTTP door's absolute-form requests and every request
 * of the HTTP tap come through `serveHttp()`, so MOUNT, checkpoint 3, header rules, the cache and
 * access.log behave the same whichever way a request arrived.
 *
 * Order: MOUNT rewrites the target → checkpoint 3 (PERMIT/REJECT on URL and method) → header rules
 * → cache (RFC 9111 through HttpCache / http-cache-semantics) → origin through the forwarding
 * engine (forward.ts). Cache outcomes, in Squid's words:
 *
 *   fresh stored response                  TCP_HIT (TCP_IMS_HIT when answered 304 to the client's
 *                                          own conditional); no origin connection at all
 *   stale → conditional request → 304      TCP_REFRESH_UNMODIFIED (stored body, merged head)
 *   stale → conditional request → 200      TCP_REFRESH_MODIFIED (relayed and stored again)
 *   stale → 5xx, stale-if-error allowed    TCP_REFRESH_FAIL_OLD
 *   not stored                             TCP_MISS (streamed to the client while stored)
 *
 * The cache key is `http://<host>:<port><path>`, the path exactly as sent: for a tapped tunnel the
 * tunnel's destination, whose Host the tap has verified (host-check.ts: a Host naming another host
 * is refused), or the Host's name when the tunnel goes to an address that name resolves to.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { CacheHit, CacheRequest, CacheResponseHead, CacheWriter, HttpCache } from '../../cache/http-cache.js';
import type { Config, HeaderEdits, HostPort, Timeouts } from '../../config/types.js';
import { toProxyError } from '../../core/errors.js';
import type { Session } from '../../core/session.js';
import type { ProxyEvents } from '../../observe/events.js';
import type { Logger } from '../../observe/log.js';
import { checkHttpRequest } from '../../policy/http-rules.js';
import {
  forwardHttpRequest,
  type BodySink,
  type ForwardOptions,
  type ForwardRoute,
  type ForwardTarget,
  type ResponsePlan,
} from './forward.js';
import { urlAuthority } from '../../http1/authority.js';
import { accessRecord, headBytes } from '../../http1/access.js';
import { endSoon } from '../../http1/end-soon.js';
import { forbiddenPage, refuseRequest } from '../../http1/error-page.js';
import type { OriginPool } from './origin-pool.js';
import { appendVia, applyHeaderEdits, headersFromRaw, mediaType, rawFromHeaders, rawHeaderValue } from './headers.js';
import { applyMounts, mapBackHeaders, mountRequestOf } from './mount.js';
import { sendFile, type SendFile } from '../../cache/send-file.js';
import { hitPublisher } from '../../http1/hit-offer.js';

export interface ServeOptions {
  session: Session;
  /** The running instance's origin pool. */
  origins: OriginPool;
  /** Where the request goes as received: the absolute-form target, or the tunnel's destination and path. */
  target: ForwardTarget;
  /** `keep` for a tapped tunnel (forward the client's Host), `target` for absolute-form. */
  host: 'keep' | 'target';
  /**
   * The host the cache key names instead of `target.host`: the name in the Host of a request in a
   * tunnel to an address, verified to resolve to that address (host-check.ts). Not used once
   * MOUNT has moved the request.
   */
  keyHost?: string;
  /**
   * Reach an origin (the tunnel's own dialer for its destination, the pipeline's otherwise);
   * `scheme` is the request's after MOUNT (`https`: over TLS, for an intercepted tunnel).
   */
  dial(dst: HostPort, scheme?: 'http' | 'https'): Promise<Socket>;
  /**
   * `https` for the requests of an intercepted TLS tunnel: URLs (policy, access.log, the cache
   * key) say https://, never mixed with the http:// entries of the same host. Default `http`.
   */
  scheme?: 'http' | 'https';
  /**
   * Checkpoint 2 for a destination MOUNT moved the request to (rejects with a ProxyError when
   * refused); the request's own destination has passed it already.
   */
  authorize(dst: HostPort): Promise<void>;
  cache: HttpCache | null;
  config: Config;
  events: ProxyEvents;
  log: Logger;
  via: string;
  timeouts: Timeouts;
  poolKey?: string;
  /**
   * The router's routes for a request to `dst` when they start with an HTTP upstream (absolute-form),
   * else null (the request goes through `dial`). Absent when no HTTP upstream is configured at
   * all; asked only when a request leaves for the network, so a cache hit costs nothing.
   */
  routesFor?(dst: HostPort): readonly ForwardRoute[] | null;
  /**
   * An origin-form request on the HTTP door (reverse proxy): `target` is the virtual one (the
   * Host the client named, or the door's own address) and only a MOUNT may send it anywhere.
   */
  originForm?: boolean;
}

/** RFC 9110 §9.2.1. */
const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);

/** Conditional request fields (RFC 9110 §13.1) that a revalidation replaces with the entry's validators. */
const CONDITIONAL_FIELDS = ['if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range'];

/** Fields a 304 carries (RFC 9110 §15.4.5). */
const NOT_MODIFIED_FIELDS = ['cache-control', 'content-location', 'date', 'etag', 'expires', 'vary', 'last-modified', 'age'];

/** The 403 of checkpoint 3, logged. */
function denyRequest(req: IncomingMessage, res: ServerResponse, o: ServeOptions, url: string, by: string, mountedFrom?: string): void {
  o.log.info('http request refused', { session: o.session.id, url, method: req.method, by });
  refuseRequest(req, res, o.session, o.events, 'EDENIED', '', url, mountedFrom, forbiddenPage(req.method, url, by));
}

/** The weak comparison of entity tags (RFC 9110 §8.8.3.2) of If-None-Match against a stored ETag. */
function noneMatchHit(ifNoneMatch: string, etag: string | undefined): boolean {
  if (ifNoneMatch.trim() === '*') return etag !== undefined;
  if (!etag) return false;
  const weak = (t: string): string => t.trim().replace(/^W\//, '');
  const mine = weak(etag);
  return ifNoneMatch.split(',').some((t) => weak(t) === mine);
}

/**
 * Whether the client's own conditional request is satisfied by a stored 200 (RFC 9110 §13.2.2:
 * If-None-Match first; If-Modified-Since only without it, and only for GET/HEAD).
 */
function clientNotModified(reqHeaders: IncomingHttpHeaders, head: CacheResponseHead): boolean {
  if (head.status !== 200) return false;
  const inm = reqHeaders['if-none-match'];
  const etag = typeof head.headers.etag === 'string' ? head.headers.etag : undefined;
  if (inm !== undefined) return noneMatchHit(inm, etag);
  const ims = reqHeaders['if-modified-since'];
  const lm = head.headers['last-modified'];
  if (ims === undefined || typeof lm !== 'string') return false;
  const since = Date.parse(ims);
  const modified = Date.parse(lm);
  return Number.isFinite(since) && Number.isFinite(modified) && modified <= since;
}

/**
 * The part of a stored complete 200 a Range request asks for (RFC 9110 §14.2): one byte range,
 * `unsatisfiable` (416), or null to send the whole representation — no Range, a Range that is not
 * one `bytes` range (several ranges are answered whole, which RFC 9110 §14.2 allows), or an
 * If-Range that does not match (§13.1.5: a strong entity tag, or the Last-Modified date exactly).
 */
function requestedRange(
  reqHeaders: IncomingHttpHeaders,
  head: CacheResponseHead,
  size: number,
): { start: number; end: number } | 'unsatisfiable' | null {
  const range = reqHeaders.range;
  if (head.status !== 200 || typeof range !== 'string') return null;
  const ifRange = reqHeaders['if-range'];
  if (ifRange !== undefined) {
    const v = (Array.isArray(ifRange) ? ifRange.join(', ') : ifRange).trim();
    if (v.startsWith('"') || v.startsWith('W/')) {
      const etag = head.headers.etag;
      if (v.startsWith('W/') || typeof etag !== 'string' || etag.startsWith('W/') || etag !== v) return null;
    } else if (v !== head.headers['last-modified']) return null;
  }
  const m = /^bytes=[ \t]*(\d*)[ \t]*-[ \t]*(\d*)[ \t]*$/i.exec(range);
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== '' && Number(m[2]) < start) return null; // invalid range: ignored (RFC 9110 §14.1.1)
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

/** A cache writer as the forwarder's body sink; `settled` resolves once the store is over. */
function storeSink(writer: CacheWriter, onSettled: () => void): BodySink {
  let over = false;
  const settle = (): void => {
    if (over) return;
    over = true;
    onSettled();
  };
  return {
    write: (chunk) => writer.write(chunk),
    end: () => {
      void writer.end().finally(settle);
    },
    abort: () => {
      writer.abort();
      settle();
    },
  };
}

/** Serves one proxied HTTP request. Never throws; every outcome ends in one access record. */
export function serveHttp(req: IncomingMessage, res: ServerResponse, o: ServeOptions): void {
  const method = (req.method ?? 'GET').toUpperCase();
  let target = o.target;
  let hostMode = o.host;
  const askedScheme = o.scheme ?? 'http';
  let scheme = askedScheme;
  // mountRequestOf parses the Host: only asked for when there are mounts to match.
  const mounted = o.config.mounts.length === 0 ? null : applyMounts(o.config.mounts, target, mountRequestOf(req, o.session, o.originForm === true));
  // The URL as the client asked it (for an origin-form request: its Host and path).
  const asked = `${askedScheme}://${urlAuthority(askedScheme, target)}${target.path}`;
  if (o.originForm && !mounted) {
    // The door matched a MOUNT under the configuration it saw; a reload has removed it since.
    refuseRequest(req, res, o.session, o.events, 'EPROTO', 'no MOUNT serves this path (the configuration changed)', asked);
    return;
  }
  let mapResponseHead: ((raw: string[]) => void) | undefined;
  if (mounted) {
    target = { host: mounted.host, port: mounted.port, path: mounted.path };
    // Inside an intercepted tunnel the real URL's scheme says how its server is reached.
    if (o.scheme === 'https') scheme = /^https:/i.test(mounted.mount.to) ? 'https' : 'http';
    // The request now goes to the real URL's server, which is named in its Host (RFC 9112 §3.2).
    hostMode = 'target';
    if (!mounted.mount.forwardOnly) {
      const virtual = { host: o.target.host, port: o.target.port };
      mapResponseHead = (raw) => mapBackHeaders(raw, mounted, virtual);
    }
  }
  const url = mounted ? `${scheme}://${urlAuthority(scheme, target)}${target.path}` : asked;
  const mountedFrom = mounted ? asked : undefined;

  const decision = checkHttpRequest(o.config, {
    clientAddress: o.session.clientAddress,
    user: o.session.user,
    method,
    url,
    host: target.host,
    port: target.port,
  });
  if (!decision.allowed) {
    denyRequest(req, res, o, url, decision.by, mountedFrom);
    return;
  }
  // An origin-form request's virtual target was never a destination: its real one always passes
  // checkpoint 2 here.
  const moved = mounted !== null && (o.originForm === true || target.host !== o.target.host || target.port !== o.target.port);
  // The verified Host name keys the entry only while the request goes where it came for.
  const keyHost = mounted ? undefined : o.keyHost;
  const mount: MountEffects = { mountedFrom, mapResponseHead };
  if (!moved) {
    // The request's own destination has passed checkpoint 2 already: on at once (the hit path).
    serveAllowed(req, res, scheme === askedScheme ? o : { ...o, scheme }, target, hostMode, url, method, mount, keyHost);
    return;
  }
  o.authorize({ host: target.host, port: target.port }).then(
    () => serveAllowed(req, res, scheme === askedScheme ? o : { ...o, scheme }, target, hostMode, url, method, mount, keyHost),
    (err: unknown) => {
      const e = toProxyError(err);
      refuseRequest(req, res, o.session, o.events, e.code, e.message, url, mountedFrom);
    },
  );
}

/** What MOUNT adds to a request's exchange: the asked URL for access.log, Location mapped back. */
interface MountEffects {
  mountedFrom: string | undefined;
  mapResponseHead: ((raw: string[]) => void) | undefined;
}

function serveAllowed(
  req: IncomingMessage,
  res: ServerResponse,
  o: ServeOptions,
  target: ForwardTarget,
  hostMode: 'keep' | 'target',
  url: string,
  method: string,
  mount: MountEffects,
  keyHost: string | undefined,
): void {
  const edits = o.config.httpHeaders;
  // The request's own list unless header rules edit it (nothing below changes it otherwise).
  let raw: readonly string[] = req.rawHeaders;
  if (edits) {
    const edited = [...req.rawHeaders];
    applyHeaderEdits(edited, edits.request);
    raw = edited;
  }
  const responseEdits = edits && (edits.response.set.length > 0 || edits.response.remove.length > 0) ? edits.response : undefined;

  const forward = (extra: {
    rawHeaders?: string[];
    onResponseHead?: (response: IncomingMessage) => ResponsePlan | Promise<ResponsePlan>;
    onFinished?: () => void;
  }): void => {
    const options: ForwardOptions = {
      session: o.session,
      origins: o.origins,
      target,
      dial: (d) => o.dial(d, o.scheme ?? 'http'),
      events: o.events,
      log: o.log,
      via: o.via,
      timeouts: o.timeouts,
      url,
      ...(mount.mountedFrom !== undefined ? { mountedFrom: mount.mountedFrom } : {}),
      ...(mount.mapResponseHead ? { mapResponseHead: mount.mapResponseHead } : {}),
      host: hostMode,
      rawHeaders: extra.rawHeaders ?? raw,
      ...(o.poolKey !== undefined ? { poolKey: o.poolKey } : {}),
      ...(responseEdits ? { responseEdits } : {}),
      ...(extra.onResponseHead ? { onResponseHead: extra.onResponseHead } : {}),
      ...(extra.onFinished ? { onFinished: extra.onFinished } : {}),
    };
    if (o.routesFor) {
      const routes = o.routesFor({ host: target.host, port: target.port });
      if (routes) options.routes = routes;
    }
    forwardHttpRequest(req, res, options);
  };

  const cache = o.cache;
  // An Upgrade is a tunnel, not a cacheable exchange; the tap handles it before this point.
  if (!cache || rawHeaderValue(raw, 'upgrade') !== undefined) {
    forward({});
    return;
  }
  const named = keyHost ?? target.host;
  const host = named.includes(':') ? `[${named}]` : named;
  const cacheReq: CacheRequest = { method, url: `${o.scheme ?? 'http'}://${host}:${target.port}${target.path}`, headers: headersFromRaw(raw) };
  // EXPIRE of the SOCKSTAP rule whose tunnel this is (the pipeline's rule view), else the cache's own.
  if (o.config.cache.expire !== undefined) cacheReq.heuristicMs = o.config.cache.expire;

  if (!SAFE_METHODS.has(method)) {
    // RFC 9111 §4.4: a non-error response to an unsafe method invalidates the URL (and same-origin
    // Location / Content-Location).
    forward({
      onResponseHead: (response) => {
        void cache.invalidateAfter(cacheReq, { status: response.statusCode ?? 0, headers: response.headers });
        return { kind: 'relay', resultCode: 'TCP_MISS' };
      },
    });
    return;
  }
  if ((method !== 'GET' && method !== 'HEAD') || cacheReq.headers.authorization !== undefined) {
    // A request with credentials is never answered from the cache; its response may still be
    // stored when the library allows it (RFC 9111 §3.5: public, s-maxage, must-revalidate).
    forward(method === 'GET' ? { onResponseHead: (r) => storePlan(cache, cacheReq, r, 'TCP_MISS', null) } : {});
    return;
  }
  const state: RequestState = { req, res, o, cache, cacheReq, raw, responseEdits, url, mount, forward };
  void lookupAndServe(state, true).catch((err: unknown) => {
    o.log.warn('cache lookup failed', { session: o.session.id, url, error: err instanceof Error ? err.message : String(err) });
    forward({});
  });
}

interface RequestState {
  req: IncomingMessage;
  res: ServerResponse;
  o: ServeOptions;
  cache: HttpCache;
  cacheReq: CacheRequest;
  raw: readonly string[];
  responseEdits: HeaderEdits | undefined;
  url: string;
  mount: MountEffects;
  forward(extra: {
    rawHeaders?: string[];
    onResponseHead?: (response: IncomingMessage) => ResponsePlan | Promise<ResponsePlan>;
    onFinished?: () => void;
  }): void;
}

/** Plan for a response that may be stored: relay it and feed the store; `settled` once the store is over. */
function storePlan(
  cache: HttpCache,
  cacheReq: CacheRequest,
  response: IncomingMessage,
  resultCode: string,
  settled: (() => void) | null,
): ResponsePlan {
  const status = response.statusCode ?? 0;
  const writer =
    cacheReq.method === 'GET' && status !== 304 && status !== 206
      ? cache.beginStore(cacheReq, { status, headers: response.headers })
      : null;
  if (!writer) {
    settled?.();
    return { kind: 'relay', resultCode };
  }
  return { kind: 'relay', resultCode, sink: storeSink(writer, settled ?? (() => undefined)) };
}

async function lookupAndServe(s: RequestState, mayJoin: boolean): Promise<void> {
  const { cache, cacheReq } = s;
  // This process's own store answers at once (no promise, no turn of the microtask queue).
  const now = cache.lookupNow(cacheReq);
  const hit = now !== undefined ? now : await cache.lookup(cacheReq);
  if (s.res.destroyed) return;
  if (hit?.fresh) {
    if (await serveStored(s, hit, null, 'TCP_HIT', Date.now())) return;
  } else if (hit) {
    revalidate(s, hit);
    return;
  }
  // A miss. Concurrent misses of one URL are collapsed: one leader fetches and stores, the others
  // wait for it and look again (once; a second miss fetches on its own).
  if (!mayJoin) {
    s.forward({ onResponseHead: (r) => storePlan(cache, cacheReq, r, 'TCP_MISS', null) });
    return;
  }
  const joined = cache.joinFetch(cacheReq.url);
  if (!joined.leader) {
    await joined.wait;
    if (s.res.destroyed) return;
    await lookupAndServe(s, false);
    return;
  }
  let done = false;
  const release = (): void => {
    if (done) return;
    done = true;
    joined.done();
  };
  let storing = false;
  s.forward({
    onResponseHead: (r) => {
      const plan = storePlan(cache, cacheReq, r, 'TCP_MISS', release);
      storing = plan.kind === 'relay' && plan.sink !== undefined;
      return plan;
    },
    // Without a store in progress the followers may go now (they will miss and fetch themselves).
    onFinished: () => {
      if (!storing) release();
    },
  });
}

/** RFC 9111 §4.3: a stale stored response is validated with a conditional request. */
function revalidate(s: RequestState, hit: CacheHit): void {
  const { cache, cacheReq } = s;
  const conditional = hit.revalidationHeaders(cacheReq);
  const raw = [...s.raw];
  for (let i = raw.length - 2; i >= 0; i -= 2) {
    if (CONDITIONAL_FIELDS.includes(raw[i]!.toLowerCase())) raw.splice(i, 2);
  }
  for (const [name, value] of Object.entries(conditional)) {
    if (typeof value === 'string') raw.push(name, value);
  }
  const started = Date.now();
  s.forward({
    rawHeaders: raw,
    onResponseHead: async (response): Promise<ResponsePlan> => {
      const head: CacheResponseHead = { status: response.statusCode ?? 0, headers: response.headers };
      const r = await hit.revalidated(cacheReq, head);
      if (r.modified) return storePlan(cache, cacheReq, response, 'TCP_REFRESH_MODIFIED', null);
      const code = head.status === 304 ? 'TCP_REFRESH_UNMODIFIED' : 'TCP_REFRESH_FAIL_OLD';
      // The stored body goes out instead; if it vanished meanwhile, fetch it whole.
      void serveStored(s, hit, r.head, code, started).then((served) => {
        if (!served && !s.res.headersSent && !s.res.destroyed) {
          s.forward({ onResponseHead: (again) => storePlan(cache, cacheReq, again, 'TCP_MISS', null) });
        }
      });
      return { kind: 'taken' };
    },
  });
}

/**
 * Answers from a stored response: 304 when the client's own conditional holds, else the stored
 * head and body. False when the body is gone (evicted since the lookup): the caller fetches.
 */
async function serveStored(
  s: RequestState,
  hit: CacheHit,
  merged: CacheResponseHead | null,
  resultCode: string,
  started: number,
): Promise<boolean> {
  const { req, res, o } = s;
  // A fresh hit (merged === null) reads the entry's prepared head, Age apart; after a
  // revalidation, the merged head is used.
  const head: Readonly<CacheResponseHead> = merged ?? hit.servedHead;
  const method = s.cacheReq.method;
  const notModified = clientNotModified(s.cacheReq.headers, head);
  // RFC 9110 §14.2: a Range request for a stored complete response is answered 206 from it.
  const range = notModified ? null : requestedRange(s.cacheReq.headers, head, hit.size);
  const span = range === null ? { start: 0, end: hit.size - 1 } : range === 'unsatisfiable' ? null : range;
  const length = span ? span.end - span.start + 1 : 0;
  const withBody = method !== 'HEAD' && !notModified && length > 0;
  // The memory tier's copy when it has one (no file to open); a HEAD or a 304 needs no body at all.
  const mem = hit.memBody;
  const file = withBody && !mem ? await hit.openFile() : null;
  if (withBody && !mem && !file) return false;
  let sending: SendFile | null = null;
  const body = file
    ? {
        destroy: (): void => {
          if (sending) sending.stop();
          else void file.close().catch(() => undefined);
        },
      }
    : null;
  if (res.destroyed) {
    body?.destroy();
    return true;
  }
  const status = notModified ? 304 : range === 'unsatisfiable' ? 416 : range ? 206 : head.status;
  let out: string[];
  if (notModified) {
    out = [];
    for (const name of NOT_MODIFIED_FIELDS) {
      const v = name === 'age' && !merged ? hit.age : head.headers[name];
      if (typeof v === 'string') out.push(name, v);
    }
  } else if (!merged && range === null) {
    out = [...hit.rawHead, 'age', hit.age];
  } else {
    out = rawFromHeaders(merged ? head.headers : { ...head.headers, age: hit.age });
    const framing = range !== null ? ['content-length', 'content-range'] : ['content-length'];
    for (let i = out.length - 2; i >= 0; i -= 2) if (framing.includes(out[i]!.toLowerCase())) out.splice(i, 2);
    // The stored body's exact size frames the message (RFC 9112 §6.3), however the origin framed it.
    if (range === 'unsatisfiable') out.push('content-range', `bytes */${hit.size}`, 'content-length', '0');
    else if (range) out.push('content-range', `bytes ${range.start}-${range.end}/${hit.size}`, 'content-length', String(length));
    else if (status !== 204 && status !== 304) out.push('content-length', String(hit.size));
  }
  s.mount.mapResponseHead?.(out);
  if (s.responseEdits) applyHeaderEdits(out, s.responseEdits);
  appendVia(out, '1.1', o.via);
  const code = notModified && resultCode === 'TCP_HIT' ? 'TCP_IMS_HIT' : resultCode === 'TCP_HIT' && mem ? 'TCP_MEM_HIT' : resultCode;
  let recorded = false;
  let bodyBytes = 0;
  const record = (aborted: boolean): void => {
    if (recorded) return;
    recorded = true;
    o.events.emit(
      'access',
      accessRecord(req, o.session, started, {
        resultCode: aborted ? `${code}_ABORTED` : code,
        status,
        bytes: headBytes(res) + bodyBytes,
        url: s.url,
        hierarchy: 'HIER_NONE/-',
        contentType: mediaType(typeof head.headers['content-type'] === 'string' ? head.headers['content-type'] : undefined),
        mountedFrom: s.mount.mountedFrom,
      }),
    );
  };
  // `on`, not `once`: a response emits each of them once, and once() costs two more objects a hit.
  res.on('finish', () => {
    if (mem && withBody) bodyBytes = length;
    record(false);
  });
  res.on('close', () => {
    body?.destroy();
    // A client that has every byte (Content-Length) may close before the body stream's 'end'
    // reached res.end(): that response was delivered whole. One without a file body that closed
    // before its end (endSoon: at the end of the turn) was never sent.
    record((body !== null && bodyBytes < length) || (mem !== null && withBody) || (body === null && !res.writableEnded));
  });
  try {
    res.writeHead(status, http.STATUS_CODES[status] ?? '', out);
  } catch (err) {
    // A stored field Node refuses to send: answer as if nothing were stored.
    body?.destroy();
    o.log.warn('stored response head unusable', { url: s.url, error: err instanceof Error ? err.message : String(err) });
    recorded = true;
    return false;
  }
  // A request body (a GET with one) that nobody reads: it must be consumed before the next request.
  if (!req.complete) req.resume();
  // A plain fresh hit from the memory tier (the HTTP door's, or a tunnel's): the native hit path may repeat it
  // for this source and target (frontdoors/native-http.ts decides; native/hits.ts holds it).
  if (mem && !merged && range === null && !notModified && hit.fresh && hit.freshUntil > 0 && resultCode === 'TCP_HIT' && mem.length === hit.size) {
    const plain = !o.originForm && o.keyHost === undefined && (o.scheme ?? 'http') === 'http' && !s.mount.mountedFrom && !s.responseEdits;
    const publisher = plain ? hitPublisher(req.socket) : undefined;
    publisher?.offer({
      tunnel: o.host === 'keep' ? { host: o.target.host, port: o.target.port } : null,
      req,
      res,
      session: o.session,
      source: o.cache!,
      entryId: hit.entryId,
      freshUntil: hit.freshUntil,
      ageOriginMs: hit.ageOriginMs,
      age: hit.age,
      status,
      body: mem,
      url: s.url,
      contentType: mediaType(typeof head.headers['content-type'] === 'string' ? head.headers['content-type'] : undefined),
      dst: { host: o.target.host, port: o.target.port },
    });
  }
  if (mem && withBody) {
    // One write of the whole (or the ranged part of the) body: a view of the memory tier's buffer,
    // not a copy; it stays valid even if the entry is evicted meanwhile. Written at the end of
    // this turn of the event loop with the other responses it made (http1/end-soon.ts).
    endSoon(res, span && length !== mem.length ? mem.subarray(span.start, span.end + 1) : mem);
    return true;
  }
  if (!body) {
    endSoon(res);
    return true;
  }
  sending = sendFile(
    file!,
    res,
    span?.start ?? 0,
    length,
    (n) => {
      bodyBytes += n;
    },
    (err) => {
      o.log.warn('cache body read failed', { url: s.url, error: err.message });
      res.destroy();
    },
  );
  return true;
}
