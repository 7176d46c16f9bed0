/**
 * The answer cache that accounts asking elsewhere share (AUTHORIZER=-cmd, -ldap, -radius):
 * successes and failures remembered for AUTHTTL (60 s / 10 s by default), keyed by an HMAC of the
 * user and password under a per-process random key (an entry cannot be turned back into a
 * password), bounded in size (the oldest entry goes first); identical questions in flight share
 * one answer; at most 512 different questions are in flight (more are refused). An undecided answer (a timeout, a server that cannot be reached) is not cached.
 * Successes also remember the user's groups (`group:NAME` scopes) until they expire.
 */
import { createHmac, randomBytes } from 'node:crypto';

export const DEFAULT_AUTH_TTL = { okMs: 60_000, errMs: 10_000 };
const MAX_ENTRIES = 8192;
/** Questions asked of a server at once; more are refused at once (not cached). */
const MAX_INFLIGHT = 512;

/** What a source answers: yes (with the user's groups), no, or undecided (refused, not cached). */
export type AuthAnswer = { ok: true; groups: readonly string[] } | { ok: false; undecided?: boolean };

export class AuthCache {
  private ttl = { ...DEFAULT_AUTH_TTL };
  private readonly key = randomBytes(32);
  private readonly answers = new Map<string, { ok: boolean; until: number }>();
  private readonly inflight = new Map<string, Promise<boolean>>();
  private readonly groups = new Map<string, { groups: readonly string[]; until: number }>();
  readonly stats = { asked: 0, cached: 0, overloaded: 0 };

  setTtl(ttl: { okMs: number; errMs: number }): void {
    this.ttl = { ...ttl };
  }

  /** The answer for these credentials: remembered, shared with a question in flight, or asked. */
  verify(user: string, password: string, ask: () => Promise<AuthAnswer>): Promise<boolean> {
    const k = createHmac('sha256', this.key).update(user).update('\0').update(password).digest('base64');
    const now = Date.now();
    const hit = this.answers.get(k);
    if (hit) {
      if (hit.until > now) {
        this.stats.cached++;
        if (hit.ok) this.touchGroups(user, hit.until);
        return Promise.resolve(hit.ok);
      }
      this.answers.delete(k);
    }
    const pending = this.inflight.get(k);
    if (pending) return pending;
    if (this.inflight.size >= MAX_INFLIGHT) {
      this.stats.overloaded++;
      return Promise.resolve(false);
    }
    this.stats.asked++;
    const p = ask()
      .catch((): AuthAnswer => ({ ok: false, undecided: true }))
      .then((a) => {
        this.inflight.delete(k);
        const ms = a.ok ? this.ttl.okMs : this.ttl.errMs;
        if (a.ok) this.setGroups(user, a.groups, Date.now() + Math.max(ms, 1000));
        if (!(!a.ok && a.undecided) && ms > 0) {
          if (this.answers.size >= MAX_ENTRIES) this.answers.delete(this.answers.keys().next().value!);
          this.answers.set(k, { ok: a.ok, until: Date.now() + ms });
        }
        return a.ok;
      });
    this.inflight.set(k, p);
    return p;
  }

  /** The groups of a user who passed (what the last successful answer said); [] otherwise. */
  groupsOf(user: string): readonly string[] {
    const g = this.groups.get(user);
    if (!g) return [];
    if (g.until < Date.now()) {
      this.groups.delete(user);
      return [];
    }
    return g.groups;
  }

  private setGroups(user: string, groups: readonly string[], until: number): void {
    this.groups.delete(user);
    if (this.groups.size >= MAX_ENTRIES) this.groups.delete(this.groups.keys().next().value!);
    this.groups.set(user, { groups, until });
  }

  private touchGroups(user: string, until: number): void {
    const g = this.groups.get(user);
    if (g && g.until < until) g.until = until;
  }
}
