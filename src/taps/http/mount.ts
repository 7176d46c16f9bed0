/**
 * MOUNT: DeleGate-style rewriting of an HTTP URL prefix to another (`MOUNT="vURL rURL [opts]"`),
 * applied to every request of the HTTP door and the HTTP tap before policy and the cache key, so
 * the rewritten URL is what is checked, cached and logged.
 *
 *   MOUNT="/mnt/* http://host:port/static/*"          any host reached: /mnt/a → http://host:port/static/a
 *   MOUNT="http://a.test/old/* http://b.test/new/*"   only requests for a.test (port 80)
 *   MOUNT="/robots.txt http://files.test/robots.txt"  without `*`: that path exactly (query kept)
 *
 * The first mount whose virtual URL matches and whose MountOptions' conditions all hold wins
 * (DeleGate order; options: config/mount-options.ts).
 *
 * Reverse proxy: an origin-form request (`GET /mnt/x`) on the HTTP door has no destination of its
 * own; `applyMounts` is asked with the request's Host (or the door's own address) as the target,
 * and a full vURL without a port then matches that host on any port (`http://site/*` matches
 * `Host: site:8080`). A mounted response's `Location` and `Content-Location` that point into the
 * real URL are mapped back to the virtual one (`mapBack`), as DeleGate maps rURL to vURL in
 * responses; `direction=fo` leaves them alone.
 */
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import type { Session } from '../../core/session.js';
import type { Mount } from '../../config/types.js';
import { parseAuthority, parseUrl, targetAuthority } from '../../http1/authority.js';

export interface MountTarget {
  host: string;
  port: number;
  /** origin-form path and query */
  path: string;
}

/** What a mount's conditions are asked about (MountOptions from=, method=, vhost=). */
export interface MountRequest {
  clientAddress: string;
  user: string | null;
  method: string;
  /** The host named by the request's Host field (lower case, no port), null without one. */
  vhost: string | null;
  /** An origin-form request on the HTTP door (reverse proxy): a portless full vURL matches any port. */
  originForm?: boolean;
}

export interface Mounted extends MountTarget {
  mount: Mount;
  /** The mount's compiled form, for mapping response URLs back (`mapBack`). */
  compiled: CompiledMount;
}

export interface CompiledMount {
  mount: Mount;
  /** null: any host (a path-only virtual URL) */
  host: string | null;
  port: number;
  /** The vURL names its port (`http://site:8080/`). */
  portGiven: boolean;
  /** Virtual path (without the `*`). */
  vpath: string;
  prefix: boolean;
  real: { host: string; port: number; path: string; prefix: boolean };
}

/** A compiled list is kept per Config's mounts array (configs are immutable; a reload builds a new one). */
const compiledCache = new WeakMap<readonly Mount[], CompiledMount[]>();

function compile(mount: Mount): CompiledMount | null {
  let host: string | null = null;
  let port = 80;
  let portGiven = false;
  let vpath = mount.from;
  if (!mount.from.startsWith('/')) {
    const u = parseUrl(mount.from);
    if (!u) return null;
    host = u.host;
    port = u.port;
    portGiven = u.portGiven;
    vpath = u.path;
  }
  const prefix = vpath.endsWith('*');
  if (prefix) vpath = vpath.slice(0, -1);
  const r = parseUrl(mount.to);
  if (!r) return null;
  const realPrefix = r.path.endsWith('*');
  return {
    mount,
    host,
    port,
    portGiven,
    vpath,
    prefix,
    real: { host: r.host, port: r.port, path: realPrefix ? r.path.slice(0, -1) : r.path, prefix: realPrefix },
  };
}

function compiled(mounts: readonly Mount[]): CompiledMount[] {
  let list = compiledCache.get(mounts);
  if (!list) {
    list = [];
    for (const m of mounts) {
      const c = compile(m);
      if (c) list.push(c);
    }
    compiledCache.set(mounts, list);
  }
  return list;
}

/** What a request's MOUNT conditions are asked about. */
export function mountRequestOf(req: IncomingMessage, session: Session, originForm: boolean): MountRequest {
  return {
    clientAddress: session.clientAddress,
    user: session.user,
    method: (req.method ?? 'GET').toUpperCase(),
    vhost: req.headers.host === undefined ? null : (parseAuthority(req.headers.host.trim(), 80)?.host ?? null),
    ...(originForm ? { originForm: true } : {}),
  };
}

/** Whether the mount's MountOptions conditions all hold for this request. */
function conditionsHold(mount: Mount, target: MountTarget, q: MountRequest | undefined): boolean {
  const w = mount.when;
  if (!w) return true;
  // Conditions cannot be decided without the request: such a mount does not apply.
  if (!q) return false;
  const user = q.user ?? undefined;
  if (w.methods && !w.methods.includes(q.method.toUpperCase())) return false;
  if (w.client && !w.client.matches({ host: q.clientAddress, addresses: [q.clientAddress], user })) return false;
  if (w.dst && !w.dst.matches({ host: target.host, ...(isIP(target.host) ? { addresses: [target.host] } : {}), port: target.port, user })) {
    return false;
  }
  if (w.vhost && (q.vhost === null || !w.vhost.matches({ host: q.vhost, ...(isIP(q.vhost) ? { addresses: [q.vhost] } : {}) }))) return false;
  return true;
}

/**
 * The rewritten target of a request, or null when no mount applies. `rest` of a prefix match (what
 * the `*` stood for, query included) is appended to the real URL's prefix; an exact match keeps the
 * request's query. Without `request`, a mount with conditions never applies.
 */
export function applyMounts(mounts: readonly Mount[], target: MountTarget, request?: MountRequest): Mounted | null {
  if (mounts.length === 0) return null;
  for (const c of compiled(mounts)) {
    if (c.host !== null) {
      if (c.host !== target.host) continue;
      // A reverse proxy is reached on its own port: a portless vURL names the site, not port 80.
      const anyPort = request?.originForm === true && !c.portGiven;
      if (!anyPort && c.port !== target.port) continue;
    }
    let rest: string;
    if (c.prefix) {
      if (!target.path.startsWith(c.vpath)) continue;
      rest = target.path.slice(c.vpath.length);
    } else {
      const q = target.path.indexOf('?');
      const pathOnly = q >= 0 ? target.path.slice(0, q) : target.path;
      if (pathOnly !== c.vpath) continue;
      rest = q >= 0 ? target.path.slice(q) : '';
    }
    if (!conditionsHold(c.mount, target, request)) continue;
    let path: string;
    if (c.real.prefix) path = c.real.path + rest;
    else if (rest.startsWith('?')) path = c.real.path + rest;
    else path = c.real.path;
    if (!path.startsWith('/')) path = `/${path}`;
    return { host: c.real.host, port: c.real.port, path, mount: c.mount, compiled: c };
  }
  return null;
}

/**
 * A response URL (Location, Content-Location) mapped from the real URL back to the virtual one
 * the client asked for, or null when it does not point into the real URL. `asked` is the
 * authority the client used (`site:8080`). Absolute URLs must name the real server; a path-absolute
 * one (`/static/a`) is the real server's by definition.
 */
export function mapBack(mounted: Mounted, value: string, asked: { host: string; port: number }): string | null {
  const c = mounted.compiled;
  if (c.mount.forwardOnly) return null;
  let path: string;
  const abs = /^[a-z][a-z0-9+.-]*:\/\//i.test(value);
  if (abs) {
    const u = parseUrl(value);
    if (!u || !/^http:/i.test(value) || u.host !== c.real.host || u.port !== c.real.port) return null;
    path = u.path;
  } else if (value.startsWith('/') && !value.startsWith('//')) {
    path = value;
  } else {
    return null;
  }
  let rest: string;
  if (c.real.prefix) {
    if (!path.startsWith(c.real.path)) return null;
    rest = path.slice(c.real.path.length);
  } else {
    const q = path.search(/[?#]/);
    const pathOnly = q >= 0 ? path.slice(0, q) : path;
    if (pathOnly !== c.real.path) return null;
    rest = q >= 0 ? path.slice(q) : '';
  }
  // Only what the mount can map back: a prefix vURL takes any rest, an exact one only a query.
  if (!c.prefix && rest !== '' && !rest.startsWith('?') && !rest.startsWith('#')) return null;
  const vpath = c.vpath + rest;
  if (!abs) return vpath;
  // The mount matched the asked authority (or names none): that is where the client goes back.
  return `http://${targetAuthority(asked)}${vpath}`;
}

/** Maps Location and Content-Location of a raw response head back to the virtual URL (in place). */
export function mapBackHeaders(raw: string[], mounted: Mounted, asked: { host: string; port: number }): void {
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (name !== 'location' && name !== 'content-location') continue;
    const mapped = mapBack(mounted, raw[i + 1]!.trim(), asked);
    if (mapped !== null) raw[i + 1] = mapped;
  }
}
