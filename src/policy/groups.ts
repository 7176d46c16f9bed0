/**
 * A user's groups, for `group:NAME` scopes (PERMIT/REJECT source and destination lists, BANDWIDTH,
 * QUOTA, MAXIMA=group:NAME:N): the groups YAML `users: {NAME: {groups: [...]}}` gives, and those
 * the accounts found when the user logged in (AUTHORIZER=-ldap{}: memberOf, groupOfNames,
 * posixGroup; -radius{}: Filter-Id). Group names compare exactly.
 */
import type { Config } from '../config/types.js';

const NONE: readonly string[] = [];

export function groupsOf(config: Config, user: string | null | undefined): readonly string[] {
  if (!user) return NONE;
  const own = config.userGroups?.[user] ?? NONE;
  const found = config.accounts?.groupsOf?.(user) ?? NONE;
  if (found.length === 0) return own;
  if (own.length === 0) return found;
  return [...new Set([...own, ...found])];
}
