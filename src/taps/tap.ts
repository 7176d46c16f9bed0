/**
 * The tap contract: what the pipeline hands an application-level proxy once a SOCKSTAP rule has
 * picked a tunnel and the sniffer has named its protocol. Taps never import front doors; they
 * reach the server only through `dial()` (or the `server` socket already dialed).
 */
import type { Socket } from 'node:net';
import type { Config, HostPort, TapRule } from '../config/types.js';
import type { Session } from '../core/session.js';
import type { HttpCache } from '../cache/http-cache.js';
import type { ExpectationRegistry } from '../core/expected.js';
import type { ProxyEvents } from '../observe/events.js';
import type { Logger } from '../observe/log.js';
import type { SniffInfo } from '../sniff/types.js';
import type { Runtime } from '../runtime.js';

export interface TapServices {
  events: ProxyEvents;
  log: Logger;
  /** The HTTP cache when CACHE=do (for this rule), else null. */
  cache: HttpCache | null;
  /** The instance's registry of expected tunnels (the FTP tap announces its data connections there). */
  expectations: ExpectationRegistry;
  /** The running instance's state (name cache, article stores): src/runtime.ts. */
  runtime: Runtime;
}

export interface TapContext {
  session: Session;
  /** The client side of the tunnel: paused, every sniffed byte back in front of it. */
  client: Socket;
  /**
   * The server connection when the connect strategy dialed first (also paused, its sniffed bytes
   * back in front); null in cache-first mode, where the tap dials only if it must.
   */
  server: Socket | null;
  /** The authority the tunnel really reaches: the cache key and the policy target. */
  dst: HostPort;
  rule: TapRule;
  info: SniffInfo;
  config: Config;
  services: TapServices;
  /** Reach the destination (again), through the pipeline's routing. */
  dial(): Promise<Socket>;
  /**
   * Reach another destination through the pipeline's routing (an HTTP request MOUNT moved to
   * another server); call `authorize` for it first.
   */
  dialTo(dst: HostPort, scheme?: 'http' | 'https'): Promise<Socket>;
  /** Checkpoint 2 for another destination of this tunnel's requests; rejects with EDENIED. */
  authorize(dst: HostPort): Promise<void>;
  /** Relay the two sockets untouched until both ends are done, counting into the session. */
  relay(client: Socket, server: Socket): Promise<void>;
  /**
   * `https` when `client` and `server` are the two TLS sessions of an intercepted tunnel
   * (tls/intercept.ts): URLs, cache keys and policy say https://, and `dial()` reaches the
   * server over TLS, verified. Absent: plain.
   */
  scheme?: 'https';
  /**
   * STLS=mitm for this destination (line taps): after an accepted STARTTLS/STLS the tap hands
   * both sockets here (the client's ClientHello back in front of it) and gets the two TLS
   * sessions to keep reading commands from; null: not intercepted, relay the rest. Absent: no
   * interception for this tunnel.
   */
  upgradeTls?(client: Socket, server: Socket): Promise<{ client: Socket; server: Socket } | null>;
}

/** An application-level proxy for one protocol; resolves when the connection is finished. */
export type Tap = (ctx: TapContext) => Promise<void>;
