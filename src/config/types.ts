/**
 * The one validated, typed configuration. Built by `loadConfig()` (src/config/load.ts) from
 * DeleGate-style parameters and/or a YAML file; a reload builds a new one and swaps it in for new
 * connections only. Everything here is plain data or pure matchers: no sockets, no timers.
 */

export type DoorKind = 'socks' | 'http' | 'auto' | 'tcprelay' | 'udprelay' | 'transparent';

export interface HostPort {
  host: string;
  port: number;
}

export interface ListenSpec {
  /** Bind address; '' means every interface (Node's dual-stack default). IPv6 without brackets. */
  host: string;
  port: number;
  door: DoorKind;
  /** Fixed destination for a tcprelay/udprelay door. */
  target?: HostPort;
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
  verify(user: string, password: string): boolean;
}

export interface TapRule {
  protocols: readonly string[];
  dst: HostList;
  src: HostList;
  /** NAME=VALUE pairs applied to a tunnel this rule picks. */
  params: Readonly<Record<string, string>>;
  source: string;
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
}

export interface Upstream {
  kind: 'http' | 'socks';
  host: string;
  port: number;
  user?: string;
  password?: string;
  /** SOCKS version for kind 'socks'. */
  version?: '4' | '4a' | '5';
  dst: HostList;
  source: string;
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
  /** `routes[2]`, for log lines. */
  source: string;
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

export interface Config {
  listen: readonly ListenSpec[];
  /** Door of -P ports that name none. */
  server: DoorKind;
  /** Destination of SERVER=tcprelay://HOST:PORT. */
  serverTarget?: HostPort;
  reliable: HostList;
  /** PERMIT/REJECT in the order given; first match wins; no rule matching means permit. */
  rules: readonly AccessRule[];
  accounts: Accounts | null;
  ident: boolean;
  timeouts: Timeouts;
  maxima: Maxima;
  stateDir: string;
  logDir: string;
  logFormat: LogFormat;
  cache: CacheConfig;
  taps: readonly TapRule[];
  upstreams: readonly Upstream[];
  /** YAML routing rules, tried before PROXY=/SOCKS=; absent or empty = none. */
  routes?: readonly RouteRule[];
  /** Name resolution policy; absent = the defaults of src/net/dns.ts. */
  dns?: DnsConfig;
  mounts: readonly Mount[];
  /** Header rules of HTTP requests and responses (YAML `http:`); absent means none. */
  httpHeaders?: HttpHeaderRules;
  /** BANDWIDTH= and QUOTA= values, validated for syntax; enforced by the policy services. */
  bandwidth: readonly string[];
  quota: readonly string[];
  /** YAML `users: {NAME: {when: ...}}`: a user may use the proxy only inside their window. */
  userWindows?: Readonly<Record<string, TimeWindow>>;
  /** TIMEZONE= / YAML `timezone:`: the zone of time windows that name none; absent = the machine's. */
  timeZone?: string;
  admin?: HostPort;
  adminAuth: Accounts | null;
  spoof: boolean;
  /**
   * RELAY=: 'splice' hands untapped, unshaped tunnels to the native splice thread when the addon
   * has it (the default), 'js' keeps every byte in the JavaScript relay.
   */
  relay: RelayKind;
  /** WORKERS=N: processes that share the listeners (Node cluster); 1 = this process alone. */
  workers: number;
  /** Where this configuration came from, so SIGHUP can build it again. */
  origin: { argv: readonly string[]; file?: string; cwd: string };
}

export type RelayKind = 'splice' | 'js';

/** A configuration error: exit status 2, the message names the parameter or YAML path. */
export class ConfigError extends Error {
  readonly param: string;
  constructor(param: string, message: string) {
    super(`${param}: ${message}`);
    this.param = param;
    this.name = 'ConfigError';
  }
}
