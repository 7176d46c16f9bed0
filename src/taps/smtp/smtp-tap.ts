/**
 * The SMTP tap (RFC 5321): records the envelope, refuses senders and recipients that PERMIT/REJECT
 * rules name with a 550 the proxy writes itself (the server never sees a refused RCPT), enforces a
 * message size limit (the SOCKSTAP rule parameter MAXSIZE, answered with 552), masks AUTH, and
 * hands the connection to the plain relay after a STARTTLS the server accepted (RFC 3207 §4).
 *
 * Pipelining (RFC 2920 §3): every command the client sends, forwarded or answered here, takes
 * its place in one queue; the proxy's own replies wait behind the server replies still due for
 * earlier commands, so a client that sends MAIL, RCPT, RCPT, DATA in one batch gets its replies
 * in that order even when the second RCPT is refused by the proxy in the middle.
 */
import { lineText, type LineItem } from '../../net/lines.js';
import { CommandQueue, LineProxy, mailboxTarget, pushBounded, requestAllowed, serverFor, splitCommand } from '../line-proxy.js';
import type { Tap, TapContext } from '../tap.js';

export interface SmtpRecipient {
  to: string;
  /** The reply to this RCPT (first line), the proxy's own when it refused it. */
  reply: string | null;
}

export interface SmtpMessage {
  from: string;
  /** SIZE= of MAIL FROM (RFC 1870), when given. */
  declaredSize: number | null;
  rcpt: SmtpRecipient[];
  /** Message bytes the client sent (after dot-unstuffing, CRLF included), null before DATA/BDAT. */
  size: number | null;
  /** True when the final reply to DATA / BDAT LAST was 2xx. */
  accepted: boolean;
  /** The final reply's first line. */
  reply: string | null;
  messageId: string | null;
}

/** `session.sections.smtp`: the last transaction's envelope at the top, every transaction in `messages`. */
export interface SmtpSection {
  helo: string | null;
  from: string | null;
  rcpt: SmtpRecipient[];
  size: number | null;
  accepted: boolean;
  messageId: string | null;
  reply: string | null;
  /** The AUTH mechanism and whether it succeeded; never the exchange itself. */
  auth: { mechanism: string; ok: boolean | null } | null;
  starttls: boolean;
  messages: SmtpMessage[];
}

type Pending =
  | { kind: 'greeting' }
  | { kind: 'ehlo' }
  | { kind: 'mail'; msg: SmtpMessage }
  | { kind: 'rcpt'; r: SmtpRecipient }
  | { kind: 'data' }
  | { kind: 'dot'; msg: SmtpMessage }
  | { kind: 'bdat'; msg: SmtpMessage; last: boolean }
  | { kind: 'auth' }
  | { kind: 'starttls' }
  | { kind: 'other' };

/** RFC 5321 §4.1.2: `<local@domain>`, or `<>` for the null reverse-path; the rest are parameters. */
export function parsePath(args: string): { mailbox: string; params: string } | null {
  // dotAll: a bare CR in the parameters must not make the path unparsed (and so unchecked).
  const m = /^\s*<([^>]*)>\s*(.*)$/s.exec(args) ?? /^\s*(\S+)\s*(.*)$/s.exec(args);
  if (!m) return null;
  let mailbox = m[1]!;
  // A source route (RFC 5321 §4.1.2, "@a,@b:user@host") is obsolete; the mailbox is after the colon.
  const colon = mailbox.indexOf(':');
  if (mailbox.startsWith('@') && colon >= 0) mailbox = mailbox.slice(colon + 1);
  return { mailbox, params: m[2]! };
}

/** RFC 1870 §3: `SIZE=n` on MAIL FROM. */
export function declaredSize(params: string): number | null {
  const m = /(?:^|\s)SIZE=(\d{1,15})(?:\s|$)/i.exec(params);
  return m ? Number(m[1]) : null;
}

/** The size limit a SOCKSTAP rule sets with MAXSIZE=SIZE (e.g. `10m`); null for none. */
export function maxMessageSize(ctx: TapContext): number | null {
  return ctx.rule.set.maxSize ?? null;
}

const MAX_MESSAGES = 50;

export const smtpTap: Tap = async (ctx) => {
  const server = await serverFor(ctx);
  if (!server) return;
  const section: SmtpSection = {
    helo: null,
    from: null,
    rcpt: [],
    size: null,
    accepted: false,
    messageId: null,
    reply: null,
    auth: null,
    starttls: false,
    messages: [],
  };
  ctx.session.sections.smtp = section;
  const limit = maxMessageSize(ctx);

  let lp!: LineProxy;
  const queue = new CommandQueue<Pending>((b) => lp.toClient(b));
  queue.forwarded({ kind: 'greeting' });

  /** The transaction in progress (after MAIL), if any. */
  let msg: SmtpMessage | null = null;
  let senderRefused = false;
  /** 'data' between 354 and the final dot; 'auth' while the client answers 334 challenges. */
  let clientMode: 'command' | 'data' | 'auth' = 'command';
  let inHeaders = false;
  let lastHeaderWasMessageId = false;
  let overflow = false;
  let bdat: { left: number; msg: SmtpMessage } | null = null;
  /** First line of the reply being received. */
  let replyFirst: string | null = null;

  const publish = (m: SmtpMessage): void => {
    section.from = m.from;
    section.rcpt = m.rcpt;
    section.size = m.size;
    section.accepted = m.accepted;
    section.messageId = m.messageId;
    section.reply = m.reply;
  };

  const startMessage = (from: string, size: number | null): SmtpMessage => {
    const m: SmtpMessage = { from, declaredSize: size, rcpt: [], size: null, accepted: false, reply: null, messageId: null };
    pushBounded(section.messages, m, MAX_MESSAGES);
    publish(m);
    return m;
  };

  const onClientCommand = (item: LineItem): void => {
    const text = lineText(item.bytes);
    const { verb, args } = splitCommand(text);
    switch (verb) {
      case 'EHLO':
      case 'HELO':
      case 'LHLO':
        section.helo = args.trim();
        msg = null;
        senderRefused = false;
        break;
      case 'MAIL': {
        const path = /^FROM:/i.test(args) ? parsePath(args.slice(5)) : null;
        if (!path) break;
        const size = declaredSize(path.params);
        senderRefused = false;
        if (limit !== null && size !== null && size > limit) {
          // RFC 1870 §6.1: a declared size above the fixed limit is refused at MAIL.
          queue.local(`552 5.3.4 Message size ${size} exceeds the limit of ${limit} bytes\r\n`);
          senderRefused = true;
          return;
        }
        if (!requestAllowed(ctx, 'smtp', mailboxTarget(path.mailbox)).allowed) {
          queue.local(`550 5.7.1 <${path.mailbox}>: sender refused by proxy policy\r\n`);
          senderRefused = true;
          return;
        }
        msg = startMessage(path.mailbox, size);
        lp.toServer(item.bytes);
        queue.forwarded({ kind: 'mail', msg });
        return;
      }
      case 'RCPT': {
        const path = /^TO:/i.test(args) ? parsePath(args.slice(3)) : null;
        if (senderRefused) {
          // RFC 5321 §4.1.4: no transaction is open, as far as the client was told.
          queue.local('503 5.5.1 sender was refused; send MAIL first\r\n');
          return;
        }
        if (!path) break;
        const r: SmtpRecipient = { to: path.mailbox, reply: null };
        if (msg) pushBounded(msg.rcpt, r, 1000);
        if (!requestAllowed(ctx, 'smtp', mailboxTarget(path.mailbox)).allowed) {
          r.reply = `550 5.7.1 <${path.mailbox}>: recipient refused by proxy policy`;
          queue.local(`${r.reply}\r\n`);
          return;
        }
        lp.toServer(item.bytes);
        queue.forwarded({ kind: 'rcpt', r });
        return;
      }
      case 'DATA':
        if (senderRefused) {
          queue.local('503 5.5.1 sender was refused; send MAIL first\r\n');
          return;
        }
        lp.toServer(item.bytes);
        queue.forwarded({ kind: 'data' });
        // RFC 5321 §3.3: the client waits for 354 before the message; hold so bytes sent early
        // are not taken for commands.
        lp.holdClient();
        return;
      case 'BDAT': {
        // RFC 3030 §2: BDAT size [LAST], then exactly `size` octets.
        const m = /^(\d{1,15})(\s+LAST)?\s*$/i.exec(args);
        if (!m) break;
        const n = Number(m[1]);
        const target = msg ?? startMessage('', null);
        target.size ??= 0;
        lp.toServer(item.bytes);
        if (n > 0) {
          lp.clientRaw(n);
          bdat = { left: n, msg: target };
        }
        queue.forwarded({ kind: 'bdat', msg: target, last: m[2] !== undefined });
        return;
      }
      case 'AUTH': {
        const mechanism = (args.trim().split(/\s+/)[0] ?? '').toUpperCase();
        section.auth = { mechanism, ok: null };
        lp.toServer(item.bytes);
        queue.forwarded({ kind: 'auth' });
        lp.holdClient();
        return;
      }
      case 'STARTTLS':
        lp.toServer(item.bytes);
        queue.forwarded({ kind: 'starttls' });
        lp.holdClient();
        return;
      case 'RSET':
        msg = null;
        senderRefused = false;
        break;
    }
    lp.toServer(item.bytes);
    queue.forwarded({ kind: verb === 'EHLO' || verb === 'HELO' || verb === 'LHLO' ? 'ehlo' : 'other' });
  };

  const onDataLine = (item: LineItem): void => {
    const b = item.bytes;
    const dot = b[0] === 0x2e;
    const bare = b.length === 2 ? b[1] === 0x0a : b.length === 3 && b[1] === 0x0d && b[2] === 0x0a;
    if (dot && bare) {
      // RFC 5321 §4.1.1.4: CRLF . CRLF ends the message.
      clientMode = 'command';
      const m = msg ?? startMessage('', null);
      if (overflow) {
        // The server has been cut off mid-message (it never got the end, so it delivers nothing).
        overflow = false;
        m.reply = `552 5.3.4 Message exceeds the limit of ${limit} bytes`;
        publish(m);
        lp.toClient(`${m.reply}\r\n421 4.3.0 closing the connection\r\n`);
        lp.close();
        return;
      }
      lp.toServer(b);
      queue.forwarded({ kind: 'dot', msg: m });
      return;
    }
    if (overflow) return;
    const m = msg;
    const size = b.length - (dot ? 1 : 0);
    if (m) {
      m.size = (m.size ?? 0) + size;
      if (inHeaders) {
        const t = lineText(b);
        if (t === '') inHeaders = false;
        else if (/^message-id\s*:/i.test(t)) {
          const v = t.slice(t.indexOf(':') + 1).trim();
          if (v) m.messageId = v.slice(0, 998);
          lastHeaderWasMessageId = v === '';
        } else if (lastHeaderWasMessageId && /^[ \t]/.test(t)) {
          // RFC 5322 §2.2.3: a folded Message-ID header.
          m.messageId = t.trim().slice(0, 998);
          lastHeaderWasMessageId = false;
        } else lastHeaderWasMessageId = false;
      }
      if (limit !== null && m.size > limit) {
        overflow = true;
        // Cut the server off: without the final dot it never delivers a partial message.
        lp.dropServer();
        return;
      }
    }
    lp.toServer(b);
  };

  const onClient = (item: LineItem): void => {
    if (item.kind === 'raw') {
      // A BDAT chunk.
      if (bdat) {
        bdat.left -= item.bytes.length;
        bdat.msg.size = (bdat.msg.size ?? 0) + item.bytes.length;
        if (bdat.left <= 0) bdat = null;
      }
      lp.toServer(item.bytes);
      return;
    }
    if (clientMode === 'data') return onDataLine(item);
    if (clientMode === 'auth') {
      // RFC 4954 §4: a base64 answer to a 334 challenge (or "*" to cancel); never recorded.
      lp.toServer(item.bytes);
      lp.holdClient();
      return;
    }
    onClientCommand(item);
  };

  const onReplyDone = (code: number, first: string): void => {
    const p = queue.head();
    const ok = code >= 200 && code < 300;
    if (p?.kind === 'auth' && code === 334) {
      // The exchange goes on; the reply's own turn in the queue stays.
      clientMode = 'auth';
      lp.releaseClient();
      return;
    }
    queue.done();
    if (!p) return;
    switch (p.kind) {
      case 'rcpt':
        p.r.reply = first;
        break;
      case 'mail':
        if (!ok) {
          p.msg.reply = first;
          msg = null;
        }
        break;
      case 'data':
        if (code === 354) {
          clientMode = 'data';
          inHeaders = true;
          lastHeaderWasMessageId = false;
          msg ??= startMessage('', null);
          msg.size = 0;
        } else if (msg) {
          msg.reply = first;
          publish(msg);
        }
        lp.releaseClient();
        break;
      case 'dot':
      case 'bdat':
        if (p.kind === 'dot' || p.last || !ok) {
          p.msg.accepted = ok;
          p.msg.reply = first;
          publish(p.msg);
          if (p.kind === 'dot' || p.last) msg = null;
        }
        break;
      case 'auth':
        if (section.auth) section.auth.ok = ok;
        clientMode = 'command';
        lp.releaseClient();
        break;
      case 'starttls':
        if (code === 220) {
          // RFC 3207 §4: the TLS handshake starts right after the 220; from here on it is bytes.
          section.starttls = true;
          // STLS=mitm: tapped on inside the TLS (LineProxy.requestTls); otherwise relayed.
          lp.requestTls();
        }
        lp.releaseClient();
        break;
      default:
        break;
    }
  };

  const onServer = (item: LineItem): void => {
    lp.toClient(item.bytes);
    if (item.kind !== 'line') return;
    const text = lineText(item.bytes);
    // RFC 5321 §4.2: "250-" continues a reply, "250 " (or "250" alone) ends it.
    const m = /^(\d{3})([ -]|$)/.exec(text);
    if (!m) return;
    replyFirst ??= text;
    if (m[2] === '-') return;
    const first = replyFirst;
    replyFirst = null;
    onReplyDone(Number(m[1]), first);
  };

  lp = new LineProxy(ctx, server, { onClient, onServer });
  await lp.run();
};
