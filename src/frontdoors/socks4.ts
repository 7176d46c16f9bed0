/**
 * The SOCKS4 and SOCKS4a front door (the NEC protocol documents "SOCKS: A protocol for TCP proxy
 * across firewalls" and "SOCKS 4A"). One request — CONNECT or BIND — with a USERID that is checked
 * against AUTHORIZER's users when it is set, and with the client's identd (RFC 1413) when
 * IDENT=do: 92 when identd cannot be reached, 93 when it names another user.
 */
import type { Socket } from 'node:net';
import { replyFor, toProxyError, type ProxyErrorCode } from '../core/errors.js';
import type { Session } from '../core/session.js';
import type { BoundAddress, Tunnel } from '../core/tunnel.js';
import { closeAfterReply, type HandshakeReader } from '../net/handshake.js';
import { queryIdent } from '../policy/ident.js';
import { identEndpoints } from '../net/proxy-accept.js';
import type { DoorContext, DoorHandler } from './door.js';
import { encodeSocks4Reply, parseSocks4Request, type Socks4ReplyCode } from '../wire/socks.js';
import { handOver, newSocksReader, refuseHandshake } from './socks5.js';

const TAGS_SOCKS4 = ['socks', 'socks4'] as const;
const TAGS_SOCKS4A = ['socks', 'socks4a'] as const;
const REQUEST_GRANTED = 90;

class Socks4Tunnel implements Tunnel {
  readonly tags: readonly string[];
  private finished = false;
  constructor(
    readonly session: Session,
    readonly socket: Socket,
    readonly command: 'connect' | 'bind',
    readonly dst: { host: string; port: number },
    version: '4' | '4a',
    private readonly lingerMs: number,
  ) {
    this.tags = version === '4a' ? TAGS_SOCKS4A : TAGS_SOCKS4;
  }

  /** CONNECT: the fields are ignored by clients. BIND: the listening port and address. */
  replySuccess(bound: BoundAddress): void {
    if (this.finished || !this.socket.writable) return;
    this.socket.write(encodeSocks4Reply(REQUEST_GRANTED, bound));
  }

  replyBindPeer(peer: BoundAddress): void {
    if (this.finished || !this.socket.writable) return;
    this.socket.write(encodeSocks4Reply(REQUEST_GRANTED, peer));
  }

  replyFailure(code: ProxyErrorCode, _message: string): void {
    if (this.finished) return;
    this.finished = true;
    closeAfterReply(this.socket, encodeSocks4Reply(replyFor(code).socks4), this.lingerMs);
  }
}

async function serveSocks4(socket: Socket, session: Session, ctx: DoorContext, reader: HandshakeReader): Promise<void> {
  const config = ctx.config();
  session.frontProtocol = 'socks4';
  const request = await reader.next(parseSocks4Request);
  if (request.status === 'closed') return;
  reader.release(request.status === 'ok');
  if (request.status === 'error') {
    refuseHandshake(socket, session, ctx, encodeSocks4Reply(replyFor(request.code).socks4), {
      msg: 'socks4 malformed request',
      code: request.code,
      reason: request.reason,
    });
    return;
  }
  const { version, command, host, port, userId } = request.value;
  session.frontProtocol = version === '4a' ? 'socks4a' : 'socks4';
  const refuse = (code: ProxyErrorCode, cd: Socks4ReplyCode, msg: string, reason: string): void =>
    refuseHandshake(socket, session, ctx, encodeSocks4Reply(cd), { msg, code, reason, user: userId });

  // SOCKS4 has no password: with AUTHORIZER set, the user id must name a known user.
  if (config.accounts && !config.accounts.has(userId)) {
    refuse('EAUTH', 91, 'socks4 unknown user', 'the user id is not a known user');
    return;
  }
  // A user id is no proof by itself: only identd's word (IDENT=do) or the administrator's opt-in
  // to the weak form (SOCKS4AUTH=userid) makes it a login.
  if (config.accounts && !config.ident && config.socks4Auth !== 'userid') {
    refuse('EAUTH', 91, 'socks4 login refused', 'a SOCKS4 user id carries no password: with AUTHORIZER, SOCKS4 needs IDENT=do or SOCKS4AUTH=userid');
    return;
  }
  if (config.ident) {
    let identUser: string;
    try {
      // A PROXYPROTOCOL client: asked at its own address about its connection to the balancer.
      identUser = await queryIdent({ ...identEndpoints(session, socket), timeoutMs: config.timeouts.handshake });
    } catch (err) {
      const e = toProxyError(err);
      refuse('EIDENTUNREACH', replyFor('EIDENTUNREACH').socks4, 'socks4 identd unreachable', e.message);
      return;
    }
    if (identUser !== userId) {
      refuse('EIDENTMISMATCH', replyFor('EIDENTMISMATCH').socks4, 'socks4 identd names another user', `identd says ${identUser}`);
      return;
    }
    if (socket.destroyed) return;
  }
  session.user = userId === '' ? null : userId;
  const tunnel = new Socks4Tunnel(session, socket, command, { host, port }, version, config.timeouts.handshake);
  session.command = command;
  session.dst = tunnel.dst;
  handOver(tunnel, ctx);
}

/** Serve a client whose first byte is 0x04 with a started reader. */
function serveSocks4WithReader(socket: Socket, session: Session, ctx: DoorContext, reader: HandshakeReader): void {
  serveSocks4(socket, session, ctx, reader).catch((err: unknown) => {
    reader.release(false);
    ctx.log.error('socks4 door failed', { session: session.id, reason: err instanceof Error ? err.message : String(err) });
    socket.destroy();
  });
}

export const socks4Door: DoorHandler = (socket, session, ctx) => {
  serveSocks4WithReader(socket, session, ctx, newSocksReader(socket, session, ctx));
};
