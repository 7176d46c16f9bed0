/**
 * How every rule list is decided (PERMIT/REJECT, the FTP and mail request rules, SOCKSTAP rules,
 * YAML routes, SRCIF, STLS): the rules in the order written, the first one that matches wins.
 */

/** The first rule of `rules` for which `matches` is true, or null when none is (or there are none). */
export function firstMatch<R>(rules: readonly R[] | undefined, matches: (rule: R) => boolean): R | null {
  if (!rules) return null;
  for (const rule of rules) {
    if (matches(rule)) return rule;
  }
  return null;
}
