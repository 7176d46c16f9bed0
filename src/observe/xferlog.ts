/**
 * xferlog: one line per FTP file transfer in the wu-ftpd xferlog(5) format, which vsftpd and
 * ProFTPD also write and log analysers read:
 *
 *   current-time transfer-time remote-host file-size filename transfer-type special-action-flag
 *   direction access-mode username service-name authentication-method authenticated-user-id
 *   completion-status
 *
 *   Mon Nov 22 10:43:38 2026 1 127.0.0.1 1048576 /pub/file.bin b _ o a anonymous ftp 0 * c
 *
 * Fields are separated by single spaces, so a file name's whitespace becomes `_` (as vsftpd does)
 * and control bytes are %-encoded. For anonymous users wu-ftpd writes the password (an e-mail
 * address) as the user name; sockstap never records a password, so it writes the login name.
 */
import type { XferRecord } from './events.js';
import { LineFile, type LineFileHooks } from './log.js';

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

const two = (n: number): string => (n < 10 ? `0${n}` : String(n));

/** ctime(3) without the newline, in local time: "Mon Nov  2 10:43:38 2026" (day padded with a space). */
export function ctimeText(date: Date): string {
  const day = date.getDate();
  return (
    `${DAYS[date.getDay()]} ${MONTHS[date.getMonth()]} ${day < 10 ? ` ${day}` : day} ` +
    `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())} ${date.getFullYear()}`
  );
}

/** A field that must not contain the separator: whitespace → `_`, controls and `%` %-encoded, `-` when empty. */
function field(text: string): string {
  if (text === '') return '-';
  return text.replace(/[\s\x00-\x1f\x7f%]/g, (c) => {
    if (c === ' ' || c === '\t') return '_';
    const code = c.charCodeAt(0);
    return `%${code < 16 ? '0' : ''}${code.toString(16)}`;
  });
}

/** The xferlog(5) line for one transfer, with its newline. */
export function formatXferlogLine(r: XferRecord): string {
  // transfer-time is whole seconds; wu-ftpd and vsftpd never write 0 for a transfer that happened.
  const seconds = Math.max(1, Math.round(r.durationMs / 1000));
  return (
    [
      ctimeText(new Date(r.time)),
      seconds,
      field(r.remoteHost),
      r.bytes,
      field(r.file),
      r.type === 'ascii' ? 'a' : 'b',
      '_',
      r.direction === 'download' ? 'o' : 'i',
      r.accessMode,
      field(r.user ?? ''),
      'ftp',
      0,
      '*',
      r.complete ? 'c' : 'i',
    ].join(' ') + '\n'
  );
}

/** Writes `xfer` events to LOGDIR/xferlog through a buffered LineFile. */
export class XferlogWriter {
  private readonly file: LineFile;
  constructor(path: string, hooks: LineFileHooks = {}) {
    this.file = new LineFile(path);
    this.file.hooks = hooks;
  }

  /** Open the file again (SIGHUP, SIGUSR1: logrotate moved it away). */
  reopen(): void {
    this.file.reopen();
  }
  get path(): string {
    return this.file.path;
  }
  write(r: XferRecord): void {
    this.file.write(formatXferlogLine(r));
  }
  close(): Promise<void> {
    return this.file.close();
  }
}
