/**
 * Name resolution policy. Names that clients hand over (SOCKS4a, SOCKS5 DOMAINNAME, HTTP
 * authorities) are resolved here when sockstap connects by itself, through a bounded cache with a
 * TTL (the OS resolver's getaddrinfo gives no TTL, so the TTL is configured), static HOSTS entries
 * first. A route through a SOCKS5/4a or HTTP upstream passes the name on unresolved (see
 * upstream/hop.ts `names`). Dual-stack names are connected with Happy Eyeballs (RFC 8305) by Node
 * itself: `net.connect({ autoSelectFamily: true, lookup })` asks `lookup` for every address and
 * races the families with a 250 ms attempt delay; `lookupFunction()` is that lookup.
 */
import { lookup as osLookup } from 'node:dns/promises';
import { isIP, type LookupFunction } from 'node:net';
import type { LookupAddress } from 'node:dns';
import type { DnsConfig } from '../config/types.js';
import { ProxyError, toProxyError } from '../core/errors.js';

export type AddressOrder = DnsConfig['order'];

/**
 * cacheSize: most names kept (LRU); ttlMs: how long a resolved name is kept; negativeTtlMs: how
 * long a failure is remembered (0 = not); order: families and which first ('auto' keeps the
 * resolver's order); hosts: static entries (DeleGate HOSTS=), lower-case name → addresses.
 */
export type DnsSettings = DnsConfig;

export const DEFAULT_DNS: Readonly<DnsSettings> = {
  cacheSize: 1024,
  ttlMs: 60_000,
  negativeTtlMs: 5_000,
  order: 'auto',
  hosts: {},
};

/** The most addresses kept for one name. */
const MAX_ADDRESSES = 16;

interface Entry {
  expires: number;
  addresses?: LookupAddress[];
  error?: ProxyError;
}

export class NameCache {
  private readonly entries = new Map<string, Entry>();
  private readonly pending = new Map<string, Promise<LookupAddress[]>>();
  /** Counters for tests and metrics. */
  readonly stats = { hits: 0, misses: 0 };

  constructor(readonly settings: Readonly<DnsSettings> = DEFAULT_DNS) {}

  get size(): number {
    return this.entries.size;
  }

  /** Every address of `host` in the configured order; an IP literal is itself. Rejects ENOTFOUND. */
  async resolve(host: string): Promise<LookupAddress[]> {
    const family = isIP(host);
    if (family !== 0) return [{ address: host, family }];
    const name = host.toLowerCase().replace(/\.$/, '');
    const fixed = this.settings.hosts[name];
    if (fixed) return this.ordered(fixed.map((a) => ({ address: a, family: isIP(a) })), host);
    const now = Date.now();
    const hit = this.entries.get(name);
    if (hit && hit.expires > now) {
      this.stats.hits++;
      // Refresh its place in the LRU order.
      this.entries.delete(name);
      this.entries.set(name, hit);
      if (hit.error) throw hit.error;
      return hit.addresses!;
    }
    if (hit) this.entries.delete(name);
    this.stats.misses++;
    let p = this.pending.get(name);
    if (!p) {
      p = this.query(name).finally(() => this.pending.delete(name));
      this.pending.set(name, p);
    }
    return p;
  }

  /**
   * How long what resolve() gives for `host` stays as it is, in ms: the rest of a cached entry's
   * time, the whole TTL for an address literal or a HOSTS entry, 0 when nothing is cached.
   */
  remainingMs(host: string): number {
    if (isIP(host) !== 0) return this.settings.ttlMs;
    const name = host.toLowerCase().replace(/\.$/, '');
    if (this.settings.hosts[name]) return this.settings.ttlMs;
    const hit = this.entries.get(name);
    return hit && !hit.error ? Math.max(0, hit.expires - Date.now()) : 0;
  }

  private async query(name: string): Promise<LookupAddress[]> {
    try {
      const found = await osLookup(name, { all: true, order: 'verbatim' });
      const addresses = this.ordered(found.slice(0, MAX_ADDRESSES), name);
      this.store(name, { expires: Date.now() + this.settings.ttlMs, addresses });
      return addresses;
    } catch (err) {
      const e = err instanceof ProxyError ? err : toProxyError(err);
      const error = e.code === 'ENOTFOUND' ? e : new ProxyError('ENOTFOUND', `cannot resolve ${name}: ${e.message}`, { cause: err });
      if (this.settings.negativeTtlMs > 0) this.store(name, { expires: Date.now() + this.settings.negativeTtlMs, error });
      throw error;
    }
  }

  private ordered(list: LookupAddress[], name: string): LookupAddress[] {
    const { order } = this.settings;
    let out = list;
    if (order === 'ipv4') out = list.filter((a) => a.family === 4);
    else if (order === 'ipv6') out = list.filter((a) => a.family === 6);
    else if (order !== 'auto') {
      const first = order === 'ipv4first' ? 4 : 6;
      out = [...list.filter((a) => a.family === first), ...list.filter((a) => a.family !== first)];
    }
    if (out.length === 0) throw new ProxyError('ENOTFOUND', `${name} has no ${order === 'ipv4' ? 'IPv4' : 'IPv6'} address`);
    return out;
  }

  private store(name: string, entry: Entry): void {
    this.entries.delete(name);
    while (this.entries.size >= Math.max(1, this.settings.cacheSize)) {
      const oldest = this.entries.keys().next().value;
      if (oldest === undefined) break;
      this.entries.delete(oldest);
    }
    this.entries.set(name, entry);
  }

  /** The first address of `host` of a family, for hops that carry IPv4 only (SOCKS4). */
  async resolveOne(host: string, family?: 4 | 6): Promise<string> {
    const list = await this.resolve(host);
    const a = family ? list.find((x) => x.family === family) : list[0];
    if (!a) throw new ProxyError('ENOTFOUND', `${host} has no IPv${family} address`);
    return a.address;
  }

  /**
   * A `lookup` for `net.connect`: with `autoSelectFamily` Node asks for all addresses and races
   * them (Happy Eyeballs); without it, it takes the first. `resolve` replaces this cache's own
   * resolve() (the pipeline's answers pinned per connection, net/destination.ts).
   */
  lookupFunction(resolve: (host: string) => Promise<readonly LookupAddress[]> = (h) => this.resolve(h)): LookupFunction {
    return (hostname, options, callback) => {
      resolve(hostname).then(
        (list) => {
          const wanted = options.family === 4 || options.family === 6 ? list.filter((a) => a.family === options.family) : list;
          if (wanted.length === 0) {
            callback(Object.assign(new Error(`${hostname} has no IPv${options.family} address`), { code: 'ENOTFOUND' }), '', 0);
          } else if (options.all) {
            // The callback's type is the single-address form; Node's all:true form takes the list.
            (callback as unknown as (err: null, list: readonly LookupAddress[]) => void)(null, wanted);
          } else {
            callback(null, wanted[0]!.address, wanted[0]!.family);
          }
        },
        (err: ProxyError) =>
          // A refusal (EDENIED: the name reaches sockstap itself) keeps its code for the door's reply.
          callback(err instanceof ProxyError && err.code === 'EDENIED' ? err : Object.assign(new Error(err.message), { code: 'ENOTFOUND' }), '', 0),
      );
    };
  }
}

/** Whether two DNS settings give the same answers (a reload that keeps them keeps the cache). */
export function sameDnsSettings(a: Readonly<DnsSettings>, b: Readonly<DnsSettings>): boolean {
  return (
    a === b ||
    (a.cacheSize === b.cacheSize &&
      a.ttlMs === b.ttlMs &&
      a.negativeTtlMs === b.negativeTtlMs &&
      a.order === b.order &&
      JSON.stringify(a.hosts) === JSON.stringify(b.hosts))
  );
}
