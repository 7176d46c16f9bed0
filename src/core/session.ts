/**
 * One typed session object per client connection. It is what sessions.jsonl records, what the
 * admin API lists and what policy decisions are made about. Reachable from any socket of the
 * connection through `sessionOf()`, because only `req.socket` comes back out of Node's servers.
 */
import type { Socket } from 'node:net';
import type { DoorKind, HostPort } from '../config/types.js';

export type TunnelCommand = 'connect' | 'bind' | 'udp';

export interface SessionRecord {
  id: string;
  start: string;
  end: string;
  client: string;
  user: string | null;
  door: string;
  listen: string;
  dst: string | null;
  command: TunnelCommand | 'http' | null;
  route: string;
  proto: string;
  bytesUp: number;
  bytesDown: number;
  result: string;
  [section: string]: unknown;
}

let counter = 0;
const idPrefix = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;

export class Session {
  readonly id: string;
  readonly startMs: number;
  endMs = 0;
  readonly clientAddress: string;
  readonly clientPort: number;
  /** The kind of the listener that accepted the connection. */
  readonly door: DoorKind;
  /** The listener's address, "host:port". */
  readonly listen: string;
  /** The protocol the client spoke to us: socks4, socks4a, socks5, http, connect, tcprelay... */
  frontProtocol = '';
  user: string | null = null;
  dst: HostPort | null = null;
  command: TunnelCommand | 'http' | null = null;
  /** How the server was reached: "direct", "socks5://up:1080", ... */
  route = 'direct';
  /** The address dialed for `dst`, or the first upstream proxy's host: access.log's hierarchy peer. */
  peer: string | null = null;
  /** What the sniffer found in the tunnel; "raw" if nothing. */
  proto = 'raw';
  bytesUp = 0;
  bytesDown = 0;
  /** "ok", or the ProxyErrorCode that ended it, or "closed-by-admin" etc. */
  result = 'ok';
  /** Per-protocol sections (http, ftp, smtp, tls, ...). */
  readonly sections: Record<string, unknown> = {};
  /** Sockets owned by this session, destroyed together by `close()`. */
  readonly sockets = new Set<Socket>();
  /** [up, down] as the relay thread moves them, for a tunnel with no JavaScript socket (native accept path). */
  live: Float64Array | null = null;
  /** What else `close()` must end: a connection that has no JavaScript socket. */
  private readonly closers: (() => void)[] = [];
  private closed = false;
  /** Work still running for this session (a relay finishing its counts); see `hold()`. */
  private readonly holds = new Set<Promise<unknown>>();

  /** `startMs`: when the connection was accepted, if not now (the relay thread accepted it). */
  constructor(init: { clientAddress: string; clientPort: number; door: DoorKind; listen: string; startMs?: number }) {
    this.id = `${idPrefix}-${(++counter).toString(36)}`;
    this.startMs = init.startMs ?? Date.now();
    this.clientAddress = normalizeAddress(init.clientAddress);
    this.clientPort = init.clientPort;
    this.door = init.door;
    this.listen = init.listen;
  }

  /** Squid's hierarchy field for what this session reached: `HIER_DIRECT/192.0.2.1`, `FIRSTUP_PARENT/proxy`. */
  hierarchy(): string {
    const peer = this.peer ?? this.dst?.host ?? '-';
    return `${this.route === 'direct' ? 'HIER_DIRECT' : 'FIRSTUP_PARENT'}/${peer}`;
  }

  get clientLabel(): string {
    return formatHostPort(this.clientAddress, this.clientPort);
  }

  adopt(socket: Socket): void {
    this.sockets.add(socket);
    sessionBySocket.set(socket, this);
    socket.once('close', () => this.sockets.delete(socket));
  }

  /** Bytes relayed from the client towards the server. */
  countUp(n: number): void {
    this.bytesUp += n;
  }

  /** Bytes relayed from the server towards the client. */
  countDown(n: number): void {
    this.bytesDown += n;
  }

  /** Record how the session ended, unless an earlier cause was recorded already (the first one wins). */
  settle(result: string): void {
    if (result && this.result === 'ok') this.result = result;
  }

  /** Whether close() was called (closed from outside, or ended). */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Call `end` when the session is closed from outside (admin close, shutdown, limits). */
  onClose(end: () => void): void {
    this.closers.push(end);
  }

  /** Keep the session's record open until `work` settles (the relay writes the byte counts last). */
  hold<T>(work: Promise<T>): Promise<T> {
    this.holds.add(work);
    const done = (): void => {
      this.holds.delete(work);
    };
    work.then(done, done);
    return work;
  }

  /** Resolves when every held piece of work has settled. */
  async settled(): Promise<void> {
    while (this.holds.size > 0) await Promise.allSettled([...this.holds]);
  }

  /** Ends every socket of the session at once (admin close, shutdown, limits). */
  close(result?: string): void {
    if (result) this.settle(result);
    if (this.closed) return;
    this.closed = true;
    for (const s of this.sockets) s.destroy();
    for (const end of this.closers) end();
  }

  toRecord(): SessionRecord {
    return {
      id: this.id,
      start: new Date(this.startMs).toISOString(),
      end: new Date(this.endMs || Date.now()).toISOString(),
      client: this.clientLabel,
      user: this.user,
      door: this.frontProtocol || this.door,
      listen: this.listen,
      dst: this.dst ? formatHostPort(this.dst.host, this.dst.port) : null,
      command: this.command,
      route: this.route,
      proto: this.proto,
      bytesUp: this.bytesUp,
      bytesDown: this.bytesDown,
      result: this.result,
      ...this.sections,
    };
  }
}

const sessionBySocket = new WeakMap<Socket, Session>();

export function sessionOf(socket: Socket): Session | undefined {
  return sessionBySocket.get(socket);
}

/** "::ffff:127.0.0.1" → "127.0.0.1": one spelling of an IPv4 client in ACLs and logs. */
export function normalizeAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
