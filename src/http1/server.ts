/**
 * The one internal HTTP/1 server factory below the HTTP door (frontdoors/http-proxy.ts) and the
 * HTTP tap (taps/http/tap.ts). A socket that already belongs to a session (sniffed bytes unshifted)
 * is handed to an ordinary `http.Server` with `emit('connection')`, so llhttp handles keep-alive,
 * pipelining and chunked bodies and refuses request-smuggling shapes (CL+TE, repeated
 * Content-Length, bad Transfer-Encoding → 400 and close; `insecureHTTPParser` stays off).
 *
 * What the factory adds, the same for both: the size and count limits of a request head (a larger
 * one gets 431, RFC 6585 §5), a head timer per connection (Node runs its header and request
 * timeouts only on servers that listen themselves), the count of requests in flight (the timer
 * runs only while there are none), and the answer to a head that cannot be parsed — a readable
 * page, an access record and a log line, the way Squid logs unparsable requests
 * (`NONE/400 ... NONE error:invalid-request`).
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Session } from '../core/session.js';
import type { ProxyEvents } from '../observe/events.js';
import type { Logger } from '../observe/log.js';
import { accessRecord } from './access.js';
import { errorPage, rawErrorPage } from './error-page.js';

/** Largest HTTP head (request or response) sockstap reads: a larger request gets 431, a larger response 502. */
export const MAX_HEAD_BYTES = 64 * 1024;

/**
 * Node's field-count limit (`maxHeadersCount`), set so that it can never bind before the byte
 * limit does: the shortest field line (`a:` CRLF) is 4 bytes. Node's defaults (2,000 on servers,
 * and on clients too) cut a head of about 1,000 fields, or drop the rest silently (issue 13,
 * finding 10); every field within MAX_HEAD_BYTES is forwarded instead.
 */
export const MAX_HEAD_FIELDS = MAX_HEAD_BYTES / 4;

/** What the server keeps about one client connection. */
export class Http1Connection {
  /** Requests whose exchange has not finished. */
  inFlight = 0;
  /** Request heads received so far. */
  served = 0;
  /** The connection is no longer HTTP (CONNECT, Upgrade): no head timer, no error page. */
  detached = false;
  answeredWithError = false;
  /**
   * One timer per connection, re-armed with refresh() after every response (no timer made per
   * request); while a request is in flight it is disarmed (`headArmed` false) and, should it
   * fire meanwhile, does nothing.
   */
  private headTimer: NodeJS.Timeout | null = null;
  private headMs = 0;
  private headArmed = false;

  constructor(
    readonly socket: Socket,
    readonly session: Session,
    private readonly opts: {
      events: ProxyEvents;
      log: Logger;
      /** TIMEOUT=handshake now (a reload applies): how long an error reply is given to reach the client. */
      handshakeMs(): number;
      /** How long the next request head may take (asked at every arm); default the handshake time. */
      headTimeoutMs?(conn: Http1Connection): number;
      /** Logged when the head timer closes the connection; silent without. */
      headTimeoutLog?: string;
      /** The log line of a head that cannot be parsed. */
      parseErrorLog: string;
    },
  ) {}

  get events(): ProxyEvents {
    return this.opts.events;
  }

  get log(): Logger {
    return this.opts.log;
  }

  /** The handshake time: how long an error reply is given to reach the client. */
  graceMs(): number {
    return this.opts.handshakeMs();
  }

  /** (Re)starts the wait for the next request head. */
  armHeadTimer(): void {
    const ms = this.opts.headTimeoutMs?.(this) ?? this.opts.handshakeMs();
    this.headArmed = true;
    if (this.headTimer && this.headMs === ms) {
      // Restarts it from now, pending or already fired.
      this.headTimer.refresh();
      return;
    }
    if (this.headTimer) clearTimeout(this.headTimer);
    this.headMs = ms;
    this.headTimer = setTimeout(this.onHeadTimeout, ms);
    this.headTimer.unref();
  }

  private readonly onHeadTimeout = (): void => {
    if (!this.headArmed || this.inFlight > 0 || this.detached || this.socket.destroyed) return;
    this.headArmed = false;
    if (this.opts.headTimeoutLog) {
      this.opts.log.info(this.opts.headTimeoutLog, { session: this.session.id, client: this.session.clientLabel, ms: this.headMs });
    }
    this.socket.destroy();
  };

  disarmHeadTimer(): void {
    if (this.headTimer) clearTimeout(this.headTimer);
    this.headTimer = null;
    this.headArmed = false;
  }

  /** A request head arrived: counted, the timer stops until no request is in flight. */
  begin(): void {
    this.headArmed = false;
    this.inFlight++;
    this.served++;
  }

  end(): void {
    this.inFlight = Math.max(0, this.inFlight - 1);
    if (this.inFlight === 0 && !this.socket.destroyed && !this.detached) this.armHeadTimer();
  }

  /** The log line of a bad head. */
  parseErrorLog(): string {
    return this.opts.parseErrorLog;
  }
}

export interface InternalServerOptions {
  /** Node's own idle time between requests (0: only the connection's head timer). */
  keepAliveTimeoutMs: number;
  /** A request, counted in flight until its response closes. */
  request(req: IncomingMessage, res: ServerResponse, conn: Http1Connection): void;
  /** CONNECT (RFC 9110 §9.3.6); Node has let go of the socket. */
  connect?(req: IncomingMessage, socket: Socket, head: Buffer, conn: Http1Connection): void;
  /** `Upgrade` (RFC 9110 §7.8); Node has let go of the socket. */
  upgrade?(req: IncomingMessage, socket: Socket, head: Buffer, conn: Http1Connection): void;
}

/** An internal server: `accept()` hands it a socket with its connection state. */
export interface InternalServer {
  accept(conn: Http1Connection): void;
}

/**
 * Ends a client connection after a final error reply without losing the reply: the client may
 * still be sending (a CONNECT payload, the rest of an oversized head), and closing a socket with
 * unread input resets it, which can destroy our reply before the client reads it. So the input is
 * read and dropped until the client closes, for at most `graceMs`.
 */
export function closeAfterReply(socket: Socket, graceMs: number): void {
  socket.removeAllListeners('data');
  socket.on('data', () => {});
  socket.resume();
  const timer = setTimeout(() => socket.destroy(), graceMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/**
 * A head Node's parser refused: a readable 400 (431 when too large, 408 when too slow), then the
 * connection closes; recorded and logged.
 */
function answerParseError(err: NodeJS.ErrnoException, socket: Socket, conn: Http1Connection | undefined): void {
  if (!conn) {
    socket.destroy();
    return;
  }
  // Node may report a broken connection more than once; one answer is enough.
  if (conn.answeredWithError) return;
  conn.answeredWithError = true;
  // A response already on its way cannot be followed by an error reply on the same connection.
  if (!socket.writable || conn.inFlight > 0 || err.code === 'ECONNRESET' || err.code === 'EPIPE') {
    socket.destroy();
    return;
  }
  let status = 400;
  let message = `The request could not be parsed as HTTP (${err.code ?? 'parse error'}).`;
  let url = 'error:invalid-request';
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    status = 431;
    message = `The request head is larger than ${MAX_HEAD_BYTES} bytes.`;
    url = 'error:request-too-large';
  } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    status = 408;
    message = 'The request did not arrive in time.';
    url = 'error:request-timeout';
  }
  const reply = rawErrorPage(errorPage(status, message));
  closeAfterReply(socket, conn.graceMs());
  socket.end(reply);
  const { session } = conn;
  conn.events.emit(
    'access',
    accessRecord(null, session, 0, { resultCode: 'NONE', status, bytes: Buffer.byteLength(reply), url, hierarchy: 'HIER_NONE/-', contentType: '-' }),
  );
  conn.log.info(conn.parseErrorLog(), { session: session.id, client: session.clientLabel, status, code: err.code });
}

export function createInternalServer(opts: InternalServerOptions): InternalServer {
  const connections = new WeakMap<Socket, Http1Connection>();
  const server = http.createServer({
    maxHeaderSize: MAX_HEAD_BYTES,
    keepAlive: true,
    insecureHTTPParser: false,
    // The connection's head timer enforces the handshake timeout: Node only runs its
    // headersTimeout check on servers that listen themselves.
    headersTimeout: 0,
    requestTimeout: 0,
  });
  server.keepAliveTimeout = opts.keepAliveTimeoutMs;
  // Every field within MAX_HEAD_BYTES (a larger head gets 431), never Node's default count.
  server.maxHeadersCount = MAX_HEAD_FIELDS;
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const conn = connections.get(req.socket);
    if (!conn) {
      res.destroy();
      return;
    }
    conn.begin();
    // `on`: a response closes once (once() would wrap the listener for every request).
    res.on('close', () => conn.end());
    opts.request(req, res, conn);
  };
  server.on('request', onRequest);
  // With a listener, Node does not answer `Expect: 100-continue` itself: the forwarder relays the
  // origin's 100 or its final answer (RFC 9110 §10.1.1).
  server.on('checkContinue', onRequest);
  const detached =
    (handler: (req: IncomingMessage, socket: Socket, head: Buffer, conn: Http1Connection) => void) =>
    (req: IncomingMessage, socket: Socket, head: Buffer): void => {
      const conn = connections.get(socket);
      if (!conn) {
        socket.destroy();
        return;
      }
      conn.disarmHeadTimer();
      conn.detached = true;
      conn.served++;
      handler(req, socket, head, conn);
    };
  if (opts.connect) server.on('connect', detached(opts.connect));
  if (opts.upgrade) server.on('upgrade', detached(opts.upgrade));
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => answerParseError(err, socket, connections.get(socket)));
  return {
    accept(conn: Http1Connection): void {
      const { socket } = conn;
      connections.set(socket, conn);
      conn.armHeadTimer();
      socket.once('close', () => conn.disarmHeadTimer());
      server.emit('connection', socket);
      // Node's parser reads straight from the socket handle; resuming also delivers bytes that an
      // earlier peek unshifted into the stream buffer, ahead of anything newer.
      socket.resume();
    },
  };
}
