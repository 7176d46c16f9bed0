/**
 * `HOST:PORT` as parameters write it: a name, an IPv4 literal, or an IPv6 literal in brackets
 * (`[::1]:1080`). The host comes back without brackets, as Node's socket APIs want it.
 */
import ipaddr from 'ipaddr.js';
import type { HostPort } from './types.js';
import { ConfigError } from './types.js';
import { parsePort } from './units.js';

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
  let host: string;
  let portText: string;
  if (t.startsWith('[')) {
    const close = t.indexOf(']');
    if (close < 0 || t[close + 1] !== ':') {
      throw new ConfigError(param, `expected ${expected} with an IPv6 address in brackets, got ${JSON.stringify(text)}`);
    }
    host = t.slice(1, close);
    if (!ipaddr.IPv6.isValid(host)) throw new ConfigError(param, `bad IPv6 address ${JSON.stringify(host)}`);
    portText = t.slice(close + 2);
  } else {
    const colon = t.lastIndexOf(':');
    if (colon < 0) {
      if (!hostOptional) throw new ConfigError(param, `expected ${expected}, got ${JSON.stringify(text)}`);
      host = '';
      portText = t;
    } else {
      host = t.slice(0, colon);
      portText = t.slice(colon + 1);
      if (host.includes(':')) {
        throw new ConfigError(param, `an IPv6 address needs brackets, as in [::1]:1080; got ${JSON.stringify(text)}`);
      }
      checkHost(host, param);
    }
  }
  return { host, port: parsePort(portText, param) };
}
