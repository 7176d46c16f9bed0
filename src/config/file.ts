/**
 * `-f FILE.yaml`: read the structured form, check its shape with the zod schema (an unknown key is
 * an error naming its YAML path, `rules[2].permt`), then turn each value into `Settings` through
 * the same parsers the command-line parameters use. Relative paths resolve against the file's
 * directory. An empty file and an empty mapping `{}` are valid.
 */
import { DEFAULT_FAILTIMEOUT_MS, DEFAULT_MAXFAILS } from '../upstream/pool.js';
import { parseSrcif } from '../upstream/srcif.js';
import { parseAuthTtl } from '../policy/auth-helper.js';
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import type { Accounts, DnsConfig, RouteRule, TimeWindow } from './types.js';
import { isIP } from 'node:net';
import { parseChain } from '../upstream/hop.js';
import { DEFAULT_DNS } from '../net/dns.js';
import { parseTimeWindow } from '../policy/timewindow.js';
import { ConfigError } from './types.js';
import { checkHost, parseHostPort } from './address.js';
import { parseHostList } from './hostlist.js';
import { configFileSchema, type ConfigFile } from './schema.js';
import { didYouMean } from './hints.js';
import {
  applyParameter,
  buildAccessRule,
  parseAccessRule,
  parseDoNo,
  parseListen,
  parsePath,
  parseServer,
  parseTapRule,
  parseTimeZone,
  parseTlsRule,
  parseRedis,
  parseWorkers,
  type ListenEntry,
  parseHttpHeaderRules,
  type ParameterName,
  type Settings,
  TAP_PROTOCOLS,
} from './params.js';
import { parseDuration, parsePort, parseSize } from './units.js';
import { accountsFromMap, loadHtpasswd, parseAuthorizer } from '../policy/accounts.js';

const MAX_FILE_BYTES = 1024 * 1024;

export function readConfigFile(file: string): Settings {
  let text: string;
  try {
    if (statSync(file).size > MAX_FILE_BYTES) throw new ConfigError('-f', `${file} is larger than 1 MiB`);
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError('-f', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let doc: unknown;
  try {
    // YAML 1.2 core schema; duplicate keys are an error; the library caps alias expansion.
    const parsed = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
    if (parsed.errors.length > 0) {
      const all = parsed.errors.slice(0, MAX_REPORTED).map((e) => e.message.split('\n')[0]);
      throw new ConfigError('-f', `${file}: not valid YAML: ${all.join('; ')}`);
    }
    doc = parsed.toJS({ maxAliasCount: 100 });
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const first = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new ConfigError('-f', `${file}: not valid YAML: ${first}`);
  }
  if (doc === null || doc === undefined) doc = {};
  const checked = configFileSchema.safeParse(doc);
  if (!checked.success) throw schemaErrors(checked.error.issues, file);
  try {
    return settingsFromFile(checked.data, dirname(file));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // Every value error at once: each top-level key on its own finds its own.
    const errors: ConfigError[] = [];
    for (const [key, value] of Object.entries(checked.data)) {
      try {
        settingsFromFile({ [key]: value } as ConfigFile, dirname(file));
      } catch (e) {
        if (e instanceof ConfigError) errors.push(e);
        else throw e;
      }
    }
    throw combine(errors.length > 0 ? errors : [err], file);
  }
}

/** The most problems one message lists. */
const MAX_REPORTED = 20;

/** One ConfigError for several: the first names its path, the message lists every one. */
function combine(errors: readonly ConfigError[], file: string): ConfigError {
  if (errors.length === 1) return errors[0]!;
  const shown = errors.slice(0, MAX_REPORTED).map((e) => `  ${e.message}`);
  if (errors.length > MAX_REPORTED) shown.push(`  ... and ${errors.length - MAX_REPORTED} more`);
  return new ConfigError(file, `${errors.length} problems:\n${shown.join('\n')}`);
}

/** Every schema problem, each with its YAML path. */
function schemaErrors(issues: readonly Issue[], file: string): ConfigError {
  // Issues at different paths are different problems; a union's alternatives are one.
  const errors: ConfigError[] = [];
  const seen = new Set<string>();
  for (const issue of [...issues].sort((a, b) => rank(a) - rank(b))) {
    const keys = issue.code === 'unrecognized_keys' ? issue.keys : [undefined];
    for (const key of keys) {
      const one: Issue = issue.code === 'unrecognized_keys' && key !== undefined ? { ...issue, keys: [key] } : issue;
      const e = schemaError([one], file);
      if (seen.has(e.message)) continue;
      seen.add(e.message);
      errors.push(e);
    }
  }
  return combine(errors, file);
}

/** `['rules', 2, 'permit']` → `rules[2].permit`. */
export function yamlPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out;
}

type Issue = z.core.$ZodIssue;

/** One readable message for the first problem, preferring the deepest union branch that fits. */
function schemaError(issues: readonly Issue[], file: string): ConfigError {
  const issue = pickIssue(issues, []);
  const path = issue.path;
  if (issue.issue.code === 'unrecognized_keys') {
    const key = issue.issue.keys[0]!;
    const hint = didYouMean(key, knownKeys(path));
    return new ConfigError(yamlPath([...path, key]) || file, `unknown key ${JSON.stringify(key)}${hint ? `; ${hint.trim()}` : ''}`);
  }
  return new ConfigError(yamlPath(path) || file, issue.issue.message.replace(/^Invalid input: /, ''));
}

/** The keys the schema allows at a YAML path (for "did you mean"), or none when unknown. */
function knownKeys(path: readonly PropertyKey[]): string[] {
  let node: unknown = configFileSchema;
  for (const step of [...path, null]) {
    // Unwrap optional, array elements and union members until an object with a shape turns up.
    for (let i = 0; i < 8 && node && typeof node === 'object' && !('shape' in node && step !== undefined); i++) {
      const def = (node as { def?: { innerType?: unknown; element?: unknown; options?: unknown[] } }).def;
      const next = def?.innerType ?? def?.element ?? def?.options?.find((o) => o && typeof o === 'object' && 'shape' in o);
      if (!next) break;
      node = next;
    }
    const shape = (node as { shape?: Record<string, unknown> } | undefined)?.shape;
    if (step === null) return shape ? Object.keys(shape) : [];
    if (typeof step === 'number') continue;
    if (!shape) return [];
    node = shape[String(step)];
  }
  return [];
}

function pickIssue(issues: readonly Issue[], prefix: PropertyKey[]): { issue: Issue; path: PropertyKey[] } {
  // Unknown keys first: they are the usual typo.
  const sorted = [...issues].sort((a, b) => rank(a) - rank(b));
  const first = sorted[0]!;
  const path = [...prefix, ...first.path];
  if (first.code === 'invalid_union' && first.errors.length > 0) {
    // The branch whose failures are deepest is the one the user meant (an object, not a string).
    const branches = first.errors.filter((b) => b.length > 0);
    const best = branches.reduce((a, b) => (depth(b) > depth(a) ? b : a), branches[0]!);
    if (best && depth(best) > 0) return pickIssue(best, path);
  }
  return { issue: first, path };
}

function rank(i: Issue): number {
  return i.code === 'unrecognized_keys' ? 0 : 1;
}

function depth(branch: readonly Issue[]): number {
  // An unknown key means the branch's shape matched: count it as one level deep.
  return Math.max(...branch.map((i) => i.path.length + (i.code === 'unrecognized_keys' ? 1 : 0)));
}

const joinList = (v: string | readonly string[]): string => (typeof v === 'string' ? v : v.join(','));
const listOf = (v: string | readonly string[]): readonly string[] => (typeof v === 'string' ? [v] : v);

function settingsFromFile(f: ConfigFile, base: string): Settings {
  const s: Settings = {};
  const apply = (name: ParameterName, value: string, label: string): void => applyParameter(s, name, value, label, base);

  if (f.listen) {
    s.listen = f.listen.map((item, i) => {
      const label = `listen[${i}]`;
      if (typeof item === 'string') return parseListen(item, label);
      const host = item.host === undefined || item.host === '' ? '' : checkHost(item.host.replace(/^\[(.*)\]$/, '$1'), `${label}.host`);
      const port = typeof item.port === 'number' ? item.port : parsePort(item.port, `${label}.port`);
      const entry: ListenEntry = { host, port, param: label };
      if (item.door !== undefined) entry.door = item.door;
      if (item.target !== undefined) entry.target = parseHostPort(item.target, `${label}.target`);
      return entry;
    });
  }
  if (f.server !== undefined) s.server = parseServer(f.server, 'server');
  if (f.reliable !== undefined) s.reliable = parseHostList(joinList(f.reliable), 'reliable');
  if (f.proxyprotocol !== undefined) s.proxyProtocol = parseHostList(joinList(f.proxyprotocol), 'proxyprotocol');
  if (f.rules) {
    s.rules = f.rules.map((r, i) => {
      const label = `rules[${i}]`;
      if ('permit' in r) return parseAccessRule('permit', r.permit, `${label}.permit`);
      if ('reject' in r) return parseAccessRule('reject', r.reject, `${label}.reject`);
      const protocols = joinList(r.protocols ?? '*');
      const dst = joinList(r.dst ?? '*');
      const src = joinList(r.src ?? '*');
      return buildAccessRule(
        r.action,
        protocols,
        dst,
        src,
        r.when,
        { protocols: `${label}.protocols`, dst: `${label}.dst`, src: `${label}.src`, when: `${label}.when` },
        `${r.action.toUpperCase()}=${protocols}:{${dst}}:{${src}}${r.when ? ':' + r.when : ''}`,
      );
    });
  }
  if (f.authorizer !== undefined) s.accounts = accountsFromFile(f.authorizer, 'authorizer', base);
  if (f.adminauth !== undefined) s.adminAuth = accountsFromFile(f.adminauth, 'adminauth', base);
  if (f.timeouts) {
    const t: Settings['timeouts'] = {};
    for (const [name, value] of Object.entries(f.timeouts)) {
      if (value === undefined) continue;
      const label = `timeouts.${name}`;
      t[name as keyof typeof f.timeouts] = typeof value === 'number' ? secondsToMs(value, label) : parseDuration(value, label);
    }
    s.timeouts = t;
  }
  if (f.maxima) s.maxima = { ...f.maxima };
  if (f.statedir !== undefined) s.stateDir = parsePath(f.statedir, 'statedir', base);
  if (f.logdir !== undefined) s.logDir = parsePath(f.logdir, 'logdir', base);
  if (f.logformat !== undefined) s.logFormat = f.logformat;
  if (f.cache !== undefined) {
    const c = f.cache;
    if (typeof c === 'boolean') s.cacheEnabled = c;
    else if (typeof c === 'string') s.cacheEnabled = parseDoNo(c, 'cache', 'do or no');
    else {
      if (c.enabled !== undefined) s.cacheEnabled = c.enabled;
      if (c.dir !== undefined) s.cacheDir = parsePath(c.dir, 'cache.dir', base);
      if (c.size !== undefined) s.cacheSize = typeof c.size === 'number' ? c.size : parseSize(c.size, 'cache.size');
      if (c.mem !== undefined) s.cacheMem = typeof c.mem === 'number' ? c.mem : parseSize(c.mem, 'cache.mem');
      if (c.expire !== undefined) {
        s.cacheExpire = typeof c.expire === 'number' ? secondsToMs(c.expire, 'cache.expire') : parseDuration(c.expire, 'cache.expire');
      }
    }
  }
  if (f.sockstap) {
    s.taps = f.sockstap.map((t, i) => {
      const label = `sockstap[${i}]`;
      if (typeof t === 'string') return parseTapRule(t, label);
      const params =
        t.params === undefined
          ? ''
          : typeof t.params === 'string'
            ? t.params
            : Object.entries(t.params)
                .map(([k, v]) => `${k}="${v}"`)
                .join(' ');
      if (typeof t.params === 'object' && Object.values(t.params).some((v) => v.includes('"'))) {
        throw new ConfigError(`${label}.params`, 'a value cannot contain "');
      }
      return parseTapRule(`${joinList(t.protocols)}:{${joinList(t.dst ?? '*')}}:{${joinList(t.src ?? '*')}}:${params}`, label);
    });
  }
  const lists: [keyof ConfigFile, ParameterName][] = [
    ['proxy', 'PROXY'],
    ['socks', 'SOCKS'],
    ['mount', 'MOUNT'],
    ['bandwidth', 'BANDWIDTH'],
    ['quota', 'QUOTA'],
  ];
  for (const [key, name] of lists) {
    const value = f[key] as string | string[] | undefined;
    if (value === undefined) continue;
    listOf(value).forEach((v, i) => apply(name, v, typeof value === 'string' ? key : `${key}[${i}]`));
    // An explicit empty list still overrides nothing and means "none".
    if (name === 'PROXY' || name === 'SOCKS') s.upstreams ??= [];
    else if (name === 'MOUNT') s.mounts ??= [];
    else if (name === 'BANDWIDTH') s.bandwidth ??= [];
    else s.quota ??= [];
  }
  if (f.http !== undefined) s.httpHeaders = parseHttpHeaderRules(f.http, 'http');
  if (f.routes) s.routes = f.routes.map((r, i) => routeFromFile(r, `routes[${i}]`));
  if (f.portmap) s.portmap = f.portmap.flatMap((m, i) => portmapFromFile(m, `portmap[${i}]`));
  if (f.dns) s.dns = dnsFromFile(f.dns);
  if (f.timezone !== undefined) s.timeZone = parseTimeZone(f.timezone, 'timezone');
  if (f.users) {
    const windows: Record<string, TimeWindow> = {};
    const groups: Record<string, readonly string[]> = {};
    for (const [user, u] of Object.entries(f.users)) {
      if (u.when !== undefined) windows[user] = parseTimeWindow(u.when, `users.${user}.when`);
      if (u.groups !== undefined) groups[user] = u.groups.map((g, i) => checkGroupName(g, `users.${user}.groups[${i}]`));
    }
    s.userWindows = windows;
    s.userGroups = groups;
  }
  if (f.admin !== undefined) s.admin = parseHostPort(f.admin, 'admin');
  if (f.ident !== undefined) s.ident = f.ident;
  if (f.socks4auth !== undefined) s.socks4Auth = f.socks4auth;
  if (f.spoof !== undefined) s.spoof = f.spoof === 'client' || f.spoof === true;
  if (f.relay !== undefined) s.relay = f.relay;
  if (f.srcif !== undefined) s.srcif = f.srcif.map((v, i) => parseSrcif(v, `srcif[${i}]`));
  if (f.authttl !== undefined) s.authTtl = parseAuthTtl(f.authttl, 'authttl');
  if (f.workers !== undefined) s.workers = parseWorkers(String(f.workers), 'workers');
  if (f.redis !== undefined) s.redis = parseRedis(f.redis, 'redis');
  if (f.stls !== undefined) s.stls = (Array.isArray(f.stls) ? f.stls : [f.stls]).map((v, i) => parseTlsRule(v, Array.isArray(f.stls) ? `stls[${i}]` : 'stls'));
  if (f.cafile !== undefined) s.caFile = parsePath(f.cafile, 'cafile', base);
  if (f.cakey !== undefined) s.caKey = parsePath(f.cakey, 'cakey', base);
  if (f.tlsverify !== undefined) s.tlsVerify = typeof f.tlsverify === 'boolean' ? f.tlsverify : f.tlsverify === 'do';
  if (f.tlscafile !== undefined) s.tlsTrustFile = parsePath(f.tlscafile, 'tlscafile', base);
  if (f.certfile !== undefined) s.certFile = parsePath(f.certfile, 'certfile', base);
  if (f.keyfile !== undefined) s.keyFile = parsePath(f.keyfile, 'keyfile', base);
  return s;
}

function checkGroupName(name: string, label: string): string {
  const g = name.trim();
  if (g === '' || /[\s,:{}]/.test(g)) throw new ConfigError(label, `bad group name ${JSON.stringify(name)}: no blanks, commas, colons or braces`);
  return g;
}

function accountsFromFile(value: NonNullable<ConfigFile['authorizer']>, label: string, base: string): Accounts | null {
  if (typeof value === 'string') {
    if (value.trim().toLowerCase() === 'none') return null;
    return parseAuthorizer(value, label, base);
  }
  if ('users' in value) return accountsFromMap(value.users, `${label}.users`);
  return loadHtpasswd(resolve(base, value.htpasswd), `${label}.htpasswd`);
}

function secondsToMs(seconds: number, label: string): number {
  const ms = Math.round(seconds * 1000);
  if (!Number.isSafeInteger(ms)) throw new ConfigError(label, 'duration is too large');
  return ms;
}

type RouteItem = NonNullable<ConfigFile['routes']>[number];

/** `{ match: {dst, src, user, proto, door, when}, via: [...] }` → a routing rule. */
function routeFromFile(r: RouteItem, label: string): RouteRule {
  const rule: RouteRule = {
    via: listOf(r.via).map((v, i) => parseChain(v, typeof r.via === 'string' ? `${label}.via` : `${label}.via[${i}]`)),
    source: label,
  };
  if (rule.via.length === 0) throw new ConfigError(`${label}.via`, 'expected at least one route: direct or SCHEME://HOST:PORT');
  if (r.balance !== undefined) {
    if (r.weights !== undefined && r.weights.length !== rule.via.length) {
      throw new ConfigError(`${label}.weights`, `expected one weight per via entry (${rule.via.length}), got ${r.weights.length}`);
    }
    if (r.weights !== undefined && r.balance !== 'weighted') throw new ConfigError(`${label}.weights`, 'weights are for balance: weighted');
    rule.pool = {
      balance: r.balance,
      weights: r.weights ?? rule.via.map(() => 1),
      maxfails: r.maxfails ?? DEFAULT_MAXFAILS,
      failtimeoutMs:
        r.failtimeout === undefined
          ? DEFAULT_FAILTIMEOUT_MS
          : typeof r.failtimeout === 'number'
            ? secondsToMs(r.failtimeout, `${label}.failtimeout`)
            : parseDuration(r.failtimeout, `${label}.failtimeout`),
    };
  } else if (r.weights !== undefined || r.maxfails !== undefined || r.failtimeout !== undefined) {
    throw new ConfigError(label, 'weights, maxfails and failtimeout need balance: round-robin, weighted, hash-src, hash-dst or first-up');
  }
  const m = r.match;
  if (m) {
    if (m.dst !== undefined) rule.dst = parseHostList(joinList(m.dst), `${label}.match.dst`);
    if (m.src !== undefined) rule.src = parseHostList(joinList(m.src), `${label}.match.src`);
    if (m.user !== undefined) rule.users = splitNames(m.user);
    if (m.proto !== undefined) {
      const known = new Set<string>([...TAP_PROTOCOLS, 'raw']);
      const protos = splitNames(m.proto).map((p) => (p === 'pop' ? 'pop3' : p.toLowerCase()));
      const bad = protos.find((p) => !known.has(p));
      if (bad) throw new ConfigError(`${label}.match.proto`, `unknown protocol ${JSON.stringify(bad)}; expected ${[...known].join(', ')}`);
      rule.protocols = protos;
    }
    if (m.door !== undefined) rule.doors = splitNames(m.door).map((d) => d.toLowerCase());
    if (m.when !== undefined) rule.when = parseTimeWindow(m.when, `${label}.match.when`);
  }
  return rule;
}

function splitNames(v: string | readonly string[]): string[] {
  return listOf(v)
    .flatMap((x) => x.split(','))
    .map((x) => x.trim())
    .filter(Boolean);
}

/** The most ports one portmap entry may open. */
const MAX_PORTMAP_PORTS = 1024;

type PortmapItem = NonNullable<ConfigFile['portmap']>[number];

/** `[HOST:]FIRST-LAST` or `[HOST:]PORT` → host and port range. */
function parsePortRange(text: string, label: string, hostOptional: boolean): { host: string; first: number; last: number } {
  const m = /^(.*?)(\d+)-(\d+)$/.exec(text.trim());
  if (!m) {
    const hp = parseHostPort(text, label, hostOptional);
    return { host: hp.host, first: hp.port, last: hp.port };
  }
  const prefix = m[1]!;
  const hp = parseHostPort(`${prefix}${m[2]}`, label, hostOptional);
  const last = parsePort(m[3]!, label);
  if (last < hp.port) throw new ConfigError(label, `port range ${m[2]}-${m[3]} runs backwards`);
  if (last - hp.port + 1 > MAX_PORTMAP_PORTS) throw new ConfigError(label, `at most ${MAX_PORTMAP_PORTS} ports in one range`);
  return { host: hp.host, first: hp.port, last };
}

/** `{ listen: "127.0.0.1:9000-9010", to: "backend:8000-8010", proto: tcp|udp }` → relay listeners. */
function portmapFromFile(m: PortmapItem, label: string): ListenEntry[] {
  const from = parsePortRange(m.listen, `${label}.listen`, true);
  const to = parsePortRange(m.to, `${label}.to`, false);
  const count = from.last - from.first + 1;
  const toCount = to.last - to.first + 1;
  if (toCount !== 1 && toCount !== count) {
    throw new ConfigError(`${label}.to`, `${toCount} destination ports for ${count} listening ports; give as many, or one`);
  }
  if (from.first === 0 && count > 1) throw new ConfigError(`${label}.listen`, 'a range cannot start at port 0');
  const door = m.proto === 'udp' ? 'udprelay' : 'tcprelay';
  const out: ListenEntry[] = [];
  for (let i = 0; i < count; i++) {
    out.push({
      host: from.host,
      port: from.first + i,
      door,
      target: { host: to.host, port: toCount === 1 ? to.first : to.first + i },
      param: label,
    });
  }
  return out;
}

function dnsFromFile(d: NonNullable<ConfigFile['dns']>): DnsConfig {
  const dns: DnsConfig = { ...DEFAULT_DNS, hosts: {} };
  if (d.cache !== undefined) dns.cacheSize = d.cache;
  if (d.ttl !== undefined) dns.ttlMs = typeof d.ttl === 'number' ? secondsToMs(d.ttl, 'dns.ttl') : parseDuration(d.ttl, 'dns.ttl');
  if (d.negativeTtl !== undefined) {
    dns.negativeTtlMs = typeof d.negativeTtl === 'number' ? secondsToMs(d.negativeTtl, 'dns.negativeTtl') : parseDuration(d.negativeTtl, 'dns.negativeTtl');
  }
  if (d.order !== undefined) dns.order = d.order;
  if (d.hosts) {
    const hosts: Record<string, string[]> = {};
    for (const [name, value] of Object.entries(d.hosts)) {
      const addresses = listOf(value).flatMap((a) => a.split(',')).map((a) => a.trim().replace(/^\[(.*)\]$/, '$1'));
      const bad = addresses.find((a) => isIP(a) === 0);
      if (bad !== undefined || addresses.length === 0) {
        throw new ConfigError(`dns.hosts.${name}`, `expected IP addresses, got ${JSON.stringify(bad ?? '')}`);
      }
      hosts[name.toLowerCase().replace(/\.$/, '')] = addresses;
    }
    dns.hosts = hosts;
  }
  return dns;
}
