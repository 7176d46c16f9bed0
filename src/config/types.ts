/**
 * The one validated, typed configuration. Built by `loadConfig()` (src/config/load.ts) from
 * DeleGate-style parameters and/or a YAML file; a reload builds a new one and swaps it in for new
 * connections only. Everything here is plain data or pure matchers: no sockets, no timers.
 */
import type { SrcifRule } from '../upstream/srcif.js';

import type { BandwidthLimit, QuotaLimit } from './limits.js';

export type DoorKind = 'socks' | 'http' | 'auto' | 'tcprelay' | 'udprelay' | 'transparent';

export interface HostPort {
  host: string;
  port: number;
}

/** REDIS=redis://[USER:PASS@]HOST:PORT[/DB]. */
export interface RedisTarget {
  host: string;
  port: number;
  db: number;
  user?: string;
  password?: string;
}

export interface ListenSpec {
  /** Bind address; '' means every interface (Node's dual-stack default). IPv6 without brackets. */
  host: string;
  port: number;
  door: DoorKind;
  /** Fixed destination for a tcprelay/udprelay door. */
  target?: HostPort;
  /** Reached over TLS (-PPORT/https, -PPORT/socks+tls) with Config.doorTls. */
  tls?: boolean;
}

/** What a host list is asked about. */
export interface HostMatchTarget {
  /** The host as the client named it: a DNS name or an IP literal (IPv6 without brackets). */
  host: string;
  /** Addresses the name resolved to, when known; a CIDR element matches any of them. */
  addresses?: readonly string[];
  port?: number;
  /** The authenticated user, for `user@host` elements of source lists (or an SMTP mailbox's local part). */
  user?: string;
  /** The user's groups, for `group:NAME` elements (policy/groups.ts). */
  groups?: readonly string[];
  /** Per-request checks only: the absolute request URL, which `http://host/path*` elements match. */
  url?: string;
  /** Per-request checks only (FTP, POP3): 'write' for a request that changes or deletes; `readonly` elements match anything else. */
  access?: 'read' | 'write';
}

/** A DeleGate host list: `*.example.com,10.0.0.0/8,!bad.example.com,.localnet,*`. */
export interface HostList {
  /** The text it was parsed from, for messages and logs. */
  readonly source: string;
  matches(target: HostMatchTarget): boolean;
  /** True when an element needs the name's addresses (CIDR, IP, .localnet) to decide for a name. */
  readonly needsAddresses: boolean;
}

/** Weekday and time-of-day windows: `mon-fri/0900-1800,sat/1000-1300`. */
export interface TimeWindow {
  readonly source: string;
  contains(date: Date): boolean;
  /**
   * The same window in `timeZone` (TIMEZONE= / YAML `timezone:`), unless the window names its own
   * zone (`mon-fri/0900-1800@Europe/Paris`), which wins.
   */
  inZone?(timeZone: string): TimeWindow;
}

export interface AccessRule {
  action: 'permit' | 'reject';
  /** Lower-case protocol names, or ['*']. Matched against the tunnel's protocol tags. */
  protocols: readonly string[];
  dst: HostList;
  src: HostList;
  when?: TimeWindow;
  /** The parameter text, for log lines ("REJECT=http:*.bad:*"). */
  source: string;
}

/** One account list for every door (SOCKS5 RFC 1929, SOCKS4 user id, HTTP Basic). */
export interface Accounts {
  readonly source: string;
  has(user: string): boolean;
  /** A helper (AUTHORIZER=-cmd{}) answers later: callers await a promise. */
  verify(user: string, password: string): boolean | Promise<boolean>;
  /** AUTHTTL=: how long answers are remembered (accounts that ask elsewhere). */
  setTtl?(ttl: { okMs: number; errMs: number }): void;
  /** Where accounts that run a helper log its events (sockstap.log). */
  setLog?(log: { info(msg: string, f?: Record<string, unknown>): void; warn(msg: string, f?: Record<string, unknown>): void; error(msg: string, f?: Record<string, unknown>): void }): void;
  /** A user's groups, for `group:NAME` scopes (LDAP groups, YAML `users:`); absent or [] for none. */
  groupsOf?(user: string): readonly string[];
  /** Stop what the accounts run (a helper process); at stop and when a reload replaces them. */
  close?(): void;
}

export interface TapRule {
  protocols: readonly string[];
  dst: HostList;
  src: HostList;
  /** NAME=VALUE pairs as written (for logs); `set` holds them typed. */
  params: Readonly<Record<string, string>>;
  /** What the rule's parameters set, compiled once at load; absent fields take the global values. */
  set: TapSettings;
  /**
   * The values that apply to the tunnels this rule picks, the rule's own over the global ones,
   * filled by loadConfig() (config/load.ts tapEffective) so nothing is merged or parsed per tunnel.
   */
  timeouts: Timeouts;
  /** The rule's MOUNTs, then the global ones. */
  mounts: readonly Mount[];
  /** The rule's PERMIT/REJECT first, then the global rules (checkpoints 2 and 3). */
  rules: readonly AccessRule[];
  source: string;
}

/** Per-rule parameters of a SOCKSTAP rule, typed (`SOCKSTAP="http:::CACHE=do EXPIRE=1h"`). */
export interface TapSettings {
  cache?: boolean;
  /** EXPIRE: heuristic freshness (ms) of responses cached through this rule's tunnels. */
  expire?: number;
  /** PROXY=/SOCKS= in the order given: the next hops of this rule's tunnels. */
  upstreams?: readonly Upstream[];
  mounts?: readonly Mount[];
  timeouts?: Partial<Timeouts>;
  /** BANDWIDTH= limits of this rule's tunnels only (their shared buckets are the rule's own). */
  bandwidth?: readonly BandwidthLimit[];
  /** QUOTA= limits counting this rule's tunnels only. */
  quota?: readonly QuotaLimit[];
  rules?: readonly AccessRule[];
  /** MAXSIZE: the SMTP tap's message size limit (552). */
  maxSize?: number;
  /** STRATEGY: when this rule's tunnels dial their server (docs/connect-strategy.md). */
  strategy?: 'auto' | 'dial-first' | 'cache-first';
}


export interface Timeouts {
  /** milliseconds */
  connect: number;
  handshake: number;
  idle: number;
  sniff: number;
  drain: number;
}

export interface Maxima {
  /** 0 means unlimited. */
  conn: number;
  peruser: number;
  persrc: number;
  /** Connections per listener (door); absent or 0 = unlimited. */
  perdoor?: number;
  /** `group:NAME:N`: connections at once of the members of group NAME together. */
  groups?: Readonly<Record<string, number>>;
}

export interface Upstream {
  kind: 'http' | 'socks';
  host: string;
  port: number;
  user?: string;
  password?: string;
  /** SOCKS version for kind 'socks'. */
  version?: '4' | '4a' | '5';
  /** `/proxy-v1`, `/proxy-v2`: a PROXY protocol header naming the client goes first. */
  proxyProtocol?: 1 | 2;
  dst: HostList;
  source: string;
  /** `PROXY=https://...`: the proxy is reached over TLS (verified; TLSCAFILE= adds trust anchors). */
  tls?: HopTls;
}

/** A hop reached over TLS: the server's certificate is verified against the system store and `trustFile`. */
export interface HopTls {
  trustFile?: string;
}

/**
 * One hop of a route: an upstream proxy written as `socks5://[USER:PASS@]HOST:PORT`,
 * `socks4a://`, `socks4://`, `http://`. `names` says whether a destination name is passed on as a
 * name ('remote') or resolved by sockstap first ('local'; always for SOCKS4).
 */
export interface RouteHop {
  kind: 'http' | 'socks4' | 'socks4a' | 'socks5';
  host: string;
  port: number;
  user?: string;
  password?: string;
  names: 'remote' | 'local';
  /** `/proxy-v1`, `/proxy-v2` (on the first hop): a PROXY protocol header naming the client goes first. */
  proxyProtocol?: 1 | 2;
  /** `https://`: an HTTP proxy reached over TLS. */
  tls?: HopTls;
}

/**
 * A routing rule (YAML `routes:`). Every condition given must hold; the first rule that matches
 * picks `via`, an ordered fallback list of chains (an empty chain is `direct`), tried in order
 * until one connects (DeleGate's CONNECT= order).
 */
export interface RouteRule {
  dst?: HostList;
  src?: HostList;
  /** Authenticated user names; `*` any authenticated user, `-` no user. */
  users?: readonly string[];
  /** Protocols found by the sniffer (http, tls, ftp, ...); the rule fits only once one is known. */
  protocols?: readonly string[];
  /** The front protocol: socks4, socks4a, socks5, connect, http, tcprelay, transparent. */
  doors?: readonly string[];
  when?: TimeWindow;
  via: readonly (readonly RouteHop[])[];
  /** `balance:` given: `via` is a pool (upstream/pool.ts), not an ordered fallback list. */
  pool?: PoolSpec;
  /** `routes[2]`, for log lines. */
  source: string;
}

/** How a route spreads connections over its upstreams (YAML `balance:`, `weights:`, `maxfails:`, `failtimeout:`). */
export interface PoolSpec {
  balance: 'round-robin' | 'weighted' | 'hash-src' | 'hash-dst' | 'first-up';
  /** One per `via` entry (weighted); default 1 each. */
  weights: readonly number[];
  /** Consecutive failures that mark an upstream dead. */
  maxfails: number;
  /** How long it stays marked dead before it is probed back, ms. */
  failtimeoutMs: number;
}

/** Name resolution policy (YAML `dns:`); see src/net/dns.ts. */
export interface DnsConfig {
  cacheSize: number;
  ttlMs: number;
  negativeTtlMs: number;
  order: 'auto' | 'ipv4first' | 'ipv6first' | 'ipv4' | 'ipv6';
  hosts: Readonly<Record<string, readonly string[]>>;
}

export interface Mount {
  from: string;
  to: string;
  options: readonly string[];
  /** The MountOptions sockstap honours, typed (config/mount-options.ts); absent: none given. */
  when?: MountConditions;
  /** `direction=fo`: requests are rewritten, responses' Location is not mapped back. Default both. */
  forwardOnly?: boolean;
}

/** DeleGate MountOption conditions: the MOUNT applies only when every one given holds. */
export interface MountConditions {
  /** `from={HostList}`: the client's address (and user). */
  client?: HostList;
  /** `dst={HostList}`: the host and port the request names, before the rewrite. */
  dst?: HostList;
  /** `method={GET,HEAD}`: upper-case request methods. */
  methods?: readonly string[];
  /** `vhost={HostList}` / `nvhost={HostList}`: the name in the request's Host field. */
  vhost?: HostList;
}

/** Header edits of one direction: fields set (replacing any of that name), then fields removed. */
export interface HeaderEdits {
  set: ReadonlyArray<readonly [string, string]>;
  remove: readonly string[];
}

/** YAML `http: { request: {set, remove}, response: {set, remove} }`, applied by the HTTP door and tap. */
export interface HttpHeaderRules {
  /** To the request forwarded to the origin (and the request the cache sees). */
  request: HeaderEdits;
  /** To every response sent to the client, from the origin or from the cache. */
  response: HeaderEdits;
}

export type LogFormat = 'squid' | 'common' | 'combined';

export interface CacheConfig {
  enabled: boolean;
  dir: string;
  /** bytes */
  size: number;
  /** CACHEMEM: bytes of the memory tier (hot small bodies with their heads); 0 = none */
  mem: number;
  /** heuristic freshness in ms, when set */
  expire?: number;
}

/** How a SOCKS4 user id may log in when AUTHORIZER is set (SOCKS4AUTH=). */
export type Socks4Auth = 'userid' | 'none';

export interface Config {
  listen: readonly ListenSpec[];
  /** CERTFILE=/KEYFILE= read at load (and at each reload), for the TLS doors. */
  doorTls?: { certFile: string; keyFile: string; cert: Buffer; key: Buffer };
  /** Door of -P ports that name none. */
  server: DoorKind;
  /** Destination of SERVER=tcprelay://HOST:PORT. */
  serverTarget?: HostPort;
  reliable: HostList;
  /** PROXYPROTOCOL=: sources that must (and alone may) start their connections with a PROXY header; absent = none. */
  proxyProtocol?: HostList;
  /** PERMIT/REJECT in the order given; first match wins; no rule matching means permit. */
  rules: readonly AccessRule[];
  accounts: Accounts | null;
  ident: boolean;
  /**
   * SOCKS4AUTH=userid: with AUTHORIZER set, a SOCKS4 user id found in the account list is a login
   * (it carries no password: the weak form). Absent or `none`: SOCKS4 is refused (91) when
   * AUTHORIZER is set, unless IDENT=do confirms the user id.
   */
  socks4Auth?: Socks4Auth;
  timeouts: Timeouts;
  maxima: Maxima;
  stateDir: string;
  logDir: string;
  logFormat: LogFormat;
  cache: CacheConfig;
  taps: readonly TapRule[];
  upstreams: readonly Upstream[];
  /** SRCIF=: source addresses of direct dials, first match wins; absent = the system's choice. */
  srcif?: readonly SrcifRule[];
  /** YAML routing rules, tried before PROXY=/SOCKS=; absent or empty = none. */
  routes?: readonly RouteRule[];
  /** Name resolution policy; absent = the defaults of src/net/dns.ts. */
  dns?: DnsConfig;
  mounts: readonly Mount[];
  /** Header rules of HTTP requests and responses (YAML `http:`); absent means none. */
  httpHeaders?: HttpHeaderRules;
  /** BANDWIDTH= and QUOTA= values as written (logs, WORKERS checks); `limits` holds them typed. */
  bandwidth: readonly string[];
  quota: readonly string[];
  /** BANDWIDTH= and QUOTA= compiled at load: what the policy services enforce. */
  limits: { bandwidth: readonly BandwidthLimit[]; quota: readonly QuotaLimit[] };
  /** YAML `users: {NAME: {groups: [...]}}`: groups for `group:NAME` scopes (policy/groups.ts). */
  userGroups?: Readonly<Record<string, readonly string[]>>;
  /** YAML `users: {NAME: {when: ...}}`: a user may use the proxy only inside their window. */
  userWindows?: Readonly<Record<string, TimeWindow>>;
  /** TIMEZONE= / YAML `timezone:`: the zone of time windows that name none; absent = the machine's. */
  timeZone?: string;
  admin?: HostPort;
  adminAuth: Accounts | null;
  /** AUTHTTL=: how long external account answers are cached (successes, failures). */
  authTtl?: { okMs: number; errMs: number };
  spoof: boolean;
  /**
   * RELAY=: 'splice' hands untapped, unshaped tunnels to the native splice thread when the addon
   * has it (the default), 'js' keeps every byte in the JavaScript relay.
   */
  relay: RelayKind;
  /** WORKERS=N: processes that share the listeners (Node cluster); 1 = this process alone. */
  workers: number;
  /** REDIS=: where MAXIMA, BANDWIDTH and QUOTA are shared by a fleet of nodes (scale/redis-limits.ts). */
  redis?: RedisTarget;
  /** TLS interception; absent: no STLS rule (nothing is intercepted). */
  tls?: TlsConfig;
  /** Where this configuration came from, so SIGHUP can build it again. */
  origin: { argv: readonly string[]; file?: string; cwd: string };
}

export type RelayKind = 'splice' | 'js';

/** `STLS=mitm[:dst[:src]]` (intercept) or `STLS=-mitm:dst` (never): first match wins. */
export interface TlsRule {
  action: 'mitm' | 'never';
  dst: HostList;
  src: HostList;
  source: string;
}

/** TLS interception (docs/tls-interception.md): STLS=, CAFILE=, CAKEY=, TLSVERIFY=, TLSCAFILE=. */
export interface TlsConfig {
  rules: readonly TlsRule[];
  /** CAFILE= (PEM, may hold the chain of an intermediate); absent: STATEDIR/ca/ca.pem. */
  caFile?: string;
  /** CAKEY= (PEM private key); absent: STATEDIR/ca/ca.key. */
  caKey?: string;
  /** TLSVERIFY=do (default): servers' certificates are verified before interception. */
  verify: boolean;
  /** TLSCAFILE=: extra trust anchors for servers (PEM bundle). */
  trustFile?: string;
}

/** A configuration error: exit status 2, the message names the parameter or YAML path. */
export class ConfigError extends Error {
  readonly param: string;
  constructor(param: string, message: string) {
    super(`${param}: ${message}`);
    this.param = param;
    this.name = 'ConfigError';
  }
}
