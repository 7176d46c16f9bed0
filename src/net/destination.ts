/**
 * The address a connection really reaches, for the destination checkpoint (issue 13 items 3, 4):
 *
 * - names are normalised once (lower case, no trailing dot) for the rules and for the dial;
 * - a named destination is resolved once per connection through the name cache (HOSTS, YAML
 *   `dns:`), and that answer is pinned to the session: the rules check it and the dialer dials it,
 *   so an answer that changes between the two (DNS rebinding) cannot pass a rule;
 * - the addresses an address reaches: IPv4-mapped IPv6 is the IPv4 address, and the unspecified
 *   addresses (`0.0.0.0`, `::`, `::ffff:0.0.0.0`) reach the local host (the kernel connects them
 *   to loopback), as Squid's `to_localhost` says;
 * - sockstap's own listeners and admin address are never a destination (ownDestination).
 */
import type { LookupAddress } from 'node:dns';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import ipaddr from 'ipaddr.js';
import type { HostPort } from '../config/types.js';
import { ProxyError } from '../core/errors.js';
import type { Session } from '../core/session.js';
import type { NameCache } from './dns.js';

/** A destination name as the rules and the dialer see it: lower case, no trailing dot, no brackets. */
export function normaliseHost(host: string): string {
  let h = host;
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (isIP(h) !== 0) return h;
  h = h.toLowerCase();
  return h.endsWith('.') ? h.slice(0, -1) : h;
}

export function normaliseDst(dst: HostPort): HostPort {
  const host = normaliseHost(dst.host);
  return host === dst.host ? dst : { host, port: dst.port };
}

const LOOPBACKS = ['127.0.0.1', '::1'] as const;

/** `localhost` and names under it (RFC 6761) are the loopback addresses, resolved or not. */
export function isLocalhostName(name: string): boolean {
  return name === 'localhost' || name.endsWith('.localhost');
}

/**
 * The addresses a list of addresses reaches, canonical (IPv4-mapped become IPv4): each itself,
 * and for an unspecified address the loopback addresses too. Unparsable entries are dropped.
 */
export function reachedAddresses(list: readonly string[]): string[] {
  if (list.length === 1) {
    // The common case (a literal destination, a name with one address): no set needed.
    const one = addressOf(list[0]!);
    if (!one) return [];
    return one.unspecified ? [...new Set([one.text, ...LOOPBACKS])] : [one.text];
  }
  const out = new Set<string>();
  for (const text of list) {
    const a = addressOf(text);
    if (!a) continue;
    out.add(a.text);
    if (a.unspecified) for (const l of LOOPBACKS) out.add(l);
  }
  return [...out];
}

/** An address parsed once: its canonical text (ipaddr.process) and whether it is unspecified. */
interface ParsedAddress {
  text: string;
  range: string;
  unspecified: boolean;
}

/**
 * Addresses parsed so far (every request of the HTTP door passes its destination and sockstap's
 * own listeners through here): ipaddr's parse is pure, so its answer is kept. Bounded: emptied
 * when full. A zone (`%eth0`) is cut before parsing, as ipaddr cannot read it.
 */
const parsed = new Map<string, ParsedAddress | null>();
const MAX_PARSED = 4096;

/** `text` parsed once into `memo` (bounded): an IP address, or null for anything else. */
function parsedOnce(memo: Map<string, ParsedAddress | null>, text: string, withoutZone: boolean): ParsedAddress | null {
  const known = memo.get(text);
  if (known !== undefined) return known;
  const t = withoutZone && text.includes('%') ? text.slice(0, text.indexOf('%')) : text;
  let result: ParsedAddress | null = null;
  if (ipaddr.isValid(t)) {
    const a = ipaddr.process(t);
    const range = a.range();
    result = { text: a.toString(), range, unspecified: range === 'unspecified' };
  }
  if (memo.size >= MAX_PARSED) memo.clear();
  memo.set(text, result);
  return result;
}

function addressOf(text: string): ParsedAddress | null {
  return parsedOnce(parsed, text, true);
}

/** The host's own interface addresses, read at most once every few seconds. */
let localCache: { at: number; set: Set<string> } | null = null;
const LOCAL_CACHE_MS = 5_000;

function localAddresses(): Set<string> {
  const now = Date.now();
  if (localCache && now - localCache.at < LOCAL_CACHE_MS) return localCache.set;
  const set = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const info of list ?? []) {
      if (ipaddr.isValid(info.address)) set.add(ipaddr.process(info.address).toString());
    }
  }
  localCache = { at: now, set };
  return set;
}

/** Whether `address` (canonical) is an address of this host: loopback, unspecified or an interface's. */
function isLocal(address: string): boolean {
  const range = addressOf(address)?.range ?? ipaddr.parse(address).range();
  return range === 'loopback' || range === 'unspecified' || localAddresses().has(address);
}

/** A listener's bound address parsed once (as written, zone included), or null when it is a name. */
const bounds = new Map<string, ParsedAddress | null>();

function boundOf(host: string): ParsedAddress | null {
  return parsedOnce(bounds, host, false);
}

/** One of sockstap's own addresses: a listener or the admin server. */
export interface OwnAddress extends HostPort {
  /** What it is, for the log line: "admin", "listener 127.0.0.1:1080/auto". */
  what: string;
}

/**
 * Which of sockstap's own addresses a destination reaches (`reached` from reachedAddresses), or
 * null. A listener on a wildcard address is reached on every local address of its port.
 */
export function ownDestination(own: readonly OwnAddress[], reached: readonly string[], port: number): OwnAddress | null {
  if (reached.length === 0) return null;
  for (const o of own) {
    if (o.port !== port) continue;
    const bound = boundOf(o.host);
    if (!bound || bound.unspecified) {
      if (reached.some(isLocal)) return o;
      continue;
    }
    if (reached.includes(bound.text)) return o;
  }
  return null;
}

/**
 * The addresses to test against sockstap's own for a destination before (or without) resolving
 * it: an address is itself, a localhost name is loopback, any other name is unknown ([]).
 */
export function literalReach(host: string): string[] {
  if (isIP(host) !== 0) return reachedAddresses([host]);
  return isLocalhostName(host) ? [...LOOPBACKS] : [];
}

/** What one connection's names resolved to: an answer, or the error that the dial must give too. */
export type Resolution = readonly LookupAddress[] | ProxyError;

/** The most names one session keeps pinned (a tapped HTTP tunnel may ask for several hosts). */
const MAX_PINNED = 32;
const pins = new WeakMap<Session, Map<string, Resolution>>();

export function pinnedResolution(session: Session, name: string): Resolution | undefined {
  return pins.get(session)?.get(name);
}

function pin(session: Session, name: string, r: Resolution): void {
  let map = pins.get(session);
  if (!map) pins.set(session, (map = new Map()));
  map.delete(name);
  if (map.size >= MAX_PINNED) map.delete(map.keys().next().value!);
  map.set(name, r);
}

/**
 * Resolve a (normalised) name for this session once: the first question goes to the name
 * cache, later ones get the same answer (or the same failure).
 */
export async function resolveForSession(session: Session, names: NameCache, name: string): Promise<Resolution> {
  const known = pinnedResolution(session, name);
  if (known) return known;
  let r: Resolution;
  try {
    r = await names.resolve(name);
  } catch (err) {
    r = err instanceof ProxyError ? err : new ProxyError('ENOTFOUND', `cannot resolve ${name}`, { cause: err });
  }
  pin(session, name, r);
  return r;
}

/** The addresses of a resolution as text ([] for a failure). */
export function addressesOf(r: Resolution): string[] {
  return r instanceof ProxyError ? [] : r.map((a) => a.address);
}
