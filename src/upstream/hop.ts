/**
 * One hop of a route: an upstream proxy sockstap talks to (HTTP CONNECT or SOCKS4/4a/5), its
 * credentials, and the label that names it in `session.route` and logs without the credentials.
 * Hops are written as URLs in YAML routes (`socks5://user:pass@host:1080`, `http://sq:3128`) and
 * come from `PROXY=`/`SOCKS=` parameters as parsed `Upstream`s.
 */
import { isIP } from 'node:net';
import type { HostPort, RouteHop, Upstream } from '../config/types.js';
import { ConfigError } from '../config/types.js';
import { parseHostPort } from '../config/address.js';

export type Hop = RouteHop;
export type HopKind = RouteHop['kind'];

/** An ordered list of hops; empty means direct. */
export type Chain = readonly Hop[];

const SCHEMES: Readonly<Record<string, { kind: HopKind; names: 'remote' | 'local' }>> = {
  http: { kind: 'http', names: 'remote' },
  https: { kind: 'http', names: 'remote' },
  socks: { kind: 'socks5', names: 'remote' },
  socks5: { kind: 'socks5', names: 'remote' },
  socks5h: { kind: 'socks5', names: 'remote' },
  socks4: { kind: 'socks4', names: 'local' },
  socks4a: { kind: 'socks4a', names: 'remote' },
};

/** `socks5://a:1080` — never the credentials. */
export function hopLabel(hop: Hop): string {
  const host = hop.host.includes(':') ? `[${hop.host}]` : hop.host;
  return `${hop.tls ? 'https' : hop.kind}://${host}:${hop.port}`;
}

/** `direct`, or the hops' labels joined by commas: `http://sq:3128,socks5://b:1080`. */
export function chainLabel(chain: Chain): string {
  return chain.length === 0 ? 'direct' : chain.map(hopLabel).join(',');
}

/** A `PROXY=`/`SOCKS=` upstream as a hop. */
export function hopFromUpstream(u: Upstream): Hop {
  const kind: HopKind = u.kind === 'http' ? 'http' : u.version === '4' ? 'socks4' : u.version === '4a' ? 'socks4a' : 'socks5';
  const hop: Hop = { kind, host: u.host, port: u.port, names: kind === 'socks4' ? 'local' : 'remote' };
  if (u.proxyProtocol) hop.proxyProtocol = u.proxyProtocol;
  if (u.tls) hop.tls = u.tls;
  if (u.user !== undefined) {
    hop.user = u.user;
    hop.password = u.password ?? '';
  }
  return hop;
}

/**
 * `SCHEME://[USER:PASS@]HOST:PORT` with SCHEME http, socks (= socks5), socks5, socks5h, socks4,
 * socks4a. USER and PASS are percent-decoded. The message never echoes the text (a password).
 */
export function parseHop(text: string, label: string): Hop {
  // `socks5://gw:1080/proxy-v2`: a PROXY protocol header (v1 or v2) naming the client goes first.
  const pp = /\/proxy-v([12])\/?$/i.exec(text.trim());
  const m = /^([a-z0-9]+):\/\/(?:([^:@/]*):([^@/]*)@)?([^@/]+?)\/?$/i.exec(pp ? text.trim().slice(0, pp.index) : text.trim());
  const expected = 'SCHEME://[USER:PASS@]HOST:PORT with SCHEME http, https, socks5, socks5h, socks4 or socks4a';
  if (!m) throw new ConfigError(label, `expected ${expected}`);
  const scheme = SCHEMES[m[1]!.toLowerCase()];
  if (!scheme) throw new ConfigError(label, `unknown scheme ${JSON.stringify(m[1])}; expected ${expected}`);
  const { host, port } = parseHostPort(m[4]!, label);
  if (port === 0) throw new ConfigError(label, 'port 0 is not a server port');
  const hop: Hop = { kind: scheme.kind, host, port, names: scheme.names };
  if (pp) hop.proxyProtocol = pp[1] === '1' ? 1 : 2;
  if (m[1]!.toLowerCase() === 'https') hop.tls = {};
  if (m[2] !== undefined) {
    try {
      hop.user = decodeURIComponent(m[2]);
      hop.password = decodeURIComponent(m[3] ?? '');
    } catch {
      throw new ConfigError(label, 'bad percent-encoding in USER:PASS');
    }
    if (hop.user === '') throw new ConfigError(label, 'empty user name before :PASS@');
    if (hop.kind !== 'http' && hop.kind !== 'socks5' && hop.password !== '') {
      throw new ConfigError(label, `${hop.kind} carries a user id only; a password needs socks5 or http`);
    }
  }
  return hop;
}

/** `direct` or hops separated by commas (a chain), as one element of a route's `via` list. */
export function parseChain(text: string, label: string): Chain {
  const t = text.trim();
  if (t.toLowerCase() === 'direct') return [];
  const parts = t.split(',').map((p) => p.trim());
  if (parts.some((p) => p === '')) throw new ConfigError(label, 'empty hop in a chain; write hops as URL,URL');
  if (parts.length > 8) throw new ConfigError(label, 'a chain has at most 8 hops');
  return parts.map((p, i) => parseHop(p, parts.length > 1 ? `${label} hop ${i + 1}` : label));
}

/** The address a hop's dialer names for `next`; an IP literal is unaffected by the names policy. */
export function needsLocalResolution(hop: Hop, next: HostPort): boolean {
  return isIP(next.host) === 0 && (hop.names === 'local' || hop.kind === 'socks4');
}
