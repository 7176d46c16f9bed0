/**
 * FTP data connections arrive at the proxy as tunnels of their own: a passive-mode client opens a
 * SOCKS CONNECT to the address of the 227/229 reply (RFC 959 §4.1.2 PASV, RFC 2428 §3 EPSV), an
 * active-mode client asks for a SOCKS BIND (RFC 1928 §4) and announces the bound address with
 * PORT/EPRT (RFC 959 §4.1.2, RFC 2428 §2). This correlation, registered in the instance's registry
 * of expected tunnels (core/expected.ts), lets the pipeline recognise such a tunnel and
 * hand it to the control session that expects it, so the transfer is counted, logged and
 * (downloads) cached.
 *
 * Bounded: passive expectations expire after two minutes (the SOCKS4 document's time limit for the
 * server side) and are capped in number; live control sessions unregister themselves when they end.
 */
import type { Socket } from 'node:net';
import { normalizeAddress, type Session } from '../../core/session.js';
import type { RelayResult } from '../../net/relay.js';
import type { ExpectationRegistry, Expecter, ExpectedTunnel, TunnelQuery } from '../../core/expected.js';

/** How long a PASV/EPSV announcement waits for its data tunnel. */
export const EXPECT_TTL_MS = 2 * 60 * 1000;
/** Announcements kept at once over all sessions; the oldest is dropped first. */
export const MAX_EXPECTATIONS = 4096;

/** One data connection as the control session sees it. */
export class FtpDataConnection {
  up = 0;
  down = 0;
  readonly startMs = Date.now();
  endMs = 0;
  result = '';
  private onEnd: (() => void)[] = [];
  /** Set by the control session: sees every byte from the server (RETR, LIST) for the cache. */
  onServerBytes: ((chunk: Buffer) => void) | null = null;

  constructor(
    readonly mode: 'passive' | 'active',
    readonly sessionId: string,
  ) {}

  get ended(): boolean {
    return this.endMs !== 0;
  }

  /** Called once when the data connection is over; immediately if it already is. */
  whenEnded(fn: () => void): void {
    if (this.ended) fn();
    else this.onEnd.push(fn);
  }

  end(r: { up: number; down: number; result: string }): void {
    if (this.ended) return;
    this.up = r.up;
    this.down = r.down;
    this.result = r.result;
    this.endMs = Date.now();
    const fns = this.onEnd;
    this.onEnd = [];
    for (const fn of fns) fn();
  }
}

/** What a control session registers so that its data tunnels find it. */
export interface FtpControlLink {
  readonly sessionId: string;
  /** Lower-case names and addresses the client may use for the server (control dst, server IP). */
  readonly hosts: ReadonlySet<string>;
  /** A data connection for this session has started. */
  attach(conn: FtpDataConnection): void;
  /** The data connection's sockets as the relay should move them (in TLS after an intercepted PROT P). */
  protectData?(client: Socket, server: Socket): Promise<{ client: Socket; server: Socket }>;
}

interface Expectation {
  link: FtpControlLink;
  hosts: ReadonlySet<string>;
  expires: number;
}

const expectKey = (clientAddress: string, port: number): string => `${normalizeAddress(clientAddress)}|${port}`;
const hostName = (h: string): string => normalizeAddress(h.toLowerCase().replace(/^\[|\]$/g, ''));

/**
 * One instance's FTP correlation: the announcements and live control sessions of the FTP taps
 * of one running sockstap, registered in its registry of expected tunnels.
 */
export class FtpCorrelation implements Expecter {
  private readonly expectations = new Map<string, Expectation>();
  private readonly controls = new Map<string, Set<FtpControlLink>>();

  constructor(private readonly registry: ExpectationRegistry) {
    registry.add(this);
  }

  private sweep(now: number): void {
    for (const [k, e] of this.expectations) {
      if (e.expires <= now) this.expectations.delete(k);
    }
  }

  /** A 227/229 reply announced `port` on one of `hosts`: the next CONNECT there from this client is data. */
  expectPassive(clientAddress: string, hosts: Iterable<string>, port: number, link: FtpControlLink): void {
    const now = Date.now();
    const expectations = this.expectations;
    if (expectations.size >= MAX_EXPECTATIONS) this.sweep(now);
    while (expectations.size >= MAX_EXPECTATIONS) {
      const oldest = expectations.keys().next();
      if (oldest.done) break;
      expectations.delete(oldest.value);
    }
    const key = expectKey(clientAddress, port);
    expectations.delete(key); // re-insert: Map order is age order
    expectations.set(key, { link, hosts: new Set([...hosts].map(hostName)), expires: now + EXPECT_TTL_MS });
    this.registry.announced();
  }

  /** Forget a session's announcements (it ended). */
  forgetPassive(link: FtpControlLink): void {
    for (const [k, e] of this.expectations) if (e.link === link) this.expectations.delete(k);
  }

  /** A control session is live: BIND requests from its client towards its server are its data. */
  registerControl(clientAddress: string, link: FtpControlLink): () => void {
    const ip = normalizeAddress(clientAddress);
    let set = this.controls.get(ip);
    if (!set) this.controls.set(ip, (set = new Set()));
    set.add(link);
    return () => {
      const s = this.controls.get(ip);
      s?.delete(link);
      if (s && s.size === 0) this.controls.delete(ip);
      this.forgetPassive(link);
    };
  }

  /** Counts of what the registry holds (tests, metrics). */
  stats(): { expectations: number; controls: number } {
    this.sweep(Date.now());
    let n = 0;
    for (const s of this.controls.values()) n += s.size;
    return { expectations: this.expectations.size, controls: n };
  }

  /** The control session a tunnel belongs to, with the expectation key to spend (passive), or null. */
  private find(q: TunnelQuery): { link: FtpControlLink; mode: 'passive' | 'active'; key?: string } | null {
    if (this.expectations.size === 0 && this.controls.size === 0) return null;
    if (q.command === 'connect') {
      const key = expectKey(q.clientAddress, q.dst.port);
      const e = this.expectations.get(key);
      if (!e) return null;
      if (e.expires <= Date.now() || !e.hosts.has(hostName(q.dst.host))) return null;
      return { link: e.link, mode: 'passive', key };
    }
    if (q.command === 'bind') {
      // RFC 1928 §4: BIND names the host expected to connect in, the FTP server; pick the most
      // recent live control session of this client to that server.
      const set = this.controls.get(normalizeAddress(q.clientAddress));
      if (!set) return null;
      const host = hostName(q.dst.host);
      let link: FtpControlLink | null = null;
      for (const l of set) if (l.hosts.has(host) || host === '0.0.0.0' || host === '::') link = l;
      return link ? { link, mode: 'active' } : null;
    }
    return null;
  }

  expects(q: TunnelQuery): boolean {
    return this.find(q) !== null;
  }

  /** Is this CONNECT or BIND an FTP data connection a tapped control session expects? A passive announcement is used once. */
  claim(q: TunnelQuery): ExpectedTunnel | null {
    const found = this.find(q);
    if (!found) return null;
    if (found.key !== undefined) this.expectations.delete(found.key);
    const { link, mode } = found;
    const conn = new FtpDataConnection(mode, link.sessionId);
    link.attach(conn);
    return {
      owner: link.sessionId,
      proto: 'ftp-data',
      run: async (client, server, session, idleMs) => {
        const s = link.protectData ? await link.protectData(client, server) : { client, server };
        return relayData(s.client, s.server, conn, session, idleMs);
      },
      finished: (r) => conn.end(r),
      record: (session) => {
        session.sections['ftp-data'] = { control: link.sessionId, mode };
      },
    };
  }
}

/** The FTP correlation of the instance whose registry this is (created on first use). */
export function ftpCorrelation(registry: ExpectationRegistry): FtpCorrelation {
  return registry.part('ftp', (r) => new FtpCorrelation(r));
}

/**
 * The data relay: both directions piped with back-pressure and half-close, bytes counted, the
 * server's bytes shown to the control session (which may store a RETR in the cache). FTP data
 * connections end with a close (RFC 959 §3.3, stream mode), so both ends are torn down together.
 */
function relayData(client: Socket, server: Socket, conn: FtpDataConnection, session: Session, idleMs: number): Promise<RelayResult> {
  session.proto = 'ftp-data';
  session.sections['ftp-data'] = { control: conn.sessionId, mode: conn.mode };
  return new Promise((resolve) => {
    let up = 0;
    let down = 0;
    let result = 'ok';
    let open = 2;
    let last = Date.now();
    let settled = false;
    const timer = setInterval(() => {
      if (idleMs > 0 && Date.now() - last >= idleMs) {
        if (result === 'ok') result = 'idle';
        client.destroy();
        server.destroy();
      }
    }, Math.max(250, Math.min(idleMs > 0 ? idleMs / 4 : 30_000, 30_000)));
    timer.unref();
    const pipe = (src: Socket, dst: Socket, count: (c: Buffer) => void): void => {
      src.on('data', (chunk: Buffer) => {
        last = Date.now();
        count(chunk);
        if (!dst.write(chunk)) {
          src.pause();
          dst.once('drain', () => src.resume());
        }
      });
      src.once('end', () => {
        if (!dst.destroyed) dst.end();
      });
    };
    pipe(client, server, (c) => (up += c.length));
    pipe(server, client, (c) => {
      down += c.length;
      conn.onServerBytes?.(c);
    });
    const onError = (err: NodeJS.ErrnoException): void => {
      if (result === 'ok') result = err.code ?? 'EUPSTREAM';
    };
    const onClose = (): void => {
      // A reset on one side ends the other; a clean close waits for the other's own FIN.
      if (!(client.readableEnded && server.readableEnded)) {
        client.destroy();
        server.destroy();
      }
      if (--open === 0) settle();
    };
    const settle = (): void => {
      if (settled) return;
      settled = true;
      clearInterval(timer);
      const r = { up, down, result };
      conn.end(r);
      resolve(r);
    };
    for (const s of [client, server]) {
      s.allowHalfOpen = true;
      s.on('error', onError);
      if (s.destroyed) {
        open--;
        continue;
      }
      s.once('close', onClose);
    }
    if (open < 2) {
      client.destroy();
      server.destroy();
      if (result === 'ok') result = 'EUPSTREAM';
      if (open === 0) settle();
      return;
    }
    client.resume();
    server.resume();
  });
}
