/**
 * DeleGate-style parameters, one parser each: `-P[HOST:]PORT[/DOOR]`, `SERVER=`, `SOCKSTAP=`,
 * `PERMIT=`/`REJECT=`, `TIMEOUT=`, ... Each turns its text into typed `Settings` fields and throws
 * `ConfigError` naming the parameter (or the YAML path the value came from) and what was expected.
 * The command line and the YAML file both produce `Settings`; load.ts merges them and fills the
 * defaults.
 */
import { parsePoolParameter } from '../upstream/pool-param.js';
import { availableParallelism } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import type {
  HeaderEdits,
  HttpHeaderRules,
  AccessRule,
  Accounts,
  DoorKind,
  HostList,
  HostPort,
  LogFormat,
  Maxima,
  Mount,
  TapRule,
  TapSettings,
  Timeouts,
  TlsRule,
  Upstream,
  RouteRule,
  DnsConfig,
  TimeWindow,
  Socks4Auth,
} from './types.js';
import { ConfigError, type RedisTarget, type RelayKind } from './types.js';
import { parseHostPort } from './address.js';
import { parseHostList } from './hostlist.js';
import { parseBandwidth, parseQuota } from './limits.js';
import { parseMountOptions } from './mount-options.js';
import { splitTopLevel, stripBraces } from './split.js';
import { parseCount, parseDuration, parseSize } from './units.js';
import { parseAuthorizer } from '../policy/accounts.js';
import { parseAuthTtl } from '../policy/auth-helper.js';
import { parseSrcif, type SrcifRule } from '../upstream/srcif.js';
import { DEFAULT_DNS } from '../net/dns.js';
import { isIP } from 'node:net';
import { closest, didYouMean } from './hints.js';
import { parseTimeWindow } from '../policy/timewindow.js';
import { PER_RULE_NAMES } from './table.js';

/** A -P entry before the door defaults to SERVER. */
export interface ListenEntry {
  host: string;
  port: number;
  door?: DoorKind;
  target?: HostPort;
  /** `-PPORT/https`, `-PPORT/socks+tls`: the door is reached over TLS. */
  tls?: boolean;
  /** Where it was written, for the message when a relay door lacks a target. */
  param: string;
}

/** Everything one source (command line or file) said; unset fields take the other's or the default. */
export interface Settings {
  listen?: ListenEntry[];
  server?: { door: DoorKind; target?: HostPort };
  reliable?: HostList;
  rules?: AccessRule[];
  accounts?: Accounts | null;
  ident?: boolean;
  /** SOCKS4AUTH=userid: with AUTHORIZER, a known SOCKS4 user id alone is a login (weak). */
  socks4Auth?: Socks4Auth;
  timeouts?: Partial<Timeouts>;
  maxima?: Partial<Maxima>;
  stateDir?: string;
  logDir?: string;
  logFormat?: LogFormat;
  cacheEnabled?: boolean;
  cacheDir?: string;
  cacheSize?: number;
  /** CACHEMEM: bytes of the cache's memory tier. */
  cacheMem?: number;
  cacheExpire?: number;
  taps?: TapRule[];
  /** PROXY= and SOCKS= in the order given, tried in that order. */
  upstreams?: Upstream[];
  /** YAML routes: routing rules. */
  routes?: RouteRule[];
  /** POOL=: upstream pools (upstream/pool-param.ts), tried after the routes. */
  pools?: RouteRule[];
  /** YAML portmap: relay ports, added to the listeners. */
  portmap?: ListenEntry[];
  /** YAML dns: name resolution policy. */
  dns?: DnsConfig;
  mounts?: Mount[];
  httpHeaders?: HttpHeaderRules;
  bandwidth?: string[];
  quota?: string[];
  admin?: HostPort;
  adminAuth?: Accounts | null;
  authTtl?: { okMs: number; errMs: number };
  srcif?: SrcifRule[];
  spoof?: boolean;
  relay?: RelayKind;
  workers?: number;
  redis?: RedisTarget;
  userWindows?: Record<string, TimeWindow>;
  userGroups?: Record<string, readonly string[]>;
  timeZone?: string;
  /** STLS= rules in order; CAFILE=, CAKEY=, TLSVERIFY=, TLSCAFILE=. */
  stls?: TlsRule[];
  caFile?: string;
  /** CERTFILE=, KEYFILE=: the certificate and key of TLS doors (-PPORT/https, -PPORT/socks+tls). */
  certFile?: string;
  keyFile?: string;
  caKey?: string;
  tlsVerify?: boolean;
  tlsTrustFile?: string;
  /** PROXYPROTOCOL=: sources whose connections start with a PROXY protocol header. */
  proxyProtocol?: HostList;
}

/** WORKERS=N or auto (one per core): processes sharing the listeners. */
export function parseWorkers(value: string, label: string): number {
  const t = value.trim().toLowerCase();
  if (t === 'auto') return Math.max(1, availableParallelism());
  if (/^[0-9]+$/.test(t)) {
    const n = Number(t);
    if (n >= 1 && n <= 64) return n;
  }
  throw new ConfigError(label, `expected a number of processes from 1 to 64, or auto, got ${JSON.stringify(value)}`);
}

/**
 * REDIS=redis://[USER:PASS@]HOST:PORT[/DB] (port 6379 when left out; USER and PASS may be
 * %-encoded). Errors never repeat the password.
 */
export function parseRedis(value: string, label: string): RedisTarget {
  const m = /^redis:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?(\[[0-9a-fA-F:.]+\]|[^:/@[\]]+)(?::([0-9]+))?(?:\/([0-9]+))?\/?$/.exec(value.trim());
  if (!m) {
    throw new ConfigError(label, `expected redis://[USER:PASS@]HOST:PORT[/DB], got ${JSON.stringify(value.replace(/:[^:@/]*@/, ':***@'))}`);
  }
  const port = m[4] === undefined ? 6379 : Number(m[4]);
  if (port < 1 || port > 65535) throw new ConfigError(label, `port ${m[4]} is out of range`);
  const db = m[5] === undefined ? 0 : Number(m[5]);
  if (db > 65535) throw new ConfigError(label, `database ${m[5]} is out of range`);
  const decode = (s: string): string => {
    try {
      return decodeURIComponent(s);
    } catch {
      throw new ConfigError(label, 'USER or PASS has a bad %-escape');
    }
  };
  const t: RedisTarget = { host: m[3]!.replace(/^\[|\]$/g, ''), port, db };
  if (m[1] !== undefined && m[1] !== '') t.user = decode(m[1]);
  if (m[2] !== undefined) t.password = decode(m[2]);
  return t;
}

/** `redis://user:***@host:port/db`: how logs and errors name the server. */
export function redisLabel(t: RedisTarget): string {
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  const who = t.user !== undefined || t.password !== undefined ? `${t.user ?? ''}${t.password !== undefined ? ':***' : ''}@` : '';
  return `redis://${who}${host}:${t.port}${t.db ? `/${t.db}` : ''}`;
}

/** TIMEZONE=Europe/Paris: an IANA zone name that this Node knows (`local` = the machine's). */
export function parseTimeZone(value: string, label: string): string | undefined {
  const zone = value.trim();
  if (zone === '' || zone.toLowerCase() === 'local') return undefined;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
  } catch {
    throw new ConfigError(label, `unknown time zone ${JSON.stringify(zone)}; expected an IANA name such as Europe/Paris`);
  }
  return zone;
}

export const DOOR_KINDS: readonly DoorKind[] = ['socks', 'http', 'auto', 'tcprelay', 'udprelay', 'transparent'];

/** Protocols a SOCKSTAP rule can interpret; `all` stands for every one of them. */
export const TAP_PROTOCOLS = ['http', 'tls', 'ftp', 'smtp', 'pop3', 'imap', 'nntp', 'ssh', 'telnet'] as const;

/**
 * Protocol names PERMIT/REJECT accept: the taps' application protocols and the tags front doors
 * put on a tunnel (core/tunnel.ts `tags`).
 */
const RULE_PROTOCOLS = new Set<string>([
  ...TAP_PROTOCOLS,
  'socks',
  'socks4',
  'socks4a',
  'socks5',
  'connect',
  'tcprelay',
  'udprelay',
  'transparent',
  'udp',
  'raw',
]);

/** DeleGate's `pop` is POP3; `https` is HTTP in TLS, which the tls tap sees. */
const PROTOCOL_ALIASES: Readonly<Record<string, string>> = { pop: 'pop3', https: 'tls' };

/** Parameters that take NAME=VALUE; the ones marked repeatable accumulate, the others replace. */
export const PARAMETERS = {
  SERVER: false,
  SOCKSTAP: true,
  CACHE: false,
  CACHEDIR: false,
  CACHESIZE: false,
  CACHEMEM: false,
  EXPIRE: false,
  STATEDIR: false,
  LOGDIR: false,
  LOGFORMAT: false,
  RELIABLE: false,
  PERMIT: true,
  REJECT: true,
  AUTHORIZER: false,
  PROXY: true,
  SOCKS: true,
  MOUNT: true,
  TIMEOUT: false,
  MAXIMA: false,
  IDENT: false,
  SOCKS4AUTH: false,
  SPOOF: false,
  RELAY: false,
  BANDWIDTH: true,
  QUOTA: true,
  TIMEZONE: false,
  WORKERS: false,
  REDIS: false,
  ADMIN: false,
  ADMINAUTH: false,
  AUTHTTL: false,
  SRCIF: true,
  HOSTS: true,
  STLS: true,
  CAFILE: false,
  CAKEY: false,
  TLSVERIFY: false,
  TLSCAFILE: false,
  PROXYPROTOCOL: false,
  CERTFILE: false,
  KEYFILE: false,
  POOL: true,
} as const satisfies Record<string, boolean>;

export type ParameterName = keyof typeof PARAMETERS;

/**
 * Parameters a SOCKSTAP rule may apply to the tunnels it picks (`SOCKSTAP="http:::CACHE=do"`):
 * the ones the parameter table (table.ts) marks per-rule.
 */
export const TAP_PARAMETERS: readonly (ParameterName | TapOnlyParameter)[] = PER_RULE_NAMES as readonly (ParameterName | TapOnlyParameter)[];

/**
 * Parameters that only a SOCKSTAP rule takes: MAXSIZE=SIZE, the SMTP tap's message size limit
 * (552); STRATEGY=auto|dial-first|cache-first, the connect strategy of the rule's tunnels.
 */
export type TapOnlyParameter = 'MAXSIZE' | 'STRATEGY';

export function isParameterName(name: string): name is ParameterName {
  return Object.hasOwn(PARAMETERS, name);
}

/**
 * Apply `NAME=VALUE` to `settings`. `label` names the source in messages (`TIMEOUT` on the
 * command line, `timeouts.connect` in a file); `base` is the directory relative paths resolve
 * against.
 */
export function applyParameter(settings: Settings, name: ParameterName, value: string, label: string, base: string): void {
  switch (name) {
    case 'SERVER':
      settings.server = parseServer(value, label);
      return;
    case 'SOCKSTAP':
      (settings.taps ??= []).push(parseTapRule(value, label));
      return;
    case 'CACHE':
      settings.cacheEnabled = parseDoNo(value, label, 'do or no');
      return;
    case 'CACHEDIR':
      settings.cacheDir = parsePath(value, label, base);
      return;
    case 'CACHESIZE':
      settings.cacheSize = parseSize(value, label);
      return;
    case 'CACHEMEM':
      settings.cacheMem = parseSize(value, label);
      return;
    case 'EXPIRE':
      settings.cacheExpire = parseDuration(value, label);
      return;
    case 'STATEDIR':
      settings.stateDir = parsePath(value, label, base);
      return;
    case 'LOGDIR':
      settings.logDir = parsePath(value, label, base);
      return;
    case 'LOGFORMAT':
      settings.logFormat = parseLogFormat(value, label);
      return;
    case 'RELIABLE':
      settings.reliable = parseHostList(value, label);
      return;
    case 'PROXYPROTOCOL':
      settings.proxyProtocol = parseHostList(value, label);
      return;
    case 'PERMIT':
    case 'REJECT':
      (settings.rules ??= []).push(parseAccessRule(name === 'PERMIT' ? 'permit' : 'reject', value, label));
      return;
    case 'AUTHORIZER':
      settings.accounts = parseAccountsValue(value, label, base);
      return;
    case 'PROXY':
      (settings.upstreams ??= []).push(parseUpstream('http', value, label));
      return;
    case 'SOCKS':
      (settings.upstreams ??= []).push(parseUpstream('socks', value, label));
      return;
    case 'MOUNT':
      (settings.mounts ??= []).push(parseMount(value, label));
      return;
    case 'TIMEOUT':
      settings.timeouts = { ...settings.timeouts, ...parseTimeouts(value, label) };
      return;
    case 'MAXIMA':
      settings.maxima = { ...settings.maxima, ...parseMaxima(value, label) };
      return;
    case 'IDENT':
      settings.ident = parseDoNo(value, label, 'do or no');
      return;
    case 'SOCKS4AUTH':
      settings.socks4Auth = parseSocks4Auth(value, label);
      return;
    case 'SPOOF':
      settings.spoof = parseSpoof(value, label);
      return;
    case 'RELAY':
      settings.relay = parseRelay(value, label);
      return;
    case 'BANDWIDTH':
      parseBandwidth(value, label);
      (settings.bandwidth ??= []).push(value.trim());
      return;
    case 'QUOTA':
      parseQuota(value, label);
      (settings.quota ??= []).push(value.trim());
      return;
    case 'TIMEZONE':
      settings.timeZone = parseTimeZone(value, label);
      return;
    case 'WORKERS':
      settings.workers = parseWorkers(value, label);
      return;
    case 'REDIS':
      settings.redis = parseRedis(value, label);
      return;
    case 'ADMIN':
      settings.admin = parseHostPort(value, label);
      return;
    case 'ADMINAUTH':
      settings.adminAuth = parseAccountsValue(value, label, base);
      return;
    case 'SRCIF':
      (settings.srcif ??= []).push(parseSrcif(value, label));
      return;
    case 'AUTHTTL':
      settings.authTtl = parseAuthTtl(value, label);
      return;
    case 'HOSTS':
      settings.dns = { ...DEFAULT_DNS, ...settings.dns, hosts: mergeHosts(settings.dns?.hosts ?? {}, parseHosts(value, label)) };
      return;
    case 'STLS':
      (settings.stls ??= []).push(parseTlsRule(value, label));
      return;
    case 'CAFILE':
      settings.caFile = parsePath(value, label, base);
      return;
    case 'CAKEY':
      settings.caKey = parsePath(value, label, base);
      return;
    case 'TLSVERIFY':
      settings.tlsVerify = parseDoNo(value, label, 'do or no');
      return;
    case 'TLSCAFILE':
      settings.tlsTrustFile = parsePath(value, label, base);
      return;
    case 'POOL':
      (settings.pools ??= []).push(parsePoolParameter(value, label));
      return;
    case 'CERTFILE':
      settings.certFile = parsePath(value, label, base);
      return;
    case 'KEYFILE':
      settings.keyFile = parsePath(value, label, base);
      return;
  }
}

/** Static name entries of two sources: a name in both keeps the addresses of both. */
export function mergeHosts(a: Readonly<Record<string, readonly string[]>>, b: Readonly<Record<string, readonly string[]>>): Record<string, string[]> {
  const out: Record<string, string[]> = Object.fromEntries(Object.entries(a).map(([k, v]) => [k, [...v]]));
  for (const [name, addresses] of Object.entries(b)) {
    const list = (out[name] ??= []);
    for (const x of addresses) if (!list.includes(x)) list.push(x);
  }
  return out;
}

/**
 * `HOSTS=NAME/ADDR[,NAME/ADDR...]` (DeleGate's spelling; YAML `dns.hosts`): static name entries,
 * answered before the system resolver. `{a,b}/ADDR` gives several names one address.
 */
export function parseHosts(text: string, label: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const item of splitTopLevel(text.trim(), ',')) {
    const slash = item.lastIndexOf('/');
    if (slash <= 0) throw new ConfigError(label, `expected NAME/ADDRESS such as example.test/127.0.0.1, got ${JSON.stringify(item)}`);
    const address = item.slice(slash + 1).trim().replace(/^\[(.*)\]$/, '$1');
    if (isIP(address) === 0) throw new ConfigError(label, `expected an IP address after ${JSON.stringify(item.slice(0, slash + 1))}, got ${JSON.stringify(address)}`);
    for (const raw of stripBraces(item.slice(0, slash)).split(',')) {
      const name = raw.trim().toLowerCase().replace(/\.$/, '');
      if (!/^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$/.test(name)) throw new ConfigError(label, `${JSON.stringify(raw)} is not a host name`);
      (out[name] ??= []).push(address);
    }
  }
  return out;
}

/** `STLS=mitm[:dstHostList[:srcHostList]]` or `STLS=-mitm:dstHostList[:srcHostList]`. */
export function parseTlsRule(text: string, label: string): TlsRule {
  const fields = splitTopLevel(text.trim(), ':', { keepUrls: true });
  const [what = '', dstText = '', srcText = ''] = fields;
  const verb = what.trim().toLowerCase();
  if (fields.length > 3 || (verb !== 'mitm' && verb !== '-mitm')) {
    throw new ConfigError(label, `expected mitm[:dstHostList[:srcHostList]] or -mitm:dstHostList, got ${JSON.stringify(text)}`);
  }
  if (verb === '-mitm' && dstText.trim() === '') {
    throw new ConfigError(label, '-mitm needs the destinations never intercepted: STLS=-mitm:dstHostList');
  }
  return {
    action: verb === 'mitm' ? 'mitm' : 'never',
    dst: parseHostList(dstText.trim() === '' ? '*' : dstText, label),
    src: parseHostList(srcText.trim() === '' ? '*' : srcText, label),
    source: `STLS=${text}`,
  };
}

/** `-P[HOST:]PORT[/DOOR]` or `-P[HOST:]PORT/tcprelay://HOST:PORT`; the text after `-P`. */
export function parseListen(text: string, label: string): ListenEntry {
  const t = text.trim();
  if (t === '') throw new ConfigError(label, 'expected -P[HOST:]PORT[/DOOR], e.g. -P1080 or -P127.0.0.1:1080/socks');
  // `-P9000/tcprelay://HOST:PORT` gives a relay port its own destination (an extension of -P).
  const relay = /^([^/]*)\/((?:tcprelay|udprelay):\/\/.*)$/i.exec(t);
  if (relay) {
    const server = parseServer(relay[2]!, label);
    return { ...parseHostPort(relay[1]!, label, true), door: server.door, target: server.target, param: label };
  }
  // The door follows the last '/', which is never inside an address (CIDR does not apply here).
  const slash = t.lastIndexOf('/');
  const address = slash < 0 ? t : t.slice(0, slash);
  const doorText = slash < 0 ? '' : t.slice(slash + 1).trim().toLowerCase();
  // TLS doors: `https` (an HTTP proxy reached over TLS, as browsers know it) and `socks+tls`.
  const tls = doorText === 'https' || doorText === 'socks+tls';
  const door = slash < 0 ? undefined : tls ? (doorText === 'https' ? 'http' : 'socks') : parseDoor(t.slice(slash + 1), label);
  const { host, port } = parseHostPort(address, label, true);
  return tls ? { host, port, door, tls, param: label } : { host, port, door, param: label };
}

export function parseDoor(text: string, label: string): DoorKind {
  const d = text.trim().toLowerCase();
  if ((DOOR_KINDS as readonly string[]).includes(d)) return d as DoorKind;
  throw new ConfigError(label, `unknown door ${JSON.stringify(text)}; ${didYouMean(d, DOOR_KINDS)}expected ${orList(DOOR_KINDS)}`);
}

/** `SERVER=socks|http|auto|transparent|tcprelay://HOST:PORT|udprelay://HOST:PORT`. */
export function parseServer(text: string, label: string): { door: DoorKind; target?: HostPort } {
  const t = text.trim();
  const relay = /^(tcprelay|udprelay):\/\/(.*)$/i.exec(t);
  if (relay) {
    return { door: relay[1]!.toLowerCase() as DoorKind, target: parseHostPort(relay[2]!.replace(/\/$/, ''), label) };
  }
  const door = t.toLowerCase();
  if (door === 'socks' || door === 'http' || door === 'auto' || door === 'transparent') return { door };
  throw new ConfigError(label, `${didYouMean(door, ['socks', 'http', 'auto', 'transparent'])}expected socks, http, auto, transparent or tcprelay://HOST:PORT, got ${JSON.stringify(text)}`);
}

/** A protocol list: `http,ftp`, `all`, `*`. `all` and `*` expand to `all` (the caller decides). */
function parseProtocolList(text: string, label: string, allowed: ReadonlySet<string>, what: string): string[] {
  const names = stripBraces(text)
    .split(',')
    .map((p) => p.trim().toLowerCase());
  const out: string[] = [];
  for (const raw of names) {
    if (raw === '') throw new ConfigError(label, `empty protocol name in ${JSON.stringify(text)}`);
    const name = raw === '*' ? 'all' : (PROTOCOL_ALIASES[raw] ?? raw);
    // `http/METHOD` (PERMIT/REJECT only): an HTTP request rule for that method (policy/http-rules.ts).
    if (allowed === RULE_PROTOCOLS && /^http\/[!#$%&'+.^_`|~0-9a-z-]+$/.test(name)) {
      if (!out.includes(name)) out.push(name);
      continue;
    }
    if (name !== 'all' && !allowed.has(name)) {
      throw new ConfigError(label, `unknown protocol ${JSON.stringify(raw)}; ${didYouMean(name, [...allowed])}expected ${what}`);
    }
    if (!out.includes(name)) out.push(name);
  }
  return out;
}

/** `SOCKSTAP=ProtoList[:[dstHostList][:[srcHostList][:params]]]`. */
export function parseTapRule(text: string, label: string): TapRule {
  const [protoText = '', dstText = '', srcText = '', paramText = ''] = splitTopLevel(text.trim(), ':', {
    limit: 4,
    keepUrls: true,
  });
  const protocols = parseProtocolList(protoText, label, new Set(TAP_PROTOCOLS), 'http, tls, ftp, smtp, pop, imap, nntp, ssh, telnet or all');
  const source = `SOCKSTAP=${text}`;
  const { params, set } = parseTapParams(paramText, label, source);
  return {
    protocols: protocols.includes('all') ? [...TAP_PROTOCOLS] : protocols,
    dst: parseHostList(dstText.trim() === '' ? '*' : dstText, label),
    src: parseHostList(srcText.trim() === '' ? '*' : srcText, label),
    params,
    set,
    // Filled with the global values by loadConfig() (tapEffective); these stand alone until then.
    timeouts: { connect: 0, handshake: 0, idle: 0, sniff: 0, drain: 0, ...set.timeouts },
    mounts: set.mounts ?? [],
    rules: set.rules ?? [],
    source,
  };
}

/**
 * `NAME=VALUE NAME2="VALUE WITH SPACES"`: each one parsed by the parameter's own parser, once,
 * into the rule's typed settings; `params` keeps the text for logs.
 */
function parseTapParams(text: string, label: string, source: string): { params: Record<string, string>; set: TapSettings } {
  const params: Record<string, string> = {};
  const parsed: Settings = {};
  const set: TapSettings = {};
  const re = /\s*([^\s=]+)=("[^"]*"|[^\s"]*)\s*/y;
  let pos = 0;
  const t = text.trim();
  while (pos < t.length) {
    re.lastIndex = pos;
    const m = re.exec(t);
    if (!m) throw new ConfigError(label, `expected NAME=VALUE pairs separated by spaces after the third ':', got ${JSON.stringify(t.slice(pos))}`);
    pos = re.lastIndex;
    const name = m[1]!.toUpperCase();
    const value = m[2]!.startsWith('"') ? m[2]!.slice(1, -1) : m[2]!;
    const where = `${label} ${name}`;
    if (name === 'MAXSIZE') {
      set.maxSize = parseSize(value, where);
    } else if (name === 'STRATEGY') {
      const v = value.toLowerCase();
      if (v !== 'auto' && v !== 'dial-first' && v !== 'cache-first') {
        throw new ConfigError(where, `expected auto, dial-first or cache-first, got ${JSON.stringify(value)}`);
      }
      set.strategy = v;
    } else if (!isParameterName(name) || !TAP_PARAMETERS.includes(name)) {
      throw new ConfigError(label, `${JSON.stringify(m[1])} cannot be set per tunnel; ${didYouMean(name, TAP_PARAMETERS)}expected ${orList(TAP_PARAMETERS)}`);
    } else if (name === 'BANDWIDTH') {
      (set.bandwidth = [...(set.bandwidth ?? [])]).push({ ...parseBandwidth(value, where), group: source });
    } else if (name === 'QUOTA') {
      (set.quota = [...(set.quota ?? [])]).push({ ...parseQuota(value, where), group: source });
    } else {
      if (name === 'TIMEOUT' && /(^|,)\s*drain\s*:/i.test(value)) {
        // The drain time is the whole process's, at shutdown: no tunnel can have its own.
        throw new ConfigError(where, 'drain cannot be set per tunnel (it is the shutdown time of the whole proxy); set TIMEOUT=drain:... globally');
      }
      // No per-tunnel parameter takes a path, so the base directory does not matter here.
      applyParameter(parsed, name, value, where, process.cwd());
    }
    params[name] = value;
  }
  if (parsed.cacheEnabled !== undefined) set.cache = parsed.cacheEnabled;
  if (parsed.cacheExpire !== undefined) set.expire = parsed.cacheExpire;
  if (parsed.upstreams) set.upstreams = parsed.upstreams;
  if (parsed.mounts) set.mounts = parsed.mounts;
  if (parsed.timeouts) set.timeouts = parsed.timeouts;
  if (parsed.rules) set.rules = parsed.rules;
  return { params, set };
}

/** `PERMIT=protoList:dstHostList:srcHostList[:WHEN]` (missing lists mean `*`). */
export function parseAccessRule(action: 'permit' | 'reject', text: string, label: string): AccessRule {
  const fields = splitTopLevel(text.trim(), ':', { keepUrls: true });
  if (fields.length > 4) {
    throw new ConfigError(
      label,
      `expected protoList:dstHostList:srcHostList[:WHEN]; a list with ports or IPv6 goes in braces, as {*:443,[::1]:80}`,
    );
  }
  const [protoText = '', dstText = '', srcText = '', whenText] = fields;
  return buildAccessRule(action, protoText, dstText, srcText, whenText, {
    protocols: label,
    dst: label,
    src: label,
    when: label,
  }, `${action.toUpperCase()}=${text}`);
}

/** Shared by the parameter and the YAML `{action, protocols, dst, src, when}` form. */
export function buildAccessRule(
  action: 'permit' | 'reject',
  protoText: string,
  dstText: string,
  srcText: string,
  whenText: string | undefined,
  labels: { protocols: string; dst: string; src: string; when: string },
  source: string,
): AccessRule {
  const protocols = parseProtocolList(
    protoText.trim() === '' ? '*' : protoText,
    labels.protocols,
    RULE_PROTOCOLS,
    `* or protocol names such as http, ftp, smtp, socks5, connect`,
  );
  const rule: AccessRule = {
    action,
    protocols: protocols.includes('all') ? ['*'] : protocols,
    dst: parseHostList(dstText.trim() === '' ? '*' : dstText, labels.dst),
    src: parseHostList(srcText.trim() === '' ? '*' : srcText, labels.src),
    source,
  };
  if (whenText !== undefined && whenText.trim() !== '') rule.when = parseTimeWindow(whenText, labels.when);
  return rule;
}

/**
 * `PROXY=[https://][USER:PASS@]HOST:PORT[/proxy-v1|/proxy-v2][:dstHostList]`,
 * `SOCKS=[USER:PASS@]HOST:PORT[/4|/4a|/5][/proxy-v1|/proxy-v2][:dstHostList]`.
 * USER and PASS are percent-decoded, so they can carry `@` and `:` as `%40` and `%3A`.
 */
export function parseUpstream(kind: 'http' | 'socks', text: string, label: string): Upstream {
  let t = text.trim();
  // `PROXY=https://HOST:PORT`: an HTTP proxy reached over TLS (`http://` says the default).
  const scheme = kind === 'http' ? /^(https?):\/\//i.exec(t) : null;
  if (scheme) t = t.slice(scheme[0].length);
  const overTls = scheme?.[1]!.toLowerCase() === 'https';
  const expected =
    kind === 'http' ? '[https://][USER:PASS@]HOST:PORT[/proxy-v1|/proxy-v2][:dstHostList]' : '[USER:PASS@]HOST:PORT[/4|/4a|/5][/proxy-v1|/proxy-v2][:dstHostList]';
  const m = /^(?:([^:@]*):([^@]*)@)?(\[[^\]]*\]|[^:@/[\]]+):(\d+)(?:\/([^:]*))?(?::(.*))?$/s.exec(t);
  // Never echo the value: it may carry a password.
  if (!m) throw new ConfigError(label, `expected ${expected}`);
  const [, user, password, hostText, portText, slashText, dstText] = m;
  const { host, port } = parseHostPort(`${hostText}:${portText}`, label);
  // `/proxy-v1` or `/proxy-v2` (after a SOCKS version, if any): send a PROXY protocol header first.
  const { rest: versionText, proxyProtocol } = splitProxyOption(slashText, label);
  let version: Upstream['version'];
  if (versionText !== undefined) {
    if (kind !== 'socks' || !['4', '4a', '5'].includes(versionText.toLowerCase())) {
      throw new ConfigError(label, `unexpected /${versionText}; expected ${expected}`);
    }
    version = versionText.toLowerCase() as Upstream['version'];
  } else if (kind === 'socks') {
    version = '5';
  }
  const upstream: Upstream = {
    kind,
    host,
    port,
    dst: parseHostList(dstText === undefined || dstText.trim() === '' ? '*' : dstText, label),
    source: `${kind === 'http' ? 'PROXY' : 'SOCKS'}=${overTls ? 'https://' : ''}${hostText}:${portText}${slashText ? '/' + slashText : ''}${dstText ? ':' + dstText : ''}`,
  };
  if (version) upstream.version = version;
  if (proxyProtocol) upstream.proxyProtocol = proxyProtocol;
  if (overTls) upstream.tls = {};
  if (user !== undefined) {
    try {
      upstream.user = decodeURIComponent(user);
      upstream.password = decodeURIComponent(password!);
    } catch {
      throw new ConfigError(label, 'bad percent-encoding in USER:PASS');
    }
    if (upstream.user === '') throw new ConfigError(label, 'empty user name before :PASS@');
  }
  if (port === 0) throw new ConfigError(label, 'port 0 is not a server port');
  return upstream;
}

/** The `/proxy-v1` or `/proxy-v2` option among an upstream's slash options; the others stay for the caller. */
function splitProxyOption(text: string | undefined, label: string): { rest: string | undefined; proxyProtocol?: 1 | 2 } {
  if (text === undefined) return { rest: undefined };
  const parts = text.split('/');
  const isOption = (p: string): boolean => /^proxy-v[12]$/i.test(p);
  const pp = parts.filter(isOption);
  if (pp.length > 1) throw new ConfigError(label, 'one of /proxy-v1 or /proxy-v2, once');
  if (pp.length === 0) return { rest: text };
  const rest = parts.filter((p) => !isOption(p));
  return { rest: rest.length === 0 ? undefined : rest.join('/'), proxyProtocol: pp[0]!.endsWith('1') ? 1 : 2 };
}

/** `MOUNT="vURL rURL [opt,opt]"`, DeleGate style: `MOUNT="/mnt/* http://host:port/static/*"`; options: config/mount-options.ts. */
export function parseMount(text: string, label: string): Mount {
  const words = text.trim().split(/\s+/).filter(Boolean);
  if (words.length < 2 || words.length > 3) {
    throw new ConfigError(label, `expected "vURL rURL [options]", e.g. "/mnt/* http://host/static/*", got ${JSON.stringify(text)}`);
  }
  const [from, to, opts] = words as [string, string, string | undefined];
  if (!from.startsWith('/') && !/^[a-z][a-z0-9+.-]*:\/\//i.test(from)) {
    throw new ConfigError(label, `virtual URL ${JSON.stringify(from)} must start with / or scheme://`);
  }
  try {
    new URL(to.replaceAll('*', ''));
  } catch {
    throw new ConfigError(label, `real URL ${JSON.stringify(to)} is not an absolute URL such as http://host:port/path/*`);
  }
  if (!/^http:\/\//i.test(to)) {
    throw new ConfigError(label, `real URL ${JSON.stringify(to)}: only http:// real URLs are fetched`);
  }
  if (from.split('*').length > 2 || to.split('*').length > 2) {
    throw new ConfigError(label, 'at most one * in each URL');
  }
  return { from, to, ...(opts ? parseMountOptions(opts, label) : { options: [] }) };
}

const TIMEOUT_NAMES = ['connect', 'handshake', 'idle', 'sniff', 'drain'] as const;

/** `TIMEOUT=connect:2m,handshake:10s` — only the named ones change. */
export function parseTimeouts(text: string, label: string): Partial<Timeouts> {
  return parseNamedValues(text, label, TIMEOUT_NAMES, 'timeout', (v, l) => parseDuration(v, l));
}

const MAXIMA_NAMES = ['conn', 'peruser', 'persrc', 'perdoor'] as const;

/** `MAXIMA=conn:N,peruser:N,persrc:N`; 0 = unlimited. */
export function parseMaxima(text: string, label: string): Partial<Maxima> {
  // `group:NAME:N` items (one limit per named group) beside the NAME:N ones.
  const groups: Record<string, number> = {};
  const rest = text.split(',').filter((item) => {
    const m = /^\s*group:([^:,]+):(.*)$/i.exec(item);
    if (!m) return true;
    groups[m[1]!.trim()] = parseCount(m[2]!, `${label} group:${m[1]!.trim()}`, 'a count (0 = unlimited)');
    return false;
  });
  const out: Partial<Maxima> = rest.length > 0 ? parseNamedValues(rest.join(','), label, MAXIMA_NAMES, 'maximum', (v, l) => parseCount(v, l, 'a count (0 = unlimited)')) : {};
  if (Object.keys(groups).length > 0) out.groups = groups;
  return out;
}

function parseNamedValues<K extends string>(
  text: string,
  label: string,
  names: readonly K[],
  what: string,
  parse: (value: string, label: string) => number,
): Partial<Record<K, number>> {
  const out: Partial<Record<K, number>> = {};
  for (const item of text.split(',')) {
    const colon = item.indexOf(':');
    if (colon < 0) throw new ConfigError(label, `expected NAME:VALUE pairs such as ${names[0]}:..., got ${JSON.stringify(item)}`);
    const name = item.slice(0, colon).trim().toLowerCase();
    if (!(names as readonly string[]).includes(name)) {
      throw new ConfigError(label, `unknown ${what} ${JSON.stringify(item.slice(0, colon).trim())}; expected ${orList(names)}${closest(name, names) ? ` (did you mean ${closest(name, names)}?)` : ''}`);
    }
    out[name as K] = parse(item.slice(colon + 1), `${label} ${name}`);
  }
  return out;
}

export function parseLogFormat(text: string, label: string): LogFormat {
  const f = text.trim().toLowerCase();
  if (f === 'squid' || f === 'common' || f === 'combined') return f;
  throw new ConfigError(label, `${didYouMean(f, ['squid', 'common', 'combined'])}expected squid, common or combined, got ${JSON.stringify(text)}`);
}

export function parseDoNo(text: string, label: string, expected: string): boolean {
  const v = text.trim().toLowerCase();
  // DeleGate's words only: `yes`, `on`, `true` are near-misses, refused with the accepted ones.
  if (v === 'do') return true;
  if (v === 'no') return false;
  const near = v === 'yes' || v === 'on' || v === 'true' ? ' (write do)' : v === 'off' || v === 'false' ? ' (write no)' : '';
  throw new ConfigError(label, `${near ? '' : didYouMean(v, ['do', 'no'])}expected ${expected}, got ${JSON.stringify(text)}${near}`);
}

/** SOCKS4AUTH=userid|none. */
export function parseSocks4Auth(text: string, label: string): Socks4Auth {
  const v = text.trim().toLowerCase();
  if (v === 'userid' || v === 'none') return v;
  throw new ConfigError(label, `expected userid or none, got ${JSON.stringify(text)}`);
}

function parseSpoof(text: string, label: string): boolean {
  const v = text.trim().toLowerCase();
  if (v === 'client') return true;
  if (v === 'no' || v === 'none') return false;
  throw new ConfigError(label, `expected client or no, got ${JSON.stringify(text)}`);
}

/** RELAY=splice|js: who moves the bytes of untapped tunnels (native/splice.ts, net/relay.ts). */
export function parseRelay(text: string, label: string): RelayKind {
  const v = text.trim().toLowerCase();
  if (v === 'splice' || v === 'js') return v;
  throw new ConfigError(label, `${didYouMean(v, ['splice', 'js'])}expected splice or js, got ${JSON.stringify(text)}`);
}

/** `AUTHORIZER=-list{...}` / `-htpasswd{FILE}`; `none` turns authentication off (to override a file). */
function parseAccountsValue(text: string, label: string, base: string): Accounts | null {
  if (text.trim().toLowerCase() === 'none') return null;
  return parseAuthorizer(text, label, base);
}

export function parsePath(text: string, label: string, base: string): string {
  const t = text.trim();
  if (t === '' || t.includes('\0')) throw new ConfigError(label, 'expected a directory path');
  return isAbsolute(t) ? resolve(t) : resolve(base, t);
}


function orList(items: readonly string[]): string {
  return items.length < 2 ? items.join('') : `${items.slice(0, -1).join(', ')} or ${items[items.length - 1]}`;
}

const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/**
 * Fields a header rule may not set or remove: message framing and routing (RFC 9112 §6), which
 * the proxy itself decides, and the hop-by-hop fields it already removes (RFC 9110 §7.6.1).
 */
const PROTECTED_FIELDS = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'proxy-connection',
]);

function parseHeaderEdits(
  value: { set?: Record<string, string> | undefined; remove?: string[] | undefined } | undefined,
  label: string,
): HeaderEdits {
  const set: [string, string][] = [];
  const remove: string[] = [];
  for (const [name, v] of Object.entries(value?.set ?? {})) {
    if (!FIELD_NAME.test(name)) throw new ConfigError(`${label}.set`, `${JSON.stringify(name)} is not a field name`);
    if (PROTECTED_FIELDS.has(name.toLowerCase())) throw new ConfigError(`${label}.set`, `${name} is decided by the proxy and cannot be set`);
    // RFC 9110 §5.5: no CR, LF or NUL in a field value.
    if (/[\r\n\0]/.test(v)) throw new ConfigError(`${label}.set.${name}`, 'a field value cannot contain CR, LF or NUL');
    set.push([name, v.trim()]);
  }
  for (const name of value?.remove ?? []) {
    if (!FIELD_NAME.test(name)) throw new ConfigError(`${label}.remove`, `${JSON.stringify(name)} is not a field name`);
    if (PROTECTED_FIELDS.has(name.toLowerCase())) throw new ConfigError(`${label}.remove`, `${name} is decided by the proxy and cannot be removed`);
    remove.push(name.toLowerCase());
  }
  return { set, remove };
}

/** YAML `http: { request: {set, remove}, response: {set, remove} }`. */
export function parseHttpHeaderRules(
  value: {
    request?: { set?: Record<string, string> | undefined; remove?: string[] | undefined } | undefined;
    response?: { set?: Record<string, string> | undefined; remove?: string[] | undefined } | undefined;
  },
  label: string,
): HttpHeaderRules {
  return {
    request: parseHeaderEdits(value.request, `${label}.request`),
    response: parseHeaderEdits(value.response, `${label}.response`),
  };
}
