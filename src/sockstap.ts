/**
 * The wiring: listeners, the accept path (checkpoint 1: RELIABLE and MAXIMA), the pipeline and the
 * services (operational log, access.log, sessions.jsonl, admin). start / reload / stop.
 */
import { socketFd } from './native/internals.js';
import cluster from 'node:cluster';
import { setMaxListeners } from 'node:events';
import net, { isIP, type Socket } from 'node:net';
import { join } from 'node:path';
import { startAdmin, type AdminServer } from './admin/server.js';
import { loadAdminToken, type AdminToken } from './admin/token.js';
import { loadConfig } from './config/load.js';
import type { Config, DoorKind, ListenSpec } from './config/types.js';
import { Pipeline } from './pipeline/pipeline.js';
import type { ExpectationRegistry } from './core/expected.js';
import type { OwnAddress } from './net/destination.js';
import { CertificateAuthority, caFiles } from './tls/ca.js';
import { trustContext } from './tls/intercept.js';
import { formatHostPort, Session } from './core/session.js';
import { autoDoor, socksDoor } from './frontdoors/auto.js';
import type { DoorContext, DoorHandler, TunnelSink } from './frontdoors/door.js';
import { httpProxyDoor } from './frontdoors/http-proxy.js';
import { NativeSocksDoor } from './frontdoors/native-socks.js';
import { nativeDoorAvailable } from './native/door.js';
import { nativeHitsAvailable } from './native/hits.js';
import { tcprelayDoor } from './frontdoors/portmap.js';
import { acceptTls } from './frontdoors/tls-door.js';
import { prepareTransparentListener, transparentDoor } from './frontdoors/transparent.js';
import { HttpTap } from './taps/http/tap.js';
import { ruleCaches } from './taps/rules.js';
import { HttpCache } from './cache/http-cache.js';
import { workerIndex } from './cluster.js';
import { AccessLogWriter } from './observe/access-log.js';
import { ProxyEvents } from './observe/events.js';
import { FileLogger, type LineFileHooks, type Logger } from './observe/log.js';
import { SessionsLogWriter } from './observe/sessions-log.js';
import { UdpPortmap } from './net/udp-portmap.js';
import { XferlogWriter } from './observe/xferlog.js';
import { checkSource } from './policy/acl.js';
import { ConnectionLimits } from './policy/limits.js';
import { QuotaService, type QuotaStatus } from './policy/quota.js';
import { BandwidthShaper } from './policy/shaping.js';
import { UsageStore } from './policy/usage.js';
import { openSharedLimits } from './scale/backend.js';
import type { SharedLimits } from './scale/shared-limits.js';
import { limitSubject } from './pipeline/pipeline.js';
import { Runtime } from './runtime.js';
import { LOG_FILES, prepareDirectories, type DirectoryNeed } from './observe/dirs.js';
import { adoptProxyHeader, gateProxyProtocol, proxiedClient, proxyHeaderBytes, screenFirstBytes, type GateHost } from './net/proxy-accept.js';

const DOORS: Partial<Record<DoorKind, DoorHandler>> = {
  auto: autoDoor,
  socks: socksDoor,
  http: httpProxyDoor,
  tcprelay: tcprelayDoor,
  transparent: transparentDoor,
};

/** A failure at start (a port in use): exit status 1, the message names the address. */
export class StartError extends Error {
  readonly code = 'ESTART';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StartError';
  }
}

export interface ListenerInfo {
  door: DoorKind;
  host: string;
  port: number;
  /** A TLS door (-PPORT/https, -PPORT/socks+tls). */
  tls?: boolean;
}

/** An open port: a TCP listener with its door, or a UDP port map. */
interface Listener {
  spec: ListenSpec;
  key: string;
  /** The address really bound (port 0 resolved). */
  bound: { host: string; port: number };
  /** Stop accepting (TCP: live connections stay until they end). */
  close(): Promise<void>;
  /** The native accept path serving this listener, if it does. */
  native?: NativeSocksDoor | null;
}

export interface StartOptions {
  /** Echo the operational log to stderr (the command line does; tests do not). */
  echo?: boolean;
}

function specKey(s: ListenSpec): string {
  return `${s.door}${s.tls ? '+tls' : ''} ${formatHostPort(s.host, s.port)} ${s.target ? `${s.target.host}:${s.target.port}` : ''}`;
}

export class Sockstap {
  readonly events = new ProxyEvents();
  readonly log: FileLogger;
  readonly limits: ConnectionLimits;
  /** BANDWIDTH= token buckets, shared by the connections a limit covers. */
  readonly shaper: BandwidthShaper;
  /** Where MAXIMA, BANDWIDTH and QUOTA meet other workers (WORKERS=) or nodes (REDIS=). */
  readonly shared: SharedLimits;
  /** QUOTA= counters over the usage database (opened by start()). */
  private quotaService: QuotaService | null = null;
  private usage: UsageStore | null = null;
  /** Live sessions by id (the admin API lists and closes them). */
  readonly sessions = new Map<string, Session>();
  readonly startedAt = Date.now();
  private current: Config;
  private listeners: Listener[] = [];
  private readonly pipeline: Pipeline;
  /** This instance's HTTP tap, which owns its origin pool. */
  private readonly httpTap: HttpTap;
  /** What the doors hand their tunnels to: the pipeline (which emits 'established' on success replies). */
  private readonly sink: TunnelSink;
  private readonly shutdown = shutdownController();
  private accessLog: AccessLogWriter;
  private sessionsLog: SessionsLogWriter;
  private xferlog: XferlogWriter;
  private stopping: Promise<void> | null = null;
  private admin: AdminServer | null = null;
  /** The HTTP cache, open when CACHE=do (globally or in a SOCKSTAP rule's params). */
  private cache: HttpCache | null = null;
  readonly totals = { sessions: 0, refused: 0, bytesUp: 0, bytesDown: 0 };
  /** This instance's own state (name cache, article stores, ...), handed to what needs it. */
  readonly runtime = new Runtime();

  /** The registry of expected tunnels of this instance (the FTP taps announce their data connections there). */
  get expectations(): ExpectationRegistry {
    return this.pipeline.expectations;
  }

  constructor(config: Config, options: StartOptions = {}) {
    this.current = config;
    this.log = new FileLogger(join(config.logDir, 'sockstap.log'), { echo: options.echo ?? false, level: 'info' });
    this.log.setHooks(this.logFileHooks('sockstap.log'));
    this.shared = openSharedLimits(config, this.log);
    this.limits = new ConnectionLimits(this.shared);
    this.shaper = new BandwidthShaper(this.shared);
    this.adoptAccounts(config);
    this.accessLog = new AccessLogWriter(join(config.logDir, 'access.log'), config.logFormat, this.logFileHooks('access.log'));
    this.sessionsLog = new SessionsLogWriter(join(config.logDir, 'sessions.jsonl'), this.logFileHooks('sessions.jsonl'));
    this.events.on('access', (r) => this.accessLog.write(r));
    this.events.on('session-end', (s) => this.sessionsLog.write(s));
    this.xferlog = new XferlogWriter(join(config.logDir, 'xferlog'), this.logFileHooks('xferlog'));
    this.events.on('xfer', (r) => this.xferlog.write(r));
    this.events.on('session-end', (s) => this.countUsage(s));
    const quotas = this.quotas;
    this.httpTap = new HttpTap({ events: this.events, log: this.log });
    this.pipeline = new Pipeline({
      config: () => this.current,
      cache: () => this.cache,
      log: this.log,
      events: this.events,
      limits: this.limits,
      shaper: this.shaper,
      quotas,
      shutdown: this.shutdown.signal,
      ownAddresses: () => this.ownAddresses(),
      ca: () => this.ca,
      http: this.httpTap,
      runtime: this.runtime,
    });
    this.sink = this.pipeline;
  }

  config(): Config {
    return this.current;
  }

  /** Accounts that run a helper (AUTHORIZER=-cmd{}) log to sockstap.log. */
  private adoptAccounts(config: Config): void {
    config.accounts?.setLog?.(this.log);
    config.adminAuth?.setLog?.(this.log);
  }

  /** Accounts a reload replaced: their helpers stop once the questions in flight had their time. */
  private readonly retiredAccounts = new Set<NonNullable<Config['accounts']>>();

  private retireAccounts(previous: Config, next: Config): void {
    for (const a of [previous.accounts, previous.adminAuth]) {
      if (!a?.close || a === next.accounts || a === next.adminAuth) continue;
      this.retiredAccounts.add(a);
      const t = setTimeout(() => {
        this.retiredAccounts.delete(a);
        a.close?.();
      }, 30_000);
      t.unref();
    }
  }

  /**
   * A log file's failures and recoveries: counted in /metrics (the `log-file` event), the first
   * failure of a run and the recovery said once in sockstap.log (the failing file keeps its lines
   * and retries every second; sockstap.log's own trouble reaches its file when it is writable again).
   */
  private logFileHooks(file: string): LineFileHooks {
    return {
      onError: (err, first) => {
        this.events.emit('log-file', { file, event: 'error', code: err.code ?? 'EIO' });
        if (first) {
          this.log.error('log file not writable; its lines are kept and retried every second', {
            file: join(this.current.logDir, file),
            error: err.code ?? err.message,
          });
        }
      },
      onRecover: (info) => {
        this.events.emit('log-file', { file, event: 'recovered' });
        this.log.info('log file writable again', { file: join(this.current.logDir, file), failures: info.failures, dropped: info.dropped, failedMs: info.failedMs });
      },
      onDrop: (lines) => this.events.emit('log-file', { file, event: 'dropped', lines }),
    };
  }

  /**
   * SIGUSR1 (logrotate's postrotate), SIGHUP and POST /api/reload: every log file is opened again
   * by its name, so lines go to a new file after `mv access.log access.log.1`; nothing is lost
   * (what was written before goes to the moved file).
   */
  reopenLogs(): void {
    this.accessLog.reopen();
    this.sessionsLog.reopen();
    this.xferlog.reopen();
    this.log.reopen();
    this.log.info('log files reopened', { logdir: this.current.logDir });
  }

  /**
   * The quota service, made on first use: the usage database is opened here (STATEDIR/usage.sqlite);
   * when it cannot open, quotas count in this process only and the reason is logged.
   */
  get quotas(): QuotaService {
    if (!this.quotaService) {
      try {
        this.usage = new UsageStore(this.current.stateDir);
      } catch (err) {
        this.log.error('usage database unavailable; quotas count in memory only', {
          dir: this.current.stateDir,
          error: err instanceof Error ? err.message : String(err),
        });
      }
      this.quotaService = new QuotaService(
        this.shared.usage(this.usage),
        (err) => this.log.error('usage commit failed; retrying', { error: err instanceof Error ? err.message : String(err) }),
        this.shared.commitMs,
      );
    }
    return this.quotaService;
  }

  /** Every QUOTA= with its scope, limit and use this period (the admin's `GET /api/quotas`). */
  quotaStatus(): QuotaStatus[] {
    return this.quotas.status(this.current);
  }

  /** Destinations of recently ended sessions, for the FTP data connections that outlive their control. */
  private readonly endedDst = new Map<string, string>();

  /** A finished session: its totals for `sockstap report`, and what no relay meter counted for the quotas. */
  private countUsage(s: Session): void {
    const quotas = this.quotas;
    const own = s.dst ? formatHostPort(s.dst.host, s.dst.port) : null;
    // An FTP data connection counts for its control session's destination (`sockstap report`).
    const control = (s.sections['ftp-data'] as { control?: string } | undefined)?.control;
    const controlSession = control ? this.sessions.get(control) : undefined;
    const dst =
      (control && (controlSession?.dst ? formatHostPort(controlSession.dst.host, controlSession.dst.port) : this.endedDst.get(control))) || own;
    if (own) {
      this.endedDst.set(s.id, own);
      if (this.endedDst.size > 1024) this.endedDst.delete(this.endedDst.keys().next().value!);
    }
    quotas.recordSession(s.user, dst, s.bytesUp, s.bytesDown, s.endMs || Date.now());
    const metered = quotas.metered(s);
    quotas.addUnmetered(this.current, limitSubject(s), s.bytesUp - metered.up, s.bytesDown - metered.down);
  }

  get logger(): Logger {
    return this.log;
  }

  addresses(): ListenerInfo[] {
    return this.listeners.map((l) => ({ door: l.spec.door, host: l.bound.host, port: l.bound.port, ...(l.spec.tls ? { tls: true } : {}) }));
  }

  /** The listeners and the admin address: destinations the pipeline refuses (never to itself). */
  private ownAddresses(): OwnAddress[] {
    // Asked at every checkpoint 2 (each request of the HTTP door): made again only when the
    // listeners or the admin server changed.
    const known = this.ownKnown;
    if (known && known.listeners === this.listeners && known.count === this.listeners.length && known.admin === this.admin) return known.out;
    const out: OwnAddress[] = this.listeners.map((l) => ({ host: l.bound.host, port: l.bound.port, what: `listener ${formatHostPort(l.bound.host, l.bound.port)}/${l.spec.door}` }));
    if (this.admin) out.push({ ...this.admin.address, what: 'admin' });
    this.ownKnown = { listeners: this.listeners, count: this.listeners.length, admin: this.admin, out };
    return out;
  }

  private ownKnown: { listeners: unknown; count: number; admin: unknown; out: OwnAddress[] } | null = null;

  /** Open (or keep, or close) the HTTP cache the configuration asks for. */
  private async syncCache(config: Config): Promise<void> {
    const wanted = config.cache.enabled || config.taps.some((r) => ruleCaches(config, r));
    if (this.cache && (!wanted || this.cacheDir !== config.cache.dir)) {
      await this.cache.close();
      this.cache = null;
    }
    if (wanted && !this.cache) {
      const cache = new HttpCache({
        dir: config.cache.dir,
        maxBytes: config.cache.size,
        memBytes: config.cache.mem,
        heuristicMs: config.cache.expire,
        log: this.log,
        ...(cluster.isWorker ? { shared: { worker: workerIndex() } } : {}),
      });
      try {
        await cache.open();
      } catch (err) {
        throw new StartError(`cannot open the cache in ${config.cache.dir}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      this.cache = cache;
      this.cacheDir = config.cache.dir;
    }
  }

  private cacheDir = '';

  /** The CA of TLS interception (tls/ca.ts), loaded when an STLS=mitm rule needs it. */
  private ca: CertificateAuthority | null = null;
  private caKey = '';

  /**
   * Load (or create, under STATEDIR/ca) the CA when some STLS rule intercepts, and check that
   * TLSCAFILE can be read; StartError otherwise. The key's contents are never logged.
   */
  private async syncCa(config: Config): Promise<void> {
    if (!config.tls || !config.tls.rules.some((r) => r.action === 'mitm')) {
      this.ca = null;
      this.caKey = '';
      return;
    }
    try {
      trustContext(config.tls);
    } catch (err) {
      throw new StartError(err instanceof Error ? err.message : String(err), { cause: err });
    }
    const files = caFiles(config.stateDir, config.tls);
    const key = `${files.cert}|${files.key}`;
    if (this.ca && this.caKey === key) return;
    try {
      this.ca = await CertificateAuthority.load(files);
    } catch (err) {
      throw new StartError(`TLS interception: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    this.caKey = key;
    this.log.info(this.ca.created ? 'tls interception CA created' : 'tls interception CA loaded', {
      cert: files.cert,
      subject: this.ca.subject,
    });
  }

  /** The CA in use for TLS interception, if any. */
  get interceptionCa(): CertificateAuthority | null {
    return this.ca;
  }

  /** The HTTP cache in use, if any. */
  get httpCache(): HttpCache | null {
    return this.cache;
  }

  /** Open every listener; on failure close the ones already open and throw StartError. */
  async start(): Promise<void> {
    await this.syncCache(this.current);
    await this.syncCa(this.current);
    // REDIS=: the fleet's counts and quota usage before the first connection (or 3 s of trying).
    if (this.shared.kind === 'redis') await this.shared.ready(3000, () => this.quotas.status(this.current));
    for (const spec of this.current.listen) {
      try {
        this.listeners.push(await this.openPort(spec));
      } catch (err) {
        await this.closeListeners();
        throw err;
      }
    }
    // WORKERS=N: the admin runs in the primary (cluster.ts), fed by every worker.
    if (this.current.admin && !cluster.isWorker) {
      let token: AdminToken;
      try {
        token = loadAdminToken(this.current.stateDir);
      } catch (err) {
        await this.closeListeners();
        throw new StartError(`cannot write the admin token under ${this.current.stateDir}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      const adminHost = this.current.admin.host;
      try {
        this.admin = await startAdmin(this.current.admin, this.current.adminAuth, {
          sessions: this.sessions,
          totals: this.totals,
          startedAt: this.startedAt,
          events: this.events,
          cache: () => this.cache,
          quotas: () => this.quotas.status(this.current),
          listeners: () => this.addresses(),
          config: () => this.current,
          reload: () => this.reloadFromOrigin(),
          upstreams: this.runtime.upstreams,
        }, { token: token.value, names: adminHost && isIP(adminHost) === 0 ? [adminHost] : [] });
      } catch (err) {
        await this.closeListeners();
        throw new StartError(err instanceof Error ? err.message : String(err), { cause: err });
      }
      this.shared.registerMetrics(this.admin.metrics.registry);
      this.log.info('admin', { url: this.admin.url });
      // Where the token for state-changing requests is (never the token itself).
      this.adminTokenPath = token.path;
      this.log.info('admin token', { path: token.path, created: token.created, use: 'Authorization: Bearer TOKEN' });
    }
    this.log.info('started', { pid: process.pid, listeners: this.listeners.length, logdir: this.current.logDir });
  }

  /** STATEDIR/admin.token, when ADMIN is on: the Bearer token of state-changing admin requests. */
  adminTokenPath: string | null = null;

  /** The HTTP cache's figures, or null without one (a WORKERS=N worker reports them to the primary). */
  cacheStats(): ReturnType<HttpCache['stats']> | null {
    return this.cache?.stats() ?? null;
  }

  /** The dashboard's address, when ADMIN is on. */
  get adminUrl(): string | null {
    return this.admin?.url ?? null;
  }

  /**
   * SIGHUP and POST /api/reload: build the configuration again from the same command line and file.
   * A broken one throws (ConfigError/StartError) and the old one stays in force.
   */
  async reloadFromOrigin(): Promise<void> {
    // Reopened whatever the new configuration's fate: a refused reload still follows a rotation.
    this.reopenLogs();
    const origin = this.current.origin;
    await this.reload(loadConfig([...origin.argv], { cwd: origin.cwd }));
  }

  /** Open one -P port: a door on TCP, or a UDP port map for udprelay. */
  private openPort(spec: ListenSpec): Promise<Listener> {
    if (spec.door === 'udprelay') return this.openUdpPortmap(spec);
    const door = DOORS[spec.door];
    if (!door) {
      return Promise.reject(
        new StartError(`-P${formatHostPort(spec.host || '*', spec.port)}/${spec.door}: the ${spec.door} door is not available in this version`),
      );
    }
    return this.openListener(spec, door);
  }

  /** udprelay: datagrams to the port go to one fixed destination, one session per client address. */
  private async openUdpPortmap(spec: ListenSpec): Promise<Listener> {
    const label = formatHostPort(spec.host || '*', spec.port);
    if (!spec.target) throw new StartError(`-P${label}/udprelay: no destination (udprelay://HOST:PORT)`);
    const target = spec.target;
    let listen = label;
    const map = new UdpPortmap({
      listen: spec,
      target,
      idleMs: this.current.timeouts.idle,
      names: () => this.runtime.names(this.current.dns),
      // Each client association is a session like a TCP door's connection: RELIABLE, MAXIMA, listed live.
      openSession: (address, port) => {
        const session = new Session({ clientAddress: address, clientPort: port, door: 'udprelay', listen });
        session.frontProtocol = 'udprelay';
        session.command = 'udp';
        session.dst = { host: target.host, port: target.port };
        return this.admitSource(session) ? session : null;
      },
      onSessionEnd: (r, session) => {
        this.log.info('udp session', { client: r.client, dst: r.dst, up: r.bytesUp, down: r.bytesDown, result: r.result });
        if (session) this.endSession(session, null);
      },
    });
    let bound: { address: string; port: number };
    try {
      bound = await map.start();
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = e.code === 'EADDRINUSE' ? 'address already in use' : e.message;
      throw new StartError(`cannot listen on ${label} (udprelay): ${why}`, { cause: err });
    }
    listen = formatHostPort(bound.address, bound.port);
    this.log.info('listening', { door: 'udprelay', addr: listen, to: formatHostPort(target.host, target.port) });
    return { spec, key: specKey(spec), bound: { host: bound.address, port: bound.port }, close: () => map.close() };
  }

  private openListener(spec: ListenSpec, door: DoorHandler): Promise<Listener> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    const ctx: DoorContext = {
      listen: spec,
      config: () => this.current,
      sink: this.sink,
      log: this.log,
      events: this.events,
      listeners: () => this.addresses(),
      runtime: this.runtime,
    };
    const listenLabel = formatHostPort(spec.host || '*', spec.port);
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        const why = err.code === 'EADDRINUSE' ? 'address already in use' : err.code === 'EACCES' ? 'permission denied' : err.message;
        reject(new StartError(`cannot listen on ${listenLabel} (${spec.door}): ${why}`, { cause: err }));
      };
      server.once('error', onError);
      server.listen({ host: spec.host || undefined, port: spec.port }, () => {
        server.off('error', onError);
        server.on('error', (err) => this.log.error('listener error', { listen: listenLabel, error: err.message }));
        const a = server.address();
        const bound = a && typeof a === 'object' ? formatHostPort(a.address, a.port) : listenLabel;
        // TPROXY needs IP_TRANSPARENT on the listener; also says at start what interception works here.
        if (spec.door === 'transparent') prepareTransparentListener(server, this.log, this.runtime, bound);
        server.on('connection', (socket: Socket) => (spec.tls ? acceptTls(socket, this.current, this.log, bound, (t) => this.accept(t, door, ctx, bound)) : void this.accept(socket, door, ctx, bound)));
        const native = spec.tls ? null : this.nativeDoor(spec, server, door, ctx, bound);
        // The thread accepts from now on; a connection libuv accepted before this still gets served.
        // In a WORKERS=N worker the server stays open (see nativeDoor) and both accept.
        if (native && !cluster.isWorker) server.close();
        this.log.info('listening', { door: spec.door, addr: bound, ...(native ? { accept: 'native' } : {}), ...(spec.tls ? { tls: this.current.doorTls?.certFile } : {}) });
        resolve({
          spec,
          key: specKey(spec),
          bound: a && typeof a === 'object' ? { host: a.address, port: a.port } : { host: spec.host, port: spec.port },
          native,
          close: native
            ? () => {
                native.close();
                return cluster.isWorker ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
              }
            : () => new Promise<void>((r) => server.close(() => r())),
        });
      });
    });
  }

  /** Checkpoint 1: the source. Then a session, and the door's handshake. Returns the session, or null when refused. */
  private accept(socket: Socket, door: DoorHandler, ctx: DoorContext, listen: string): Session | null {
    // Errors after this point are handled by whoever owns the socket; never crash on one.
    socket.on('error', noop);
    const config = this.current;
    const remote = socket.remoteAddress;
    if (!remote) {
      socket.destroy();
      return null;
    }
    // PROXYPROTOCOL (net/proxy-accept.ts): the header first; accept runs again once it is read.
    if (gateProxyProtocol(socket, config, ctx.listen.door, this.proxyGate, () => void this.accept(socket, door, ctx, listen))) return null;
    const proxied = proxiedClient(socket);
    const session = new Session({ clientAddress: proxied?.address ?? remote, clientPort: proxied ? proxied.port : socket.remotePort ?? 0, door: ctx.listen.door, listen });
    adoptProxyHeader(session, socket);
    if (!this.admitSource(session)) {
      socket.destroy();
      return null;
    }
    this.attach(session, socket);
    screenFirstBytes(socket, session, config, this.log, () => door(socket, session, ctx));
    return session;
  }

  /** Checkpoint 1 (RELIABLE), then MAXIMA (admit()). False when refused (logged, counted). */
  private admitSource(session: Session): boolean {
    const decision = checkSource(this.current, session.clientAddress);
    if (!decision.allowed) {
      this.totals.refused++;
      this.events.emit('refused', { time: session.startMs, door: session.door, client: session.clientLabel, code: 'EDENIED', by: decision.by });
      this.log.info('source refused', { client: session.clientLabel, listen: session.listen, by: decision.by });
      return false;
    }
    return this.admit(session);
  }

  /** What the PROXYPROTOCOL gate logs to and reports a refusal to. */
  private gateHost: GateHost | null = null;
  private get proxyGate(): GateHost {
    return (this.gateHost ??= {
      log: this.log,
      refused: (door, client, code, by) => {
        this.totals.refused++;
        this.events.emit('refused', { time: Date.now(), door, client, code, by });
      },
    });
  }

  /** MAXIMA for the session's source; then it is live (the admin API lists it). False when refused (logged). */
  private admit(session: Session): boolean {
    const broken = this.limits.acquireSource(this.current.maxima, session.clientAddress, session.listen);
    if (broken) {
      this.totals.refused++;
      this.events.emit('refused', { time: session.startMs, door: session.door, client: session.clientLabel, code: 'ELIMIT', by: `MAXIMA=${broken}` });
      this.log.info('connection limit', { client: session.clientLabel, listen: session.listen, limit: `MAXIMA=${broken}` });
      return false;
    }
    this.sessions.set(session.id, session);
    this.totals.sessions++;
    this.events.emit('session-start', session);
    return true;
  }

  /** The session's client socket: when it closes, the session ends. */
  private attach(session: Session, socket: Socket, carried?: Float64Array | null): void {
    if (socket.listenerCount('error') === 0) socket.on('error', noop);
    session.adopt(socket);
    if (carried) this.carried.set(session, [carried[0]!, carried[1]!]);
    socket.once('close', () => this.endSession(session, socket));
  }

  /** Bytes the native hit path read and wrote on a connection before JavaScript took it. */
  private readonly carried = new WeakMap<Session, [number, number]>();

  /** A session is over: its limits released, its other sockets closed, its record written once the relay's counts are in. */
  private endSession(session: Session, client: Socket | null): void {
    this.limits.releaseSource(session.clientAddress, session.listen);
    session.endMs = Date.now();
    // Close the session's other sockets too (an upstream still dialing, a BIND listener).
    session.close();
    // The relay sets the byte counts when it finishes; wait for it so the record has them.
    void session.settled().then(() => {
      if (client && (session.command === 'http' || session.command === null)) {
        // HTTP door sessions (and ones that never got past the handshake): count the client socket.
        const [up, down] = this.carried.get(session) ?? [0, 0];
        session.bytesUp = up + client.bytesRead - proxyHeaderBytes(client);
        session.bytesDown = down + client.bytesWritten;
      }
      this.totals.bytesUp += session.bytesUp;
      this.totals.bytesDown += session.bytesDown;
      this.sessions.delete(session.id);
      this.events.emit('session-end', session);
    });
  }

  /**
   * The native accept path for a socks, auto or http listener (frontdoors/native-socks.ts; an http
   * listener only for the hit path, frontdoors/native-http.ts), when the
   * addon has it and RELAY is not js. The thread accepts on a duplicate of the listening socket,
   * and the JavaScript server is closed. In a WORKERS=N worker the JavaScript server stays open:
   * the primary shares one listening socket among the workers and keeps it only while some
   * worker's server is open; were they all closed, it would open a new socket for a worker that
   * listens later (a restarted one), which the threads' duplicates of the old one would refuse
   * (address in use). So in a worker both the thread and libuv accept from the socket, each
   * connection taking one path or the other.
   */
  private nativeDoor(spec: ListenSpec, server: net.Server, door: DoorHandler, ctx: DoorContext, listen: string): NativeSocksDoor | null {
    const kind = spec.door;
    if (this.current.relay === 'js' || !nativeDoorAvailable()) return null;
    if (kind !== 'socks' && kind !== 'auto' && !(kind === 'http' && nativeHitsAvailable())) return null;
    // PROXYPROTOCOL: every connection's header is read in JavaScript (net/proxy-accept.ts).
    if (this.current.proxyProtocol) return null;
    const fd = socketFd(server);
    if (typeof fd !== 'number' || fd < 0) return null;
    try {
      return new NativeSocksDoor(fd, door, ctx, {
        accept: (socket, handler) => this.accept(socket, handler, ctx, listen),
        admit: (peer, peerPort, startMs) => {
          const session = new Session({ clientAddress: peer, clientPort: peerPort, door: spec.door, listen, startMs });
          return this.admit(session) ? session : null;
        },
        attach: (session, socket, carried) => this.attach(session, socket, carried),
        end: (session) => this.endSession(session, null),
      });
    } catch (err) {
      this.log.error('native accept path unavailable; accepting in JavaScript', { listen, error: err instanceof Error ? err.message : String(err) });
      return null;
    }
  }

  /**
   * Swap in a new configuration for new connections; live ones keep theirs. Listeners that the
   * new configuration no longer names stop accepting; new ones open. Throws StartError (and keeps
   * the old listeners) when a new one cannot open.
   */
  async reload(next: Config): Promise<void> {
    await this.syncCache(next);
    await this.syncCa(next);
    const wanted = new Map(next.listen.map((s) => [specKey(s), s]));
    const opened: Listener[] = [];
    try {
      for (const [key, spec] of wanted) {
        if (this.listeners.some((l) => l.key === key)) continue;
        opened.push(await this.openPort(spec));
      }
    } catch (err) {
      for (const l of opened) void l.close();
      throw err;
    }
    const keep: Listener[] = [];
    for (const l of this.listeners) {
      if (wanted.has(l.key)) keep.push(l);
      else {
        void l.close();
        this.log.info('listener closed', { door: l.spec.door, addr: formatHostPort(l.spec.host || '*', l.spec.port) });
      }
    }
    this.listeners = [...keep, ...opened];
    const previous = this.current;
    this.adoptAccounts(next);
    this.current = next;
    this.retireAccounts(previous, next);
    this.pipeline.reloaded();
    for (const l of this.listeners) l.native?.reconfigure(next);
    if (next.logDir !== previous.logDir || next.logFormat !== previous.logFormat) {
      const oldAccess = this.accessLog;
      const oldSessions = this.sessionsLog;
      const oldXferlog = this.xferlog;
      this.accessLog = new AccessLogWriter(join(next.logDir, 'access.log'), next.logFormat, this.logFileHooks('access.log'));
      this.sessionsLog = new SessionsLogWriter(join(next.logDir, 'sessions.jsonl'), this.logFileHooks('sessions.jsonl'));
      this.xferlog = new XferlogWriter(join(next.logDir, 'xferlog'), this.logFileHooks('xferlog'));
      void oldXferlog.close();
      void oldAccess.close();
      void oldSessions.close();
      this.log.reopen(join(next.logDir, 'sockstap.log'));
    }
    this.log.info('reloaded', { listeners: this.listeners.length, sessions: this.sessions.size });
  }

  private async closeListeners(): Promise<void> {
    const all = this.listeners;
    this.listeners = [];
    await Promise.all(all.map((l) => l.close()));
  }

  /**
   * Stop accepting, let live sessions finish for up to `drainMs` (TIMEOUT=drain), then close what
   * is left, flush the logs.
   */
  stop(drainMs = this.current.timeouts.drain): Promise<void> {
    this.stopping ??= (async () => {
      const closing = this.closeListeners();
      this.log.info('stopping', { sessions: this.sessions.size, drainMs });
      if (this.sessions.size > 0 && drainMs > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => done(), drainMs);
          const check = (): void => {
            if (this.sessions.size === 0) done();
          };
          const done = (): void => {
            clearTimeout(timer);
            this.events.off('session-end', check);
            resolve();
          };
          this.events.on('session-end', check);
          check();
        });
      }
      this.shutdown.abort();
      for (const s of this.sessions.values()) s.close('ESHUTDOWN');
      await closing;
      await this.admin?.close();
      this.httpTap.close();
      await this.cache?.close();
      // Let the destroyed sessions write their records before the files close (bounded wait).
      for (let i = 0; i < 200 && this.sessions.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
      this.quotaService?.close();
      await this.shared.close();
      this.usage?.close();
      this.current.accounts?.close?.();
      this.current.adminAuth?.close?.();
      for (const a of this.retiredAccounts) a.close?.();
      this.retiredAccounts.clear();
      this.log.info('stopped', { sessions: this.totals.sessions });
      await Promise.all([this.accessLog.close(), this.sessionsLog.close(), this.xferlog.close(), this.log.close()]);
    })();
    return this.stopping;
  }
}

function noop(): void {}

/** Every pending dial listens on this signal: there may be thousands at once, which is not a leak. */
function shutdownController(): AbortController {
  const c = new AbortController();
  setMaxListeners(0, c.signal);
  return c;
}

/** What must be writable at start: logs (with their files), state, and the cache when it is on. */
function directoryNeeds(config: Config): DirectoryNeed[] {
  const needs: DirectoryNeed[] = [
    { param: 'STATEDIR', dir: config.stateDir },
    { param: 'LOGDIR', dir: config.logDir, files: LOG_FILES },
  ];
  if (config.cache.enabled || config.taps.some((r) => ruleCaches(config, r))) needs.push({ param: 'CACHEDIR', dir: config.cache.dir });
  return needs;
}

export async function startSockstap(config: Config, options: StartOptions = {}): Promise<Sockstap> {
  // Unwritable directories are refused before anything opens or listens (observe/dirs.ts).
  const problem = prepareDirectories(directoryNeeds(config));
  if (problem) throw new StartError(problem);
  const proxy = new Sockstap(config, options);
  await proxy.start();
  return proxy;
}
