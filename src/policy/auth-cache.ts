/**
 * The answer cache that accounts asking elsewhere share (AUTHORIZER=-cmd, -ldap, -radius):
 * successes and failures remembered for AUTHTTL (60 s / 10 s by default), keyed by an HMAC of the
 * user and password under a per-process random key (an entry cannot be turned back into a
 * password), bounded in size (the oldest entry goes first); identical questions in flight share
 * one answer; at most 512 different questions are in flight (more are refused). An undecided answer (a timeout, a server that cannot be reached) is not cached.
 * Successes also remember the user's groups (`group:NAME` scopes) until they expire.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Accounts } from '../config/types.js';
import { ConfigError } from '../config/types.js';
import { splitTopLevel } from '../config/split.js';
import { parseDuration } from '../config/units.js';
import type { HelperLog } from './auth-helper.js';

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

/** One `name=value` option of an AUTHORIZER=-cmd/-ldap/-radius{...} list, with its label for errors. */
export interface AuthorizerOption {
  name: string;
  value: string;
  label: string;
}

/** An authorizer's `timeout=` (1 ms to 5 min). */
export function authTimeout(value: string, label: string): number {
  const ms = parseDuration(value, label);
  if (ms <= 0 || ms > 300_000) throw new ConfigError(label, 'expected a duration from 1ms to 5m');
  return ms;
}

/** The options after an authorizer's braces (`,timeout=5s,retries=2`), names lower-cased. */
export function authorizerOptions(options: string, param: string): AuthorizerOption[] {
  const out: AuthorizerOption[] = [];
  for (const raw of options === '' ? [] : splitTopLevel(options, ',')) {
    const item = raw.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    const name = (eq < 0 ? item : item.slice(0, eq)).trim().toLowerCase();
    out.push({ name, value: eq < 0 ? '' : item.slice(eq + 1).trim(), label: `${param} ${name}` });
  }
  return out;
}

/**
 * Accounts that ask a server for every password (LDAP, RADIUS): the answer cache, the log, the
 * groups a success brought. A server cannot list its users, so SOCKS4 (a user id alone) is refused.
 */
export abstract class CachedAccounts implements Accounts {
  protected readonly cache = new AuthCache();
  protected log: HelperLog | null = null;
  protected closed = false;
  readonly stats = this.cache.stats;

  constructor(readonly source: string) {}

  setLog(log: HelperLog): void {
    this.log = log;
  }

  setTtl(ttl: { okMs: number; errMs: number }): void {
    this.cache.setTtl(ttl);
  }

  has(_user: string): boolean {
    return false;
  }

  groupsOf(user: string): readonly string[] {
    return this.cache.groupsOf(user);
  }

  verify(user: string, password: string): Promise<boolean> {
    if (this.closed || user === '' || password === '' || !this.acceptable(user, password)) return Promise.resolve(false);
    return this.cache.verify(user, password, () => this.ask(user, password));
  }

  /** Credentials the server could take at all (sizes); others are refused without asking. */
  protected acceptable(_user: string, _password: string): boolean {
    return true;
  }

  /** Ask the server: yes with groups, no, or undecided (not cached). */
  protected abstract ask(user: string, password: string): Promise<AuthAnswer>;

  close(): void {
    this.closed = true;
  }

  toString(): string {
    return this.source;
  }
}
