/**
 * access.log: one line per HTTP request (forward-proxied, tapped) or CONNECT tunnel, from the
 * `access` event. Three formats, each spelled exactly as Squid writes its built-in log formats
 * (squid-cache.org/Doc/config/logformat):
 *
 *   squid     %ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt
 *   common    %>a %[ui %[un [%tl] "%rm %ru HTTP/%rv" %>Hs %<st %Ss:%Sh
 *   combined  %>a %[ui %[un [%tl] "%rm %ru HTTP/%rv" %>Hs %<st "%{Referer}>h" "%{User-Agent}>h" %Ss:%Sh
 *
 * `common` is the NCSA Common Log Format and `combined` adds referer and user agent, both with
 * Squid's trailing `code:hierarchy` field. Every field is free of spaces except the quoted ones, so
 * the lines split on spaces the way log analysers expect.
 */
import type { LogFormat } from '../config/types.js';
import type { AccessRecord } from './events.js';
import { LineFile, type LineFileHooks } from './log.js';

const HEX = '0123456789abcdef';

function percentByte(byte: number): string {
  return `%${HEX[byte >> 4]}${HEX[byte & 15]}`;
}

/**
 * Squid's `[` field encoding (Format::QuoteMimeBlob), which it applies to user names: CR and LF
 * become `\r` `\n`, backslash is doubled, and `%`, `[`, `]` and bytes outside 32..126 are
 * %-encoded. Squid leaves SP alone; we %-encode it too so that a user name can never split a
 * space-separated field in two.
 */
export function squidQuote(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    if (byte === 0x0d) out += '\\r';
    else if (byte === 0x0a) out += '\\n';
    else if (byte === 0x5c) out += '\\\\';
    else if (byte <= 0x20 || byte >= 0x7f || byte === 0x25 || byte === 0x5b || byte === 0x5d) out += percentByte(byte);
    else out += String.fromCharCode(byte);
  }
  return out;
}

/** A token field (method, URL, content type): whitespace and controls %-encoded, `-` when empty. */
function token(text: string | null | undefined): string {
  if (!text) return '-';
  // Most URLs and methods need no encoding at all.
  if (!/[\x00-\x20\x7f]/.test(text)) return text;
  return text.replace(/[\x00-\x20\x7f]/g, (c) => percentByte(c.charCodeAt(0)));
}

function user(name: string | null | undefined): string {
  return name ? squidQuote(name) : '-';
}

/** A value inside double quotes (combined's referer and user agent): `"` and `\` escaped, controls \xhh. */
function quoted(text: string | undefined): string {
  if (!text) return '"-"';
  const escaped = text.replace(/[\x00-\x1f\x7f"\\]/g, (c) =>
    c === '"' || c === '\\' ? `\\${c}` : `\\x${HEX[c.charCodeAt(0) >> 4]}${HEX[c.charCodeAt(0) & 15]}`,
  );
  return `"${escaped}"`;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** `%tl`, the CLF timestamp in local time: `22/Nov/2026:10:43:38 +0100`. */
export function clfTime(ms: number): string {
  const d = new Date(ms);
  const offset = -d.getTimezoneOffset();
  const sign = offset < 0 ? '-' : '+';
  const abs = Math.abs(offset);
  return (
    `${pad2(d.getDate())}/${MONTHS[d.getMonth()]}/${d.getFullYear()}:` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())} ` +
    `${sign}${pad2(Math.floor(abs / 60))}${pad2(abs % 60)}`
  );
}

/** `%Sh` alone: the hierarchy code without its peer ("HIER_DIRECT/10.0.0.1" → "HIER_DIRECT"). */
function hierarchyCode(hierarchy: string): string {
  const slash = hierarchy.indexOf('/');
  return slash < 0 ? hierarchy || 'HIER_NONE' : hierarchy.slice(0, slash);
}

/** The hierarchy with its peer, `-` for a missing peer ("HIER_NONE" → "HIER_NONE/-"). */
function hierarchyWithPeer(hierarchy: string): string {
  if (!hierarchy) return 'HIER_NONE/-';
  const slash = hierarchy.indexOf('/');
  if (slash < 0) return `${hierarchy}/-`;
  const peer = hierarchy.slice(slash + 1);
  return `${hierarchy.slice(0, slash)}/${token(peer)}`;
}

function status3(status: number): string {
  // Squid's %03>Hs: zero-padded to three digits, 0 when no reply was sent.
  return String(Math.max(0, Math.trunc(status))).padStart(3, '0');
}

function count(n: number): string {
  return String(Math.max(0, Math.trunc(n)));
}

/** One access.log line, newline included. */
export function formatAccessLine(record: AccessRecord, format: LogFormat): string {
  const line = formatFields(record, format);
  // A request MOUNT rewrote: the URL field is the real URL fetched, and the URL the client asked
  // for follows at the end of the line, so the standard fields keep their places.
  if (record.mountedFrom === undefined) return `${line}\n`;
  return `${line} vurl=${token(withoutPassword(record.mountedFrom))}\n`;
}

function formatFields(record: AccessRecord, format: LogFormat): string {
  const client = token(record.clientAddress);
  const code = token(record.resultCode);
  const method = token(record.method);
  const url = token(withoutPassword(record.url));
  if (format === 'squid') {
    const seconds = Math.floor(record.time / 1000);
    const millis = String(Math.trunc(record.time) % 1000).padStart(3, '0');
    const elapsed = count(record.elapsedMs).padStart(6, ' ');
    return (
      `${String(seconds).padStart(9, ' ')}.${millis} ${elapsed} ${client} ${code}/${status3(record.status)} ` +
      `${count(record.bytes)} ${method} ${url} ${user(record.user)} ${hierarchyWithPeer(record.hierarchy)} ` +
      `${token(record.contentType)}`
    );
  }
  const request = `"${method} ${url} HTTP/${token(record.httpVersion ?? '1.1')}"`;
  const head = `${client} - ${user(record.user)} [${clfTime(record.time)}] ${request} ${record.status} ${count(record.bytes)}`;
  const tail = `${code}:${hierarchyCode(record.hierarchy)}`;
  if (format === 'common') return `${head} ${tail}`;
  return `${head} ${quoted(record.referer)} ${quoted(record.userAgent)} ${tail}`;
}

/** Appends formatted records to access.log through a buffered stream (no synchronous I/O). */
export class AccessLogWriter {
  private readonly file: LineFile;
  constructor(
    readonly path: string,
    private readonly format: LogFormat,
    hooks: LineFileHooks = {},
  ) {
    this.file = new LineFile(path);
    this.file.hooks = hooks;
  }

  /** Open the file again (SIGHUP, SIGUSR1: logrotate moved it away). */
  reopen(): void {
    this.file.reopen();
  }

  write(record: AccessRecord): void {
    this.file.write(formatAccessLine(record, this.format));
  }

  /** Resolves when every line written so far is on disk. */
  close(): Promise<void> {
    return this.file.close();
  }
}

/**
 * `ftp://user:pass@host/` → `ftp://user@host/`: a password in a URL never reaches a log line (as
 * Squid logs it). The user information runs to the LAST `@` of the authority (RFC 3986 §3.2 ends
 * the authority at the first `/`, `?` or `#`; WHATWG URL parsers take the last `@` before it), so
 * a password holding an unencoded `@` (`ftp://alice:x@Secr3t@host/`) goes with it; the user name
 * is what comes before the first `:`.
 */
export function withoutPassword(url: string): string {
  // No `@` at all: no user information (most URLs; this runs for every access.log line).
  if (!url.includes('@')) return url;
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)/i.exec(url);
  if (!m) return url;
  const authority = m[2]!;
  const at = authority.lastIndexOf('@');
  if (at < 0) return url;
  const userinfo = authority.slice(0, at);
  const colon = userinfo.indexOf(':');
  if (colon < 0) return url;
  return `${m[1]}${userinfo.slice(0, colon)}@${authority.slice(at + 1)}${url.slice(m[0].length)}`;
}
