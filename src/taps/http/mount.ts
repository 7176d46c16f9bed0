/**
 * MOUNT: DeleGate-style rewriting of an HTTP URL prefix to another (`MOUNT="vURL rURL [opts]"`),
 * applied to every request of the HTTP door and the HTTP tap before policy and the cache key, so
 * the rewritten URL is what is checked, cached and logged.
 *
 *   MOUNT="/mnt/* http://host:port/static/*"          any host reached: /mnt/a → http://host:port/static/a
 *   MOUNT="http://a.test/old/* http://b.test/new/*"   only requests for a.test (port 80)
 *   MOUNT="/robots.txt http://files.test/robots.txt"  without `*`: that path exactly (query kept)
 *
 * The first mount whose virtual URL matches wins (DeleGate order). Options are not interpreted.
 */
import type { Mount } from '../../config/types.js';

export interface MountTarget {
  host: string;
  port: number;
  /** origin-form path and query */
  path: string;
}

interface CompiledMount {
  mount: Mount;
  /** null: any host (a path-only virtual URL) */
  host: string | null;
  port: number;
  /** Virtual path (without the `*`). */
  vpath: string;
  prefix: boolean;
  real: { host: string; port: number; path: string; prefix: boolean };
}

/** A compiled list is kept per Config's mounts array (configs are immutable; a reload builds a new one). */
const compiledCache = new WeakMap<readonly Mount[], CompiledMount[]>();

function splitUrl(url: string): { host: string; port: number; path: string } | null {
  const m = /^([a-z][a-z0-9+.-]*):\/\/(\[[^\]]+\]|[^/:?#]*)(?::(\d{1,5}))?([^#]*)$/i.exec(url);
  if (!m) return null;
  // Only http is served by this tap; another scheme's default port is the only difference here.
  const scheme = m[1]!.toLowerCase();
  const defaultPort = scheme === 'https' ? 443 : scheme === 'ftp' ? 21 : 80;
  const host = m[2]!.replace(/^\[|\]$/g, '').toLowerCase();
  const port = m[3] ? Number(m[3]) : defaultPort;
  return { host, port, path: m[4] || '/' };
}

function compile(mount: Mount): CompiledMount | null {
  let host: string | null = null;
  let port = 80;
  let vpath = mount.from;
  if (!mount.from.startsWith('/')) {
    const u = splitUrl(mount.from);
    if (!u) return null;
    host = u.host;
    port = u.port;
    vpath = u.path;
  }
  const prefix = vpath.endsWith('*');
  if (prefix) vpath = vpath.slice(0, -1);
  const r = splitUrl(mount.to);
  if (!r) return null;
  const realPrefix = r.path.endsWith('*');
  return {
    mount,
    host,
    port,
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

/**
 * The rewritten target of a request, or null when no mount applies. `rest` of a prefix match (what
 * the `*` stood for, query included) is appended to the real URL's prefix; an exact match keeps the
 * request's query.
 */
export function applyMounts(mounts: readonly Mount[], target: MountTarget): (MountTarget & { mount: Mount }) | null {
  if (mounts.length === 0) return null;
  for (const c of compiled(mounts)) {
    if (c.host !== null && (c.host !== target.host || c.port !== target.port)) continue;
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
    let path: string;
    if (c.real.prefix) path = c.real.path + rest;
    else if (rest.startsWith('?')) path = c.real.path + rest;
    else path = c.real.path;
    if (!path.startsWith('/')) path = `/${path}`;
    return { host: c.real.host, port: c.real.port, path, mount: c.mount };
  }
  return null;
}
