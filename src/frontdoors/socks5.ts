/**
 * The SOCKS5 front door (RFC 1928): method negotiation (no authentication, or RFC 1929
 * username/password when AUTHORIZER is set), then one request — CONNECT, BIND or UDP ASSOCIATE —
 * handed to the pipeline as a Tunnel whose reply functions speak RFC 1928 §6.
 */
import type { Socket } from 'node:net';
import type { Config } from '../config/types.js';
import { replyFor, type ProxyErrorCode } from '../core/errors.js';
import type { Session } from '../core/session.js';
import type { BoundAddress, Tunnel } from '../core/tunnel.js';
import { closeAfterReply, HandshakeReader } from '../net/handshake.js';
import type { DoorContext, DoorHandler } from './door.js';
import {
  encodeMethodSelection,
  encodeSocks5Reply,
  encodeUserPassReply,
  METHOD_NO_ACCEPTABLE,
  METHOD_NO_AUTH,
  METHOD_USERNAME_PASSWORD,
  parseSocks5Greeting,
  parseSocks5Request,
  parseUserPassRequest,
  REP_SUCCEEDED,
  type Socks5Command,
} from '../wire/socks.js';

/**
 * Unparsed bytes a SOCKS handshake may hold while a parser needs more. The parsers cap every
 * field (a SOCKS5 greeting is ≤ 257 bytes, RFC 1929 ≤ 513, a request ≤ 262, SOCKS4a ≤ 520), so
 * this is only a second fence.
 */
export const SOCKS_HANDSHAKE_MAX_BYTES = 2048;

const TAGS_SOCKS5 = ['socks', 'socks5'] as const;
const SELECT_NO_AUTH = encodeMethodSelection(METHOD_NO_AUTH);
const SELECT_USERPASS = encodeMethodSelection(METHOD_USERNAME_PASSWORD);
const SELECT_NONE = encodeMethodSelection(METHOD_NO_ACCEPTABLE);
const AUTH_OK = encodeUserPassReply(true);
const AUTH_FAILED = encodeUserPassReply(false);

export function newSocksReader(socket: Socket, session: Session, ctx: DoorContext): HandshakeReader {
  return new HandshakeReader(socket, {
    timeoutMs: ctx.config().timeouts.handshake,
    maxBytes: SOCKS_HANDSHAKE_MAX_BYTES,
    log: ctx.log,
    session,
  });
}

/** One log line for a refused handshake (never with a password), then the reply and close. */
export function refuseHandshake(
  socket: Socket,
  session: Session,
  ctx: DoorContext,
  reply: Buffer | null,
  fields: { msg: string; code: string; reason: string; user?: string },
): void {
  session.settle(fields.code);
  ctx.log.info(fields.msg, {
    session: session.id,
    client: session.clientLabel,
    door: session.frontProtocol || session.door,
    user: fields.user,
    code: fields.code,
    reason: fields.reason,
  });
  closeAfterReply(socket, reply, ctx.config().timeouts.handshake);
}

/** Hand the tunnel over; a pipeline that throws must not leave the client hanging. */
export function handOver(tunnel: Tunnel, ctx: DoorContext): void {
  const work = tunnel.command === 'udp' ? ctx.sink.associateUdp(tunnel) : ctx.sink.handle(tunnel);
  work.catch((err: unknown) => {
    ctx.log.error('pipeline failed', {
      session: tunnel.session.id,
      client: tunnel.session.clientLabel,
      reason: err instanceof Error ? err.message : String(err),
    });
    tunnel.socket.destroy();
  });
}

class Socks5Tunnel implements Tunnel {
  readonly tags = TAGS_SOCKS5;
  private finished = false;
  constructor(
    readonly session: Session,
    readonly socket: Socket,
    readonly command: Socks5Command,
    readonly dst: { host: string; port: number },
    private readonly lingerMs: number,
    /** The success reply was sent already (by the relay thread): none is sent again, a failure only closes. */
    private readonly replied = false,
  ) {}

  replySuccess(bound: BoundAddress): void {
    if (this.finished || this.replied || !this.socket.writable) return;
    this.socket.write(encodeSocks5Reply(REP_SUCCEEDED, bound));
  }

  /** RFC 1928 §4 BIND: the second reply names the host that connected in. */
  replyBindPeer(peer: BoundAddress): void {
    if (this.finished || !this.socket.writable) return;
    this.socket.write(encodeSocks5Reply(REP_SUCCEEDED, peer));
  }

  replyFailure(code: ProxyErrorCode, _message: string): void {
    if (this.finished) return;
    this.finished = true;
    if (this.replied) this.socket.destroy(); // RFC 1928 §6: after a success reply, a failure is the close
    else closeAfterReply(this.socket, encodeSocks5Reply(replyFor(code).socks5), this.lingerMs);
  }
}

/** A CONNECT the relay thread replied to with success already (a tunnel the hit path gave back). */
export function socks5RepliedTunnel(session: Session, socket: Socket, dst: { host: string; port: number }, ctx: DoorContext): Tunnel {
  return new Socks5Tunnel(session, socket, 'connect', dst, ctx.config().timeouts.handshake, true);
}

/** A CONNECT, BIND or UDP ASSOCIATE of a SOCKS5 client, replied to as RFC 1928 §6 says. */
export function socks5Tunnel(session: Session, socket: Socket, command: Socks5Command, dst: { host: string; port: number }, ctx: DoorContext): Tunnel {
  return new Socks5Tunnel(session, socket, command, dst, ctx.config().timeouts.handshake);
}

async function serveSocks5(socket: Socket, session: Session, ctx: DoorContext, reader: HandshakeReader, greeted: boolean): Promise<void> {
  const config = ctx.config();
  session.frontProtocol = 'socks5';
  if (!greeted && !(await negotiate(socket, session, ctx, reader, config))) return;

  const request = await reader.next(parseSocks5Request);
  if (request.status === 'closed') return;
  reader.release(request.status === 'ok');
  if (request.status === 'error') {
    refuseHandshake(socket, session, ctx, encodeSocks5Reply(replyFor(request.code).socks5), {
      msg: 'socks5 malformed request',
      code: request.code,
      reason: request.reason,
    });
    return;
  }
  const { command, host, port } = request.value;
  const tunnel = new Socks5Tunnel(session, socket, command, { host, port }, config.timeouts.handshake);
  session.command = command;
  session.dst = tunnel.dst;
  handOver(tunnel, ctx);
}

/** RFC 1928 §3 method negotiation and RFC 1929 authentication; false when the client was refused or went away. */
async function negotiate(socket: Socket, session: Session, ctx: DoorContext, reader: HandshakeReader, config: Config): Promise<boolean> {
  const greeting = await reader.next(parseSocks5Greeting);
  if (greeting.status === 'closed') return false;
  if (greeting.status === 'error') {
    reader.release(false);
    // No reply exists for a greeting we cannot read (RFC 1928 §3): close cleanly.
    refuseHandshake(socket, session, ctx, null, { msg: 'socks5 malformed greeting', code: greeting.code, reason: greeting.reason });
    return false;
  }

  // RFC 1928 §3: the one method we take is user/password when AUTHORIZER is set, else none.
  const accounts = config.accounts;
  if (!(accounts ? greeting.value.offersUserPass : greeting.value.offersNoAuth)) {
    reader.release(false);
    refuseHandshake(socket, session, ctx, SELECT_NONE, {
      msg: 'socks5 no acceptable method',
      code: 'EAUTH',
      reason: accounts ? 'the client does not offer username/password authentication' : 'the client does not offer "no authentication"',
    });
    return false;
  }
  if (accounts) {
    socket.write(SELECT_USERPASS);
    const auth = await reader.next(parseUserPassRequest);
    if (auth.status === 'closed') return false;
    if (auth.status === 'error') {
      reader.release(false);
      refuseHandshake(socket, session, ctx, AUTH_FAILED, { msg: 'socks5 malformed authentication', code: auth.code, reason: auth.reason });
      return false;
    }
    const { user, password } = auth.value;
    // A helper (AUTHORIZER=-cmd{}) answers later; its failure, or no answer in time, refuses.
    const verdict = await Promise.resolve(accounts.verify(user, password)).catch(() => false);
    if (socket.destroyed) return false;
    if (verdict !== true) {
      reader.release(false);
      // RFC 1929 §2: a non-zero STATUS and the server must close the connection.
      refuseHandshake(socket, session, ctx, AUTH_FAILED, { msg: 'socks5 authentication failed', code: 'EAUTH', reason: 'wrong user or password', user });
      return false;
    }
    session.user = user;
    socket.write(AUTH_OK);
  } else {
    socket.write(SELECT_NO_AUTH);
  }
  return true;
}

/** Serve a client whose first byte is 0x05 with a started reader. */
function serveSocks5WithReader(socket: Socket, session: Session, ctx: DoorContext, reader: HandshakeReader, greeted = false): void {
  serveSocks5(socket, session, ctx, reader, greeted).catch((err: unknown) => {
    reader.release(false);
    ctx.log.error('socks5 door failed', { session: session.id, reason: err instanceof Error ? err.message : String(err) });
    socket.destroy();
  });
}

export const socks5Door: DoorHandler = (socket, session, ctx) => {
  serveSocks5WithReader(socket, session, ctx, newSocksReader(socket, session, ctx));
};

/** A SOCKS5 client whose greeting the native accept path answered with "no authentication". */
export const socks5AfterGreeting: DoorHandler = (socket, session, ctx) => {
  serveSocks5WithReader(socket, session, ctx, newSocksReader(socket, session, ctx), true);
};
