/**
 * SRCIF=ADDRESS[:dstHostList[:srcHostList]] (DeleGate's name): the source address of sockstap's
 * direct connections to these destinations from these clients. Repeatable; the first rule that
 * matches (and whose address family the destination has) wins; none: the system chooses.
 *
 * Applies to direct dials (an empty route chain: the destination itself), not to connections to an
 * upstream proxy. ADDRESS must be an address of this host (os.networkInterfaces(), or any of
 * 127.0.0.0/8, which Linux's loopback answers for), else the configuration is refused (exit 2).
 * The native accept path's direct plans do not bind: a CONNECT a rule applies to is handed to the
 * JavaScript pipeline (pipeline/plan.ts planTunnel).
 */
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import ipaddr from 'ipaddr.js';
import { parseHostList } from '../config/hostlist.js';
import { splitTopLevel } from '../config/split.js';
import type { HostList, HostPort } from '../config/types.js';
import { ConfigError } from '../config/types.js';
import { firstMatch } from '../config/first-match.js';

export interface SrcifRule {
  address: string;
  family: 4 | 6;
  dst: HostList;
  src: HostList;
  source: string;
}

/** The question: who dials where. */
export interface SrcifQuery {
  dst: HostPort;
  /** The destination's addresses (an IP literal is itself). */
  addresses: ReadonlyArray<{ address: string; family: number }>;
  clientAddress: string;
  user: string | null;
}

function isLocalAddress(address: string): boolean {
  const a = ipaddr.process(address);
  if (a.kind() === 'ipv4' && a.range() === 'loopback') return true;
  const text = a.toNormalizedString();
  for (const infos of Object.values(networkInterfaces())) {
    for (const info of infos ?? []) {
      const i = info.address.split('%')[0]!;
      if (ipaddr.isValid(i) && ipaddr.process(i).toNormalizedString() === text && ipaddr.process(i).kind() === a.kind()) return true;
    }
  }
  return false;
}

/** `ADDRESS[:dstHostList[:srcHostList]]`; an IPv6 ADDRESS in brackets when lists follow. */
export function parseSrcif(text: string, label: string): SrcifRule {
  const t = text.trim();
  let addressText: string;
  let rest: string;
  if (t.startsWith('[')) {
    const close = t.indexOf(']');
    if (close < 0) throw new ConfigError(label, 'unclosed [ in the address');
    addressText = t.slice(1, close);
    rest = t.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) throw new ConfigError(label, 'expected :dstHostList after ]');
    rest = rest.slice(1);
  } else if (isIP(t) === 6) {
    addressText = t;
    rest = '';
  } else {
    const colon = t.indexOf(':');
    addressText = colon < 0 ? t : t.slice(0, colon);
    rest = colon < 0 ? '' : t.slice(colon + 1);
  }
  const family = isIP(addressText);
  if (family === 0) {
    throw new ConfigError(label, `expected ADDRESS[:dstHostList[:srcHostList]] with an IPv4 or [IPv6] address, got ${JSON.stringify(addressText)}`);
  }
  if (!isLocalAddress(addressText)) {
    throw new ConfigError(label, `${addressText} is not an address of this host (see \`ip address\`); sockstap cannot send from it`);
  }
  const fields = rest === '' ? [] : splitTopLevel(rest, ':');
  if (fields.length > 2) throw new ConfigError(label, 'expected ADDRESS[:dstHostList[:srcHostList]]; a list with ports or IPv6 goes in braces, as {*:443,[::1]:80}');
  const [dstText = '', srcText = ''] = fields;
  return {
    address: ipaddr.process(addressText).toString(),
    family: family as 4 | 6,
    dst: parseHostList(dstText.trim() === '' ? '*' : dstText, label),
    src: parseHostList(srcText.trim() === '' ? '*' : srcText, label),
    source: `SRCIF=${t}`,
  };
}

/** The rule for this dial, or null: the system picks the source address. */
export function srcifFor(rules: readonly SrcifRule[] | undefined, q: SrcifQuery): SrcifRule | null {
  if (!rules || rules.length === 0) return null;
  const user = q.user ?? undefined;
  const addresses = q.addresses.map((a) => a.address);
  return firstMatch(
    rules,
    (r) =>
      q.addresses.some((a) => a.family === r.family) &&
      r.src.matches({ host: q.clientAddress, addresses: [q.clientAddress], user }) &&
      r.dst.matches({ host: q.dst.host, port: q.dst.port, addresses, user }),
  );
}
