/**
 * Upstream pools: a YAML route whose `via` lists several upstreams and says how to spread
 * connections over them (`balance:`), with dead-peer marking.
 *
 *   round-robin  each connection takes the next live member in turn
 *   weighted     smooth weighted round-robin (nginx's): `weights: [3, 1]`, one per `via` entry
 *   hash-src     the client's address picks the member (rendezvous hashing: when a member dies
 *                only its clients move), so one client keeps one upstream
 *   hash-dst     likewise by destination host
 *   first-up     the first live member in the order written (ordered fallback that skips the dead)
 *
 * The chosen member is tried first, then the other live members in the order written, then the
 * dead ones (a pool whose members are all marked dead still tries them rather than refuse).
 *
 * Health (every upstream, pooled or not, keyed by its chain label `socks5://a:1080`): a connection
 * to the first hop that fails (refused, unreachable, timed out) counts a failure; `maxfails`
 * consecutive failures (default 1) mark the upstream dead for `failtimeout` (default 30 s). After
 * that it is probed back: the next connection that picks it tries it, and one more failure marks it
 * dead again at once, a success makes it live. An upstream that answered but refused the
 * destination is not counted (the upstream works). `/metrics` shows every upstream's connections,
 * failures and state (observe/metrics.ts).
 */
import { createHash } from 'node:crypto';
import type { PoolSpec, RouteRule } from '../config/types.js';
import { chainLabel, type Chain } from './hop.js';

export const DEFAULT_MAXFAILS = 1;
export const DEFAULT_FAILTIMEOUT_MS = 30_000;

export interface UpstreamHealth {
  /** The chain label. */
  upstream: string;
  connections: number;
  failures: number;
  /** Consecutive failures. */
  fails: number;
  /** Marked dead until then (ms since epoch); 0 = live. */
  deadUntil: number;
  /** Times it was marked dead. */
  markedDead: number;
}

/** Upstreams tracked at most (the configuration names them; the oldest is forgotten first). */
const MAX_TRACKED = 4096;

/** Per-rule balancing state. */
interface PoolState {
  cursor: number;
  current: number[];
}

function hash(text: string): number {
  return createHash('sha1').update(text).digest().readUInt32BE(0);
}

/**
 * The health marks and balancing turns of one running instance (src/runtime.ts): what its dials
 * learnt about its upstreams, shared by nothing else.
 */
export class UpstreamHealthTable {
  /** Every upstream dialed so far, by chain label. */
  private readonly health = new Map<string, UpstreamHealth>();
  private readonly states = new WeakMap<RouteRule, PoolState>();

  private entry(label: string): UpstreamHealth {
    let h = this.health.get(label);
    if (!h) {
      if (this.health.size >= MAX_TRACKED) this.health.delete(this.health.keys().next().value!);
      h = { upstream: label, connections: 0, failures: 0, fails: 0, deadUntil: 0, markedDead: 0 };
      this.health.set(label, h);
    }
    return h;
  }

  /** The figures of every upstream, for /metrics. */
  all(): UpstreamHealth[] {
    return [...this.health.values()];
  }

  isDead(label: string, now = Date.now()): boolean {
    const h = this.health.get(label);
    return !!h && h.deadUntil > now;
  }

  /** The first hop of `chain` answered (or not). `pool` gives maxfails/failtimeout when pooled. */
  recordReach(chain: Chain, ok: boolean, pool?: PoolSpec, now = Date.now()): void {
    if (chain.length === 0) return;
    const h = this.entry(chainLabel(chain));
    h.connections++;
    if (ok) {
      h.fails = 0;
      h.deadUntil = 0;
      return;
    }
    h.failures++;
    h.fails++;
    const maxfails = pool?.maxfails ?? DEFAULT_MAXFAILS;
    if (h.fails >= maxfails) {
      h.deadUntil = now + (pool?.failtimeoutMs ?? DEFAULT_FAILTIMEOUT_MS);
      h.markedDead++;
      // Probed back after failtimeout: one more failure marks it dead again.
      h.fails = maxfails - 1;
    }
  }

  /** The order to try a pooled route's chains for this connection. */
  orderPool(rule: RouteRule, q: { clientAddress: string; dstHost: string }, now = Date.now()): readonly Chain[] {
    const pool = rule.pool;
    const chains = rule.via;
    if (!pool || chains.length < 2) return chains;
    const labels = chains.map(chainLabel);
    const live = chains.map((_, i) => i).filter((i) => !this.isDead(labels[i]!, now));
    const dead = chains.map((_, i) => i).filter((i) => this.isDead(labels[i]!, now));
    let state = this.states.get(rule);
    if (!state) {
      state = { cursor: 0, current: chains.map(() => 0) };
      this.states.set(rule, state);
    }
    let chosen: number | undefined;
    if (live.length > 0) {
      switch (pool.balance) {
        case 'first-up':
          chosen = live[0];
          break;
        case 'round-robin':
          chosen = live[state.cursor++ % live.length];
          if (state.cursor >= 1e9) state.cursor = 0;
          break;
        case 'weighted': {
          // Smooth weighted round-robin: add each weight, take the largest, subtract the total.
          let total = 0;
          let best = -1;
          for (const i of live) {
            const w = pool.weights[i] ?? 1;
            state.current[i] = (state.current[i] ?? 0) + w;
            total += w;
            if (best < 0 || state.current[i]! > state.current[best]!) best = i;
          }
          state.current[best] = state.current[best]! - total;
          chosen = best;
          break;
        }
        case 'hash-src':
        case 'hash-dst': {
          const key = pool.balance === 'hash-src' ? q.clientAddress : q.dstHost.toLowerCase();
          let bestScore = -1;
          for (const i of live) {
            const score = hash(`${key}\0${labels[i]}`);
            if (score > bestScore) {
              bestScore = score;
              chosen = i;
            }
          }
          break;
        }
      }
    }
    const order = [...(chosen === undefined ? [] : [chosen]), ...live.filter((i) => i !== chosen), ...dead];
    return order.map((i) => chains[i]!);
  }
}
