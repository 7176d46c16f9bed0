/**
 * `loadConfig(argv)`: the command line (after the program name) and an optional `-f FILE.yaml`
 * become one validated `Config`, or a `ConfigError` (exit status 2) naming the parameter or YAML
 * path and what was expected. Synchronous, so a bad configuration is refused before anything
 * listens; SIGHUP calls it again with `config.origin`.
 *
 * Precedence: the command line over the file over the defaults. A scalar replaces; a list
 * (listeners, rules, tap rules, upstreams, mounts, bandwidth, quota) given on the command line is
 * used instead of the file's; TIMEOUT and MAXIMA replace only the names they mention.
 */
import { DEFAULT_AUTH_TTL } from '../policy/auth-helper.js';
import { join, resolve } from 'node:path';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import type { Config, ListenSpec, Maxima, TapRule, TimeWindow, Timeouts } from './types.js';
import { parseBandwidth, parseQuota } from './limits.js';
import { ConfigError } from './types.js';
import { parseHostList } from './hostlist.js';
import { readConfigFile } from './file.js';
import { applyParameter, isParameterName, mergeHosts, parseListen, PARAMETERS, type Settings } from './params.js';
import { formatHostPort } from '../core/session.js';
import { braceSplit, didYouMean } from './hints.js';

/** What `npm start` (and `sockstap` with no argument) runs. */
export const DEFAULT_JOB: string[] = ['-P127.0.0.1:1080/auto', 'SOCKSTAP=all', 'CACHE=do', 'STATEDIR=./var', 'ADMIN=127.0.0.1:9180'];

export const DEFAULT_TIMEOUTS: Readonly<Timeouts> = {
  connect: 2 * 60_000,
  handshake: 10_000,
  idle: 15 * 60_000,
  sniff: 300,
  drain: 10_000,
};

export const DEFAULT_MAXIMA: Readonly<Maxima> = { conn: 0, peruser: 0, persrc: 0 };
export const DEFAULT_CACHE_SIZE = 1024 ** 3;
/** CACHEMEM default: 64 MiB of hot objects in memory. */
export const DEFAULT_CACHE_MEM = 64 * 1024 ** 2;
export const DEFAULT_LISTEN = { host: '127.0.0.1', port: 1080 } as const;

function argKey(arg: string): string {
  if (arg.startsWith('-P')) return '-P';
  if (arg.startsWith('-f')) return '-f';
  const eq = arg.indexOf('=');
  return eq > 0 ? arg.slice(0, eq).toUpperCase() : arg;
}

/**
 * The main job with `extra` added: a parameter (or -P) given in `extra` replaces the main job's
 * own setting of it, everything else of the main job stays. With `-f FILE` the file says what
 * to run and the main job is not added.
 */
export function withDefaultJob(extra: readonly string[]): string[] {
  const keys = new Set(extra.map(argKey));
  if (keys.has('-f')) return [...extra];
  return [...DEFAULT_JOB.filter((a) => !keys.has(argKey(a))), ...extra];
}

const MAX_ARGS = 10_000;

export function loadConfig(argv: string[], options: { cwd?: string } = {}): Config {
  const cwd = resolve(options.cwd ?? process.cwd());
  if (argv.length > MAX_ARGS) throw new ConfigError('command line', `more than ${MAX_ARGS} arguments`);
  const cli: Settings = {};
  let file: string | undefined;

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg.startsWith('-f')) {
      const name = arg === '-f' ? argv[++i] : arg.slice(2);
      if (name === undefined || name === '') throw new ConfigError('-f', 'expected a file name: -f FILE.yaml');
      if (file !== undefined) throw new ConfigError('-f', 'given twice; one configuration file at a time');
      file = resolve(cwd, name);
    } else if (arg.startsWith('-P')) {
      (cli.listen ??= []).push(parseListen(arg.slice(2), arg));
    } else if (arg.startsWith('-')) {
      throw new ConfigError(arg, 'unknown option; expected -P[HOST:]PORT[/DOOR], -f FILE.yaml or NAME=VALUE (see --help)');
    } else {
      const eq = arg.indexOf('=');
      if (eq <= 0) {
        throw new ConfigError(JSON.stringify(arg), 'expected NAME=VALUE such as SERVER=socks, or -P[HOST:]PORT (see --help)');
      }
      const name = arg.slice(0, eq).toUpperCase();
      if (!isParameterName(name)) {
        const hint = didYouMean(name, Object.keys(PARAMETERS));
        throw new ConfigError(arg.slice(0, eq), `unknown parameter; ${hint}expected one of ${Object.keys(PARAMETERS).join(', ')}`);
      }
      try {
        applyParameter(cli, name, arg.slice(eq + 1), name, cwd);
      } catch (err) {
        throw err instanceof ConfigError ? withBraceHint(err, argv, i, name) : err;
      }
    }
  }

  const fromFile: Settings = file === undefined ? {} : readConfigFile(file);
  const config = finish(merge(fromFile, cli), cwd);
  config.origin = file === undefined ? { argv: [...argv], cwd } : { argv: [...argv], file, cwd };
  return config;
}

/**
 * `NAME=x{a,b}` unquoted reaches us as `NAME=xa NAME=xb` (the shell's brace expansion): when such
 * a value is refused and its neighbour names the same parameter, say so and show the quoting.
 */
function withBraceHint(err: ConfigError, argv: readonly string[], i: number, name: string): ConfigError {
  const same = (a: string | undefined): boolean => a !== undefined && a.slice(0, a.indexOf('=')).toUpperCase() === name;
  if (!same(argv[i - 1]) && !same(argv[i + 1])) return err;
  let start = i;
  while (same(argv[start - 1])) start--;
  let end = i + 1;
  while (same(argv[end])) end++;
  // Account lists carry passwords: they are shown as ***, never echoed.
  const secret = name === 'AUTHORIZER' || name === 'ADMINAUTH' || name === 'PROXY' || name === 'SOCKS' || name === 'REDIS';
  const mask = (a: string): string => (secret ? a.replace(/:[^,{}@]*(?=[,}@]|$)/g, ':***') : a);
  const typed = braceSplit(argv.slice(start, end), name);
  return new ConfigError(
    name,
    `${err.message.replace(/^[^:]*: /, '')}; ${name}= is given ${end - start} times in a row (${argv.slice(start, end).map((a) => JSON.stringify(mask(a))).join(' ')}): ` +
      `the shell's brace expansion splits an unquoted {a,b} into several arguments; quote the whole argument: '${typed ? mask(typed) : `${name}=...`}'`,
  );
}

/** The command line wins; its lists are used instead of the file's. */
function merge(file: Settings, cli: Settings): Settings {
  const out: Settings = { ...file };
  for (const [key, value] of Object.entries(cli) as [keyof Settings, unknown][]) {
    if (value !== undefined) (out as Record<string, unknown>)[key] = value;
  }
  out.timeouts = { ...file.timeouts, ...cli.timeouts };
  out.maxima = { ...file.maxima, ...cli.maxima };
  // HOSTS= on the command line adds names to the file's dns.hosts.
  if (file.dns && cli.dns) out.dns = { ...file.dns, hosts: mergeHosts(file.dns.hosts, cli.dns.hosts) };
  return out;
}

function finish(s: Settings, cwd: string): Config {
  const server = s.server ?? { door: 'auto' as const };
  const portmap = s.portmap ?? [];
  // A file that only maps ports opens only those ports.
  const explicit = s.listen && s.listen.length > 0 ? s.listen : portmap.length > 0 ? [] : [{ ...DEFAULT_LISTEN, param: '-P' }];
  const entries = [...explicit, ...portmap];
  const seen = new Set<string>();
  const listen: ListenSpec[] = entries.map((e) => {
    const spec: ListenSpec = { host: e.host, port: e.port, door: e.door ?? server.door };
    if (e.tls) spec.tls = true;
    const target = e.target ?? server.target;
    if (spec.door === 'tcprelay' || spec.door === 'udprelay') {
      if (!target) {
        throw new ConfigError(e.param, `a ${spec.door} port needs its destination: SERVER=${spec.door}://HOST:PORT`);
      }
      spec.target = target;
    }
    // Port 0 asks the system for a free port, so several may share the number.
    const key = `${spec.door === 'udprelay' ? 'udp' : 'tcp'} ${formatHostPort(spec.host, spec.port)}`;
    if (spec.port !== 0 && seen.has(key)) throw new ConfigError(e.param, `${formatHostPort(spec.host || '*', spec.port)} is listed twice`);
    seen.add(key);
    return spec;
  });

  const stateDir = s.stateDir ?? resolve(cwd, 'var');
  const config: Config = {
    listen,
    server: server.door,
    reliable: s.reliable ?? parseHostList('.localnet', 'RELIABLE'),
    rules: s.rules ?? [],
    accounts: s.accounts ?? null,
    ident: s.ident ?? false,
    ...(s.socks4Auth ? { socks4Auth: s.socks4Auth } : {}),
    timeouts: { ...DEFAULT_TIMEOUTS, ...s.timeouts },
    maxima: { ...DEFAULT_MAXIMA, ...s.maxima },
    stateDir,
    logDir: s.logDir ?? join(stateDir, 'log'),
    logFormat: s.logFormat ?? 'squid',
    cache: {
      enabled: s.cacheEnabled ?? false,
      dir: s.cacheDir ?? join(stateDir, 'cache'),
      size: s.cacheSize ?? DEFAULT_CACHE_SIZE,
      mem: s.cacheMem ?? DEFAULT_CACHE_MEM,
    },
    taps: s.taps ?? [],
    upstreams: s.upstreams ?? [],
    mounts: s.mounts ?? [],
    bandwidth: s.bandwidth ?? [],
    quota: s.quota ?? [],
    limits: {
      bandwidth: (s.bandwidth ?? []).map((text, i) => parseBandwidth(text, `BANDWIDTH[${i}]`)),
      quota: (s.quota ?? []).map((text, i) => parseQuota(text, `QUOTA[${i}]`)),
    },
    adminAuth: s.adminAuth ?? null,
    ...(s.authTtl ? { authTtl: s.authTtl } : {}),
    spoof: s.spoof ?? false,
    relay: s.relay ?? 'splice',
    workers: s.workers ?? 1,
    origin: { argv: [], cwd },
  };
  if (server.target) config.serverTarget = server.target;
  if (s.cacheExpire !== undefined) config.cache.expire = s.cacheExpire;
  if (s.admin) config.admin = s.admin;
  if (s.redis) config.redis = s.redis;
  const routes = [...(s.routes ?? []), ...(s.pools ?? [])];
  if (routes.length > 0) config.routes = routes;
  if (s.srcif && s.srcif.length > 0) config.srcif = s.srcif;
  if (s.proxyProtocol) config.proxyProtocol = s.proxyProtocol;
  if (s.dns) config.dns = s.dns;
  if (s.httpHeaders) config.httpHeaders = s.httpHeaders;
  if (s.userWindows && Object.keys(s.userWindows).length > 0) config.userWindows = s.userWindows;
  if (s.userGroups && Object.keys(s.userGroups).length > 0) config.userGroups = s.userGroups;
  if ((s.stls && s.stls.length > 0) || s.caFile || s.caKey || s.tlsVerify !== undefined || s.tlsTrustFile) {
    config.tls = { rules: s.stls ?? [], verify: s.tlsVerify ?? true };
    if (s.caFile) config.tls.caFile = s.caFile;
    if (s.caKey) config.tls.caKey = s.caKey;
    if (s.tlsTrustFile) config.tls.trustFile = s.tlsTrustFile;
  }
  if (listen.some((l) => l.tls) || s.certFile || s.keyFile) config.doorTls = loadDoorTls(listen, s.certFile, s.keyFile);
  if (s.tlsTrustFile) stampHopTrust(config, s.tlsTrustFile);
  if (s.timeZone) applyTimeZone(config, s.timeZone);
  config.taps = config.taps.map((t) => tapEffective(t, config, s.timeZone));
  config.accounts?.setTtl?.(config.authTtl ?? DEFAULT_AUTH_TTL);
  config.adminAuth?.setTtl?.(config.authTtl ?? DEFAULT_AUTH_TTL);
  if (config.workers > 1) checkWorkers(config);
  return config;
}

/**
 * What a SOCKSTAP rule's tunnels get: its own TIMEOUT names over the global timeouts, its MOUNTs
 * and PERMIT/REJECT before the global ones. Computed once here, so taps and policy read typed
 * values and never merge or parse per tunnel.
 */
function tapEffective(rule: TapRule, config: Config, zone: string | undefined): TapRule {
  const own = (rule.set.rules ?? []).map((r) => (zone && r.when?.inZone ? { ...r, when: r.when.inZone(zone) } : r));
  return {
    ...rule,
    timeouts: { ...config.timeouts, ...rule.set.timeouts },
    mounts: rule.set.mounts && rule.set.mounts.length > 0 ? [...rule.set.mounts, ...config.mounts] : config.mounts,
    rules: own.length > 0 ? [...own, ...config.rules] : config.rules,
  };
}

/**
 * Several processes share the listeners. The cache store (one SQLite index for all workers) and the
 * admin endpoint (in the primary, fed by every worker) are shared; what still belongs to one
 * process is refused rather than multiplied by N.
 */
function checkWorkers(config: Config): void {
  // BANDWIDTH, MAXIMA and QUOTA hold across workers (scale/workers-limits.ts).
  if (config.listen.some((l) => l.port === 0)) {
    throw new ConfigError('WORKERS', 'workers share fixed ports; port 0 cannot be shared');
  }
}

/** TIMEZONE=: every time window that names no zone of its own is read in `zone`. */
function applyTimeZone(config: Config, zone: string): void {
  config.timeZone = zone;
  const inZone = <T extends { when?: TimeWindow }>(r: T): T => (r.when?.inZone ? { ...r, when: r.when.inZone(zone) } : r);
  config.rules = config.rules.map(inZone);
  if (config.routes) config.routes = config.routes.map(inZone);
  if (config.userWindows) {
    config.userWindows = Object.fromEntries(Object.entries(config.userWindows).map(([u, w]) => [u, w.inZone ? w.inZone(zone) : w]));
  }
}

/**
 * CERTFILE=/KEYFILE= of the TLS doors (-PPORT/https, -PPORT/socks+tls), read now (at start and at
 * each reload, so a renewed certificate is taken at SIGHUP) and checked to form a pair.
 */
function loadDoorTls(listen: readonly ListenSpec[], certFile: string | undefined, keyFile: string | undefined): NonNullable<Config['doorTls']> {
  const door = listen.find((l) => l.tls);
  const which = door ? `-P${formatHostPort(door.host || '*', door.port)}/${door.door === 'http' ? 'https' : 'socks+tls'}` : '';
  if (!door) throw new ConfigError(certFile ? 'CERTFILE' : 'KEYFILE', 'is for TLS doors: add -PPORT/https or -PPORT/socks+tls');
  if (!certFile) throw new ConfigError(which, 'a TLS door needs CERTFILE=FILE (PEM certificate, may hold the chain) and KEYFILE=FILE');
  const read = (file: string, param: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new ConfigError(param, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  };
  const cert = read(certFile, 'CERTFILE');
  const key = keyFile ? read(keyFile, 'KEYFILE') : cert;
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new ConfigError(keyFile ? 'CERTFILE/KEYFILE' : 'CERTFILE', `${certFile}${keyFile ? ` and ${keyFile}` : ''} do not make a usable certificate and key: ${err instanceof Error ? err.message : String(err)}`);
  }
  return { certFile, keyFile: keyFile ?? certFile, cert, key };
}

/** TLSCAFILE= also trusts the servers of `https://` hops (PROXY=https://, YAML routes). */
function stampHopTrust(config: Config, trustFile: string): void {
  for (const u of config.upstreams) if (u.tls) u.tls.trustFile = trustFile;
  for (const t of config.taps) for (const u of t.set.upstreams ?? []) if (u.tls) u.tls.trustFile = trustFile;
  for (const r of config.routes ?? []) for (const chain of r.via) for (const hop of chain) if (hop.tls) hop.tls.trustFile = trustFile;
}
