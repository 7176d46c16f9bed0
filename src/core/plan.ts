/**
 * What the pipeline does with one tunnel: the answer of `planTunnel` (pipeline/plan.ts), a pure
 * function of the configuration, the session and what is known of the request. The JavaScript
 * pipeline executes every kind; the native accept path (frontdoors/native-socks.ts) executes a
 * refusal, and a `direct` plan, which is the only one its thread may remember; anything else it
 * hands to the JavaScript pipeline.
 */
import type { TapRule } from '../config/types.js';
import type { StrategyPin } from './destinations.js';
import type { ProxyErrorCode } from './errors.js';

/** Why a tunnel that goes straight to a relay is dialed and relayed in JavaScript, not by the thread. */
export type RouteReason =
  /** an upstream proxy (PROXY=, SOCKS=, a YAML route) or SPOOF=client dials it */
  | 'upstream'
  /** RELAY=js */
  | 'relay-js'
  /** BANDWIDTH= or QUOTA= shapes or meters it */
  | 'limits'
  /** an authenticated user's tunnel (MAXIMA=peruser, user scopes) */
  | 'user'
  /** the name has addresses of two families: Happy Eyeballs races them (upstream/direct.ts) */
  | 'dual-stack'
  /** SRCIF= binds its source address */
  | 'srcif';

export type Plan =
  /** Checkpoint 2 said no: the door replies with the code. */
  | { kind: 'refuse'; code: ProxyErrorCode; reason: string }
  /** Allowed, but its name did not resolve: the dial fails with this (logged as a failed connect). */
  | { kind: 'unreachable'; code: ProxyErrorCode; reason: string }
  /**
   * Dial these addresses (one family) in turn, reply, relay untouched. The same source's same
   * CONNECT may be answered the same way for `rememberMs` (0: decide each time; plan-memory.ts).
   */
  | { kind: 'direct'; addresses: string[]; timeoutMs: number; idleMs: number; rememberMs: number }
  /** Dial along the router's route (upstream/router.ts), reply, relay: in JavaScript, for `why`. */
  | { kind: 'route'; why: RouteReason }
  /** A SOCKSTAP rule picked it: the connect strategy (pinned by the rule's STRATEGY=, or auto), then a tap. */
  | { kind: 'tap'; rule: TapRule; strategy: StrategyPin }
  /** A CONNECT the registry of expected tunnels expects (an FTP data connection): its expecter relays it. */
  | { kind: 'expected'; rule: TapRule | null }
  /** SOCKS BIND (net/bind.ts); `expected`: an expecter (an active-mode FTP transfer) takes its result. */
  | { kind: 'bind'; rule: TapRule | null; expected: boolean }
  /** UDP ASSOCIATE (net/udp-relay.ts): every datagram is checked on its own. */
  | { kind: 'udp' };
