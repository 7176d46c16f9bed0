/**
 * The connect strategy's memory (DESIGN.md "Connect strategy"): what each destination (host:port)
 * spoke the last time a tapped tunnel reached it, and which side spoke first. It decides whether
 * the next tunnel to that destination is dialed before the door replies (the client gets the real
 * outcome) or answered cache-first (a fresh cached HTTP response needs no server at all).
 *
 * Bounded (least recently used entries go first), each entry for a limited time, and forgotten
 * at reload, so a destination that changes what it serves is learnt again.
 */
import type { TapProtocol } from '../sniff/types.js';

export interface SeenDestination {
  /** What the sniffers recognised; 'raw' when bytes flowed that no sniffer knew. */
  proto: TapProtocol | 'raw';
  /** The server spoke first (a banner: FTP, SMTP, POP3, IMAP, NNTP, SSH, ...). */
  serverFirst: boolean;
  /** When it was seen (ms since the epoch). */
  at: number;
}

export type ConnectStrategy = 'dial-first' | 'cache-first';

/** How a SOCKSTAP rule pins the strategy of the tunnels it picks (`STRATEGY=` rule parameter). */
export type StrategyPin = 'auto' | 'dial-first' | 'cache-first';

export const DESTINATION_MEMORY_ENTRIES = 4096;
export const DESTINATION_MEMORY_TTL_MS = 60 * 60 * 1000;

/**
 * Ports whose servers are expected to speak something other than plain HTTP (server-first
 * protocols, TLS): the first guess for a destination never seen. Everything else is guessed to be
 * HTTP, where the client speaks first and the cache may answer without the server.
 */
export const NOT_HTTP_PORTS: ReadonlySet<number> = new Set([
  21, 22, 23, 25, 110, 119, 143, 443, 465, 563, 587, 636, 853, 989, 990, 992, 993, 994, 995, 2525, 5061, 8021, 8443,
]);

/** Names compare as DNS does: case-insensitive, a trailing root dot ignored. */
function keyOf(host: string, port: number): string {
  let h = host.toLowerCase();
  if (h.endsWith('.')) h = h.slice(0, -1);
  return `${h}:${port}`;
}

export class DestinationMemory {
  private readonly entries = new Map<string, SeenDestination>();

  constructor(
    readonly maxEntries = DESTINATION_MEMORY_ENTRIES,
    readonly ttlMs = DESTINATION_MEMORY_TTL_MS,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  get(host: string, port: number, now = Date.now()): SeenDestination | undefined {
    const key = keyOf(host, port);
    const seen = this.entries.get(key);
    if (!seen) return undefined;
    if (now - seen.at >= this.ttlMs) {
      this.entries.delete(key);
      return undefined;
    }
    // Map order is insertion order: re-inserting makes it the most recently used.
    this.entries.delete(key);
    this.entries.set(key, seen);
    return seen;
  }

  remember(host: string, port: number, proto: TapProtocol | 'raw', serverFirst: boolean, now = Date.now()): void {
    const key = keyOf(host, port);
    this.entries.delete(key);
    this.entries.set(key, { proto, serverFirst, at: now });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest === undefined) break;
      this.entries.delete(oldest);
    }
  }

  /** At reload: everything is learnt again. */
  forget(): void {
    this.entries.clear();
  }
}

/**
 * The decision for one tapped tunnel. `httpWithoutServer` says whether HTTP on this tunnel could
 * be answered with no server at all (the rule taps HTTP and the cache is on, or an HTTP upstream
 * takes its requests in absolute-form).
 */
export function chooseStrategy(
  seen: SeenDestination | undefined,
  port: number,
  httpWithoutServer: boolean,
  pin: StrategyPin = 'auto',
  /**
   * STLS=mitm covers this destination (a name) and the cache holds a fresh https:// response
   * under it: the leaf can be issued from the SNI alone and the hit served with no server
   * (docs/tls-interception.md). Only STRATEGY=dial-first keeps it dial-first.
   */
  httpsFromCache = false,
): ConnectStrategy {
  if (httpsFromCache) return pin === 'dial-first' ? 'dial-first' : 'cache-first';
  if (!httpWithoutServer) return 'dial-first';
  if (pin !== 'auto') return pin;
  if (seen) return seen.proto === 'http' ? 'cache-first' : 'dial-first';
  return NOT_HTTP_PORTS.has(port) ? 'dial-first' : 'cache-first';
}
