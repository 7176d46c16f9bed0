/**
 * The state of one running sockstap instance that outlives a connection: built by sockstap.ts at
 * start and passed down to what needs a piece of it (the pipeline, the doors, the taps). Nothing
 * below keeps such state at module level, so two instances in one process (as the tests run them)
 * share no name cache, article store, upstream mark or TLS session.
 */
import { DEFAULT_DNS, NameCache, sameDnsSettings, type DnsSettings } from './net/dns.js';
import { ArticleStore } from './taps/nntp/article-store.js';
import { UpstreamHealthTable } from './upstream/pool.js';
import { ServerTlsSessions } from './tls/intercept.js';

export class Runtime {
  private nameCache: NameCache | null = null;
  private readonly articleStores = new Map<string, ArticleStore>();
  /** Lines said once (once()). */
  private readonly said = new Set<string>();
  /** Upstream health marks (dead for failtimeout) and pool balancing turns, for /metrics too. */
  readonly upstreams = new UpstreamHealthTable();
  /** Servers' TLS sessions for resumption by TLS interception (STLS=mitm), with what their verification showed. */
  readonly tlsSessions = new ServerTlsSessions();

  /**
   * The name cache for these settings (HOSTS=, YAML `dns:`): one per instance, started anew when a
   * reload changes the settings.
   */
  names(settings: Readonly<DnsSettings> | undefined): NameCache {
    const s = settings ?? DEFAULT_DNS;
    if (!this.nameCache || !sameDnsSettings(this.nameCache.settings, s)) this.nameCache = new NameCache(s);
    return this.nameCache;
  }

  /** True the first time `what` is asked for: a line this instance logs once (what its doors can do). */
  once(what: string): boolean {
    if (this.said.has(what)) return false;
    this.said.add(what);
    return true;
  }

  /** The NNTP tap's article store in `dir` (STATEDIR/nntp-cache): one per directory. */
  articleStore(dir: string): ArticleStore {
    let s = this.articleStores.get(dir);
    if (!s) {
      s = new ArticleStore(dir);
      this.articleStores.set(dir, s);
    }
    return s;
  }
}
