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
import { join, resolve } from 'node:path';
import type { Config, ListenSpec, Maxima, TimeWindow, Timeouts } from './types.js';
import { ConfigError } from './types.js';
import { parseHostList } from './hostlist.js';
import { readConfigFile } from './file.js';
import { applyParameter, isParameterName, parseListen, PARAMETERS, type Settings } from './params.js';
import { formatHostPort } from '../core/session.js';

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
        throw new ConfigError(arg.slice(0, eq), `unknown parameter; expected one of ${Object.keys(PARAMETERS).join(', ')}`);
      }
      applyParameter(cli, name, arg.slice(eq + 1), name, cwd);
    }
  }

  const fromFile: Settings = file === undefined ? {} : readConfigFile(file);
  const config = finish(merge(fromFile, cli), cwd);
  config.origin = file === undefined ? { argv: [...argv], cwd } : { argv: [...argv], file, cwd };
  return config;
}

/** The command line wins; its lists are used instead of the file's. */
function merge(file: Settings, cli: Settings): Settings {
  const out: Settings = { ...file };
  for (const [key, value] of Object.entries(cli) as [keyof Settings, unknown][]) {
    if (value !== undefined) (out as Record<string, unknown>)[key] = value;
  }
  out.timeouts = { ...file.timeouts, ...cli.timeouts };
  out.maxima = { ...file.maxima, ...cli.maxima };
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
    adminAuth: s.adminAuth ?? null,
    spoof: s.spoof ?? false,
    relay: s.relay ?? 'splice',
    workers: s.workers ?? 1,
    origin: { argv: [], cwd },
  };
  if (server.target) config.serverTarget = server.target;
  if (s.cacheExpire !== undefined) config.cache.expire = s.cacheExpire;
  if (s.admin) config.admin = s.admin;
  if (s.routes && s.routes.length > 0) config.routes = s.routes;
  if (s.dns) config.dns = s.dns;
  if (s.httpHeaders) config.httpHeaders = s.httpHeaders;
  if (s.userWindows && Object.keys(s.userWindows).length > 0) config.userWindows = s.userWindows;
  if (s.timeZone) applyTimeZone(config, s.timeZone);
  if (config.workers > 1) checkWorkers(config);
  return config;
}

/**
 * Several processes share the listeners, but some state still belongs to one process: the HTTP
 * cache index and the admin endpoint's live view. Refuse the combination rather than serve a
 * half-true dashboard or let two processes tidy one cache directory.
 */
function checkWorkers(config: Config): void {
  if (config.cache.enabled || config.taps.some((t) => /^do$/i.test(t.params.CACHE ?? ''))) {
    throw new ConfigError('WORKERS', 'several workers cannot share the HTTP cache yet; use CACHE=no with WORKERS>1');
  }
  if (config.admin) {
    throw new ConfigError('WORKERS', 'the admin endpoint shows one process; leave ADMIN out with WORKERS>1');
  }
  // Buckets and connection counters live in each process: N workers would allow N times the limit.
  if (config.bandwidth.length > 0 || config.taps.some((t) => t.params.BANDWIDTH !== undefined)) {
    throw new ConfigError('WORKERS', 'BANDWIDTH limits are kept per process; use WORKERS=1 with BANDWIDTH');
  }
  if (config.maxima.conn > 0 || config.maxima.peruser > 0 || config.maxima.persrc > 0 || (config.maxima.perdoor ?? 0) > 0) {
    throw new ConfigError('WORKERS', 'MAXIMA counts are kept per process; use WORKERS=1 with MAXIMA');
  }
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
