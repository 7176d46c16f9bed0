/**
 * A bounded reader for the handshake of a front door. It reads from a paused socket only while a
 * parser asks for more, keeps at most `maxBytes` that no parser has consumed, and gives the whole
 * handshake (every round: SOCKS5 greeting, authentication, request) one deadline. When the
 * handshake is over, `finish()` puts the bytes that followed the last request back into the
 * socket with `unshift()`, so a client that sends data right after its request loses nothing.
 */
import type { Socket } from 'node:net';
import type { ProxyErrorCode } from '../core/errors.js';
import type { Session } from '../core/session.js';
import type { Parser } from '../wire/socks.js';
import type { Logger } from '../observe/log.js';

export type HandshakeResult<T> =
  | { status: 'ok'; value: T }
  | { status: 'error'; code: ProxyErrorCode; reason: string }
  /** The client went away, or the deadline or the byte cap was hit (already logged and closed). */
  | { status: 'closed' };

const CLOSED = { status: 'closed' } as const;

export interface HandshakeOptions {
  timeoutMs: number;
  /** Unparsed bytes allowed while a parser still needs more. */
  maxBytes: number;
  log: Logger;
  session: Session;
}

export class HandshakeReader {
  private buffered: Buffer | null = null;
  private wake: (() => void) | null = null;
  private timer: NodeJS.Timeout | null;
  private ended = false;
  private released = false;

  private readonly onData = (chunk: Buffer): void => {
    // Read one chunk at a time, so an eager client cannot make us hold more than a chunk.
    this.socket.pause();
    this.buffered = this.buffered ? Buffer.concat([this.buffered, chunk]) : chunk;
    this.notify();
  };
  private readonly onEnd = (): void => {
    this.ended = true;
    this.notify();
  };

  constructor(
    private readonly socket: Socket,
    private readonly options: HandshakeOptions,
  ) {
    this.timer = setTimeout(() => this.giveUp('handshake timeout'), options.timeoutMs);
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Log one line, close, and let a pending `next()` answer 'closed'. */
  private giveUp(msg: string): void {
    const { session, log } = this.options;
    log.info(msg, { session: session.id, client: session.clientLabel, door: session.door });
    session.settle(msg === 'handshake timeout' ? 'handshake-timeout' : 'EPROTO');
    this.release(false);
    this.socket.destroy();
    this.ended = true;
    this.notify();
  }

  /** Parse the next message of the handshake, reading more bytes while the parser needs them. */
  async next<T>(parse: Parser<T>): Promise<HandshakeResult<T>> {
    for (;;) {
      if (this.released) return CLOSED;
      const buf = this.buffered;
      if (buf) {
        const r = parse(buf);
        if (r.status === 'ok') {
          this.buffered = r.consumed < buf.length ? buf.subarray(r.consumed) : null;
          return { status: 'ok', value: r.value };
        }
        if (r.status === 'error') return r;
        if (buf.length >= this.options.maxBytes) {
          this.giveUp('handshake too long');
          return CLOSED;
        }
      }
      if (this.ended) {
        // The client ended (or reset) mid-handshake: nothing can be answered; close our side too,
        // or a half-open socket would wait forever (the deadline stops with release()).
        if (this.buffered) {
          const { session, log } = this.options;
          log.info('handshake incomplete', { session: session.id, client: session.clientLabel, door: session.door, bytes: this.buffered.length });
          session.settle('EPROTO');
        }
        this.release(false);
        this.socket.destroy();
        return CLOSED;
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.socket.resume();
      });
    }
  }

  /**
   * The handshake is over: stop the deadline, remove our listeners, leave the socket paused and,
   * when `keepRest`, put back what followed the last parsed message.
   */
  release(keepRest = true): void {
    if (this.released) return;
    this.released = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.pause();
    if (keepRest && this.buffered && !this.socket.destroyed) {
      // After 'end' Node refuses unshift; the bytes cannot be handed on, so nothing half is.
      if (this.socket.readableEnded) this.socket.destroy();
      else this.socket.unshift(this.buffered);
    }
    this.buffered = null;
  }
}

/**
 * Send a final reply and close without losing it: end our side after the reply, keep reading (and
 * discarding) so the client's FIN is seen and unread bytes never turn the close into a reset that
 * could destroy the reply in flight, and destroy after `lingerMs` if the client never closes.
 */
export function closeAfterReply(socket: Socket, reply: Buffer | null, lingerMs: number): void {
  if (socket.destroyed) return;
  if (reply && socket.writable) socket.end(reply);
  else socket.end();
  socket.once('end', () => socket.destroySoon());
  socket.setTimeout(lingerMs, () => socket.destroy());
  socket.resume();
}
