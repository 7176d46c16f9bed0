/**
 * The one authority parser (RFC 3986 §3.2.2, RFC 9110 §7.2): `host[:port]`, `[v6][:port]`, as a
 * CONNECT target, a Host field, the authority of an absolute-form request target or of a MOUNT
 * URL, and (through `splitAuthority`) a `HOST:PORT` parameter (config/address.ts). Pure: it
 * imports nothing, so every layer may use it.
 *
 * IPv6 literals only in brackets (a bare one is ambiguous), hosts come back without brackets and
 * in lower case, a port is 1..65535 written in at most five digits, an empty or absent port is the
 * scheme's default when the caller has one and refused otherwise.
 */

/** A host and port, as Node's socket APIs want them (IPv6 without brackets). */
export interface AuthorityHostPort {
  host: string;
  port: number;
}

/** `host[:port]` split before any check of what the parts contain. */
export type AuthorityParts =
  /** `port`: the text after the colon ('' for `host:`), null when there is no colon at all. */
  | { ok: true; host: string; bracketed: boolean; port: string | null }
  /** `unclosed-bracket`: `[` without `]`; `after-bracket`: `]` followed by other than `:`; `bare-ipv6`: colons outside brackets. */
  | { ok: false; reason: 'unclosed-bracket' | 'after-bracket' | 'bare-ipv6' };

export function splitAuthority(text: string): AuthorityParts {
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return { ok: false, reason: 'unclosed-bracket' };
    const rest = text.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) return { ok: false, reason: 'after-bracket' };
    return { ok: true, host: text.slice(1, close), bracketed: true, port: rest === '' ? null : rest.slice(1) };
  }
  const colon = text.lastIndexOf(':');
  if (colon < 0) return { ok: true, host: text, bracketed: false, port: null };
  const host = text.slice(0, colon);
  if (host.includes(':')) return { ok: false, reason: 'bare-ipv6' };
  return { ok: true, host, bracketed: false, port: text.slice(colon + 1) };
}

/** reg-name or IPv4address (RFC 3986 §3.2.2), percent-encoding and sub-delims included. */
const REG_NAME = /^[A-Za-z0-9._~!$&'()*+,;=%-]+$/;
const IPV6_CHARS = /^[0-9A-Fa-f:.]+$/;

/** An authority with whether it wrote its port. */
export interface Authority extends AuthorityHostPort {
  portGiven: boolean;
}

/** As `parseAuthority`, telling also whether the port was written. */
export function readAuthority(text: string, defaultPort?: number): Authority | null {
  const p = splitAuthority(text);
  if (!p.ok || p.host === '') return null;
  if (p.bracketed ? !IPV6_CHARS.test(p.host) || !p.host.includes(':') : !REG_NAME.test(p.host)) return null;
  let port: number;
  if (p.port === null || p.port === '') {
    if (defaultPort === undefined) return null;
    port = defaultPort;
  } else {
    if (!/^\d{1,5}$/.test(p.port)) return null;
    port = Number(p.port);
  }
  if (port < 1 || port > 65535) return null;
  return { host: p.host.toLowerCase(), port, portGiven: p.port !== null && p.port !== '' };
}

/**
 * A CONNECT authority (`host:port`, `[v6]:port`, RFC 9110 §9.3.6) or, with a default port, the
 * authority of a URI or Host field whose port may be omitted. Null when malformed.
 */
export function parseAuthority(text: string, defaultPort?: number): AuthorityHostPort | null {
  const a = readAuthority(text, defaultPort);
  return a ? { host: a.host, port: a.port } : null;
}

/** The port a URL of this scheme means when it names none. */
export function defaultPort(scheme: string): number {
  const s = scheme.toLowerCase();
  return s === 'https' ? 443 : s === 'ftp' ? 21 : 80;
}

/** A URL split as a proxy needs it: the path kept byte for byte (no normalisation). */
export interface UrlTarget extends Authority {
  /** Lower case. */
  scheme: string;
  /** origin-form: path and query, "/" at least; the fragment dropped. */
  path: string;
}

/**
 * `scheme://[userinfo@]authority[path]` (RFC 3986 §3), userinfo ignored, or null when it is not
 * one or its authority is malformed. The port defaults to the scheme's.
 */
export function parseUrl(text: string): UrlTarget | null {
  // The HTTP door reads each request's target twice (the door, then the tap's entry): the last
  // answer is kept, and a copy of it handed out.
  if (text === lastUrl) return lastTarget && { scheme: lastTarget.scheme, host: lastTarget.host, port: lastTarget.port, portGiven: lastTarget.portGiven, path: lastTarget.path };
  const target = readUrl(text);
  lastUrl = text;
  lastTarget = target && { scheme: target.scheme, host: target.host, port: target.port, portGiven: target.portGiven, path: target.path };
  return target;
}

let lastUrl: string | null = null;
let lastTarget: UrlTarget | null = null;

function readUrl(text: string): UrlTarget | null {
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)([^#]*)/i.exec(text);
  if (!m) return null;
  const scheme = m[1]!.toLowerCase();
  const authority = m[2]!;
  const a = readAuthority(authority.slice(authority.lastIndexOf('@') + 1), defaultPort(scheme));
  if (!a) return null;
  let path = m[3]!;
  if (path === '') path = '/';
  else if (path.startsWith('?')) path = `/${path}`;
  return { scheme, host: a.host, port: a.port, portGiven: a.portGiven, path };
}

/** The target of an absolute-form request (RFC 9112 §3.2.2) with an `http` URI, or null. */
export function absoluteHttpTarget(requestTarget: string): (AuthorityHostPort & { path: string }) | null {
  const u = parseUrl(requestTarget);
  if (!u || u.scheme !== 'http') return null;
  return { host: u.host, port: u.port, path: u.path };
}

/**
 * The authority as a URL or Host field spells it: IPv6 in brackets, the port left out when it is
 * `omitPort` (the scheme's default; RFC 9110 §7.2).
 */
export function formatAuthority(host: string, port: number, omitPort?: number): string {
  const h = host.includes(':') ? `[${host}]` : host;
  return port === omitPort ? h : `${h}:${port}`;
}

/**
 * The server a complete HTTP/1 request head names: its absolute-form target (RFC 9112 §3.2.2)
 * when it has one, else its Host field; port 80 by default. Null when neither names one.
 */
export function requestHeadAuthority(head: string): AuthorityHostPort | null {
  const lines = head.split('\r\n');
  const target = lines[0]?.split(' ')[1] ?? '';
  if (/^http:\/\//i.test(target)) {
    const t = absoluteHttpTarget(target);
    return t ? { host: t.host, port: t.port } : null;
  }
  for (const line of lines.slice(1)) {
    const m = /^host:(.*)$/i.exec(line);
    if (m?.[1] !== undefined) return parseAuthority(m[1].trim(), 80);
  }
  return null;
}

/** The authority of a URL of this scheme: the port left out when it is the scheme's default. */
export function urlAuthority(scheme: string, target: AuthorityHostPort): string {
  return formatAuthority(target.host, target.port, defaultPort(scheme));
}

/** The authority of a target as the Host field spells it (RFC 9110 §7.2): port omitted when 80. */
export function targetAuthority(target: AuthorityHostPort): string {
  return formatAuthority(target.host, target.port, 80);
}
