/**
 * Host verification for requests in a tapped tunnel (issue 13, finding 1), after Squid's
 * `host_verify_strict on`: a request whose `Host` does not name the tunnel's destination is
 * refused (400, logged), because the origin would answer for the host it names while the cache,
 * PERMIT/REJECT and access.log would take the answer for the destination's — a forged Host
 * poisoned the destination's cache entries with another virtual host's responses.
 *
 * What names the destination (port: the Host's, 80 when it has none, equal to the tunnel's):
 *   destination a name       the same name (case and one trailing dot aside); an address or
 *                            another name is refused, even one that resolves to the same address
 *                            (that is the attack: two virtual hosts on one address)
 *   destination an address   the same address; or a name whose addresses, through sockstap's name
 *                            cache (HOSTS, `dns:`), include it: the client resolved the name
 *                            itself (curl --socks5, SOCKS4), as Squid compares the Host's
 *                            addresses with an intercepted connection's. The cache key then names
 *                            that name, so the entry is the one a tunnel by name fills and finds,
 *                            and two names on one address keep apart.
 *
 * A port relay (tcprelay, YAML portmap: the administrator fixed the destination, the client
 * connects to sockstap as if it were the server) also accepts a Host naming the relay's own
 * address and port — what such a client sends — and that Host is **rewritten** to the
 * destination's authority, as a reverse proxy does (nginx's default `Host $proxy_host`), so the
 * origin answers for the host the entry is keyed by.
 */
import { isIP } from 'node:net';
import type { HostPort } from '../../config/types.js';
import type { NameCache } from '../../net/dns.js';
import { splitAuthority } from '../../http1/authority.js';

export type HostVerdict =
  /**
   * `keyHost`: the name the cache key uses instead of the destination address, or null;
   * `rewrite`: the Host named the relay itself and is to be replaced by the destination's.
   */
  | { ok: true; keyHost: string | null; rewrite?: true }
  | { ok: false; reason: string };

const NAME = /^[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$/;

/** An address in one spelling: IPv6 compressed and lower case, IPv4-mapped IPv6 as IPv4. */
export function canonicalAddress(address: string): string {
  if (isIP(address) === 4) return address;
  let a: string;
  try {
    a = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  } catch {
    return address.toLowerCase();
  }
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(a);
  if (mapped) {
    const hi = parseInt(mapped[1]!, 16);
    const lo = parseInt(mapped[2]!, 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return a;
}

function canonicalName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** `host[:port]` of a Host field value (RFC 9110 §7.2, RFC 3986 §3.2.2), or null when malformed. */
export function parseHostField(value: string): { host: string; port: number | null } | null {
  // The one authority lexer (http1/authority.ts); the host keeps its case, which the check ignores.
  const p = splitAuthority(value.trim());
  if (!p.ok) return null;
  const { host } = p;
  if (p.bracketed ? isIP(host) !== 6 : isIP(host) !== 4 && !NAME.test(host)) return null;
  if (p.port === null || p.port === '') return { host, port: null };
  if (!/^\d{1,5}$/.test(p.port)) return null;
  const port = Number(p.port);
  return port >= 1 && port <= 65535 ? { host, port } : null;
}

/** Whether `host` (a name or an address) is, or resolves to, the address `address`. */
async function namesAddress(host: string, address: string, names: NameCache): Promise<boolean> {
  if (isIP(host) !== 0) return canonicalAddress(host) === canonicalAddress(address);
  try {
    return (await names.resolve(host)).some((a) => canonicalAddress(a.address) === canonicalAddress(address));
  } catch {
    return false;
  }
}

/**
 * Whether the request's `Host` names the tunnel's destination `dst` (see the file comment).
 * `relay`: the address and port the client connected to, when that is a port relay.
 */
export async function verifyTunnelHost(
  rawHeaders: readonly string[],
  dst: HostPort,
  names: NameCache,
  relay?: HostPort,
  /** The port a Host without one names: 80, or 443 inside an intercepted TLS tunnel. */
  defaultPort = 80,
): Promise<HostVerdict> {
  const values: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() === 'host') values.push(rawHeaders[i + 1]!);
  }
  // No Host (HTTP/1.0): the request is for the destination, and is keyed by it.
  if (values.length === 0) return { ok: true, keyHost: null };
  // RFC 9112 §3.2: more than one Host is a bad request (which one would the origin take?).
  if (values.length > 1) return { ok: false, reason: `the request has ${values.length} Host fields` };
  const given = parseHostField(values[0]!);
  if (!given) return { ok: false, reason: `Host ${JSON.stringify(values[0])} is not a valid authority` };
  const port = given.port ?? defaultPort;
  const dstLabel = dst.host.includes(':') ? `[${dst.host}]:${dst.port}` : `${dst.host}:${dst.port}`;
  const refused = (why: string): HostVerdict => ({
    ok: false,
    reason: `Host ${JSON.stringify(values[0])} does not name the tunnel's destination ${dstLabel}: ${why}`,
  });
  if (relay && port === relay.port && (await namesAddress(given.host, relay.host, names))) return { ok: true, keyHost: null, rewrite: true };
  if (port !== dst.port) return refused(`port ${port} is not ${dst.port}`);
  const hostIsAddress = isIP(given.host) !== 0;
  if (isIP(dst.host) === 0) {
    if (hostIsAddress) return refused('an address, where the tunnel names a host');
    return canonicalName(given.host) === canonicalName(dst.host) ? { ok: true, keyHost: null } : refused('another name');
  }
  const dstAddress = canonicalAddress(dst.host);
  if (hostIsAddress) {
    return canonicalAddress(given.host) === dstAddress ? { ok: true, keyHost: null } : refused('another address');
  }
  let addresses: string[];
  try {
    addresses = (await names.resolve(given.host)).map((a) => canonicalAddress(a.address));
  } catch {
    return refused(`${given.host} cannot be resolved`);
  }
  if (!addresses.includes(dstAddress)) return refused(`${given.host} resolves to ${addresses.join(', ')}`);
  return { ok: true, keyHost: canonicalName(given.host) };
}

/**
 * The one Host value of a raw list, or null when there is none or more than one (verifyTunnelHost
 * decides those). For the tap's per-tunnel memory of verdicts.
 */
export function singleHostValue(rawHeaders: readonly string[]): string | null {
  let value: string | null = null;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length !== 4 || name.toLowerCase() !== 'host') continue;
    if (value !== null) return null;
    value = rawHeaders[i + 1]!;
  }
  return value;
}

/**
 * Whether verifyTunnelHost's verdict for this one Host value, in a tunnel to `dst` (with `relay`),
 * is decided without the name cache: then it is the same for every request of the tunnel that
 * sends the same value, and the tap may keep it. A name is looked up only when the destination
 * is an address, or when a port relay's own address is compared with it.
 */
export function verdictWithoutNames(value: string, dst: HostPort, relay: HostPort | undefined): boolean {
  const given = parseHostField(value);
  if (!given) return true;
  if (isIP(given.host) !== 0) return true;
  return !relay && isIP(dst.host) === 0;
}
