/**
 * The tunnel peek: reads the first bytes of both directions of a tunnel, asks the sniffers what
 * protocol they are, and puts every byte back where it came from. The caller then hands the
 * sockets to a tap or to relay() as if nothing had been read.
 *
 * How the bytes stay intact: each socket is read in paused mode ('readable' + read(n)), which
 * takes bytes off the front of its readable buffer; when the peek ends they are unshift()ed back
 * in one piece, in front of anything that arrived since, so nothing is lost, doubled or
 * reordered. The peek never writes.
 *
 * How an end of stream stays visible: a FIN that arrives while bytes are held would let Node emit
 * 'end' with the buffer empty, after which unshift() is refused. So a side whose FIN arrives gets
 * its bytes back at once (Node emits 'end' only once its buffer is empty, i.e. after the next
 * reader took them) and is not read again. A side that ends with nothing held emits 'end' during
 * the peek; its `readableEnded` stays true for the caller (relay() forwards it), and the result
 * says so in `clientEnded` / `serverEnded`.
 */
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { firstCommandLine, resolveFtpOrSmtp, sniffClient, sniffServer } from '../sniff/index.js';
import type { SniffInfo, TapProtocol } from '../sniff/types.js';

export interface PeekOptions {
  /** TIMEOUT=sniff: how long to wait for a direction to decide (again for an ambiguous 220's client line). */
  timeoutMs: number;
  /**
   * How long to wait while neither direction has said anything (default `timeoutMs`). A tunnel
   * whose server is dialed already waits as long as it may idle: bytes that come late are still
   * recognised, so per-request policy cannot be outwaited (the client only has to be slower than
   * the window to get a raw tunnel otherwise).
   */
  firstBytesMs?: number;
  /**
   * Once a direction has spoken, how long its first bytes may take to be decided (default
   * `timeoutMs`): a request line split across the sniff window is still a request line.
   */
  verdictMs?: number;
  /** Most bytes read from each direction. */
  maxBytes: number;
  /** The destination port, the last hint for an ambiguous 220. */
  portHint: number;
  /**
   * The protocols the tap rule selects. An ambiguous 220 waits for the client's command only if
   * FTP or SMTP is among them. The result still names any protocol recognised on the way, for the
   * session record and the connect strategy's memory. (The server, when there is one, is always
   * watched: a client that waits for a banner must not wait for the peek's timer.)
   */
  want?: ReadonlySet<string>;
}

/** Why the peek stopped. */
export type PeekStop = 'verdict' | 'timeout' | 'max-bytes' | 'ended' | 'closed';

export interface PeekResult {
  /** The protocol recognised, or 'raw'. */
  proto: TapProtocol | 'raw';
  info: SniffInfo;
  waitedMs: number;
  /** The client's FIN arrived during the peek (its bytes, if any, are back in front of it). */
  clientEnded: boolean;
  serverEnded: boolean;
  stoppedBy: PeekStop;
  /** Which direction spoke first, if any did. */
  firstSpeaker: 'client' | 'server' | null;
}

/** Node's readable state: whether the FIN has been read, before 'end' is emitted. */
function finReceived(socket: Socket): boolean {
  // `_readableState` is not in the typings; `ended` is what push(null) sets (readableEnded is later).
  const state = (socket as unknown as { _readableState?: { ended?: boolean } })._readableState;
  return state?.ended === true || socket.readableEnded;
}

/** One direction of the tunnel while it is peeked. */
class PeekedSide {
  private readonly chunks: Buffer[] = [];
  length = 0;
  ended = false;
  closed = false;
  /** Order in which the sides first had bytes (0 = not yet). */
  spokeAt = 0;
  private reading = false;
  private returned = false;
  private joined: Buffer | null = null;

  constructor(
    readonly socket: Socket,
    private readonly maxBytes: number,
    private readonly onChange: () => void,
    private readonly nextOrder: () => number,
  ) {}

  get full(): boolean {
    return this.length >= this.maxBytes;
  }

  /** No more bytes will come from this side during the peek. */
  get done(): boolean {
    return this.ended || this.closed || this.full || this.returned;
  }

  /** The bytes held so far, in order (kept for the classifiers after they were given back). */
  bytes(): Buffer {
    if (!this.joined || this.joined.length !== this.length) this.joined = Buffer.concat(this.chunks, this.length);
    return this.joined;
  }

  start(): void {
    const s = this.socket;
    if (s.destroyed) {
      this.closed = true;
      return;
    }
    // A FIN during the peek must not end our writing half: the reply still has to reach the peer
    // (relay() sets the same; sockstap's listeners and dialers already do).
    s.allowHalfOpen = true;
    this.reading = true;
    s.on('readable', this.onReadable);
    s.on('error', this.onError);
    s.on('close', this.onClose);
    // Bytes already buffered (unshifted after the handshake) are read at once.
    this.pull();
  }

  private readonly onReadable = (): void => {
    this.pull();
    this.onChange();
  };

  private readonly onError = (): void => {
    // The error stays on the socket (`errored`, `destroyed`) for the caller; it ends the peek.
    this.closed = true;
    this.onChange();
  };

  private readonly onClose = (): void => {
    this.closed = true;
    this.onChange();
  };

  /** Takes what the socket has buffered, up to the byte cap. */
  private pull(): void {
    const s = this.socket;
    while (this.reading && !this.full && s.readableLength > 0) {
      // An explicit length: read() without one would schedule 'end' once the FIN is in.
      const chunk = s.read(Math.min(s.readableLength, this.maxBytes - this.length)) as Buffer | null;
      if (chunk === null) break;
      if (this.spokeAt === 0) this.spokeAt = this.nextOrder();
      this.chunks.push(chunk);
      this.length += chunk.length;
    }
    if (this.reading && finReceived(s)) {
      this.ended = true;
      // Give the bytes back before Node can emit 'end' on an empty buffer.
      this.giveBack();
    } else if (this.full) {
      this.giveBack();
    }
  }

  /** Stops reading and puts every byte read back in front of the socket's buffer. */
  giveBack(): void {
    const s = this.socket;
    if (this.reading) {
      this.reading = false;
      s.removeListener('readable', this.onReadable);
    }
    if (this.returned) return;
    this.returned = true;
    // unshift() on a destroyed stream is a no-op; the caller sees `destroyed`.
    if (this.length > 0 && !s.destroyed) s.unshift(this.bytes());
  }

  /** Gives the bytes back if not done yet and removes every listener of the peek. */
  detach(): void {
    this.giveBack();
    this.socket.removeListener('error', this.onError);
    this.socket.removeListener('close', this.onClose);
  }
}

type Phase = 'first' | 'client' | 'server' | 'ftp-or-smtp';

function wants(want: ReadonlySet<string> | undefined, proto: TapProtocol): boolean {
  if (!want) return true;
  // SOCKSTAP=http covers HTTP/2 with prior knowledge.
  return want.has(proto) || (proto === 'http2' && want.has('http'));
}

/**
 * Peeks at the start of a tunnel until the sniffers decide for the direction that spoke first,
 * the time cap passes, a direction reaches `maxBytes`, or both sides are finished. With a server,
 * both directions are watched at once: the first one to speak picks the classifier. An ambiguous
 * 220 waits (same caps) for the client's first command line.
 *
 * On return every byte read is back on its socket in order, no listener of the peek is left,
 * both sockets are paused; nothing has been written to either.
 */
export function peekTunnel(client: Socket, server: Socket | null, options: PeekOptions): Promise<PeekResult> {
  const started = performance.now();
  const { want, portHint } = options;
  const maxBytes = Math.max(1, options.maxBytes);
  let order = 0;
  const nextOrder = (): number => ++order;
  const firstBytesMs = options.firstBytesMs ?? options.timeoutMs;
  const verdictMs = options.verdictMs ?? options.timeoutMs;

  return new Promise<PeekResult>((resolve) => {
    let phase: Phase = 'first';
    let banner: SniffInfo = {};
    let settled = false;
    let timer: NodeJS.Timeout | null = null;
    let patienceCut = false;

    const finish = (proto: TapProtocol | 'raw', info: SniffInfo, stoppedBy: PeekStop): void => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      up.detach();
      down?.detach();
      const result: PeekResult = {
        proto,
        info,
        waitedMs: Math.round(performance.now() - started),
        clientEnded: up.ended || client.readableEnded,
        serverEnded: down ? down.ended || down.socket.readableEnded : false,
        stoppedBy,
        firstSpeaker: phase === 'first' ? null : phase === 'client' ? 'client' : 'server',
      };
      // Removing the 'readable' listener makes Node set the stream's flowing state to null on the
      // next tick; pause after that so the sockets stay paused until their next owner resumes them.
      process.nextTick(() => {
        client.pause();
        server?.pause();
        resolve(result);
      });
    };

    const armTimer = (ms: number): void => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = null;
        evaluate(true);
      }, Math.max(0, ms));
    };

    /** Decides if the bytes allow it; `force` (time is up) turns every 'need-more' into a decision. */
    const evaluate = (force: boolean): void => {
      if (settled) return;
      const closed = up.closed || (down?.closed ?? false);
      const final = force || closed;
      const why = (): PeekStop => (closed ? 'closed' : 'timeout');
      if (phase === 'first') {
        const clientFirst = up.spokeAt > 0 && (!down || down.spokeAt === 0 || up.spokeAt < down.spokeAt);
        if (clientFirst) phase = 'client';
        else if (down && down.spokeAt > 0) phase = 'server';
        else if (final || (up.done && (!down || down.done))) {
          finish('raw', {}, final ? why() : 'ended');
          return;
        } else {
          // A side that has ended without a byte cannot speak any more, and its peer may be
          // waiting for that FIN (the relay forwards it): no longer than the sniff window then.
          if (!patienceCut && firstBytesMs > options.timeoutMs && (up.ended || (down?.ended ?? false))) {
            patienceCut = true;
            armTimer(options.timeoutMs);
          }
          return;
        }
        // Someone spoke: the first bytes now have their own time to be decided.
        if (!final && verdictMs !== firstBytesMs) armTimer(verdictMs);
      }
      if (phase === 'client') {
        const v = sniffClient(up.bytes(), portHint);
        if (v.verdict === 'match') finish(v.proto, v.info, 'verdict');
        else if (v.verdict === 'no-match') finish('raw', {}, 'verdict');
        else if (final || up.done) finish('raw', {}, final ? why() : up.full ? 'max-bytes' : 'ended');
        return;
      }
      if (phase === 'server') {
        const v = sniffServer(down!.bytes(), portHint);
        if (v.verdict === 'no-match') {
          finish('raw', {}, 'verdict');
          return;
        }
        if (v.verdict === 'need-more') {
          if (final || down!.done) finish('raw', {}, final ? why() : down!.full ? 'max-bytes' : 'ended');
          return;
        }
        if (v.info.ambiguous !== 'ftp-or-smtp' || !(wants(want, 'ftp') || wants(want, 'smtp'))) {
          const proto = v.info.ambiguous ? resolveFtpOrSmtp('', portHint) : v.proto;
          finish(proto, v.info, 'verdict');
          return;
        }
        // RFC 959 and RFC 5321 greet alike: the client's first command tells them apart.
        phase = 'ftp-or-smtp';
        banner = v.info;
        if (!final) armTimer(options.timeoutMs);
      }
      // phase === 'ftp-or-smtp'
      const line = firstCommandLine(up.bytes());
      if (line === 'need-more' && !(final || up.done)) return;
      const command = typeof line === 'string' && line !== 'need-more' ? line : '';
      finish(resolveFtpOrSmtp(command, portHint), banner, line === 'need-more' ? (final ? why() : 'ended') : 'verdict');
    };

    const onChange = (): void => evaluate(false);
    const up = new PeekedSide(client, maxBytes, onChange, nextOrder);
    const down = server ? new PeekedSide(server, maxBytes, onChange, nextOrder) : null;
    up.start();
    down?.start();
    armTimer(firstBytesMs);
    evaluate(false);
  });
}
