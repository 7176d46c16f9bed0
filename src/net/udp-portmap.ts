/**
 * The udprelay door (DeleGate SERVER=udprelay://HOST:PORT): a UDP port forwarded to one fixed
 * destination. Each client address:port gets its own session with its own outgoing socket, so the
 * destination's replies go back to the right client; a session idle for `idleMs` ends. The number
 * of sessions and of datagrams queued while a session's socket opens are bounded. With
 * `openSession` each client association is a Session like a TCP door's connection (RELIABLE,
 * MAXIMA, the live list, sessions.jsonl); a client it refuses is not asked again for a second.
 */
import dgram, { type Socket as UdpSocket } from 'node:dgram';
import { isIP } from 'node:net';
import type { HostPort } from '../config/types.js';
import { formatHostPort, normalizeAddress, type Session } from '../core/session.js';
import type { NameCache } from './dns.js';

export interface UdpPortmapOptions {
  listen: { host: string; port: number };
  target: HostPort;
  /** A session with no datagram either way for this long ends (ms). */
  idleMs: number;
  /** Most client sessions at once; a new client beyond it is dropped. Default 1024. */
  maxSessions?: number;
  /** The running instance's name cache (HOSTS=, YAML `dns:`), for a named target. */
  names(): NameCache;
  /** Checkpoint 1 (RELIABLE): datagrams from a source it refuses are dropped. */
  allow?(clientAddress: string): boolean;
  /**
   * The Session of a new client association (checkpoint 1, MAXIMA, listed live); null refuses it.
   * Its bytes are counted into it, and closing it ends the association.
   */
  openSession?(clientAddress: string, clientPort: number): Session | null;
  /** Called once per ended session, with its counts (and its Session when `openSession` made one). */
  onSessionEnd?(record: UdpSessionRecord, session: Session | null): void;
}

export interface UdpSessionRecord {
  client: string;
  dst: string;
  start: number;
  end: number;
  datagramsUp: number;
  datagramsDown: number;
  bytesUp: number;
  bytesDown: number;
  result: string;
}

interface ClientSession {
  record: UdpSessionRecord;
  address: string;
  port: number;
  upstream: UdpSocket;
  ready: boolean;
  queue: Buffer[];
  lastActive: number;
  session: Session | null;
}

/** Datagrams held per session while its outgoing socket opens. */
const MAX_QUEUED = 32;
/** Refused clients remembered (their datagrams dropped unasked, so one line a second at most is logged); the oldest is forgotten first. */
const MAX_REFUSED = 1024;
const REFUSED_HOLD_MS = 1_000;

export class UdpPortmap {
  private server: UdpSocket | null = null;
  private readonly sessions = new Map<string, ClientSession>();
  /** Clients `openSession` refused, until when they are not asked again. */
  private readonly refused = new Map<string, number>();
  private sweep: NodeJS.Timeout | null = null;
  private readonly maxSessions: number;

  constructor(private readonly options: UdpPortmapOptions) {
    this.maxSessions = options.maxSessions ?? 1024;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Bind the port; resolves with the bound address. */
  start(): Promise<{ address: string; port: number }> {
    const host = this.options.listen.host;
    const type = isIP(host) === 6 || host === '' ? 'udp6' : 'udp4';
    const server = dgram.createSocket({ type, ipv6Only: false });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.bind({ address: host || undefined, port: this.options.listen.port }, () => {
        server.off('error', reject);
        server.on('error', () => {}); // a send to a vanished client must not end the door
        server.on('message', (msg, rinfo) => this.fromClient(msg, rinfo.address, rinfo.port));
        const every = Math.max(50, Math.min(5_000, Math.floor(this.options.idleMs / 2)));
        this.sweep = setInterval(() => this.expire(), every);
        const a = server.address();
        resolve({ address: a.address, port: a.port });
      });
    });
  }

  private fromClient(msg: Buffer, rawAddress: string, port: number): void {
    const address = normalizeAddress(rawAddress);
    const key = `${rawAddress}|${port}`;
    let s = this.sessions.get(key);
    if (!s) {
      if (this.options.allow && !this.options.allow(address)) return;
      if (this.sessions.size >= this.maxSessions) return;
      const until = this.refused.get(key);
      if (until !== undefined) {
        if (until > Date.now()) return;
        this.refused.delete(key);
      }
      let session: Session | null = null;
      if (this.options.openSession) {
        session = this.options.openSession(address, port);
        if (!session) {
          if (this.refused.size >= MAX_REFUSED) this.refused.delete(this.refused.keys().next().value!);
          this.refused.set(key, Date.now() + REFUSED_HOLD_MS);
          return;
        }
      }
      s = this.open(key, rawAddress, port, address, session);
    }
    s.lastActive = Date.now();
    s.record.datagramsUp++;
    s.record.bytesUp += msg.length;
    s.session?.countUp(msg.length);
    if (s.ready) s.upstream.send(msg);
    else if (s.queue.length < MAX_QUEUED) s.queue.push(msg);
  }

  private open(key: string, rawAddress: string, port: number, address: string, session: Session | null): ClientSession {
    const { target } = this.options;
    const family = isIP(target.host);
    const upstream = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
    const s: ClientSession = {
      record: {
        client: formatHostPort(address, port),
        dst: formatHostPort(target.host, target.port),
        start: Date.now(),
        end: 0,
        datagramsUp: 0,
        datagramsDown: 0,
        bytesUp: 0,
        bytesDown: 0,
        result: 'ok',
      },
      address: rawAddress,
      port,
      upstream,
      ready: false,
      queue: [],
      lastActive: Date.now(),
      session,
    };
    this.sessions.set(key, s);
    // Closed from outside (admin, shutdown): this association ends, not a later one of the same client.
    session?.onClose(() => {
      if (this.sessions.get(key) === s) this.end(key, session.result);
    });
    upstream.on('error', (err: NodeJS.ErrnoException) => this.end(key, err.code ?? 'EUPSTREAM'));
    upstream.on('message', (msg) => {
      s.lastActive = Date.now();
      s.record.datagramsDown++;
      s.record.bytesDown += msg.length;
      s.session?.countDown(msg.length);
      this.server?.send(msg, s.port, s.address);
    });
    const connect = (host: string): void => {
      if (s.session) s.session.peer = host;
      upstream.connect(target.port, host, () => {
        s.ready = true;
        for (const m of s.queue) upstream.send(m);
        s.queue = [];
      });
    };
    if (family !== 0) connect(target.host);
    else {
      // The outgoing socket was made for IPv4; a name takes its first IPv4 address.
      this.options.names().resolveOne(target.host, 4).then(
        (ip) => {
          if (this.sessions.get(key) === s) connect(ip);
        },
        () => this.end(key, 'ENOTFOUND'),
      );
    }
    return s;
  }

  private end(key: string, result: string): void {
    const s = this.sessions.get(key);
    if (!s) return;
    this.sessions.delete(key);
    s.record.end = Date.now();
    if (s.record.result === 'ok') s.record.result = result;
    s.session?.settle(result);
    try {
      s.upstream.close();
    } catch {
      // already closed
    }
    this.options.onSessionEnd?.(s.record, s.session);
  }

  private expire(): void {
    const now = Date.now();
    for (const [key, s] of this.sessions) {
      if (now - s.lastActive >= this.options.idleMs) this.end(key, 'idle');
    }
  }

  /** Stop: every session ends, the port closes. */
  close(): Promise<void> {
    if (this.sweep) clearInterval(this.sweep);
    this.sweep = null;
    for (const key of [...this.sessions.keys()]) this.end(key, 'closed');
    const server = this.server;
    this.server = null;
    if (!server) return Promise.resolve();
    return new Promise((resolve) => server.close(() => resolve()));
  }
}
