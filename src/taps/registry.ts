/**
 * Which tap serves which sniffed protocol. A protocol with no tap here (or not in the rule's
 * list) is relayed untouched, with the protocol still recorded in sessions.jsonl. HTTP is served by
 * the running instance's own HttpTap (taps/http/tap.ts), which the pipeline holds.
 */
import { ftpTap } from './ftp/tap.js';
import { imapTap } from './imap/imap-tap.js';
import { nntpTap } from './nntp/nntp-tap.js';
import { pop3Tap } from './pop3/pop3-tap.js';
import { smtpTap } from './smtp/smtp-tap.js';
import type { Tap } from './tap.js';

export const TAPS: Partial<Record<string, Tap>> = {
  ftp: ftpTap,
  smtp: smtpTap,
  pop3: pop3Tap,
  imap: imapTap,
  nntp: nntpTap,
};
