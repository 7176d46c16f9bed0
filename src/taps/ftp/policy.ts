/**
 * Checkpoint 3 for FTP: PERMIT/REJECT asked about one command that writes or deletes (RFC 959
 * §4.1.3 STOR, DELE, ...). Only rules whose protocol list names `ftp` are asked (a `*` or a door
 * tag already decided at the destination checkpoint, and must not turn into a per-command rule),
 * in the order written, first match wins, none matching permits. The destination host list also
 * sees `access: 'write'` (so a `readonly` element does not match) and the `ftp://` URL of the file.
 *
 *   PERMIT=ftp:readonly:*  REJECT=ftp:*:*     downloads and listings only
 *   REJECT=ftp:!readonly:*                    the same, in one rule
 */
import type { Config, HostPort } from '../../config/types.js';
import { accessDecision, type Decision } from '../../policy/acl.js';
import { firstMatch } from '../../config/first-match.js';

export interface FtpRequestQuery {
  clientAddress: string;
  user: string | null;
  dst: HostPort;
  dstAddresses?: readonly string[];
  access: 'read' | 'write';
  url?: string;
  now?: Date;
}

export function checkFtpRequest(config: Config, q: FtpRequestQuery): Decision {
  const now = q.now ?? new Date();
  const user = q.user ?? undefined;
  const target = { host: q.dst.host, addresses: q.dstAddresses, port: q.dst.port, user, access: q.access, url: q.url };
  const rule = firstMatch(
    config.rules,
    (rule) =>
      rule.protocols.includes('ftp') &&
      (!rule.when || rule.when.contains(now)) &&
      rule.src.matches({ host: q.clientAddress, addresses: [q.clientAddress], user }) &&
      rule.dst.matches(target),
  );
  return accessDecision(rule);
}
