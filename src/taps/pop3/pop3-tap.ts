/**
 * The POP3 tap (RFC 1939, extensions RFC 2449): records the user (USER, APOP, or the SASL PLAIN
 * and LOGIN identity of an AUTH the server accepted), every command (credentials masked),
 * messages retrieved and their bytes; a PERMIT/REJECT rule with `readonly` refuses DELE with an
 * -ERR the proxy writes itself; after STLS (RFC 2595 §4) the connection is relayed raw.
 *
 * Multi-line responses (RFC 1939 §3) are followed by knowing which command each reply answers:
 * with PIPELINING (RFC 2449 §6.6) several commands may be outstanding, so the replies are matched
 * in order through the shared command queue, and the proxy's own -ERR waits its turn there.
 */
import { lineText, type LineItem } from '../../net/lines.js';
import { CommandQueue, LineProxy, pushBounded, requestAllowed, saslUser, serverFor, splitCommand } from '../line-proxy.js';
import type { Tap } from '../tap.js';

export interface Pop3Section {
  user: string | null;
  /** Commands in order, arguments of USER/PASS/APOP/AUTH masked. */
  commands: string[];
  /** RETR/TOP replies received, and their data bytes (dot-unstuffed, terminator excluded). */
  retrieved: number;
  bytes: number;
  deleted: number;
  /** DELE refused by a read-only rule. */
  refused: number;
  stls: boolean;
}

interface Pending {
  verb: string;
  /** Whether a +OK reply to this command carries a dot-terminated body. */
  multiline: boolean;
}

/** RFC 1939 §5-7, RFC 2449 §5, RFC 5034 §4: which +OK replies carry a multi-line body. */
export function pop3Multiline(verb: string, args: string): boolean {
  switch (verb) {
    case 'RETR':
    case 'TOP':
    case 'CAPA':
      return true;
    case 'LIST':
    case 'UIDL':
      return args.trim() === '';
    case 'AUTH':
      // AUTH with no mechanism lists the mechanisms (RFC 1734 usage kept by many servers).
      return args.trim() === '';
    default:
      return false;
  }
}

/** RFC 1939, RFC 2449 (CAPA), RFC 2595 (STLS), RFC 5034 (AUTH), RFC 6856 (UTF8, LANG). */
const POP3_VERBS: ReadonlySet<string> = new Set([
  'USER', 'PASS', 'APOP', 'AUTH', 'STAT', 'LIST', 'RETR', 'DELE', 'NOOP', 'RSET', 'QUIT', 'TOP', 'UIDL', 'CAPA', 'STLS', 'UTF8', 'LANG',
]);

/**
 * The command as recorded: credentials never. A line that is no POP3 command is recorded as `?`:
 * it may be a SASL response or a password a client sent out of turn (after an AUTH the server
 * refused), and its text is not known to be harmless.
 */
export function pop3Recorded(verb: string, args: string): string {
  if (!POP3_VERBS.has(verb)) return '?';
  switch (verb) {
    case 'PASS':
      return 'PASS ***';
    case 'APOP':
      return `APOP ${args.trim().split(/\s+/)[0] ?? ''} ***`;
    case 'AUTH': {
      const mech = args.trim().split(/\s+/)[0];
      return mech ? `AUTH ${mech.toUpperCase()}${args.trim().includes(' ') ? ' ***' : ''}` : 'AUTH';
    }
    default:
      return args ? `${verb} ${args}` : verb;
  }
}

export const pop3Tap: Tap = async (ctx) => {
  const server = await serverFor(ctx);
  if (!server) return;
  const section: Pop3Section = { user: null, commands: [], retrieved: 0, bytes: 0, deleted: 0, refused: 0, stls: false };
  ctx.session.sections.pop3 = section;

  let lp!: LineProxy;
  const queue = new CommandQueue<Pending>((b) => lp.toClient(b));
  queue.forwarded({ verb: '', multiline: false });
  /** Within a multi-line body: the command it belongs to. */
  let body: Pending | null = null;
  /** While a SASL exchange runs (RFC 5034 §4), client lines are answers, never commands. */
  let authExchange = false;
  /** The SASL exchange of the AUTH command in progress: its mechanism and the user it names. */
  let sasl: { mech: string; responses: number; user: string | null } | null = null;

  const onClient = (item: LineItem): void => {
    if (authExchange) {
      if (sasl) sasl.user ??= saslUser(sasl.mech, lineText(item.bytes), sasl.responses++);
      lp.toServer(item.bytes);
      lp.holdClient();
      return;
    }
    const text = lineText(item.bytes);
    const { verb, args } = splitCommand(text);
    pushBounded(section.commands, pop3Recorded(verb, args));
    if (verb === 'USER' || verb === 'APOP') section.user = args.trim().split(/\s+/)[0] ?? null;
    if (verb === 'AUTH' && args.trim() !== '') {
      // RFC 5034 §4: AUTH mechanism [initial-response]; the user is recorded once the server says +OK.
      const [mech = '', initial] = args.trim().split(/\s+/);
      sasl = { mech, responses: 0, user: null };
      if (initial !== undefined) sasl.user = saslUser(mech, initial, sasl.responses++);
    }
    if (verb === 'DELE') {
      const d = requestAllowed(ctx, 'pop3', {
        host: ctx.dst.host,
        port: ctx.dst.port,
        user: ctx.session.user ?? undefined,
        access: 'write',
      });
      if (!d.allowed) {
        section.refused++;
        queue.local(`-ERR [SYS/PERM] deleting messages is not permitted here (read-only)\r\n`);
        return;
      }
    }
    lp.toServer(item.bytes);
    queue.forwarded({ verb, multiline: pop3Multiline(verb, args) });
    if (verb === 'STLS' || (verb === 'AUTH' && args.trim() !== '')) lp.holdClient();
  };

  const onServer = (item: LineItem): void => {
    lp.toClient(item.bytes);
    if (item.kind !== 'line') return;
    if (body) {
      const b = item.bytes;
      const bare = b[0] === 0x2e && (b.length === 2 ? b[1] === 0x0a : b.length === 3 && b[1] === 0x0d);
      if (bare) {
        // RFC 1939 §3: a line of "." alone ends the response.
        body = null;
        queue.done();
        return;
      }
      if (body.verb === 'RETR' || body.verb === 'TOP') section.bytes += b.length - (b[0] === 0x2e ? 1 : 0);
      return;
    }
    const text = lineText(item.bytes);
    const p = queue.head();
    if (!p) return;
    if (p.verb === 'AUTH' && (text === '+' || text.startsWith('+ '))) {
      // A SASL challenge: the client's next line answers it.
      authExchange = true;
      lp.releaseClient();
      return;
    }
    const ok = text.startsWith('+OK');
    if (ok && p.multiline) {
      body = p;
      if (p.verb === 'RETR' || p.verb === 'TOP') section.retrieved++;
      return;
    }
    queue.done();
    if (ok && p.verb === 'DELE') section.deleted++;
    if (p.verb === 'AUTH') {
      if (ok && sasl?.user) section.user = sasl.user;
      sasl = null;
      authExchange = false;
      lp.releaseClient();
    }
    if (p.verb === 'STLS') {
      if (ok) {
        section.stls = true;
        // STLS=mitm: tapped on inside the TLS (LineProxy.requestTls); otherwise relayed.
        lp.requestTls();
      }
      lp.releaseClient();
    }
  };

  lp = new LineProxy(ctx, server, { onClient, onServer });
  await lp.run();
};
