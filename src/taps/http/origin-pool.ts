/**
 * The origin pool of one running sockstap: keep-alive connections to origins (and to HTTP
 * upstreams) whose sockets come from the pipeline's dialer instead of `net.connect`, pooled per
 * origin, route and pool key. Owned by the instance's HTTP tap (tap.ts): one instance's stop()
 * closes its own pool and no other's.
 */
import http, { type ClientRequest } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { HostPort } from '../../config/types.js';
import { ProxyError } from '../../core/errors.js';

/** Per origin (host, port, pool key): at most this many connections at once; more requests queue. */
const MAX_SOCKETS_PER_ORIGIN = 64;
/** Idle keep-alive connections kept per origin. */
const MAX_FREE_SOCKETS_PER_ORIGIN = 16;
/** All origin connections of the pool together. */
const MAX_TOTAL_SOCKETS = 4096;
/**
 * How long an idle origin connection is kept. Node shortens it to the origin's own
 * `Keep-Alive: timeout=N` hint, so we rarely reuse a connection the origin is closing.
 */
const FREE_SOCKET_TIMEOUT_MS = 15_000;

/** How a request of the pool reaches its origin; carried inside the request options. */
export interface PoolRoute {
  dial(dst: HostPort): Promise<Socket>;
  key: string;
}

export const ROUTE = Symbol('sockstap.forward.route');

export type RoutedArgs = http.ClientRequestArgs & { [ROUTE]?: PoolRoute };

/**
 * A keep-alive agent whose connections come from the pipeline's dialer instead of
 * `net.connect`, pooled per origin and route.
 */
class DialingAgent extends http.Agent {
  constructor(
    options: http.AgentOptions,
    /** Errors of making a pool connection (nothing of the request was sent): a next route may be tried. */
    private readonly dialFailures: WeakSet<Error>,
  ) {
    super(options);
  }

  override createConnection(
    options: http.ClientRequestArgs,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    const route = (options as RoutedArgs)[ROUTE];
    const host = String(options.host ?? '');
    const port = Number(options.port);
    if (!callback) throw new Error('DialingAgent needs the callback form of createConnection');
    if (!route) {
      callback(new ProxyError('EUPSTREAM', 'request without a route reached the forwarding pool'), undefined as never);
      return undefined;
    }
    route.dial({ host, port }).then(
      (socket) => callback(null, socket),
      (err: unknown) => {
        const e = err instanceof Error ? err : new Error(String(err));
        this.dialFailures.add(e);
        // Node's oncreate() only reads the socket argument when err is null.
        callback(e, undefined as never);
      },
    );
    return undefined;
  }

  override getName(options?: http.ClientRequestArgs): string {
    const route = options ? (options as RoutedArgs)[ROUTE] : undefined;
    return `${super.getName(options)}|${route?.key ?? ''}`;
  }

  /**
   * A connection goes back to the pool only while both directions are open. Origin connections
   * are dialed with `allowHalfOpen` (the tunnel relay forwards a FIN), so an origin that closes
   * an idle keep-alive connection (Apache after 5 s, announcing no `timeout=`) leaves it
   * half-closed rather than closed: reused, the request would be written into a connection
   * nobody reads, and neither an answer nor an error would ever come.
   */
  override keepSocketAlive(socket: Socket): boolean {
    if (!reusable(socket)) return false;
    // Node's own decision (the origin's `Keep-Alive: timeout=` hint); typed void, returns a boolean.
    if (!(super.keepSocketAlive(socket) as unknown as boolean)) return false;
    socket.once('end', dropIdle);
    return true;
  }

  override reuseSocket(socket: Socket, req: ClientRequest): void {
    socket.removeListener('end', dropIdle);
    super.reuseSocket(socket, req);
  }
}

function reusable(socket: Socket): boolean {
  return !socket.destroyed && !socket.readableEnded && socket.readable && socket.writable && !socket.errored;
}

/**
 * The origin ended an idle pooled connection: closed and out of the pool at once, the way Node
 * removes a free connection that errors (`agentRemove`), so no request can pick it in between.
 */
function dropIdle(this: Socket): void {
  this.destroy();
  this.emit('agentRemove');
}

function countSockets(lists: NodeJS.ReadOnlyDict<readonly unknown[]>): number {
  let n = 0;
  for (const list of Object.values(lists)) n += list?.length ?? 0;
  return n;
}

export class OriginPool {
  private readonly dialFailures = new WeakSet<Error>();
  private readonly kept = new DialingAgent(
    {
      keepAlive: true,
      maxSockets: MAX_SOCKETS_PER_ORIGIN,
      maxFreeSockets: MAX_FREE_SOCKETS_PER_ORIGIN,
      maxTotalSockets: MAX_TOTAL_SOCKETS,
      timeout: FREE_SOCKET_TIMEOUT_MS,
      scheduling: 'lifo',
    },
    this.dialFailures,
  );
  /**
   * The retry of a request that met a closed pooled connection goes through this agent: it keeps
   * nothing, so the retry always gets a connection of its own, never another pooled one that the
   * origin may have closed at the same moment.
   */
  private readonly fresh = new DialingAgent({ keepAlive: false, maxTotalSockets: MAX_TOTAL_SOCKETS }, this.dialFailures);

  /** The agent of a first attempt (pooled), or of the one retry (a connection of its own). */
  agent(retry: boolean): http.Agent {
    return retry ? this.fresh : this.kept;
  }

  /** Whether the error is one of making a connection, so nothing of the request was sent. */
  isDialFailure(err: Error): boolean {
    return this.dialFailures.has(err);
  }

  /** Origin connections now: in use by a request, and idle in the pool. */
  counts(): { active: number; idle: number } {
    return { active: countSockets(this.kept.sockets) + countSockets(this.fresh.sockets), idle: countSockets(this.kept.freeSockets) };
  }

  /** Closes every origin connection of this pool (stop); later requests open new ones. */
  close(): void {
    this.kept.destroy();
    this.fresh.destroy();
  }
}
