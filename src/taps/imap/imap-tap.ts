/**
 * The IMAP tap (RFC 3501, RFC 9051): records tagged commands with their completion results, the
 * selected mailbox, and FETCH responses with the bytes of their literals; LOGIN and AUTHENTICATE
 * are masked (the user they name, SASL PLAIN and LOGIN included, is recorded once the server says
 * OK); after a STARTTLS the server accepted (RFC 3501 §6.2.1) the connection is relayed
 * raw.
 *
 * Literals are followed exactly in both directions (RFC 3501 §4.3, RFC 7888 for `{n+}`, RFC 3516
 * `~{n}`): a line ending in a literal marker makes the next n bytes raw, and the line after them
 * still belongs to the same command or response.
 */
import { lineText, type LineItem } from '../../net/lines.js';
import { LineProxy, MAX_RECORDED, pushBounded, saslUser, serverFor } from '../line-proxy.js';
import type { Tap } from '../tap.js';

export interface ImapCommandRecord {
  tag: string;
  /** The command name (two words for UID commands), with the mailbox for SELECT/EXAMINE. */
  command: string;
  /** OK, NO or BAD from the tagged completion; null while outstanding or when the connection ended. */
  result: string | null;
}

export interface ImapSection {
  user: string | null;
  commands: ImapCommandRecord[];
  /** The mailbox a successful SELECT/EXAMINE opened (null after a failed one, RFC 3501 §6.3.1). */
  mailbox: string | null;
  /** FETCH responses, and the bytes of the literals they carried. */
  fetches: number;
  fetchBytes: number;
  starttls: boolean;
}

/** A literal marker at the end of a line: `{n}`, `{n+}` (RFC 7888) or `~{n}` (RFC 3516). */
export function trailingLiteral(line: Buffer): { size: number; sync: boolean } | null {
  const t = lineText(line);
  const m = /~?\{(\d{1,10})(\+?)\}$/.exec(t);
  if (!m) return null;
  return { size: Number(m[1]), sync: m[2] !== '+' };
}

/** The first argument when it is an atom or a quoted string (RFC 3501 §9 astring); null for a literal. */
export function firstAstring(args: string): string | null {
  if (args.startsWith('"')) {
    let out = '';
    for (let i = 1; i < args.length; i++) {
      const ch = args[i]!;
      if (ch === '\\' && i + 1 < args.length) out += args[++i];
      else if (ch === '"') return out;
      else out += ch;
    }
    return null;
  }
  if (args.startsWith('{') || args.startsWith('~{')) return null;
  const m = /^[^\s(){]+/.exec(args);
  return m ? m[0] : null;
}

const MAX_CAPTURE = 1024;
const MAX_OUTSTANDING = 1000;

export const imapTap: Tap = async (ctx) => {
  const server = await serverFor(ctx);
  if (!server) return;
  const section: ImapSection = { user: null, commands: [], mailbox: null, fetches: 0, fetchBytes: 0, starttls: false };
  ctx.session.sections.imap = section;

  let lp!: LineProxy;
  /** Commands sent and not yet completed, by tag. */
  const outstanding = new Map<string, { rec: ImapCommandRecord; name: string; arg: string | null }>();
  /** The client command whose line continues after a literal. */
  let clientCont = false;
  /** Capture the next client literal as the first argument (LOGIN user, SELECT mailbox). */
  let capture: { tag: string; bytes: Buffer[]; size: number; left: number } | null = null;
  /** While a SASL exchange runs (RFC 3501 §6.2.2), client lines are answers, never commands. */
  let authenticating: string | null = null;
  /** The mechanism of that exchange and how many client responses it has had. */
  let sasl: { mech: string; responses: number } = { mech: '', responses: 0 };
  /** The response whose line continues after a literal, and whether it is a FETCH. */
  let serverCont: { fetch: boolean } | null = null;

  const onClientLine = (item: LineItem): void => {
    const lit = trailingLiteral(item.bytes);
    if (authenticating !== null) {
      // The first response names the user for PLAIN and LOGIN (kept in `arg` until the tagged OK).
      const o = outstanding.get(authenticating);
      if (o) o.arg ??= saslUser(sasl.mech, lineText(item.bytes), sasl.responses++);
      lp.toServer(item.bytes);
      return;
    }
    if (clientCont) {
      clientCont = lit !== null;
    } else {
      const text = lineText(item.bytes);
      // RFC 3501 separates with one SP; a tab or a run of spaces is read as servers tolerate it.
      const m = /^(\S+)[ \t]+([A-Za-z]+)(?:[ \t]+(.*))?$/s.exec(text);
      if (m && outstanding.size < MAX_OUTSTANDING) {
        const tag = m[1]!;
        let name = m[2]!.toUpperCase();
        let args = m[3] ?? '';
        if (name === 'UID') {
          const sub = /^([A-Za-z]+)(?: (.*))?$/.exec(args);
          name = `UID ${(sub?.[1] ?? '').toUpperCase()}`;
          args = sub?.[2] ?? '';
        }
        let arg: string | null = null;
        let shown = name;
        if (name === 'LOGIN' || name === 'SELECT' || name === 'EXAMINE') {
          arg = firstAstring(args);
          if (arg === null && lit && /^~?\{\d+\+?\}$/.test(args)) {
            // The first argument itself is the literal that follows.
            capture = { tag, bytes: [], size: 0, left: lit.size };
          }
          if (name !== 'LOGIN' && arg !== null) shown = `${name} ${arg}`;
        }
        if (name === 'AUTHENTICATE') {
          // RFC 3501 §6.2.2, RFC 4959 (SASL-IR): AUTHENTICATE mechanism [initial-response].
          const [mech = '', initial] = args.split(/[ \t]+/);
          shown = `AUTHENTICATE ${mech.toUpperCase()}`;
          authenticating = tag;
          sasl = { mech, responses: 0 };
          if (initial !== undefined) arg = saslUser(mech, initial, sasl.responses++);
        }
        const rec: ImapCommandRecord = { tag, command: shown, result: null };
        pushBounded(section.commands, rec, MAX_RECORDED);
        outstanding.set(tag, { rec, name, arg });
      }
      clientCont = lit !== null;
    }
    lp.toServer(item.bytes);
    if (lit && lit.size > 0) lp.clientRaw(lit.size);
  };

  const onClient = (item: LineItem): void => {
    if (item.kind === 'raw') {
      if (capture) {
        if (capture.size < MAX_CAPTURE) {
          capture.bytes.push(Buffer.from(item.bytes.subarray(0, MAX_CAPTURE - capture.size)));
          capture.size += item.bytes.length;
        }
        capture.left -= item.bytes.length;
        if (capture.left <= 0) {
          const o = outstanding.get(capture.tag);
          const value = Buffer.concat(capture.bytes).toString('utf8');
          if (o) {
            o.arg = value;
            if (o.name !== 'LOGIN') o.rec.command = `${o.name} ${value}`;
          }
          capture = null;
        }
      }
      lp.toServer(item.bytes);
      return;
    }
    onClientLine(item);
  };

  const onServerLine = (item: LineItem): void => {
    const lit = trailingLiteral(item.bytes);
    if (serverCont) {
      if (!lit) serverCont = null;
    } else {
      const text = lineText(item.bytes);
      if (text.startsWith('* ')) {
        const fetch = /^\* \d+ FETCH /i.test(text);
        if (fetch) section.fetches++;
        if (lit) serverCont = { fetch };
      } else if (!text.startsWith('+')) {
        const m = /^(\S+) (OK|NO|BAD)\b/i.exec(text);
        const o = m ? outstanding.get(m[1]!) : undefined;
        if (m && o) {
          outstanding.delete(m[1]!);
          const result = m[2]!.toUpperCase();
          o.rec.result = result;
          const ok = result === 'OK';
          if (o.name === 'SELECT' || o.name === 'EXAMINE') section.mailbox = ok ? o.arg : null;
          if ((o.name === 'LOGIN' || o.name === 'AUTHENTICATE') && ok && o.arg !== null) section.user = o.arg;
          if (o.name === 'CLOSE' || o.name === 'UNSELECT') section.mailbox = null;
          if (authenticating === m[1]) authenticating = null;
          if (o.name === 'STARTTLS' && ok) {
            section.starttls = true;
            // STLS=mitm: tapped on inside the TLS (LineProxy.requestTls); otherwise relayed.
            lp.requestTls();
          }
        }
        if (lit) serverCont = { fetch: false };
      } else if (lit) serverCont = { fetch: false };
    }
    if (lit && lit.size > 0) lp.serverRaw(lit.size);
  };

  const onServer = (item: LineItem): void => {
    lp.toClient(item.bytes);
    if (item.kind === 'raw') {
      if (serverCont?.fetch) section.fetchBytes += item.bytes.length;
      return;
    }
    onServerLine(item);
  };

  lp = new LineProxy(ctx, server, { onClient, onServer });
  await lp.run();
};
