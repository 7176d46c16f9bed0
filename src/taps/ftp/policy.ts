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
import type { Decision } from '../../policy/acl.js';

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
  for (const rule of config.rules) {
    if (!rule.protocols.includes('ftp')) continue;
    if (rule.when && !rule.when.contains(now)) continue;
    if (!rule.src.matches({ host: q.clientAddress, addresses: [q.clientAddress], user })) continue;
    const target = { host: q.dst.host, addresses: q.dstAddresses, port: q.dst.port, user, access: q.access, url: q.url };
    if (!rule.dst.matches(target)) continue;
    return { allowed: rule.action === 'permit', by: rule.source };
  }
  return { allowed: true, by: 'default' };
}
