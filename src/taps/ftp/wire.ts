/**
 * FTP control-connection grammar the tap and the built-in client need: command lines (RFC 959
 * §5.3.1), replies with their multi-line form (RFC 959 §4.2), the PASV/EPSV answers (RFC 959 §4.1.2
 * "227", RFC 2428 §3 "229") and the PORT/EPRT arguments (RFC 959 §4.1.2, RFC 2428 §2). Pure
 * functions over text, no sockets.
 */

export interface FtpCommand {
  /** Upper-case verb ("RETR"); an empty string for a blank line. */
  verb: string;
  /** Everything after the first space, as sent (RFC 959 §5.3.2: pathnames may contain spaces). */
  arg: string;
}

/** RFC 959 §5.3.1: a command is a verb of letters, then optionally SP and an argument. */
export function parseCommand(text: string): FtpCommand {
  // Telnet IP/Synch sequences (RFC 959 §4.1.3, ABOR) may precede the verb: skip non-letters.
  // The separator is SP (RFC 959 §5.3.2); a TAB is taken as one too, so that `PASS<TAB>pw` is
  // read as PASS and masked, whatever the server makes of it.
  const m = /^[^A-Za-z]*([A-Za-z]{1,8})(?:[ \t](.*))?$/s.exec(text);
  if (!m) return { verb: '', arg: text };
  return { verb: m[1]!.toUpperCase(), arg: m[2] ?? '' };
}

/** The command as it may be recorded: the argument of PASS (and ACCT, RFC 959 §4.1.1) masked. */
export function recordedCommand(cmd: FtpCommand, maxChars = 512): string {
  if (cmd.verb === 'PASS' || cmd.verb === 'ACCT') return `${cmd.verb} ****`;
  const text = cmd.arg === '' ? cmd.verb : `${cmd.verb} ${cmd.arg}`;
  return text.length > maxChars ? `${text.slice(0, maxChars)}...` : text;
}

/**
 * RFC 959 §4.1.3 and RFC 3659: commands that change or delete something on the server; a rule
 * with the `readonly` element refuses them. SITE is included because its sub-commands (CHMOD,
 * ...) are server-defined and commonly write.
 */
export const WRITE_COMMANDS: ReadonlySet<string> = new Set([
  'STOR',
  'STOU',
  'APPE',
  'DELE',
  'RNFR',
  'RNTO',
  'MKD',
  'XMKD',
  'RMD',
  'XRMD',
  'SITE',
  'MFMT', // draft-somers-ftp-mfxx: sets a file's modification time
]);

/** Commands whose transfer goes over a data connection (RFC 959 §4.1.3, RFC 3659 §7). */
export const TRANSFER_COMMANDS: ReadonlySet<string> = new Set(['RETR', 'STOR', 'STOU', 'APPE', 'LIST', 'NLST', 'MLSD']);

/** Data flows from the client to the server for these (xferlog direction `i`). */
export const UPLOAD_COMMANDS: ReadonlySet<string> = new Set(['STOR', 'STOU', 'APPE']);

/** One line of a reply, as RFC 959 §4.2 shapes it. */
export interface ReplyLine {
  /** The three-digit code when the line starts with one, else null (a text line inside a multi-line reply). */
  code: number | null;
  /** True for "xyz-": more lines follow. */
  more: boolean;
  text: string;
}

export function parseReplyLine(text: string): ReplyLine {
  const m = /^([1-5]\d\d)([ -]?)(.*)$/s.exec(text);
  if (!m) return { code: null, more: false, text };
  return { code: Number(m[1]), more: m[2] === '-', text: m[3] ?? '' };
}

/**
 * Assembles multi-line replies (RFC 959 §4.2): "xyz-" opens one, and it ends at the first line
 * that starts with the same code followed by SP (or is the code alone). Lines in between may
 * start with anything, even other digits.
 */
export class ReplyAssembler {
  private open: number | null = null;
  private lines: string[] = [];
  private chars = 0;

  constructor(private readonly maxChars = 16 * 1024) {}

  /** Feed one line (without CR LF); returns the complete reply when this line ends one. */
  push(text: string): { code: number; text: string } | null {
    if (this.open === null) {
      const line = parseReplyLine(text);
      if (line.code === null) return null; // garbage outside a reply: relayed, not interpreted
      if (!line.more) return { code: line.code, text: line.text };
      this.open = line.code;
      this.lines = [line.text];
      this.chars = line.text.length;
      return null;
    }
    const code = String(this.open);
    if (text.startsWith(code) && (text.length === 3 || text[3] === ' ')) {
      const done = { code: this.open, text: [...this.lines, text.slice(4)].join('\n') };
      this.open = null;
      this.lines = [];
      this.chars = 0;
      return done;
    }
    // Keep only what fits: the text is for parsing short answers, the bytes are relayed anyway.
    if (this.chars + text.length <= this.maxChars) {
      this.lines.push(text);
      this.chars += text.length;
    }
    return null;
  }
}

export interface DataAddress {
  /** null when the reply names no host (EPSV: the control connection's host). */
  host: string | null;
  port: number;
}

/** RFC 959 §4.1.2: "227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)"; the parentheses are optional in practice. */
export function parsePasvReply(text: string): DataAddress | null {
  const m = /(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})/.exec(text);
  if (!m) return null;
  const n = m.slice(1, 7).map(Number);
  if (n.some((v) => v > 255)) return null;
  const port = n[4]! * 256 + n[5]!;
  if (port === 0) return null;
  return { host: `${n[0]}.${n[1]}.${n[2]}.${n[3]}`, port };
}

/** RFC 2428 §3: "229 Entering Extended Passive Mode (|||6446|)"; the delimiter is any printable character. */
export function parseEpsvReply(text: string): DataAddress | null {
  const m = /\(([!-~])\1\1(\d{1,5})\1\)/.exec(text);
  if (!m) return null;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return null;
  return { host: null, port };
}

/** RFC 959 §4.1.2 PORT h1,h2,h3,h4,p1,p2. */
export function parsePortArg(arg: string): DataAddress | null {
  const a = parsePasvReply(arg.trim());
  return a && /^\s*\d{1,3}(,\d{1,3}){5}\s*$/.test(arg) ? a : null;
}

/** RFC 2428 §2 EPRT |1|132.235.1.2|6275| or |2|1080::8:800:200C:417A|5282|. */
export function parseEprtArg(arg: string): DataAddress | null {
  const t = arg.trim();
  if (t.length < 7) return null;
  const d = t[0]!;
  const parts = t.split(d);
  // "", proto, addr, port, ""
  if (parts.length !== 5 || parts[0] !== '' || parts[4] !== '') return null;
  if (parts[1] !== '1' && parts[1] !== '2') return null;
  const port = Number(parts[3]);
  if (!/^\d{1,5}$/.test(parts[3]!) || port < 1 || port > 65535) return null;
  return { host: parts[2]!, port };
}

/** RFC 959 §4.1.2 PORT argument for an IPv4 address and port. */
export function formatPortArg(host: string, port: number): string {
  return `${host.split('.').join(',')},${port >> 8},${port & 255}`;
}

/** RFC 3659 §2.3: MDTM's time-val "YYYYMMDDHHMMSS[.sss]" in UTC; null when malformed. */
export function parseMdtm(text: string): Date | null {
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d{1,3}))?$/.exec(text.trim());
  if (!m) return null;
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const ms = m[7] ? Number(m[7].padEnd(3, '0')) : 0;
  const t = Date.UTC(y, mo - 1, d, h, mi, s, ms);
  return Number.isNaN(t) ? null : new Date(t);
}

/** RFC 3659 §4.2: SIZE's reply "213 <decimal>". */
export function parseSizeReply(text: string): number | null {
  const t = text.trim();
  return /^\d{1,15}$/.test(t) ? Number(t) : null;
}
