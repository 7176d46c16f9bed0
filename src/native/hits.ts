/**
 * The native hit path's table, JavaScript side (native/hit_*.c; docs/cache.md "The native hit
 * path"). The relay thread answers a request itself only with what is published and granted here:
 *
 *   - an object is a copy of one cache entry as JavaScript served it for a plain fresh hit: the
 *     head exactly as Node wrote it (cut around its Age value, which the thread fills in per hit)
 *     and the memory tier's body. Objects are process-wide (one relay thread), at most CACHEMEM
 *     bytes in all (oldest dropped first), and dropped as soon as the cache says the entry changed
 *     or went (HttpCache.onEntryChange: replaced, revalidated, invalidated, evicted, closed);
 *   - a grant says that this source's request for exactly this target on this listener was
 *     answered with that object, until a deadline no later than the entry's freshness.
 *
 * Who may grant what is frontdoors/native-http.ts's decision.
 */
import type { HitSource } from '../http1/hit-offer.js';
import { native } from './addon.js';

interface HitAddon {
  hitPublish(handle: number, status: number, pre: Buffer, post: Buffer, body: Buffer | null, freshUntilMs: number, ageOriginMs: number): void;
  hitGrant(door: number, address: string, target: string, handle: number, expiresMs: number): void;
  hitDrop(handle: number): void;
  hitRevoke(door: number): void;
  hitStats(): NativeHitStats;
}

/** The thread's figures: hits answered, connections handed to JavaScript, connections now, objects held, their bytes. */
export interface NativeHitStats {
  served: number;
  handedOff: number;
  connections: number;
  objects: number;
  bytes: number;
}

const addon: HitAddon | null = native && typeof (native as unknown as Partial<HitAddon>).hitPublish === 'function' ? (native as unknown as HitAddon) : null;

export function nativeHitsAvailable(): boolean {
  return addon !== null;
}

export function nativeHitStats(): NativeHitStats {
  return addon ? addon.hitStats() : { served: 0, handedOff: 0, connections: 0, objects: 0, bytes: 0 };
}

/** What an object was, for the records of the hits answered with it. */
export interface PublishedObject {
  readonly handle: number;
  readonly source: HitSource;
  readonly entryId: string;
  readonly freshUntil: number;
  readonly bytes: number;
  /** access.log's URL and content type, and the session's destination. */
  readonly url: string;
  readonly contentType: string;
  readonly dst: { host: string; port: number };
}

export interface ObjectSpec {
  source: HitSource;
  entryId: string;
  status: number;
  /** The head as written, up to and including "age: ", and from the CRLF after its value. */
  pre: Buffer;
  post: Buffer;
  body: Buffer | null;
  freshUntil: number;
  ageOriginMs: number;
  url: string;
  contentType: string;
  dst: { host: string; port: number };
}

/** Records of dropped objects kept for hits reported after the drop (bounded). */
const RETIRED_MAX = 1024;

class ObjectTable {
  private readonly byKey = new Map<string, PublishedObject>();
  private readonly byHandle = new Map<number, PublishedObject>();
  private readonly retired = new Map<number, PublishedObject>();
  private readonly sources = new Map<HitSource, { id: number; unsubscribe: () => void }>();
  private bytes = 0;
  private nextHandle = 1;
  private nextSource = 1;
  private poll: NodeJS.Timeout | null = null;

  private keyOf(source: HitSource, entryId: string): string {
    let s = this.sources.get(source);
    if (!s) {
      const id = this.nextSource++;
      const unsubscribe = source.onEntryChange((entryId) => this.dropKey(`${id}:${entryId}`));
      this.sources.set(source, (s = { id, unsubscribe }));
    }
    return `${s.id}:${entryId}`;
  }

  /** The object published for this entry, while it holds. */
  find(source: HitSource, entryId: string, freshUntil: number): PublishedObject | undefined {
    const o = this.byKey.get(this.keyOf(source, entryId));
    return o && o.freshUntil === freshUntil ? o : undefined;
  }

  get(handle: number): PublishedObject | undefined {
    return this.byHandle.get(handle) ?? this.retired.get(handle);
  }

  /** Publish a copy; the oldest objects go first when `maxBytes` would be exceeded. Null when it cannot be held. */
  publish(spec: ObjectSpec, maxBytes: number): PublishedObject | null {
    if (!addon) return null;
    const size = spec.pre.length + spec.post.length + (spec.body?.length ?? 0);
    if (size > maxBytes) return null;
    const key = this.keyOf(spec.source, spec.entryId);
    this.dropKey(key);
    for (const [k] of this.byKey) {
      if (this.bytes + size <= maxBytes) break;
      this.dropKey(k);
    }
    const handle = this.nextHandle;
    this.nextHandle = this.nextHandle >= 0xfffffff0 ? 1 : this.nextHandle + 1;
    addon.hitPublish(handle, spec.status, spec.pre, spec.post, spec.body, spec.freshUntil, spec.ageOriginMs);
    const o: PublishedObject = {
      handle,
      source: spec.source,
      entryId: spec.entryId,
      freshUntil: spec.freshUntil,
      bytes: size,
      url: spec.url,
      contentType: spec.contentType,
      dst: spec.dst,
    };
    this.byKey.set(key, o);
    this.byHandle.set(handle, o);
    this.bytes += size;
    if (spec.source.isShared) this.watchShared();
    return o;
  }

  grant(door: number, address: string, target: string, o: PublishedObject, expiresMs: number): void {
    if (addon && this.byHandle.has(o.handle)) addon.hitGrant(door, address, target, o.handle, expiresMs);
  }

  revoke(door: number): void {
    addon?.hitRevoke(door);
  }

  private dropKey(key: string): void {
    const o = this.byKey.get(key);
    if (!o) return;
    this.byKey.delete(key);
    this.byHandle.delete(o.handle);
    this.bytes -= o.bytes;
    addon?.hitDrop(o.handle);
    if (this.retired.size >= RETIRED_MAX) this.retired.clear();
    this.retired.set(o.handle, o);
    if (this.byKey.size === 0) this.unwatchShared();
  }

  /**
   * With WORKERS=N another worker may replace or remove an entry this one published; its cache
   * learns of that on a lookup, and native hits make none. So while objects are held, the caches
   * look every few ms (HttpCache.pollShared is a no-op without a shared index).
   */
  private watchShared(): void {
    this.poll ??= setInterval(() => {
      for (const source of this.sources.keys()) if (source.isShared) source.pollShared();
    }, 5).unref();
  }

  private unwatchShared(): void {
    if (this.poll) clearInterval(this.poll);
    this.poll = null;
    // Forget the sources too, so a closed cache is not kept alive by its subscription.
    for (const s of this.sources.values()) s.unsubscribe();
    this.sources.clear();
  }
}

/** The process's one table (the relay thread is one per process). */
export const hitObjects = new ObjectTable();
