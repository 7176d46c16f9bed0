/**
 * DeleGate host lists: `*.example.com,.example.org,10.0.0.0/8,[::1]:80,!bad.example.com,.localnet`.
 *
 * Elements are tried in order and the first one that matches decides: a plain element says "yes",
 * a negated one (`!elem`) says "no". When nothing matches the answer is "no", except for a list
 * made only of negations (`!a,!b`), which means "everything but a and b".
 *
 * Names stay names: `localhost` matches the name "localhost", not 127.0.0.1. Address elements
 * (an IP, a CIDR block, `.localnet`) match an IP literal directly, and a name through the
 * addresses it resolved to when the caller passes them (`needsAddresses` tells it to resolve).
 */
import { networkInterfaces } from 'node:os';
import ipaddr from 'ipaddr.js';
import picomatch from 'picomatch';
import type { HostList, HostMatchTarget } from './types.js';
import { ConfigError } from './types.js';
import { stripBraces } from './split.js';

type Address = ipaddr.IPv4 | ipaddr.IPv6;
type Range = [Address, number];

type HostTest =
  | { kind: 'any' }
  | { kind: 'name'; test: (name: string) => boolean; pattern: string }
  | { kind: 'domain'; suffix: string } // `.example.com`: the domain and every subdomain
  | { kind: 'address'; ranges: readonly Range[] }
  | { kind: 'url'; test: (url: string) => boolean; pattern: string }
  | { kind: 'readonly' }
  | { kind: 'group'; test: (group: string) => boolean; pattern: string }; // `group:NAME`: a user of that group

interface Element {
  negated: boolean;
  host: HostTest;
  /** Inclusive port ranges; undefined = any port. */
  ports?: readonly (readonly [number, number])[];
  /** `user@host`: a glob on the user; the element then needs a known user. */
  user?: (user: string) => boolean;
}

const MAX_ELEMENTS = 4096;
// Host-name globs: DNS characters plus the glob characters `*` and `?`.
const NAME_GLOB_RE = /^[a-z0-9_.*?-]+$/;
const USER_GLOB_RE = /^[^\s,@{}\[\]]+$/;
const URL_RE = /^[a-z][a-z0-9+.-]*:\/\//i;

export function parseHostList(text: string, param: string): HostList {
  const body = stripBraces(text);
  if (body === '') throw new ConfigError(param, 'empty host list; use * for any host');
  const parts = body.split(',');
  if (parts.length > MAX_ELEMENTS) throw new ConfigError(param, `host list has more than ${MAX_ELEMENTS} elements`);
  const elements = parts.map((part) => parseElement(part.trim(), param));
  return new ParsedHostList(text, elements);
}

/**
 * The list as a JavaScript expression for a PAC file (frontdoors/pac.ts), over the variables
 * `h` (lower-case host), `ip` (its IPv4 address or null) and `url`. What a browser cannot know is
 * taken to match when it would make the list say yes (user names, `readonly`, a port of a URL
 * that names none) and skipped when it would say no, so the expression errs towards "yes"; IPv6
 * blocks never match (PAC's isInNet is IPv4 only). Null for a list not made by parseHostList.
 */
export function hostListToPac(list: HostList): string | null {
  if (!(list instanceof ParsedHostList)) return null;
  const parts: string[] = [];
  for (const e of list.pacElements()) {
    const unsure = e.user !== undefined || e.host.kind === 'readonly' || e.host.kind === 'group';
    if (unsure && e.negated) continue;
    let test = pacHostTest(e.host);
    if (test === null) continue;
    if (e.ports) test = `(${test}) && (${e.ports.map(([lo, hi]) => (lo === hi ? `port == ${lo}` : `(port >= ${lo} && port <= ${hi})`)).join(' || ')})`;
    parts.push(`  if (${test}) return ${!e.negated};`);
  }
  parts.push(`  return ${list.pacElements().every((e) => e.negated)};`);
  return `function (h, ip, url, port) {\n${parts.join('\n')}\n}`;
}

function pacHostTest(h: HostTest): string | null {
  const q = (s: string): string => JSON.stringify(s);
  switch (h.kind) {
    case 'any':
    case 'readonly':
    case 'group':
      return 'true';
    case 'name':
      return /[*?]/.test(h.pattern) ? `shExpMatch(h, ${q(h.pattern)})` : `h == ${q(h.pattern)}`;
    case 'domain':
      return `(h == ${q(h.suffix)} || dnsDomainIs(h, ${q('.' + h.suffix)}))`;
    case 'url':
      // The browser's copy of the glob (`*` any run, the rest literal), as a regular expression.
      return `${new RegExp(`^${h.pattern.split('*').map((x) => x.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')).join('.*')}$`, 'i').toString()}.test(url)`;
    case 'address': {
      const v4 = h.ranges.filter(([a]) => a.kind() === 'ipv4');
      if (v4.length === 0) return null;
      return `(ip !== null && (${v4.map(([a, bits]) => `isInNet(ip, ${q(a.toString())}, ${q(ipaddr.IPv4.subnetMaskFromPrefixLength(bits).toString())})`).join(' || ')}))`;
    }
  }
}

/** The IPv4 blocks of `.localnet` (loopback and this host's interfaces), for the PAC file. */
export function localnetIPv4(): Array<{ network: string; mask: string }> {
  const out: Array<{ network: string; mask: string }> = [];
  const seen = new Set<string>();
  for (const [a, bits] of localnetRanges()) {
    if (a.kind() !== 'ipv4') continue;
    const mask = ipaddr.IPv4.subnetMaskFromPrefixLength(bits);
    const network = ipaddr.IPv4.networkAddressFromCIDR(`${a.toString()}/${bits}`).toString();
    const key = `${network}/${bits}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ network, mask: mask.toString() });
  }
  return out;
}

class ParsedHostList implements HostList {
  readonly needsAddresses: boolean;
  private readonly onlyNegations: boolean;

  constructor(
    readonly source: string,
    private readonly elements: readonly Element[],
  ) {
    this.needsAddresses = elements.some((e) => e.host.kind === 'address');
    this.onlyNegations = elements.every((e) => e.negated);
  }

  matches(target: HostMatchTarget): boolean {
    const probe = new Probe(target);
    for (const e of this.elements) {
      if (elementMatches(e, probe)) return !e.negated;
    }
    return this.onlyNegations;
  }

  /** The elements, for hostListToPac. */
  pacElements(): readonly Element[] {
    return this.elements;
  }

  toString(): string {
    return this.source;
  }
}

/** The target, normalised once per question: lower-case name, parsed addresses on demand. */
class Probe {
  readonly name: string;
  private addressCache: Address[] | undefined;
  constructor(readonly target: HostMatchTarget) {
    let h = target.host.toLowerCase();
    if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
    if (h.endsWith('.')) h = h.slice(0, -1);
    this.name = h;
  }
  addresses(): readonly Address[] {
    if (this.addressCache) return this.addressCache;
    // A name is represented by what it resolved to; an IP literal by itself, unless the caller
    // says what it reaches (0.0.0.0 reaches loopback: net/destination.ts reachedAddresses).
    const given = this.target.addresses;
    const literal = given ? undefined : toAddress(this.name);
    const list = literal ? [literal] : (given ?? []).map(toAddress).filter((a): a is Address => !!a);
    this.addressCache = list;
    return list;
  }
}

/** Parse an address; IPv4-mapped IPv6 (`::ffff:1.2.3.4`) becomes IPv4, zone ids are dropped. */
function toAddress(text: string): Address | undefined {
  const t = text.includes('%') ? text.slice(0, text.indexOf('%')) : text;
  if (!ipaddr.IPv4.isValidFourPartDecimal(t) && !ipaddr.IPv6.isValid(t)) return undefined;
  return ipaddr.process(t);
}

function elementMatches(e: Element, probe: Probe): boolean {
  const t = probe.target;
  if (e.ports) {
    if (t.port === undefined) return false;
    const port = t.port;
    if (!e.ports.some(([lo, hi]) => port >= lo && port <= hi)) return false;
  }
  if (e.user) {
    if (t.user === undefined || t.user === '' || !e.user(t.user)) return false;
  }
  const h = e.host;
  switch (h.kind) {
    case 'any':
      return true;
    case 'name':
      return h.test(probe.name);
    case 'domain':
      return probe.name === h.suffix || probe.name.endsWith('.' + h.suffix);
    case 'address':
      return probe.addresses().some((a) => h.ranges.some((r) => a.kind() === r[0].kind() && a.match(r)));
    case 'url':
      return t.url !== undefined && h.test(t.url);
    case 'readonly':
      return t.access !== 'write';
    case 'group':
      return t.groups !== undefined && t.groups.some((g) => h.test(g));
  }
}

function parseElement(raw: string, param: string): Element {
  const fail = (why: string): never => {
    throw new ConfigError(param, `bad host list element ${JSON.stringify(raw)}: ${why}`);
  };
  let text = raw;
  let negated = false;
  if (text.startsWith('!')) {
    negated = true;
    text = text.slice(1).trim();
  }
  if (text === '') return fail('empty element (two commas in a row?)');

  if (URL_RE.test(text)) return { negated, host: { kind: 'url', test: urlPattern(text), pattern: urlWithPath(text) } };
  if (text.toLowerCase() === 'readonly') return { negated, host: { kind: 'readonly' } };
  const group = /^group:(.*)$/i.exec(text);
  if (group) {
    const name = group[1]!.trim();
    if (!USER_GLOB_RE.test(name) || name.includes(':')) fail('expected group:NAME with a group name or glob');
    return { negated, host: { kind: 'group', test: name === '*' ? () => true : picomatch(name, { dot: true }), pattern: name } };
  }

  let user: Element['user'];
  const at = text.lastIndexOf('@');
  if (at >= 0) {
    const userGlob = text.slice(0, at);
    text = text.slice(at + 1);
    if (!USER_GLOB_RE.test(userGlob)) fail('expected USER@HOST with a user name or glob before @');
    user = userGlob === '*' ? () => true : picomatch(userGlob, { dot: true });
    if (text === '') fail('expected a host after @ (use *@* for any user)');
  }

  let hostText: string;
  let portText: string | undefined;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return fail('unclosed [');
    hostText = text.slice(1, close);
    let rest = text.slice(close + 1);
    // `[2001:db8::]/32`: the prefix may follow the bracket.
    const prefix = /^\/\d{1,3}/.exec(rest);
    if (prefix) {
      hostText += prefix[0];
      rest = rest.slice(prefix[0].length);
    }
    if (rest !== '') {
      if (!rest.startsWith(':')) fail('expected :PORT after ]');
      portText = rest.slice(1);
    }
    if (!hostText.split('/')[0]!.includes(':')) fail('brackets are for IPv6 addresses');
  } else {
    const colons = text.split(':').length - 1;
    if (colons === 1) {
      [hostText, portText] = text.split(':') as [string, string];
    } else {
      // Two or more colons: an IPv6 address or block written without brackets, so no port.
      hostText = text;
    }
  }
  const ports = portText === undefined ? undefined : parsePorts(portText, fail);
  return { negated, host: parseHostTest(hostText, fail), ports, user };
}

function parseHostTest(text: string, fail: (why: string) => never): HostTest {
  const lower = text.toLowerCase();
  if (lower === '*') return { kind: 'any' };
  if (lower === '.localnet') return { kind: 'address', ranges: localnetRanges() };
  if (text.includes('/')) {
    const [addr, bits] = text.split('/') as [string, string];
    const address = toAddress(addr);
    if (!address || !/^\d{1,3}$/.test(bits ?? '')) return fail('expected ADDRESS/PREFIX such as 10.0.0.0/8 or fe80::/10');
    const prefix = Number(bits);
    const max = address.kind() === 'ipv4' ? 32 : 128;
    // A mapped IPv6 block (::ffff:10.0.0.0/104) becomes the IPv4 block it covers.
    const mapped = address.kind() === 'ipv4' && !ipaddr.IPv4.isValidFourPartDecimal(addr);
    const effective = mapped ? prefix - 96 : prefix;
    if (effective < 0 || effective > max) return fail(`prefix length must be 0-${max}`);
    return { kind: 'address', ranges: [[address, effective]] };
  }
  const address = toAddress(text);
  if (address) return { kind: 'address', ranges: [[address, address.kind() === 'ipv4' ? 32 : 128]] };
  if (text.includes(':')) return fail('not an IPv6 address');
  if (!NAME_GLOB_RE.test(lower)) return fail('expected a host name, a glob such as *.example.com, an address or a CIDR block');
  if (lower.startsWith('.')) {
    const suffix = lower.slice(1).replace(/\.$/, '');
    if (suffix === '' || /[*?]/.test(suffix)) return fail('expected .DOMAIN such as .example.com');
    return { kind: 'domain', suffix };
  }
  const name = lower.replace(/\.$/, '');
  if (!/[*?]/.test(name)) return { kind: 'name', test: (n) => n === name, pattern: name };
  return { kind: 'name', test: globMatcher(name, true), pattern: name };
}

function parsePorts(text: string, fail: (why: string) => never): (readonly [number, number])[] {
  const port = (p: string): number => {
    const n = /^\d{1,5}$/.test(p) ? Number(p) : NaN;
    if (!(n >= 1 && n <= 65535)) fail(`expected a port 1-65535, got ${JSON.stringify(p)}`);
    return n;
  };
  return text.split('/').map((piece) => {
    const dash = piece.indexOf('-');
    if (dash < 0) {
      const p = port(piece);
      return [p, p] as const;
    }
    const lo = port(piece.slice(0, dash));
    const hi = port(piece.slice(dash + 1));
    if (lo > hi) fail(`port range ${piece} is backwards`);
    return [lo, hi] as const;
  });
}

/** `http://*.example.com/private/*`: `*` matches any run of characters, everything else is literal. */
/** A pattern without a path names the whole site. */
function urlWithPath(text: string): string {
  return /^[a-z][a-z0-9+.-]*:\/\/[^/]*$/i.test(text) ? text + '/*' : text;
}

function urlPattern(text: string): (url: string) => boolean {
  return globMatcher(urlWithPath(text), false);
}

/**
 * A case-insensitive glob: `*` is any run of characters, `?` (when `question`) any one. Matched in
 * O(pattern × text) by the two-pointer walk that backtracks to the last `*` only. A regular
 * expression with several `.*` backtracks polynomially, and the text is the client's (a request
 * URL, a host name): a URL rule with four `*` path segments took 34 s on a request-target of 800
 * slashes (found by the config fuzz target).
 */
function globMatcher(pattern: string, question: boolean): (text: string) => boolean {
  const p = pattern.toLowerCase();
  return (input: string): boolean => {
    const s = input.toLowerCase();
    let i = 0;
    let j = 0;
    let star = -1;
    let mark = 0;
    while (j < s.length) {
      if (i < p.length && p[i] !== '*' && (p[i] === s[j] || (question && p[i] === '?'))) {
        i++;
        j++;
      } else if (i < p.length && p[i] === '*') {
        star = i++;
        mark = j;
      } else if (star >= 0) {
        i = star + 1;
        j = ++mark;
      } else return false;
    }
    while (i < p.length && p[i] === '*') i++;
    return i === p.length;
  };
}

/** Loopback plus every address and prefix of this host's interfaces, read when the list is parsed. */
function localnetRanges(): Range[] {
  const ranges: Range[] = [
    [ipaddr.parse('127.0.0.0'), 8],
    [ipaddr.parse('::1'), 128],
  ];
  for (const infos of Object.values(networkInterfaces())) {
    for (const info of infos ?? []) {
      const cidr = info.cidr ?? `${info.address}/${info.family === 'IPv4' ? 32 : 128}`;
      const [addr, bits] = cidr.split('/') as [string, string];
      const address = toAddress(addr);
      if (address) ranges.push([address, address.kind() === 'ipv4' ? Math.min(Number(bits), 32) : Number(bits)]);
    }
  }
  return ranges;
}
