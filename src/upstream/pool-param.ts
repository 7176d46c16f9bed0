/**
 * POOL=BALANCE[/maxfails=N][/failtimeout=D]:{VIA[*WEIGHT],...}[:dstHostList[:srcHostList]] — an
 * upstream pool as a DeleGate-style parameter, the same as a YAML route with `balance:`
 * (upstream/pool.ts): BALANCE is round-robin, weighted, hash-src, hash-dst or first-up; each VIA
 * is one hop URL (`http://sq1:3128`, `https://...`, `socks5://user:pass@gw:1080`) or `direct`;
 * `*WEIGHT` gives a weighted pool's weight (default 1). Repeatable; POOL rules are tried after the
 * YAML routes, in the order written, and before PROXY=/SOCKS=. Chains inside a pool need YAML.
 */
import { parseHostList } from '../config/hostlist.js';
import { splitTopLevel } from '../config/split.js';
import type { PoolSpec, RouteRule } from '../config/types.js';
import { ConfigError } from '../config/types.js';
import { parseCount, parseDuration } from '../config/units.js';
import { parseChain } from './hop.js';
import { DEFAULT_FAILTIMEOUT_MS, DEFAULT_MAXFAILS } from './pool.js';

const BALANCES: readonly PoolSpec['balance'][] = ['round-robin', 'weighted', 'hash-src', 'hash-dst', 'first-up'];
const MAX_MEMBERS = 64;

export function parsePoolParameter(text: string, label: string): RouteRule {
  const fields = splitTopLevel(text.trim(), ':', { keepUrls: true });
  if (fields.length < 2 || fields.length > 4) {
    throw new ConfigError(label, 'expected BALANCE:{VIA,VIA,...}[:dstHostList[:srcHostList]], such as POOL=round-robin:{http://sq1:3128,http://sq2:3128}');
  }
  const [head, members, dstText, srcText] = fields as [string, string, string | undefined, string | undefined];
  const [balanceText, ...opts] = head.split('/').map((x) => x.trim());
  const balance = balanceText!.toLowerCase() as PoolSpec['balance'];
  if (!BALANCES.includes(balance)) throw new ConfigError(label, `unknown balance ${JSON.stringify(balanceText)}; expected ${BALANCES.join(', ')}`);
  let maxfails = DEFAULT_MAXFAILS;
  let failtimeoutMs = DEFAULT_FAILTIMEOUT_MS;
  for (const o of opts) {
    const eq = o.indexOf('=');
    const name = (eq < 0 ? o : o.slice(0, eq)).toLowerCase();
    const value = eq < 0 ? '' : o.slice(eq + 1);
    if (name === 'maxfails') {
      maxfails = parseCount(value, `${label} maxfails`);
      if (maxfails < 1 || maxfails > 1000) throw new ConfigError(`${label} maxfails`, 'expected 1 to 1000');
    } else if (name === 'failtimeout') failtimeoutMs = parseDuration(value, `${label} failtimeout`);
    else throw new ConfigError(label, `unknown pool option ${JSON.stringify(name)}; expected /maxfails=N or /failtimeout=DURATION`);
  }
  const body = members.trim();
  if (!body.startsWith('{') || !body.endsWith('}')) throw new ConfigError(label, 'the members go in braces: {http://sq1:3128,http://sq2:3128}');
  const items = splitTopLevel(body.slice(1, -1), ',').map((m) => m.trim());
  if (items.length === 0 || items.some((m) => m === '')) throw new ConfigError(label, 'empty pool member');
  if (items.length > MAX_MEMBERS) throw new ConfigError(label, `at most ${MAX_MEMBERS} members`);
  const weights: number[] = [];
  const via = items.map((item, i) => {
    const star = /\*(\d+)$/.exec(item);
    const weight = star ? Number(star[1]) : 1;
    if (star && balance !== 'weighted') throw new ConfigError(label, 'a *WEIGHT is for POOL=weighted');
    if (!(weight >= 1 && weight <= 1000)) throw new ConfigError(label, `member ${i + 1}: weight must be 1 to 1000`);
    weights.push(weight);
    const chain = parseChain(star ? item.slice(0, star.index) : item, `${label} member ${i + 1}`);
    if (chain.length > 1) throw new ConfigError(label, 'a pool member is one hop or direct (chains in a pool: YAML routes)');
    return chain;
  });
  const rule: RouteRule = { via, pool: { balance, weights, maxfails, failtimeoutMs }, source: label };
  if (dstText !== undefined && dstText.trim() !== '') rule.dst = parseHostList(dstText, label);
  if (srcText !== undefined && srcText.trim() !== '') rule.src = parseHostList(srcText, label);
  return rule;
}
