/**
 * The small FTP client inside sockstap that serves `GET ftp://...` for the HTTP door: one control
 * connection, replies read with the shared line reader (RFC 959 §4.2 multi-line replies), data
 * connections in passive mode only (EPSV, RFC 2428 §3, then PASV, RFC 959 §4.1.2), always to the
 * control connection's host so that a hostile 227 cannot point the proxy elsewhere (RFC 2577 §3).
 */
import type { Socket } from 'node:net';
import type { HostPort } from '../../config/types.js';
import { ProxyError } from '../../core/errors.js';
import { LineReader, lineText } from '../../net/lines.js';
import { parseEpsvReply, parsePasvReply, ReplyAssembler } from './wire.js';

export interface FtpReply {
  code: number;
  text: string;
}

const MAX_REPLY_LINE = 8 * 1024;
/** Replies received and not yet asked for; a server that floods us is cut off. */
const MAX_QUEUED_REPLIES = 64;

export class FtpClient {
  private readonly reader = new LineReader(MAX_REPLY_LINE);
  private readonly assembler = new ReplyAssembler();
  private readonly queue: FtpReply[] = [];
  private waiter: { resolve(r: FtpReply): void; reject(e: Error): void; timer: NodeJS.Timeout } | null = null;
  private failure: Error | null = null;

  private constructor(
    readonly socket: Socket,
    private readonly timeoutMs: number,
  ) {
    socket.on('data', (chunk: Buffer) => {
      try {
        this.reader.push(chunk, (item) => {
          if (item.kind !== 'line') return;
          const r = this.assembler.push(lineText(item.bytes));
          if (r) this.deliver(r);
        });
      } catch (err) {
        this.fail(err as Error);
      }
    });
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new ProxyError('EUPSTREAM', 'FTP server closed the control connection')));
    socket.resume();
  }

  /** Takes over a connected control socket and reads the greeting (RFC 959 §5.4: 120 may precede 220). */
  static async open(socket: Socket, timeoutMs: number): Promise<FtpClient> {
    const c = new FtpClient(socket, timeoutMs);
    let r = await c.next();
    while (r.code < 200) r = await c.next();
    if (r.code !== 220) throw new ProxyError('EUPSTREAM', `FTP server greeting ${r.code} ${r.text}`);
    return c;
  }

  private deliver(r: FtpReply): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      clearTimeout(w.timer);
      w.resolve(r);
      return;
    }
    if (this.queue.length >= MAX_QUEUED_REPLIES) return this.fail(new ProxyError('EPROTO', 'FTP server sent unasked replies'));
    this.queue.push(r);
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.socket.destroy();
  }

  /** The next reply, preliminary (1yz) ones included. */
  next(): Promise<FtpReply> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        this.fail(new ProxyError('ETIMEDOUT', `FTP server did not reply within ${this.timeoutMs} ms`));
        reject(this.failure!);
      }, this.timeoutMs);
      this.waiter = { resolve, reject, timer };
    });
  }

  send(verb: string, arg?: string): void {
    if (arg !== undefined && /[\r\n]/.test(arg)) throw new ProxyError('EPROTO', 'FTP argument with a line break');
    this.socket.write(arg === undefined ? `${verb}\r\n` : `${verb} ${arg}\r\n`);
  }

  /** Send a command and wait for its final reply (preliminary replies skipped). */
  async command(verb: string, arg?: string): Promise<FtpReply> {
    this.send(verb, arg);
    let r = await this.next();
    while (r.code < 200) r = await this.next();
    return r;
  }

  /** RFC 959 §4.1.1 USER/PASS; the password is only ever written to the server. */
  async login(user: string, password: string): Promise<void> {
    let r = await this.command('USER', user);
    if (r.code === 331 || r.code === 332) r = await this.command('PASS', password);
    if (r.code !== 230 && r.code !== 202) throw new ProxyError('EUPSTREAMAUTH', `FTP login refused: ${r.code} ${r.text}`);
  }

  /** A passive data connection through `dial`: EPSV first, PASV when the server does not know it. */
  async openData(dst: HostPort, dial: (d: HostPort) => Promise<Socket>): Promise<Socket> {
    let r = await this.command('EPSV');
    let port: number | null = r.code === 229 ? (parseEpsvReply(r.text)?.port ?? null) : null;
    if (port === null) {
      r = await this.command('PASV');
      port = r.code === 227 ? (parsePasvReply(r.text)?.port ?? null) : null;
    }
    if (port === null) throw new ProxyError('EUPSTREAM', `FTP server offers no passive mode: ${r.code} ${r.text}`);
    const data = await dial({ host: dst.host, port });
    data.on('error', () => {});
    return data;
  }

  /** QUIT politely and close (RFC 959 §4.1.1). */
  async quit(): Promise<void> {
    if (this.failure) return;
    try {
      this.send('QUIT');
      await this.next();
    } catch {
      // closing anyway
    }
    this.socket.destroy();
  }

  close(): void {
    this.fail(new ProxyError('ESHUTDOWN', 'FTP client closed'));
  }
}
