/**
 * The contract every front door implements. A door learns who the client is and where it wants to
 * go, then hands a `Tunnel` to the pipeline (or, for an absolute-form HTTP request, the request
 * itself). Doors never dial and never import taps.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Config, HostPort, ListenSpec } from '../config/types.js';
import type { Plan } from '../core/plan.js';
import type { Session } from '../core/session.js';
import type { Tunnel } from '../core/tunnel.js';
import type { ProxyEvents } from '../observe/events.js';
import type { Logger } from '../observe/log.js';
import type { Runtime } from '../runtime.js';

/** Where doors hand their work; implemented by pipeline/pipeline.ts. */
export interface TunnelSink {
  /** Decide, dial, reply through the tunnel's callbacks, relay; resolves when the tunnel ends. */
  handle(tunnel: Tunnel): Promise<void>;
  /** An absolute-form HTTP request from the HTTP door (policy, forward, access.log). */
  forwardHttp(req: IncomingMessage, res: ServerResponse, session: Session): void;
  /**
   * An origin-form request (`GET /mnt/x`) from the HTTP door, as a reverse proxy: when a MOUNT maps
   * `virtual` (the authority its Host names, and its path), the request is served as `forwardHttp`
   * serves one and the answer is true; false when none does (nothing was done, the door replies).
   */
  reverseHttp?(req: IncomingMessage, res: ServerResponse, session: Session, virtual: HostPort & { path: string }): boolean;
  /** UDP ASSOCIATE (SOCKS5): set up the relay and keep it while `tunnel.socket` stays open. */
  associateUdp(tunnel: Tunnel): Promise<void>;
  /**
   * For the native accept path (frontdoors/native-socks.ts): the plan of a CONNECT the relay
   * thread read (pipeline/plan.ts), the same plan `handle()` would execute. The thread dials and
   * splices a `direct` one (and may remember it), replies to a `refuse` or `unreachable` one, and
   * hands anything else to `handle()`. Refusals are logged here. A sink without it has the native
   * path hand every CONNECT to `handle()`.
   */
  plan?(session: Session, tags: readonly string[], dst: HostPort): Promise<Plan>;
  /** `fn` runs whenever plans made before may no longer hold (pipeline/plan-memory.ts). Returns the undo. */
  watchPlans?(fn: () => void): () => void;
  /**
   * For the native hit path: when `plan` is a tap that runTapped would answer cache-first as HTTP
   * with the cache, for a destination seen speaking HTTP, how long the client may take to send
   * its first request (the sniff window) — the relay thread may then reply and serve the tunnel's
   * fresh hits itself (native/hit_machine.c); null otherwise.
   */
  cacheFirstHttp?(plan: Plan, dst: HostPort): number | null;
  /** A tunnel the door replied to with success by other means (the relay thread): 'established'. */
  established?(session: Session): void;
}

/** One per listener. */
export interface DoorContext {
  /** The listener this connection came in on. */
  listen: ListenSpec;
  /** The configuration in force now (a reload swaps it for new connections only). */
  config(): Config;
  sink: TunnelSink;
  log: Logger;
  events: ProxyEvents;
  /** The listeners open now, with their bound addresses (for the PAC file); absent: this one only. */
  listeners?(): Array<{ door: string; host: string; port: number }>;
  /** The running instance's state (src/runtime.ts). */
  runtime: Runtime;
}

/**
 * Serve one accepted client socket. The socket is paused, has an error listener, and is adopted by
 * the session; RELIABLE and MAXIMA were checked at accept. The door must finish its handshake
 * within `config().timeouts.handshake` or close the socket with a log line.
 */
export type DoorHandler = (socket: Socket, session: Session, ctx: DoorContext) => void;
