/**
 * The cache's memory tier (CACHEMEM): the bodies of hot, small entries, least recently used
 * evicted first. It only ever holds copies of bodies already committed to disk, so the disk store
 * stays the truth: losing the memory tier (a restart, an eviction) loses no entry, and a crash
 * can never leave anything in it that the disk does not have.
 */

export class MemoryTier<K> {
  /** Map order is the recency order (first = least recently used). */
  private readonly bodies = new Map<K, Buffer>();
  private used = 0;

  /**
   * @param maxBytes   CACHEMEM: the bodies held, in total (0 = no memory tier)
   * @param maxEntryBytes  the largest body held
   */
  constructor(
    readonly maxBytes: number,
    readonly maxEntryBytes: number,
  ) {}

  get bytes(): number {
    return this.used;
  }
  get entries(): number {
    return this.bodies.size;
  }

  /** Whether a body of this size would be held. */
  fits(size: number): boolean {
    return size <= this.maxEntryBytes && size <= this.maxBytes;
  }

  /** The body, made most recently used; undefined when not held. */
  get(key: K): Buffer | undefined {
    const body = this.bodies.get(key);
    if (body === undefined) return undefined;
    // Already the most recently used (the hot body, hit after hit): no delete and set again.
    if (this.newest !== key) {
      this.bodies.delete(key);
      this.bodies.set(key, body);
      this.newest = key;
    }
    return body;
  }

  /** The key last in `bodies` (most recently used), when known. */
  private newest: K | undefined = undefined;

  has(key: K): boolean {
    return this.bodies.has(key);
  }

  /** Hold a body (replacing any held under the key); least recently used ones go to make room. */
  set(key: K, body: Buffer): boolean {
    this.delete(key);
    if (!this.fits(body.length)) return false;
    this.bodies.set(key, body);
    this.newest = key;
    this.used += body.length;
    while (this.used > this.maxBytes) {
      const oldest = this.bodies.keys().next();
      if (oldest.done) break;
      this.delete(oldest.value);
    }
    return this.bodies.has(key);
  }

  delete(key: K): void {
    const body = this.bodies.get(key);
    if (body === undefined) return;
    this.bodies.delete(key);
    if (this.newest === key) this.newest = undefined;
    this.used -= body.length;
  }

  clear(): void {
    this.bodies.clear();
    this.newest = undefined;
    this.used = 0;
  }
}
