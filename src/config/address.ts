/**
 * `HOST:PORT` as parameters write it: a name, an IPv4 literal, or an IPv6 literal in brackets
 * (`[::1]:1080`). The host comes back without brackets, as Node's socket APIs want it.
 */
import ipaddr from 'ipaddr.js';
import type { HostPort } from './types.js';
import { ConfigError } from './types.js';
import { parsePort } from './units.js';
import { splitAuthority } from '../http1/authority.js';

// RFC 1123 labels, plus '_' which real networks use; a trailing dot is allowed.
const HOST_NAME_RE = /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

/** A host name or IP literal (IPv6 without brackets); throws when it is neither. */
export function checkHost(host: string, param: string): string {
  if (ipaddr.IPv4.isValidFourPartDecimal(host) || ipaddr.IPv6.isValid(host)) return host;
  if (HOST_NAME_RE.test(host)) return host;
  throw new ConfigError(param, `expected a host name or IP address, got ${JSON.stringify(host)}`);
}

/**
 * Split `HOST:PORT`, `[V6]:PORT` or (when `hostOptional`) a bare `PORT`. Returns host '' for a
 * bare port. The port must be present.
 */
export function parseHostPort(text: string, param: string, hostOptional = false): HostPort {
  const t = text.trim();
  const expected = hostOptional ? '[HOST:]PORT' : 'HOST:PORT';
  const parts = splitAuthority(t);
  if (!parts.ok && parts.reason === 'bare-ipv6') {
    throw new ConfigError(param, `an IPv6 address needs brackets, as in [::1]:1080; got ${JSON.stringify(text)}`);
  }
  if (!parts.ok || (parts.bracketed && parts.port === null)) {
    throw new ConfigError(param, `expected ${expected} with an IPv6 address in brackets, got ${JSON.stringify(text)}`);
  }
  let host = parts.host;
  let portText = parts.port ?? '';
  if (parts.bracketed) {
    if (!ipaddr.IPv6.isValid(host)) throw new ConfigError(param, `bad IPv6 address ${JSON.stringify(host)}`);
  } else if (parts.port === null) {
    if (!hostOptional) throw new ConfigError(param, `expected ${expected}, got ${JSON.stringify(text)}`);
    host = '';
    portText = t;
  } else {
    checkHost(host, param);
  }
  return { host, port: parsePort(portText, param) };
}
