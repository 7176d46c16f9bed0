/**
 * Greetings of server-first protocols (FTP RFC 959 §4.2, SMTP RFC 5321 §4.2 and §3.1, POP3
 * RFC 1939 §4, IMAP RFC 3501 §7.1, NNTP RFC 3977 §5.1), the SSH identification string (RFC 4253
 * §4.2) and Telnet option negotiation (RFC 854), plus the rule that tells an FTP 220 from an SMTP
 * 220 by the client's first command.
 */
import { match, NEED_MORE, NO_MATCH, type SniffInfo, type SniffVerdict, type TapProtocol } from './types.js';

/** Longest single greeting line (an IMAP greeting with its CAPABILITY list is the long one). */
export const MAX_GREETING_LINE = 4 * 1024;
/** Longest multi-line 220 greeting (FTP servers print welcome texts). */
export const MAX_MULTILINE_GREETING = 16 * 1024;
/** RFC 4253 §4.2: the identification string is at most 255 characters, CR LF included. */
export const MAX_SSH_IDENTIFICATION = 255;
/** RFC 5321 §4.5.3.1.4: a command line is at most 512 octets, CR LF included. */
export const MAX_COMMAND_LINE = 512;

const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
/** RFC 854: IAC, then WILL(251) WONT(252) DO(253) DONT(254) and an option code. */
const IAC = 0xff;
const WILL = 251;
const DONT = 254;

type Line = { text: string; next: number } | 'need-more' | 'too-long';

/**
 * The line starting at `from`: up to LF, at most `cap` bytes with the LF. A CR before the LF is
 * dropped; servers that end lines with LF alone are tolerated, the taps' readers do the same.
 */
function lineAt(bytes: Uint8Array, from: number, cap: number): Line {
  const end = Math.min(bytes.length, from + cap);
  for (let i = from; i < end; i++) {
    if (bytes[i] === LF) {
      const stop = i > from && bytes[i - 1] === CR ? i - 1 : i;
      return { text: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('latin1', from, stop), next: i + 1 };
    }
  }
  return end === from + cap ? 'too-long' : 'need-more';
}

/** True while `bytes` (from `from`) is a prefix of `word`, or starts with it. */
function startsWithPrefix(bytes: Uint8Array, from: number, word: string): 'yes' | 'partial' | 'no' {
  for (let k = 0; k < word.length; k++) {
    if (from + k >= bytes.length) return 'partial';
    if (bytes[from + k] !== word.charCodeAt(k)) return 'no';
  }
  return 'yes';
}

/** A greeting that is one line: `prefix` then SP or end of line; `proto` on the complete line. */
function singleLine(bytes: Uint8Array, prefix: string, proto: TapProtocol, cap: number): SniffVerdict {
  const p = startsWithPrefix(bytes, 0, prefix);
  if (p !== 'yes') return p === 'no' ? NO_MATCH : NEED_MORE;
  if (bytes.length === prefix.length) return NEED_MORE;
  const after = bytes[prefix.length];
  if (after !== SP && after !== CR && after !== LF) return NO_MATCH;
  const line = lineAt(bytes, 0, cap);
  if (line === 'need-more') return NEED_MORE;
  if (line === 'too-long') return NO_MATCH;
  return match(proto, { banner: line.text });
}

/** Ends a reply line's code: SP (last line), '-' (more follow), or nothing before CR LF. */
function replySeparator(b: number | undefined): 'last' | 'more' | 'need-more' | 'bad' {
  if (b === undefined) return 'need-more';
  if (b === SP || b === CR || b === LF) return 'last';
  if (b === 0x2d) return 'more';
  return 'bad';
}

/**
 * RFC 959 §4.2 and RFC 5321 §4.2.1: "220-" starts a multi-line reply that ends with the line that
 * starts "220 " (or is "220" alone); FTP lets the lines between carry any text.
 */
function sniff220(bytes: Uint8Array): SniffVerdict {
  const sep = replySeparator(bytes[3]);
  if (sep === 'need-more') return NEED_MORE;
  if (sep === 'bad') return NO_MATCH;
  const lines: string[] = [];
  let at = 0;
  for (;;) {
    const line = lineAt(bytes, at, Math.min(MAX_GREETING_LINE, MAX_MULTILINE_GREETING - at));
    if (line === 'need-more') return NEED_MORE;
    if (line === 'too-long') return NO_MATCH;
    lines.push(line.text);
    at = line.next;
    const t = line.text;
    if (t.startsWith('220') && (t.length === 3 || t[3] === ' ')) break;
    if (at >= MAX_MULTILINE_GREETING) return NO_MATCH;
  }
  const banner = lines.join('\n');
  const proto = ftpOrSmtpByText(banner);
  const info: SniffInfo = { banner };
  if (proto === null) info.ambiguous = 'ftp-or-smtp';
  return match(proto ?? 'ftp', info);
}

/** Names that only a mail server puts in its greeting. */
const SMTP_TEXT = /smtp|postfix|exim|sendmail|qmail|mail service|mail server/i;
/** Names that only an FTP server puts in its greeting ("ftp" also covers vsFTPd, ProFTPD, Pure-FTPd). */
const FTP_TEXT = /ftp|filezilla|serv-u/i;
/** Weaker: "mail" in a 220 greeting (mail.example.com) that says neither of the above. */
const MAIL_TEXT = /mail/i;

/** SMTP words first: an SMTP greeting may name a host "ftp.example.com", an FTP one never says ESMTP. */
function ftpOrSmtpByText(banner: string): 'ftp' | 'smtp' | null {
  if (SMTP_TEXT.test(banner)) return 'smtp';
  if (FTP_TEXT.test(banner)) return 'ftp';
  if (MAIL_TEXT.test(banner)) return 'smtp';
  return null;
}

/** RFC 4253 §4.2: "SSH-protoversion-softwareversion SP comments CR LF", at most 255 characters. */
export function sniffSshIdentification(bytes: Uint8Array): SniffVerdict {
  const p = startsWithPrefix(bytes, 0, 'SSH-');
  if (p !== 'yes') return p === 'no' ? NO_MATCH : NEED_MORE;
  const line = lineAt(bytes, 0, MAX_SSH_IDENTIFICATION);
  if (line === 'need-more') return NEED_MORE;
  if (line === 'too-long') return NO_MATCH;
  // protoversion is "2.0", or "1.99" from a server that also speaks SSH 1 (RFC 4253 §5.1).
  if (!/^SSH-\d+\.\d+-\S/.test(line.text)) return NO_MATCH;
  return match('ssh', { banner: line.text });
}

/** RFC 854: a Telnet peer usually opens with option negotiation, IAC WILL/WONT/DO/DONT option. */
export function sniffTelnetNegotiation(bytes: Uint8Array): SniffVerdict {
  if (bytes.length < 1) return NEED_MORE;
  if (bytes[0] !== IAC) return NO_MATCH;
  if (bytes.length < 2) return NEED_MORE;
  if (bytes[1]! < WILL || bytes[1]! > DONT) return NO_MATCH;
  if (bytes.length < 3) return NEED_MORE;
  return match('telnet', {});
}

/**
 * The server's first bytes: 220 (FTP or SMTP, told apart by the text; `ambiguous` when it names
 * neither), +OK (POP3), * OK / * PREAUTH / * BYE (IMAP), 200 / 201 (NNTP), SSH-, Telnet IAC.
 * `portHint` is not used to decide: the port is the last hint, applied with the client's first
 * command by `resolveFtpOrSmtp`.
 */
export function sniffServer(bytes: Buffer, portHint: number): SniffVerdict {
  if (bytes.length === 0) return NEED_MORE;
  switch (bytes[0]) {
    case 0x32: {
      // '2': 220 FTP/SMTP; 200/201 NNTP (RFC 3977 §5.1.1: posting allowed / prohibited).
      let possible = false;
      for (const code of ['220', '200', '201']) {
        const p = startsWithPrefix(bytes, 0, code);
        if (p === 'yes') return code === '220' ? sniff220(bytes) : singleLine(bytes, code, 'nntp', MAX_GREETING_LINE);
        if (p === 'partial') possible = true;
      }
      return possible ? NEED_MORE : NO_MATCH;
    }
    case 0x2b: // '+': RFC 1939 §4 "+OK" greeting
      return singleLine(bytes, '+OK', 'pop3', MAX_GREETING_LINE);
    case 0x2a: {
      // '*': RFC 3501 §7.1 greeting = "*" SP (resp-cond-auth / resp-cond-bye)
      let possible = false;
      for (const word of ['* OK', '* PREAUTH', '* BYE']) {
        const v = singleLine(bytes, word, 'imap', MAX_GREETING_LINE);
        if (v.verdict === 'match') return v;
        if (v.verdict === 'need-more') possible = true;
      }
      return possible ? NEED_MORE : NO_MATCH;
    }
    case 0x53: // 'S'
      return sniffSshIdentification(bytes);
    case IAC:
      return sniffTelnetNegotiation(bytes);
    default:
      return NO_MATCH;
  }
}

/** RFC 959 §4.1 and RFC 2389, 2228: commands an FTP client may open with. */
const FTP_COMMANDS = new Set(['USER', 'AUTH', 'FEAT', 'SYST', 'OPTS', 'PASV', 'EPSV', 'HOST']);
/** RFC 5321 §4.1.1: an SMTP session starts with EHLO or HELO; some clients send MAIL at once. */
const SMTP_COMMANDS = new Set(['EHLO', 'HELO', 'MAIL', 'LHLO']);

/**
 * An ambiguous 220 is decided by the client's first command, the port only as the last hint
 * (21 FTP; 25, 465, 587 SMTP; anything else FTP).
 */
export function resolveFtpOrSmtp(clientFirstLine: string, portHint: number): 'ftp' | 'smtp' {
  const verb = /^\s*([A-Za-z]+)/.exec(clientFirstLine)?.[1]?.toUpperCase() ?? '';
  if (FTP_COMMANDS.has(verb)) return 'ftp';
  if (SMTP_COMMANDS.has(verb)) return 'smtp';
  if (portHint === 25 || portHint === 465 || portHint === 587) return 'smtp';
  return 'ftp';
}

/**
 * The client's first command line, for `resolveFtpOrSmtp`: the text (CR LF removed) once its LF
 * is in, 'need-more' before, null when no line ends within MAX_COMMAND_LINE.
 */
export function firstCommandLine(bytes: Uint8Array): string | 'need-more' | null {
  const line = lineAt(bytes, 0, MAX_COMMAND_LINE);
  if (line === 'need-more') return 'need-more';
  if (line === 'too-long') return null;
  return line.text;
}
