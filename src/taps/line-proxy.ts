/**
 * The engine the line-protocol taps (SMTP, POP3, IMAP, NNTP) share: both directions split into
 * lines by the one bounded `LineReader`, each line handed to the tap, which forwards it, answers
 * it itself or holds the client while it waits for the server. Byte counts go into the session,
 * back-pressure is respected in both directions, an idle timer closes a silent tunnel, and a tap
 * can at any moment hand the rest of the connection to the plain relay (after STARTTLS, or when a
 * line breaks the protocol's length cap), with every byte the readers still hold sent on first.
 *
 * Also here: the command queue that keeps replies in command order when a client pipelines
 * (RFC 2920 §3, RFC 2449 §6.6, RFC 3977 §3.5) and the proxy answers some commands itself, and the
 * per-request PERMIT/REJECT check (checkpoint 3) for mailboxes and read-only rules.
 */
import type { Socket } from 'node:net';
import type { HostMatchTarget } from '../config/types.js';
import { LineReader, LineTooLongError, type LineItem } from '../net/lines.js';
import type { TapContext } from './tap.js';
import { firstMatch } from '../config/first-match.js';
import { accessDecision } from '../policy/acl.js';

/** A line longer than this (command or reply) ends interpretation: the rest is relayed as is. */
export const DEFAULT_MAX_LINE = 64 * 1024;
/** Most entries a per-session list (commands, recipients) keeps in sessions.jsonl. */
export const MAX_RECORDED = 200;

export type ItemHandler = (item: LineItem) => void;

export interface LineProxyOptions {
  onClient: ItemHandler;
  onServer: ItemHandler;
  maxLine?: number;
}

type Side = 'client' | 'server';

interface Direction {
  socket: Socket;
  reader: LineReader;
  /** Bytes of the current push not handed to the tap because a switch to relay came first. */
  leftover: Buffer[];
}

/**
 * Runs one tapped connection. `run()` resolves when both sockets are done (or the plain relay it
 * switched to is done).
 */
export class LineProxy {
  private readonly c: Direction;
  private readonly s: Direction;
  private mode: 'lines' | 'to-relay' | 'relay' | 'done' = 'lines';
  /** Client items that arrived while the client was held, dispatched on release. */
  private held: LineItem[] | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private finish!: () => void;
  private readonly finished: Promise<void>;
  private clientEnded = false;
  private serverDropped = false;
  private serverEnded = false;

  constructor(
    private readonly ctx: TapContext,
    server: Socket,
    private readonly opts: LineProxyOptions,
  ) {
    const max = opts.maxLine ?? DEFAULT_MAX_LINE;
    this.c = { socket: ctx.client, reader: new LineReader(max), leftover: [] };
    this.s = { socket: server, reader: new LineReader(max), leftover: [] };
    this.finished = new Promise((resolve) => {
      this.finish = resolve;
    });
  }

  get client(): Socket {
    return this.c.socket;
  }

  get server(): Socket {
    return this.s.socket;
  }

  /** Make the next `n` client bytes raw (an IMAP literal, a BDAT chunk). Call from `onClient`. */
  clientRaw(n: number): void {
    this.c.reader.expectRaw(n);
  }

  /** Make the next `n` server bytes raw (an IMAP literal in a response). Call from `onServer`. */
  serverRaw(n: number): void {
    this.s.reader.expectRaw(n);
  }

  toServer(bytes: Buffer | string): void {
    if (this.mode === 'done' || this.s.socket.destroyed) return;
    this.s.socket.write(bytes);
  }

  toClient(bytes: Buffer | string): void {
    if (this.mode === 'done' || this.c.socket.destroyed) return;
    const b = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
    this.ctx.session.countDown(b.length);
    this.c.socket.write(b);
  }

  /**
   * Stop dispatching client items until `releaseClient()`: the tap waits for the server's answer
   * (DATA → 354, AUTH → 334, STARTTLS → 220) before it knows what the client's next bytes are.
   */
  holdClient(): void {
    if (this.held) return;
    this.held = [];
    this.c.socket.pause();
  }

  releaseClient(): void {
    const held = this.held;
    if (!held) return;
    this.held = null;
    for (let i = 0; i < held.length; i++) {
      if (this.mode !== 'lines') {
        for (const it of held.slice(i)) this.c.leftover.push(it.bytes);
        break;
      }
      if (this.held) {
        // The tap held again: keep the rest for the next release, in order.
        (this.held as LineItem[]).push(...held.slice(i));
        return;
      }
      this.opts.onClient(held[i]!);
    }
    if (this.mode === 'to-relay') {
      this.switchNow();
      return;
    }
    if (!this.held && this.mode === 'lines') this.c.socket.resume();
  }

  get clientHeld(): boolean {
    return this.held !== null;
  }

  /**
   * Hand the rest of the connection to the plain relay once the current item is done (STARTTLS
   * accepted, or a tap gives up interpreting). Every byte not yet interpreted is sent on first.
   */
  requestRelay(): void {
    if (this.mode === 'lines') this.mode = 'to-relay';
  }

  /**
   * STARTTLS accepted by the server: with STLS=mitm (`ctx.upgradeTls`) the connection goes on in
   * lines inside the two TLS sessions; without it, as requestRelay().
   */
  requestTls(): void {
    this.tlsNext = this.ctx.upgradeTls !== undefined;
    this.requestRelay();
  }

  private tlsNext = false;

  /** The TLS sessions replace the sockets; reading in lines resumes with fresh readers. */
  private upgrade(fromClient: Buffer[]): void {
    this.tlsNext = false;
    // The client's first TLS bytes were read as a line already: put them back in front.
    const hello = Buffer.concat(fromClient);
    if (hello.length > 0) this.c.socket.unshift(hello);
    const max = this.opts.maxLine ?? DEFAULT_MAX_LINE;
    const oldClient = this.c.socket;
    const oldServer = this.s.socket;
    this.ctx.upgradeTls!(oldClient, oldServer).then(
      (tls) => {
        if (!tls) {
          // Not intercepted after all: the bytes go on untouched.
          this.ctx.relay(oldClient, oldServer).then(
            () => this.done(),
            () => this.done(),
          );
          return;
        }
        this.listeners.length = 0;
        this.c.socket = tls.client;
        this.c.reader = new LineReader(max);
        this.c.leftover = [];
        this.s.socket = tls.server;
        this.s.reader = new LineReader(max);
        this.s.leftover = [];
        this.clientEnded = false;
        this.serverEnded = false;
        this.mode = 'lines';
        this.held = null;
        const idleMs = this.ctx.config.timeouts.idle;
        if (idleMs > 0) {
          this.idleTimer = setTimeout(() => {
            this.ctx.session.settle('idle');
            this.destroyBoth();
          }, idleMs);
          this.idleTimer.unref();
        }
        this.attach('client', this.c, this.s);
        this.attach('server', this.s, this.c);
        tls.client.once('close', () => oldClient.destroy());
        tls.server.once('close', () => oldServer.destroy());
        this.c.socket.resume();
        this.s.socket.resume();
      },
      () => {
        oldClient.destroy();
        oldServer.destroy();
        this.done();
      },
    );
  }

  /**
   * Cut the server off while the client stays (a message over the size limit: without its final
   * dot the server delivers nothing); the tap answers the client itself from here on.
   */
  dropServer(): void {
    this.serverDropped = true;
    this.s.socket.destroy();
  }

  /** End the connection from the proxy's side: what was written to the client is flushed first. */
  close(): void {
    if (this.mode === 'done') return;
    this.c.socket.end();
    this.s.socket.destroy();
  }

  run(): Promise<void> {
    const idleMs = this.ctx.config.timeouts.idle;
    if (idleMs > 0) {
      this.idleTimer = setTimeout(() => {
        this.ctx.session.settle('idle');
        this.destroyBoth();
      }, idleMs);
      this.idleTimer.unref();
    }
    this.attach('client', this.c, this.s);
    this.attach('server', this.s, this.c);
    this.c.socket.resume();
    this.s.socket.resume();
    return this.finished;
  }

  private readonly listeners: Array<() => void> = [];

  private attach(side: Side, from: Direction, to: Direction): void {
    const onData = (chunk: Buffer): void => this.onData(side, from, to, chunk);
    const onEnd = (): void => {
      if (this.mode !== 'lines') return;
      if (side === 'client') this.clientEnded = true;
      else this.serverEnded = true;
      // Half-close: the other side still gets everything already said, then an end. That
      // includes a last line without its LF, which the reader is still holding.
      if (!to.socket.destroyed) {
        const rest = from.reader.buffered > 0 ? from.reader.drain() : null;
        if (rest) {
          if (side === 'server') this.toClientRaw(rest);
          else to.socket.write(rest);
        }
        to.socket.end();
      }
      this.maybeDone();
    };
    const onClose = (): void => {
      if (this.mode === 'relay') return;
      const orderly = side === 'client' ? this.clientEnded : this.serverEnded || this.serverDropped;
      if (this.mode === 'lines' && !orderly) {
        // Closed without an orderly end (reset, destroy): take the other side down too.
        to.socket.destroy();
      }
      this.maybeDone();
    };
    const onError = (err: Error & { code?: string }): void => {
      if (this.mode === 'relay') return;
      this.ctx.session.settle(err.code ?? 'error');
    };
    from.socket.on('data', onData);
    from.socket.on('end', onEnd);
    from.socket.on('close', onClose);
    from.socket.on('error', onError);
    this.listeners.push(() => {
      from.socket.off('data', onData);
      from.socket.off('end', onEnd);
      from.socket.off('close', onClose);
      from.socket.off('error', onError);
    });
  }

  private onData(side: Side, from: Direction, to: Direction, chunk: Buffer): void {
    if (this.mode === 'done' || this.mode === 'relay') return;
    this.idleTimer?.refresh();
    if (side === 'client') this.ctx.session.countUp(chunk.length);
    const handler = side === 'client' ? this.opts.onClient : this.opts.onServer;
    // Take what the reader holds so that a line-length failure can hand every byte on.
    const prev = from.reader.buffered > 0 ? from.reader.drain() : null;
    const data = prev ? Buffer.concat([prev, chunk]) : chunk;
    let used = 0;
    try {
      from.reader.push(data, (item) => {
        used += item.bytes.length;
        if (this.mode !== 'lines') from.leftover.push(item.bytes);
        else if (side === 'client' && this.held) this.held.push(item);
        else handler(item);
      });
    } catch (err) {
      if (!(err instanceof LineTooLongError)) throw err;
      from.leftover.push(data.subarray(used));
      this.ctx.services.log.info('line too long, relaying the rest as is', {
        session: this.ctx.session.id,
        proto: this.ctx.session.proto,
        side,
        limit: err.limit,
      });
      if (this.mode === 'lines') this.mode = 'to-relay';
    }
    if (this.mode === 'to-relay') {
      this.switchNow();
      return;
    }
    // Back-pressure: stop reading this side while the other is not taking bytes.
    if (to.socket.writableNeedDrain) {
      from.socket.pause();
      to.socket.once('drain', () => {
        if (this.mode === 'lines' && !(from === this.c && this.held)) from.socket.resume();
      });
    }
    if (side === 'server' && this.c.socket.writableNeedDrain && !this.held) {
      // The proxy's own replies count too (a client pipelining into refusals).
      this.c.socket.pause();
      this.c.socket.once('drain', () => {
        if (this.mode === 'lines' && !this.held) this.c.socket.resume();
      });
    }
  }

  private switchNow(): void {
    if (this.mode === 'relay' || this.mode === 'done') return;
    this.mode = 'relay';
    if (this.idleTimer) clearTimeout(this.idleTimer);
    for (const off of this.listeners) off();
    this.c.socket.pause();
    this.s.socket.pause();
    const fromClient: Buffer[] = [];
    if (this.held) for (const it of this.held) fromClient.push(it.bytes);
    this.held = null;
    fromClient.push(...this.c.leftover);
    if (this.c.reader.buffered > 0) fromClient.push(this.c.reader.drain());
    const fromServer = [...this.s.leftover];
    if (this.s.reader.buffered > 0) fromServer.push(this.s.reader.drain());
    if (this.tlsNext && this.ctx.upgradeTls && fromServer.length === 0 && !this.c.socket.destroyed && !this.s.socket.destroyed) {
      this.upgrade(fromClient);
      return;
    }
    // These bytes were counted as read from the client when they arrived (bytesUp).
    for (const b of fromClient) this.s.socket.write(b);
    for (const b of fromServer) this.toClientRaw(b);
    // A side that only half-closed still has bytes to deliver the other way: the relay forwards
    // its FIN and keeps the other direction going. Destroying here would drop the writes above.
    if (this.c.socket.destroyed || this.s.socket.destroyed) {
      this.destroyBoth();
      return;
    }
    this.ctx.relay(this.c.socket, this.s.socket).then(
      () => this.done(),
      () => this.done(),
    );
  }

  private toClientRaw(b: Buffer): void {
    this.ctx.session.countDown(b.length);
    this.c.socket.write(b);
  }

  private destroyBoth(): void {
    this.c.socket.destroy();
    this.s.socket.destroy();
    if (this.mode !== 'relay') this.done();
  }

  private maybeDone(): void {
    const cDone = this.c.socket.destroyed || (this.clientEnded && this.c.socket.writableFinished);
    const sDone = this.s.socket.destroyed || (this.serverEnded && this.s.socket.writableFinished);
    if (this.c.socket.destroyed && this.s.socket.destroyed) this.done();
    else if (cDone && sDone) this.destroyBoth();
  }

  private done(): void {
    if (this.mode === 'done') return;
    this.mode = 'done';
    if (this.idleTimer) clearTimeout(this.idleTimer);
    for (const off of this.listeners) off();
    this.finish();
  }
}

/**
 * Replies in command order. The server answers forwarded commands in the order it got them
 * (RFC 2920 §3, RFC 3977 §3.5, RFC 2449 §6.6); a reply the proxy writes itself (a refused
 * recipient, a cached article) must therefore wait until every command before it has its
 * server reply, or a pipelining client would match replies to the wrong commands.
 */
export class CommandQueue<C> {
  private readonly q: Array<{ cmd: C } | { local: Buffer }> = [];

  constructor(private readonly write: (b: Buffer) => void) {}

  /** A command sent to the server; its reply will come back in this position. */
  forwarded(cmd: C): void {
    this.q.push({ cmd });
  }

  /** A reply the proxy gives itself: now when nothing is outstanding, else after what is before it. */
  local(reply: Buffer | string): void {
    const b = typeof reply === 'string' ? Buffer.from(reply, 'latin1') : reply;
    if (this.q.length === 0) this.write(b);
    else this.q.push({ local: b });
  }

  /** The command whose reply the server is sending now. */
  head(): C | undefined {
    const h = this.q[0];
    return h && 'cmd' in h ? h.cmd : undefined;
  }

  get outstanding(): number {
    return this.q.length;
  }

  /** The head command's reply is complete: drop it and write the proxy's replies queued behind it. */
  done(): C | undefined {
    const h = this.q.shift();
    while (this.q.length > 0 && 'local' in this.q[0]!) this.write((this.q.shift() as { local: Buffer }).local);
    return h && 'cmd' in h ? h.cmd : undefined;
  }
}

/**
 * Checkpoint 3: PERMIT/REJECT for one application request. Only rules whose protocol list names
 * the protocol itself take part (a `PERMIT=*:*:.localnet` written for tunnels says nothing about
 * mailboxes); the first such rule that matches decides, none matching permits.
 */
export function requestAllowed(
  ctx: TapContext,
  proto: string,
  target: HostMatchTarget,
): { allowed: boolean; by: string } {
  const { session } = ctx;
  const user = session.user ?? undefined;
  const now = new Date();
  const rule = firstMatch(
    ctx.config.rules,
    (rule) =>
      rule.protocols.includes(proto) &&
      (!rule.when || rule.when.contains(now)) &&
      rule.src.matches({ host: session.clientAddress, addresses: [session.clientAddress], user }) &&
      rule.dst.matches(target),
  );
  return accessDecision(rule);
}

/** A mailbox `local@domain` as a host-list target: the domain is the host, the local part the user. */
export function mailboxTarget(mailbox: string): HostMatchTarget {
  const at = mailbox.lastIndexOf('@');
  if (at < 0) return { host: '', user: mailbox || undefined };
  return { host: mailbox.slice(at + 1), user: mailbox.slice(0, at) || undefined };
}

/** Push onto a bounded list; the caller keeps a count of what did not fit. */
export function pushBounded<T>(list: T[], item: T, max = MAX_RECORDED): boolean {
  if (list.length >= max) return false;
  list.push(item);
  return true;
}

/** The server socket for a tap: the one the pipeline dialed first, or a new dial. */
export async function serverFor(ctx: TapContext): Promise<Socket | null> {
  if (ctx.server) return ctx.server;
  try {
    return await ctx.dial();
  } catch {
    ctx.session.settle('ECONNECT');
    ctx.client.destroy();
    return null;
  }
}

/**
 * A command line's verb (upper-cased) and the rest after the white space that follows it. Split
 * on any run of white space (C's isspace(): SP, TAB, VT, FF, CR) as servers split (RFC 3977 §3.1
 * allows TAB; POP3 and NNTP servers tokenise with isspace()): a tap that split on the space alone
 * would take `PASS<TAB>pw` for an unknown verb and record it as sent.
 */
export function splitCommand(text: string): { verb: string; args: string } {
  const m = /^[ \t\v\f\r]*([^ \t\v\f\r]*)(?:[ \t\v\f\r]+(.*))?$/s.exec(text)!;
  return { verb: m[1]!.toUpperCase(), args: m[2] ?? '' };
}

/** Longest user name taken from a SASL response. */
const MAX_SASL_USER = 256;

/**
 * The user name a SASL client response carries, for the session record (never the password):
 * PLAIN's authentication identity (RFC 4616 §2: `[authzid] NUL authcid NUL passwd`) and LOGIN's
 * first response (draft-murchison-sasl-login: the user name). `response` is the base64 text of
 * the `index`th client response of the exchange (0 = the initial response, inline or on the
 * first continuation line). Null for every other mechanism, response or a malformed one.
 */
export function saslUser(mechanism: string, response: string, index: number): string | null {
  if (index !== 0) return null;
  const mech = mechanism.toUpperCase();
  if (mech !== 'PLAIN' && mech !== 'LOGIN') return null;
  const b64 = response.trim();
  // "*" cancels the exchange (RFC 4954 §4, RFC 5034 §4, RFC 3501 §6.2.2); "=" is an empty response.
  if (b64 === '' || b64 === '*' || b64 === '=' || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return null;
  const text = Buffer.from(b64, 'base64').toString('utf8');
  let user: string;
  if (mech === 'PLAIN') {
    const parts = text.split('\0');
    if (parts.length !== 3) return null;
    user = parts[1]!;
  } else user = text;
  if (user === '' || /[\x00-\x1f\x7f]/.test(user)) return null;
  return user.slice(0, MAX_SASL_USER);
}
