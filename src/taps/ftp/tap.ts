/**
 * The FTP tap (RFC 959, RFC 2428, RFC 3659): interprets the control connection line by line and
 * relays every byte exactly, except commands that policy refuses, which the proxy answers itself
 * with 550 (RFC 959 §4.2.2 "Requested action not taken") so the server never sees them.
 *
 * It records the login name and every command (PASS masked) in `session.sections.ftp`, correlates
 * the data connections the client opens through the proxy (correlate.ts) with the transfer that
 * uses them, writes one `xfer` event per file transfer (xferlog), and keeps files retrieved in full
 * in the HTTP cache under `ftp://host:port/path`. After `AUTH TLS` is accepted (RFC 4217 §4, reply
 * 234): with STLS=mitm for the destination (`ctx.upgradeTls`) the control connection is
 * terminated on both sides and read on inside the two TLS sessions, and after `PROT P` (RFC 4217
 * §9) each data connection through the proxy is TLS on both sides too (the client gets the same
 * leaf, the server is asked to resume the control connection's TLS session, as vsftpd's
 * require_ssl_reuse wants); without it the rest of the connection is relayed raw.
 */
import type { TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';
import { formatHostPort } from '../../core/session.js';
import type { CacheWriter } from '../../cache/http-cache.js';
import { LineReader, LineTooLongError, lineText } from '../../net/lines.js';
import type { XferRecord } from '../../observe/events.js';
import type { Tap, TapContext } from '../tap.js';
import { ftpCorrelation, type FtpControlLink, type FtpDataConnection } from './correlate.js';
import { protectData, type ControlTls } from './tls.js';
import { checkFtpRequest } from './policy.js';
import { ftpCacheHead, ftpUrl, resolvePath, type FtpPath } from './paths.js';
import {
  parseCommand,
  parseEpsvReply,
  parsePasvReply,
  parseMdtm,
  parseSizeReply,
  recordedCommand,
  ReplyAssembler,
  TRANSFER_COMMANDS,
  UPLOAD_COMMANDS,
  WRITE_COMMANDS,
  type FtpCommand,
} from './wire.js';

/** Longest command line accepted from the client (RFC 959 sets none; 4 KiB fits any real path). */
export const MAX_COMMAND_BYTES = 4 * 1024;
/** Longest reply line accepted from the server. */
export const MAX_REPLY_LINE_BYTES = 8 * 1024;
/** Commands and transfers kept per session in sessions.jsonl; later ones are only counted. */
export const MAX_RECORDED_COMMANDS = 1000;
export const MAX_RECORDED_TRANSFERS = 1000;
/** Commands sent and not yet answered (clients may pipeline); beyond it replies are not paired. */
const MAX_PENDING = 256;
/** A finished reply waits this long for its data connection to end before the transfer is logged. */
const DATA_GRACE_MS = 10_000;
/** SIZE/MDTM answers remembered per session, for the cache head of the next RETR. */
const MAX_FACTS = 32;

export interface FtpTransferRecord {
  command: string;
  file: string;
  direction: 'download' | 'upload';
  bytes: number;
  durationMs: number;
  /** The final reply code (226, 426, 550, ...), or null when the connection ended first. */
  status: number | null;
  complete: boolean;
  /** 'passive' / 'active' when the data connection went through the proxy, 'direct' otherwise. */
  data: 'passive' | 'active' | 'direct';
}

export interface FtpSection {
  user: string | null;
  commands: string[];
  /** Commands not kept because the list was full. */
  commandsDropped: number;
  /** Commands the proxy refused with 550, as recorded. */
  refused: string[];
  transfers: FtpTransferRecord[];
  transfersDropped: number;
  /** Set when AUTH TLS/SSL was accepted: the mechanism (`TLS`); without STLS=mitm the rest was relayed raw. */
  tls?: string;
  /** `P` after an accepted PROT P (data connections in TLS), `C` after PROT C; absent: never sent. */
  prot?: string;
}

class Transfer {
  readonly startMs = Date.now();
  data: FtpDataConnection | null = null;
  started = false;
  status: number | null = null;
  cache: CacheWriter | null = null;
  private done = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    readonly cmd: FtpCommand,
    readonly path: FtpPath,
    readonly type: 'ascii' | 'binary',
    readonly size: number | null,
    private readonly finish: (t: Transfer) => void,
  ) {}

  get upload(): boolean {
    return UPLOAD_COMMANDS.has(this.cmd.verb);
  }

  bind(conn: FtpDataConnection): void {
    this.data = conn;
    if (this.cache) {
      const writer = this.cache;
      conn.onServerBytes = (chunk) => writer.write(chunk);
    }
  }

  /** The final reply is in (or the control connection ended): log once the data side is over too. */
  replied(code: number | null): void {
    this.status = code;
    const data = this.data;
    if (!data || data.ended) return this.complete();
    this.timer = setTimeout(() => this.complete(), DATA_GRACE_MS);
    this.timer.unref();
    data.whenEnded(() => this.complete());
  }

  complete(): void {
    if (this.done) return;
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    this.finish(this);
  }
}

interface Pending {
  cmd: FtpCommand;
  /** A reply the proxy writes itself once the replies before it are through (pipelining order). */
  local?: string;
  transfer?: Transfer;
}

class FtpControl implements FtpControlLink {
  readonly sessionId: string;
  readonly hosts = new Set<string>();
  readonly section: FtpSection = {
    user: null,
    commands: [],
    commandsDropped: 0,
    refused: [],
    transfers: [],
    transfersDropped: 0,
  };
  private readonly pending: Pending[] = [{ cmd: { verb: '', arg: '' } }]; // the greeting
  private readonly replies = new ReplyAssembler();
  private type: 'ascii' | 'binary' = 'ascii'; // RFC 959 §3.1.1.1: ASCII is the default
  private cwd: FtpPath = { absolute: false, segments: [] };
  private readonly sizes = new Map<string, number>();
  private readonly mdtms = new Map<string, Date>();
  /** Data connections that started before their transfer command (passive mode, BIND). */
  private readonly unbound: FtpDataConnection[] = [];
  /** The transfer command whose data connection has not come yet. */
  private awaiting: Transfer | null = null;
  private readonly open = new Set<Transfer>();
  raw = false;
  /** The two TLS sessions of the control connection once AUTH TLS was intercepted. */
  tls: ControlTls | null = null;
  /** PROT P accepted: data connections are TLS (RFC 4217 §9). */
  private protect = false;

  constructor(
    private readonly ctx: TapContext,
    private readonly client: Socket,
    private readonly server: Socket,
  ) {
    this.sessionId = ctx.session.id;
    this.hosts.add(ctx.dst.host.toLowerCase());
    if (server.remoteAddress) this.hosts.add(server.remoteAddress);
  }

  /** A data connection's two sockets, in TLS on both sides after PROT P (tls.ts); as they are otherwise. */
  protectData(client: Socket, server: Socket): Promise<{ client: Socket; server: Socket }> {
    if (!this.protect || !this.tls) return Promise.resolve({ client, server });
    return protectData(this.ctx, this.tls, client, server);
  }

  attach(conn: FtpDataConnection): void {
    if (this.awaiting) {
      this.awaiting.bind(conn);
      this.awaiting = null;
      return;
    }
    if (this.unbound.length >= 4) this.unbound.shift();
    this.unbound.push(conn);
  }

  /** A data connection through the proxy is running: the control connection may be idle. */
  get transferring(): boolean {
    for (const t of this.open) if (t.data && !t.data.ended) return true;
    return this.unbound.some((c) => !c.ended);
  }

  private record(cmd: FtpCommand): string {
    const text = recordedCommand(cmd);
    if (this.section.commands.length < MAX_RECORDED_COMMANDS) this.section.commands.push(text);
    else this.section.commandsDropped++;
    return text;
  }

  /**
   * One command line from the client: returns the bytes to send to the server, or null when the
   * proxy answers it itself (written through `reply`).
   */
  command(line: Buffer, reply: (text: string) => void): Buffer | null {
    const cmd = parseCommand(lineText(line));
    if (cmd.verb === '') return line;
    const text = this.record(cmd);
    switch (cmd.verb) {
      case 'USER':
        this.section.user = cmd.arg.slice(0, 256);
        break;
      case 'TYPE': {
        // RFC 959 §4.1.2: A (ASCII), E (EBCDIC), I (image), L n (local byte size).
        const t = cmd.arg.trim().toUpperCase();
        if (t.startsWith('I') || t.startsWith('L')) this.type = 'binary';
        else if (t.startsWith('A') || t.startsWith('E')) this.type = 'ascii';
        break;
      }
    }
    if (WRITE_COMMANDS.has(cmd.verb)) {
      const url = cmd.arg ? ftpUrl(this.ctx.dst, resolvePath(this.cwd, cmd.arg)) : undefined;
      const decision = checkFtpRequest(this.ctx.config, {
        clientAddress: this.ctx.session.clientAddress,
        user: this.ctx.session.user,
        dst: this.ctx.dst,
        access: 'write',
        url,
      });
      if (!decision.allowed) {
        if (this.section.refused.length < MAX_RECORDED_COMMANDS) this.section.refused.push(text);
        this.ctx.services.log.info('ftp command refused', {
          session: this.sessionId,
          client: this.ctx.session.clientLabel,
          command: cmd.verb,
          by: decision.by,
        });
        const answer = `550 ${cmd.verb} refused by proxy policy.\r\n`;
        if (this.pending.length === 0) reply(answer);
        else if (this.pending.length < MAX_PENDING) this.pending.push({ cmd, local: answer });
        return null;
      }
    }
    const entry: Pending = { cmd };
    if (TRANSFER_COMMANDS.has(cmd.verb)) entry.transfer = this.startTransfer(cmd);
    if (this.pending.length < MAX_PENDING) this.pending.push(entry);
    return line;
  }

  private startTransfer(cmd: FtpCommand): Transfer {
    const path = resolvePath(this.cwd, cmd.arg);
    const key = ftpUrl(this.ctx.dst, path);
    const size = cmd.verb === 'RETR' ? (this.sizes.get(key) ?? null) : null;
    const t = new Transfer(cmd, path, this.type, size, (done) => this.finished(done));
    const cache = this.ctx.services.cache;
    if (cache && cmd.verb === 'RETR' && size !== null && this.type === 'binary') {
      // Kept only when the 226 arrives and the byte count equals SIZE (RFC 3659 §4): a file
      // retrieved in full. An ASCII-mode transfer may have rewritten line ends, so only TYPE I.
      t.cache = cache.beginStore({ method: 'GET', url: key, headers: {} }, ftpCacheHead(path, size, this.mdtms.get(key) ?? null));
    }
    this.open.add(t);
    const conn = this.unbound.shift();
    if (conn) t.bind(conn);
    else this.awaiting = t;
    return t;
  }

  /** One line from the server; `send` relays it. Sets `raw` when the tap must stop interpreting. */
  replyLine(line: Buffer, send: (b: Buffer | string) => void): void {
    send(line);
    const done = this.replies.push(lineText(line));
    if (!done) return;
    const { code, text } = done;
    const head = this.pending[0];
    if (code < 200) {
      // RFC 959 §4.2: 1yz is preliminary; the command waits for its final reply.
      if (head?.transfer) head.transfer.started = true;
      return;
    }
    this.pending.shift();
    if (head) this.completed(head, code, text);
    // Replies the proxy queued behind this one (refused pipelined commands) go now, in order.
    while (this.pending[0]?.local) send(this.pending.shift()!.local!);
  }

  private completed(entry: Pending, code: number, text: string): void {
    const { cmd } = entry;
    const ok = code >= 200 && code < 300;
    switch (cmd.verb) {
      case 'PASV': {
        const a = code === 227 ? parsePasvReply(text) : null;
        if (a) ftpCorrelation(this.ctx.services.expectations).expectPassive(this.ctx.session.clientAddress, [...this.hosts, a.host!], a.port, this);
        break;
      }
      case 'EPSV': {
        const a = code === 229 ? parseEpsvReply(text) : null;
        if (a) ftpCorrelation(this.ctx.services.expectations).expectPassive(this.ctx.session.clientAddress, this.hosts, a.port, this);
        break;
      }
      case 'CWD':
      case 'XCWD':
        if (ok) this.cwd = resolvePath(this.cwd, cmd.arg);
        break;
      case 'CDUP':
      case 'XCUP':
        if (ok) this.cwd = resolvePath(this.cwd, '..');
        break;
      case 'SIZE': {
        const n = code === 213 ? parseSizeReply(text) : null;
        if (n !== null) remember(this.sizes, ftpUrl(this.ctx.dst, resolvePath(this.cwd, cmd.arg)), n);
        break;
      }
      case 'MDTM': {
        const d = code === 213 ? parseMdtm(text) : null;
        if (d) remember(this.mdtms, ftpUrl(this.ctx.dst, resolvePath(this.cwd, cmd.arg)), d);
        break;
      }
      case 'AUTH':
        // RFC 4217 §4: 234 means the TLS handshake starts now; nothing after it is readable.
        if (code === 234) {
          this.section.tls = cmd.arg.trim().toUpperCase() || 'TLS';
          this.raw = true;
        }
        break;
      case 'PROT': {
        // RFC 4217 §9: C (clear) or P (private); S and E are refused by servers (536).
        const level = cmd.arg.trim().toUpperCase();
        if (ok && (level === 'P' || level === 'C')) {
          this.protect = level === 'P';
          this.section.prot = level;
        }
        break;
      }
    }
    if (entry.transfer) {
      if (this.awaiting === entry.transfer) this.awaiting = null;
      entry.transfer.replied(code);
    }
  }

  private finished(t: Transfer): void {
    this.open.delete(t);
    const complete = t.status !== null && t.status >= 200 && t.status < 300;
    const direction = t.upload ? 'upload' : 'download';
    let bytes = 0;
    if (t.data) bytes = t.upload ? t.data.up : t.data.down;
    else if (complete && t.size !== null) bytes = t.size; // data went around the proxy (active mode, direct)
    const file = t.cmd.arg.trim() === '' ? '.' : t.cmd.arg.trim();
    const rec: FtpTransferRecord = {
      command: t.cmd.verb,
      file,
      direction,
      bytes,
      durationMs: (t.data?.endMs || Date.now()) - t.startMs,
      status: t.status,
      complete,
      data: t.data ? t.data.mode : 'direct',
    };
    if (this.section.transfers.length < MAX_RECORDED_TRANSFERS) this.section.transfers.push(rec);
    else this.section.transfersDropped++;
    if (t.cache) {
      // The session record waits for the commit, so a request after it finds the entry.
      if (complete && t.data && bytes === t.size && !t.cache.aborted) void this.ctx.session.hold(t.cache.end());
      else t.cache.abort();
    }
    // xferlog(5) lists file transfers; listings (LIST, NLST, MLSD) are only in sessions.jsonl.
    if (t.cmd.verb === 'LIST' || t.cmd.verb === 'NLST' || t.cmd.verb === 'MLSD') return;
    if (!t.started && !t.data) return; // refused before any data moved (e.g. 550 no such file)
    const user = this.section.user;
    const anonymous = user !== null && /^(anonymous|ftp)$/i.test(user);
    const x: XferRecord = {
      time: Date.now(),
      durationMs: rec.durationMs,
      remoteHost: this.ctx.session.clientAddress,
      bytes,
      file: pathText(t.path),
      type: t.type,
      direction,
      accessMode: anonymous ? 'a' : 'r',
      user,
      complete,
      server: formatHostPort(this.ctx.dst.host, this.ctx.dst.port),
      sessionId: this.sessionId,
    };
    this.ctx.services.events.emit('xfer', x);
  }

  /** The control connection is over: transfers still waiting are logged as incomplete. */
  close(): void {
    for (const t of [...this.open]) if (t.status === null) t.replied(null);
  }
}

function pathText(p: FtpPath): string {
  return (p.absolute ? '/' : '') + p.segments.join('/');
}

function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > MAX_FACTS) map.delete(map.keys().next().value!);
}

export const ftpTap: Tap = async (ctx: TapContext): Promise<void> => {
  const { session, client } = ctx;
  session.proto = 'ftp';
  const server = ctx.server ?? (await ctx.dial());
  const control = new FtpControl(ctx, client, server);
  session.sections.ftp = control.section;
  const unregister = ftpCorrelation(ctx.services.expectations).registerControl(session.clientAddress, control);
  try {
    let c: Socket = client;
    let s: Socket = server;
    for (;;) {
      const raw = await interpret(ctx, control, c, s);
      if (!raw) break;
      // AUTH TLS accepted. STLS=mitm: TLS on both sides and the commands are read on inside.
      const tls = control.tls === null && ctx.upgradeTls ? await upgrade(ctx, c, s) : null;
      if (tls === 'failed') break;
      if (!tls) {
        await ctx.relay(c, s);
        break;
      }
      control.tls = { client: tls.client as TLSSocket, server: tls.server as TLSSocket };
      control.raw = false;
      c = tls.client;
      s = tls.server;
    }
  } finally {
    unregister();
    control.close();
  }
};

/**
 * The TLS upgrade after a 234 (STLS=mitm): the two TLS sessions; null when it was declined (relay
 * the rest); 'failed' when it failed (the pipeline logged why and set the result; both closed).
 */
async function upgrade(ctx: TapContext, client: Socket, server: Socket): Promise<{ client: Socket; server: Socket } | null | 'failed'> {
  try {
    const tls = await ctx.upgradeTls!(client, server);
    if (!tls) return null;
    tls.client.once('close', () => client.destroy());
    tls.server.once('close', () => server.destroy());
    return tls;
  } catch {
    client.destroy();
    server.destroy();
    return 'failed';
  }
}

/**
 * Runs the line-by-line relay until both sides are done (resolves false) or AUTH TLS switched the
 * connection to raw (resolves true, both sockets paused; everything read so far forwarded, or with
 * STLS=mitm put back in front of its own socket for the TLS handshakes).
 */
function interpret(ctx: TapContext, control: FtpControl, client: Socket, server: Socket): Promise<boolean> {
  const { session } = ctx;
  const fromClient = new LineReader(MAX_COMMAND_BYTES);
  const fromServer = new LineReader(MAX_REPLY_LINE_BYTES);
  const idleMs = ctx.config.timeouts.idle;
  return new Promise<boolean>((resolve) => {
    let settled = false;
    let last = Date.now();
    let open = 2;
    const write = (dst: Socket, src: Socket, b: Buffer | string): void => {
      if (dst.destroyed) return;
      if (!dst.write(b) && !src.isPaused()) {
        src.pause();
        dst.once('drain', () => {
          if (!settled) src.resume();
        });
      }
    };
    const toServer = (b: Buffer | string): void => write(server, client, b);
    const toClient = (b: Buffer | string): void => write(client, server, b);
    const fail = (err: unknown, side: 'client' | 'server'): void => {
      if (err instanceof LineTooLongError) {
        session.settle('ELINETOOLONG');
        // RFC 959 §4.2.1: 500 "Syntax error, command unrecognized" covers a line too long.
        if (side === 'client') client.end('500 Command line too long.\r\n');
        else client.end('421 Service not available, reply line too long.\r\n');
        server.destroy();
        return;
      }
      throw err;
    };
    const goRaw = (): void => {
      settled = true;
      cleanup();
      client.pause();
      server.pause();
      // Whatever followed the 234 or the AUTH line is TLS already: pass it on untouched, or with
      // STLS=mitm keep it for the handshakes.
      const mitm = control.tls === null && ctx.upgradeTls !== undefined;
      if (fromClient.buffered > 0) {
        if (mitm) client.unshift(fromClient.drain());
        else server.write(fromClient.drain());
      }
      if (fromServer.buffered > 0) {
        if (mitm) server.unshift(fromServer.drain());
        else client.write(fromServer.drain());
      }
      resolve(true);
    };
    const onClientData = (chunk: Buffer): void => {
      last = Date.now();
      session.countUp(chunk.length);
      try {
        fromClient.push(chunk, (item) => {
          const out = item.kind === 'line' ? control.command(item.bytes, toClient) : item.bytes;
          if (out) toServer(out);
        });
      } catch (err) {
        fail(err, 'client');
      }
    };
    const onServerData = (chunk: Buffer): void => {
      last = Date.now();
      session.countDown(chunk.length);
      try {
        const late: Buffer[] = [];
        fromServer.push(chunk, (item) => {
          if (settled) {
            late.push(item.bytes);
            return;
          }
          if (item.kind === 'line') control.replyLine(item.bytes, toClient);
          else toClient(item.bytes);
          if (control.raw && !settled) goRaw();
        });
        // What followed the 234 in this chunk is TLS data: it goes on as it is (or back in front
        // of the server socket for the interception's handshake).
        if (settled && fromServer.buffered > 0) late.push(fromServer.drain());
        if (late.length > 0) {
          if (control.tls === null && ctx.upgradeTls !== undefined) server.unshift(Buffer.concat(late));
          else client.write(Buffer.concat(late));
        }
      } catch (err) {
        fail(err, 'server');
      }
    };
    const onClientEnd = (): void => {
      if (fromClient.buffered > 0) toServer(fromClient.drain());
      if (!server.destroyed) server.end();
    };
    const onServerEnd = (): void => {
      if (fromServer.buffered > 0) toClient(fromServer.drain());
      if (!client.destroyed) client.end();
    };
    const onError = (err: NodeJS.ErrnoException): void => {
      session.settle(err.code ?? 'EUPSTREAM');
    };
    const onClose = (): void => {
      if (!(client.readableEnded && server.readableEnded)) {
        client.destroy();
        server.destroy();
      }
      if (--open === 0 && !settled) {
        settled = true;
        cleanup();
        resolve(false);
      }
    };
    const timer = setInterval(() => {
      if (idleMs > 0 && Date.now() - last >= idleMs && !control.transferring) {
        session.settle('idle');
        client.destroy();
        server.destroy();
      }
    }, Math.max(250, Math.min(idleMs > 0 ? idleMs / 4 : 30_000, 30_000)));
    timer.unref();
    const cleanup = (): void => {
      clearInterval(timer);
      client.off('data', onClientData);
      server.off('data', onServerData);
      client.off('end', onClientEnd);
      server.off('end', onServerEnd);
      client.off('close', onClose);
      server.off('close', onClose);
    };
    for (const s of [client, server]) {
      s.allowHalfOpen = true;
      s.on('error', onError);
    }
    client.on('data', onClientData);
    server.on('data', onServerData);
    client.on('end', onClientEnd);
    server.on('end', onServerEnd);
    for (const s of [client, server]) {
      if (s.destroyed) open--;
      else s.on('close', onClose);
    }
    if (open < 2) {
      client.destroy();
      server.destroy();
      if (open === 0) {
        settled = true;
        cleanup();
        resolve(false);
      }
      return;
    }
    client.resume();
    server.resume();
  });
}
