/** What the pipeline is built with (sockstap.ts), and the constants its parts share. */
import type { HttpCache } from '../cache/http-cache.js';
import type { Config } from '../config/types.js';
import type { OwnAddress } from '../net/destination.js';
import type { ProxyEvents } from '../observe/events.js';
import type { Logger } from '../observe/log.js';
import type { ConnectionLimits } from '../policy/limits.js';
import type { QuotaService } from '../policy/quota.js';
import type { BandwidthShaper } from '../policy/shaping.js';
import type { HttpTap } from '../taps/http/tap.js';
import { TAPS } from '../taps/registry.js';
import type { Tap } from '../taps/tap.js';
import type { CertificateAuthority } from '../tls/ca.js';
import type { Runtime } from '../runtime.js';

export interface PipelineDeps {
  config(): Config;
  /** The HTTP cache, when one is open. */
  cache(): HttpCache | null;
  log: Logger;
  events: ProxyEvents;
  limits: ConnectionLimits;
  /** BANDWIDTH= buckets; absent = no shaping. */
  shaper?: BandwidthShaper;
  /** QUOTA= counters and the usage database; absent = no quotas. */
  quotas?: QuotaService;
  /** Aborted when the proxy stops: pending dials give up. */
  shutdown: AbortSignal;
  /** sockstap's own listeners and admin address: never a destination (net/destination.ts). */
  ownAddresses?(): readonly OwnAddress[];
  /** The CA of TLS interception, loaded when an STLS=mitm rule needs it; absent or null: none. */
  ca?: () => CertificateAuthority | null;
  /** This instance's HTTP tap: tapped HTTP tunnels and the HTTP door's requests. */
  http: HttpTap;
  /** This instance's state: the name cache, the article stores, ... (src/runtime.ts). */
  runtime: Runtime;
}

/** The most a peek reads from each direction: a TLS ClientHello of 16 KiB with its record headers. */
export const SNIFF_MAX_BYTES = 17 * 1024;

/** The tap of a sniffed protocol: this instance's HTTP tap, or the registry's. */
export function tapFor(deps: Pick<PipelineDeps, 'http'>, proto: string): Tap | undefined {
  return proto === 'http' ? deps.http.tunnel : TAPS[proto];
}
