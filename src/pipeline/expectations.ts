/**
 * The registry of expected tunnels (core/expected.ts), one per running instance, owned by its
 * Pipeline and handed to the taps as `TapServices.expectations`. The pipeline consults it for
 * every CONNECT and BIND; each new expectation makes remembered plans stale (a CONNECT decided
 * "direct" before may be the data connection now), which `announced()` tells the plan memory.
 */
import type { ExpectationRegistry, ExpectedTunnel, Expecter, TunnelQuery } from '../core/expected.js';

export type { ExpectedTunnel, TunnelQuery } from '../core/expected.js';

export class Expectations implements ExpectationRegistry {
  private readonly expecters = new Set<Expecter>();
  private readonly parts = new Map<string, unknown>();

  /** `onAnnounce`: runs at each new expectation (plan-memory.ts forgets remembered plans). */
  constructor(private readonly onAnnounce: () => void = () => {}) {}

  add(e: Expecter): () => void {
    this.expecters.add(e);
    return () => this.expecters.delete(e);
  }

  part<T>(key: string, create: (registry: ExpectationRegistry) => T): T {
    if (!this.parts.has(key)) this.parts.set(key, create(this));
    return this.parts.get(key) as T;
  }

  expects(q: TunnelQuery): boolean {
    for (const e of this.expecters) if (e.expects(q)) return true;
    return false;
  }

  claim(q: TunnelQuery): ExpectedTunnel | null {
    for (const e of this.expecters) {
      const t = e.claim(q);
      if (t) return t;
    }
    return null;
  }

  announced(): void {
    this.onAnnounce();
  }
}
