/**
 * AUTHORIZER=-ldap{URL,BASEDN,FILTER}[,binddn={DN},bindpass=PASS|bindpassfile=FILE,groupbase={DN},timeout=D]:
 * accounts checked by an LDAP bind (ldapts, RFC 4511), the way Squid's basic_ldap_auth does it:
 *
 *   1. search BASEDN (subtree) for FILTER with `%s` replaced by the user name (RFC 4515 escaped),
 *      anonymously or as `binddn`; exactly one entry must match;
 *   2. the user's groups: the first RDN value of each `memberOf` of that entry (slapd's memberof
 *      overlay, Active Directory) and the `cn` of every groupOfNames / groupOfUniqueNames that
 *      lists the entry and every posixGroup whose memberUid is the user, under `groupbase`
 *      (default BASEDN);
 *   3. bind as the entry's DN with the password: success is the answer.
 *
 * FILTER defaults to `(uid=%s)`. An empty password is refused without asking (an LDAP bind with
 * an empty password is an unauthenticated bind, which servers accept). Answers are cached
 * (AUTHTTL=, policy/auth-cache.ts); a question not answered within `timeout` (default 5 s), or
 * a server that cannot be reached, fails closed (refused, not cached). No password is logged.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createRequire } from 'node:module';
import type { Client } from 'ldapts';
import { ConfigError } from '../config/types.js';
import { stripBraces } from '../config/split.js';
import { authorizerOptions, authTimeout, CachedAccounts, type AuthAnswer } from './auth-cache.js';

/** ldapts, loaded the first time an -ldap{} account is asked for (about 7 MiB that others need not carry). */
let ldapModule: typeof import('ldapts') | null = null;
function ldapts(): typeof import('ldapts') {
  return (ldapModule ??= createRequire(import.meta.url)('ldapts') as typeof import('ldapts'));
}

const DEFAULT_TIMEOUT_MS = 5_000;
const MAX_GROUPS = 256;

export interface LdapOptions {
  url: string;
  baseDn: string;
  filter: string;
  bindDn?: string;
  bindPassword?: string;
  groupBase?: string;
  timeoutMs: number;
}

/** RFC 4515 §3: the characters a value in a filter must carry escaped. */
export function escapeFilterValue(text: string): string {
  return text.replace(/[\\*()\0]/g, (c) => `\\${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** Body `URL,BASEDN[,FILTER]` (BASEDN may hold commas; FILTER starts with `(`), options after the brace. */
export function parseLdapAuthorizer(body: string, options: string, param: string, cwd: string): LdapAccounts {
  const b = body.trim();
  const comma = b.indexOf(',');
  if (comma < 0) throw new ConfigError(param, 'expected -ldap{URL,BASEDN,FILTER} such as -ldap{ldap://127.0.0.1/,dc=example,dc=com,(uid=%s)}');
  const url = b.slice(0, comma).trim();
  if (!/^ldaps?:\/\/[^/?#]+\/?$/i.test(url)) throw new ConfigError(param, `expected an ldap://HOST[:PORT] or ldaps://HOST[:PORT] URL, got ${JSON.stringify(url)}`);
  let rest = b.slice(comma + 1);
  let filter = '(uid=%s)';
  const open = rest.indexOf('(');
  if (open >= 0) {
    filter = rest.slice(open).trim();
    rest = rest.slice(0, open).replace(/,\s*$/, '');
    if (!filter.endsWith(')')) throw new ConfigError(param, `the filter must be in parentheses, such as (uid=%s); got ${JSON.stringify(filter)}`);
    if (!filter.includes('%s')) throw new ConfigError(param, 'the filter must name the user as %s, such as (uid=%s)');
  }
  const baseDn = rest.trim();
  if (baseDn === '' || !baseDn.includes('=')) throw new ConfigError(param, `expected a base DN such as dc=example,dc=com, got ${JSON.stringify(baseDn)}`);
  const opts: LdapOptions = { url: url.replace(/\/$/, ''), baseDn, filter, timeoutMs: DEFAULT_TIMEOUT_MS };
  for (const { name, value, label } of authorizerOptions(options, param)) {
    if (name === 'binddn') opts.bindDn = stripBraces(value);
    else if (name === 'bindpass') opts.bindPassword = stripBraces(value);
    else if (name === 'bindpassfile') {
      const file = resolve(cwd, stripBraces(value));
      try {
        opts.bindPassword = readFileSync(file, 'utf8').split(/\r?\n/)[0]!;
      } catch (err) {
        throw new ConfigError(label, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
    } else if (name === 'groupbase') opts.groupBase = stripBraces(value);
    else if (name === 'timeout') {
      opts.timeoutMs = authTimeout(value, label);
    } else throw new ConfigError(param, `unknown -ldap{} option ${JSON.stringify(name)}; expected binddn={DN}, bindpass=, bindpassfile=FILE, groupbase={DN} or timeout=DURATION`);
  }
  if (opts.bindPassword !== undefined && opts.bindDn === undefined) throw new ConfigError(param, 'bindpass needs binddn={DN}');
  return new LdapAccounts(opts);
}

/** `cn=staff,ou=groups,...` → `staff`. */
function firstRdnValue(dn: string): string {
  const m = /^[^=]+=((?:\\.|[^,+])*)/.exec(dn);
  return m ? m[1]!.replace(/\\(.)/g, '$1').trim() : dn;
}

export class LdapAccounts extends CachedAccounts {
  constructor(readonly options: LdapOptions) {
    // The bind password is not part of the source (it is printed by `sockstap check`).
    super(`-ldap{${options.url},${options.baseDn},${options.filter}}${options.bindDn ? `,binddn={${options.bindDn}}` : ''}`);
  }

  protected ask(user: string, password: string): Promise<AuthAnswer> {
    const clients: Client[] = [];
    const client = (): Client => {
      const c = new (ldapts().Client)({ url: this.options.url, timeout: this.options.timeoutMs, connectTimeout: this.options.timeoutMs });
      clients.push(c);
      return c;
    };
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<AuthAnswer>((resolveLimit) => {
      timer = setTimeout(() => {
        this.log?.warn('LDAP server did not answer in time: refused', { user: user.slice(0, 64), ms: this.options.timeoutMs });
        resolveLimit({ ok: false, undecided: true });
      }, this.options.timeoutMs);
      timer.unref();
    });
    const work = this.check(user, password, client).catch((err: unknown): AuthAnswer => {
      this.log?.warn('LDAP server could not be asked: refused', { user: user.slice(0, 64), error: err instanceof Error ? err.message.slice(0, 200) : String(err) });
      return { ok: false, undecided: true };
    });
    return Promise.race([work, limit]).finally(() => {
      clearTimeout(timer);
      for (const c of clients) void c.unbind().catch(() => {});
    });
  }

  private async check(user: string, password: string, client: () => Client): Promise<AuthAnswer> {
    const o = this.options;
    const searcher = client();
    if (o.bindDn !== undefined) await searcher.bind(o.bindDn, o.bindPassword ?? '');
    const filter = o.filter.split('%s').join(escapeFilterValue(user));
    const { searchEntries } = await searcher.search(o.baseDn, { scope: 'sub', filter, attributes: ['memberOf'], sizeLimit: 2 });
    if (searchEntries.length !== 1) {
      this.log?.info(searchEntries.length === 0 ? 'LDAP: no such user' : 'LDAP: the filter matches more than one entry: refused', { user: user.slice(0, 64) });
      return { ok: false };
    }
    const entry = searchEntries[0]!;
    const groups = new Set<string>();
    const memberOf = entry.memberOf;
    for (const v of Array.isArray(memberOf) ? memberOf : memberOf === undefined ? [] : [memberOf]) groups.add(firstRdnValue(String(v)));
    const dnValue = escapeFilterValue(entry.dn);
    const groupFilter = `(|(&(objectClass=groupOfNames)(member=${dnValue}))(&(objectClass=groupOfUniqueNames)(uniqueMember=${dnValue}))(&(objectClass=posixGroup)(memberUid=${escapeFilterValue(user)})))`;
    try {
      const found = await searcher.search(o.groupBase ?? o.baseDn, { scope: 'sub', filter: groupFilter, attributes: ['cn'], sizeLimit: MAX_GROUPS });
      for (const g of found.searchEntries) {
        const cn = g.cn;
        const name = Array.isArray(cn) ? cn[0] : cn;
        groups.add(name === undefined ? firstRdnValue(g.dn) : String(name));
      }
    } catch (err) {
      this.log?.warn('LDAP: group search failed (the user gets the memberOf groups only)', { user: user.slice(0, 64), error: err instanceof Error ? err.message.slice(0, 200) : String(err) });
    }
    try {
      await client().bind(entry.dn, password);
    } catch (err) {
      if (err instanceof ldapts().InvalidCredentialsError) return { ok: false };
      throw err;
    }
    return { ok: true, groups: [...groups].slice(0, MAX_GROUPS) };
  }

}
