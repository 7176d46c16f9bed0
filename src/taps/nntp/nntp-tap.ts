/**
 * The NNTP tap (RFC 3977): records GROUP, ARTICLE/BODY/HEAD and POST; keeps every article the
 * server sends in full (ARTICLE, 220) in a bounded disk store keyed by its Message-ID, and answers
 * a later `ARTICLE <message-id>` from that store without asking the server (RFC 3977 §6.2.1: the
 * article number in the reply is 0 when the request named a Message-ID). AUTHINFO PASS and SASL
 * exchanges (RFC 4643) are masked; after STARTTLS (RFC 4642 §2.2, reply 382) bytes are relayed raw.
 *
 * RFC 3977 §3.5 allows pipelining; replies the proxy writes from its store wait in the command
 * queue behind the server replies still due, so every reply stays in command order.
 */
import { join } from 'node:path';
import { lineText, type LineItem } from '../../net/lines.js';
import { CommandQueue, LineProxy, pushBounded, saslUser, serverFor, splitCommand } from '../line-proxy.js';
import type { Tap } from '../tap.js';
import { isMessageId, MAX_ARTICLE_BYTES } from './article-store.js';

export interface NntpPost {
  /** POST or IHAVE. */
  command: string;
  messageId: string | null;
  size: number;
  reply: string | null;
}

export interface NntpSection {
  user: string | null;
  group: string | null;
  commands: string[];
  /** Articles, heads and bodies received (from the server or the store), and their bytes. */
  articles: number;
  bytes: number;
  /** ARTICLE <id> answered from the store. */
  cacheHits: number;
  posts: NntpPost[];
  starttls: boolean;
}

interface Pending {
  verb: string;
  args: string;
  post?: NntpPost;
}

/** RFC 3977 §3.2 and the command sections: the reply codes followed by a multi-line data block. */
export function nntpMultiline(code: number, verb: string): boolean {
  switch (code) {
    case 100: // HELP
    case 101: // CAPABILITIES
    case 215: // LIST
    case 220: // ARTICLE
    case 221: // HEAD (and XHDR)
    case 222: // BODY
    case 224: // OVER / XOVER
    case 225: // HDR
    case 230: // NEWNEWS
    case 231: // NEWGROUPS
    case 282: // XGTITLE
      return true;
    case 211: // LISTGROUP only; GROUP's 211 is one line (§6.1.1, §6.1.2)
      return verb === 'LISTGROUP';
    default:
      return false;
  }
}

/** RFC 3977, RFC 4643 (AUTHINFO), RFC 4642 (STARTTLS), RFC 8054 (COMPRESS), RFC 2980 (common extensions). */
const NNTP_VERBS: ReadonlySet<string> = new Set([
  'ARTICLE', 'BODY', 'HEAD', 'STAT', 'GROUP', 'LISTGROUP', 'LAST', 'NEXT', 'POST', 'IHAVE', 'QUIT', 'CAPABILITIES',
  'MODE', 'DATE', 'HELP', 'LIST', 'NEWGROUPS', 'NEWNEWS', 'OVER', 'HDR', 'AUTHINFO', 'STARTTLS', 'COMPRESS',
  'XOVER', 'XHDR', 'XPAT', 'XGTITLE', 'XROVER', 'XZVER', 'XFEATURE', 'CHECK', 'TAKETHIS', 'SLAVE',
]);

/**
 * The command as recorded: AUTHINFO PASS and SASL data never. A line that is no NNTP command is
 * recorded as `?`: it may be a SASL response sent out of turn, after a refused AUTHINFO SASL.
 */
export function nntpRecorded(verb: string, args: string): string {
  if (!NNTP_VERBS.has(verb)) return '?';
  if (verb === 'AUTHINFO') {
    const [sub = '', rest = ''] = args.split(/\s+(.*)/);
    const s = sub.toUpperCase();
    if (s === 'USER') return `AUTHINFO USER ${rest}`;
    if (s === 'SASL') return `AUTHINFO SASL ${(rest.split(/\s+/)[0] ?? '').toUpperCase()}`;
    return `AUTHINFO ${s} ***`;
  }
  return args ? `${verb} ${args}` : verb;
}

const MAX_POSTS = 50;

export const nntpTap: Tap = async (ctx) => {
  const server = await serverFor(ctx);
  if (!server) return;
  const section: NntpSection = {
    user: null,
    group: null,
    commands: [],
    articles: 0,
    bytes: 0,
    cacheHits: 0,
    posts: [],
    starttls: false,
  };
  ctx.session.sections.nntp = section;
  const store = ctx.services.runtime.articleStore(join(ctx.config.stateDir, 'nntp-cache'));

  let lp!: LineProxy;
  const queue = new CommandQueue<Pending>((b) => lp.toClient(b));
  queue.forwarded({ verb: '', args: '' });
  /** Within a multi-line reply; with the article being collected for the store when it is one. */
  let block: { collect: Buffer[] | null; size: number; messageId: string | null; counts: boolean } | null = null;
  /** The client is sending an article (after 340/335) until its "." line. */
  let posting: NntpPost | null = null;
  /** Client lines answer SASL challenges (RFC 4643 §2.4) until a final reply. */
  let saslExchange = false;
  /** The AUTHINFO SASL in progress: its mechanism and the user its PLAIN/LOGIN response names. */
  let sasl: { mech: string; responses: number; user: string | null } | null = null;
  let postHeaders = false;

  const forward = (item: LineItem, p: Pending): void => {
    lp.toServer(item.bytes);
    queue.forwarded(p);
  };

  const onPostLine = (item: LineItem): void => {
    const b = item.bytes;
    const post = posting!;
    if (b[0] === 0x2e && (b.length === 2 ? b[1] === 0x0a : b.length === 3 && b[1] === 0x0d)) {
      posting = null;
      forward(item, { verb: 'POST-END', args: '', post });
      return;
    }
    post.size += b.length - (b[0] === 0x2e ? 1 : 0);
    if (postHeaders) {
      const t = lineText(b);
      if (t === '') postHeaders = false;
      else if (/^message-id\s*:/i.test(t)) post.messageId = t.slice(t.indexOf(':') + 1).trim().slice(0, 250) || null;
    }
    lp.toServer(b);
  };

  const onClient = (item: LineItem): void => {
    if (posting) return onPostLine(item);
    if (saslExchange) {
      if (sasl) sasl.user ??= saslUser(sasl.mech, lineText(item.bytes), sasl.responses++);
      lp.toServer(item.bytes);
      lp.holdClient();
      return;
    }
    const text = lineText(item.bytes);
    const { verb, args: rest } = splitCommand(text);
    const args = rest.trim();
    pushBounded(section.commands, nntpRecorded(verb, args));
    if (verb === 'AUTHINFO' && /^USER\s/i.test(args)) section.user = args.slice(5).trim();
    if (verb === 'AUTHINFO' && /^SASL\s/i.test(args)) {
      // RFC 4643 §2.4: AUTHINFO SASL mechanism [initial-response]; the user is recorded on 281.
      const [, mech = '', initial] = args.split(/\s+/);
      sasl = { mech, responses: 0, user: null };
      if (initial !== undefined) sasl.user = saslUser(mech, initial, sasl.responses++);
    }
    if (verb === 'ARTICLE' && isMessageId(args)) {
      // Look in the store first; hold the client so pipelined commands keep their order.
      lp.holdClient();
      store.get(args).then(
        (article) => {
          if (article) {
            section.cacheHits++;
            section.articles++;
            section.bytes += article.length;
            queue.local(Buffer.concat([Buffer.from(`220 0 ${args}\r\n`, 'latin1'), article, Buffer.from('.\r\n')]));
          } else forward(item, { verb, args });
          lp.releaseClient();
        },
        () => {
          forward(item, { verb, args });
          lp.releaseClient();
        },
      );
      return;
    }
    forward(item, { verb, args });
    if (verb === 'POST' || verb === 'IHAVE' || verb === 'STARTTLS' || (verb === 'AUTHINFO' && /^SASL\s/i.test(args))) {
      lp.holdClient();
    }
  };

  const onServer = (item: LineItem): void => {
    lp.toClient(item.bytes);
    if (item.kind !== 'line') return;
    const b = item.bytes;
    if (block) {
      if (b[0] === 0x2e && (b.length === 2 ? b[1] === 0x0a : b.length === 3 && b[1] === 0x0d)) {
        // RFC 3977 §3.1.1: "." alone ends the block.
        const done = block;
        block = null;
        queue.done();
        if (done.collect && done.messageId) {
          store.put(done.messageId, Buffer.concat(done.collect, done.size)).catch((err: unknown) => {
            ctx.services.log.info('nntp article not stored', { session: ctx.session.id, reason: String(err) });
          });
        }
        return;
      }
      if (block.counts) section.bytes += b.length - (b[0] === 0x2e ? 1 : 0);
      if (block.collect) {
        block.size += b.length;
        if (block.size > MAX_ARTICLE_BYTES) block.collect = null;
        else block.collect.push(Buffer.from(b));
      }
      return;
    }
    const text = lineText(b);
    const m = /^(\d{3})(?: |$)/.exec(text);
    const p = queue.head();
    if (!m || !p) return;
    const code = Number(m[1]);
    if (p.verb === 'AUTHINFO' && code === 383) {
      saslExchange = true;
      lp.releaseClient();
      return;
    }
    if (nntpMultiline(code, p.verb)) {
      const isArticle = code === 220 || code === 221 || code === 222;
      if (isArticle) section.articles++;
      const id = /^\d{3} \S+ (<[^>\s]+>)/.exec(text)?.[1] ?? null;
      block = { collect: code === 220 && id ? [] : null, size: 0, messageId: id, counts: isArticle };
      return;
    }
    queue.done();
    switch (p.verb) {
      case 'GROUP':
        if (code === 211) section.group = p.args.split(/\s+/)[0] ?? null;
        break;
      case 'POST':
      case 'IHAVE':
        if (code === 340 || code === 335) {
          posting = { command: p.verb, messageId: p.verb === 'IHAVE' ? p.args : null, size: 0, reply: null };
          postHeaders = true;
          pushBounded(section.posts, posting, MAX_POSTS);
        }
        lp.releaseClient();
        break;
      case 'POST-END':
        if (p.post) p.post.reply = text;
        break;
      case 'AUTHINFO':
        if (saslExchange || /^SASL\s/i.test(p.args)) {
          if (code === 281 && sasl?.user) section.user = sasl.user;
          sasl = null;
          saslExchange = false;
          lp.releaseClient();
        }
        break;
      case 'STARTTLS':
        if (code === 382) {
          section.starttls = true;
          lp.requestRelay();
        }
        lp.releaseClient();
        break;
    }
  };

  lp = new LineProxy(ctx, server, { onClient, onServer });
  await lp.run();
};
