/**
 * `GET ftp://host/path` through the HTTP door, as Squid and DeleGate answer it: sockstap logs in
 * (anonymous, or the URL's user:password), and retrieves a file (TYPE I, SIZE, MDTM, EPSV/PASV,
 * RETR; RFC 959, 2428, 3659) streaming it to the client and into the cache, or lists a directory
 * (a path ending in `/`) as an HTML page (MLSD, RFC 3659 §7, falling back to NLST).
 *
 * A stored file is served again when the server's SIZE and MDTM still match the stored ones (the
 * ETag made from them), without a data connection: that is a hit (TCP_HIT). One access record per
 * request; the password of the URL never appears in it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { HttpCache, CacheWriter } from '../../cache/http-cache.js';
import type { HostPort, Timeouts } from '../../config/types.js';
import { replyFor, toProxyError } from '../../core/errors.js';
import type { Session } from '../../core/session.js';
import type { ProxyEvents } from '../../observe/events.js';
import type { Logger } from '../../observe/log.js';
import { FtpClient } from './client.js';
import { contentTypeOf, ftpCacheHead, ftpEntryValid, ftpUrl, pathArg, urlPath, type FtpPath } from './paths.js';
import { parseMdtm, parseSizeReply } from './wire.js';

export interface ServeFtpOptions {
  session: Session;
  /** The HTTP cache when CACHE=do, else null. */
  cache: HttpCache | null;
  /** The pipeline's dialer (routing, upstream proxies); rejects with a ProxyError. */
  dial(dst: HostPort): Promise<Socket>;
  events: ProxyEvents;
  log: Logger;
  timeouts: Timeouts;
}

/** Entries listed on one directory page; the rest is cut with a note. */
const MAX_LISTING_ENTRIES = 10_000;
/** Bytes of a directory listing read at most. */
const MAX_LISTING_BYTES = 4 * 1024 * 1024;

class FtpHttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The URL without its password, for logs: ftp://user@host/path. */
export function loggableFtpUrl(url: URL): string {
  const u = new URL(url.href);
  u.password = '';
  return u.href;
}

const escapeHtml = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/**
 * Serves one `GET`/`HEAD ftp://...` request of the HTTP door. Never throws; every outcome ends in
 * exactly one access record. The caller has already checked policy for the destination.
 */
export function serveFtpUrl(req: IncomingMessage, res: ServerResponse, opts: ServeFtpOptions): void {
  const started = Date.now();
  let url: URL;
  try {
    url = new URL(req.url ?? '');
  } catch {
    url = new URL('ftp://invalid/');
  }
  const logged = loggableFtpUrl(url);
  let resultCode = 'TCP_MISS';
  let contentType = 'text/plain';
  let sent = 0;
  const finish = (status: number): void => {
    opts.events.emit('access', {
      time: Date.now(),
      elapsedMs: Date.now() - started,
      clientAddress: opts.session.clientAddress,
      resultCode,
      status,
      bytes: sent,
      method: req.method ?? 'GET',
      url: logged,
      user: opts.session.user,
      hierarchy: resultCode === 'TCP_HIT' ? 'HIER_NONE/-' : opts.session.peer ? opts.session.hierarchy() : `HIER_DIRECT/${url.hostname || '-'}`,
      contentType,
      httpVersion: req.httpVersion,
      sessionId: opts.session.id,
    });
  };
  run(req, res, url, opts, {
    hit: () => (resultCode = 'TCP_HIT'),
    type: (t) => (contentType = t),
    sent: (n) => (sent += n),
  }).then(
    () => finish(res.statusCode),
    (err: unknown) => {
      let status: number;
      let message: string;
      let headers: Record<string, string> = {};
      if (err instanceof FtpHttpError) {
        status = err.status;
        message = err.message;
        headers = err.headers;
      } else {
        const e = toProxyError(err);
        status = replyFor(e.code).http;
        message = e.message;
      }
      if (res.headersSent) {
        res.destroy();
      } else {
        const body = `sockstap: ${status}\n${message}\n`;
        res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', ...headers });
        res.end(req.method === 'HEAD' ? undefined : body);
        sent += req.method === 'HEAD' ? 0 : Buffer.byteLength(body);
      }
      contentType = 'text/plain';
      finish(status);
    },
  );
}

interface Report {
  hit(): void;
  type(t: string): void;
  sent(n: number): void;
}

async function run(req: IncomingMessage, res: ServerResponse, url: URL, opts: ServeFtpOptions, report: Report): Promise<void> {
  const method = (req.method ?? 'GET').toUpperCase();
  if (method !== 'GET' && method !== 'HEAD') throw new FtpHttpError(405, `${method} is not supported for ftp:// URLs`, { Allow: 'GET, HEAD' });
  if (url.protocol !== 'ftp:' || url.hostname === '') throw new FtpHttpError(400, 'not an ftp:// URL');
  const path = urlPath(url);
  if (!path) throw new FtpHttpError(400, 'bad path in the ftp:// URL');
  const dst: HostPort = { host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port ? Number(url.port) : 21 };
  const isDir = url.pathname.endsWith('/') || path.segments.length === 0;
  // RFC 1738 §3.2.2: ;type=a|i|d is a hint we do not need; the path decides.
  const user = url.username ? decodeURIComponent(url.username) : 'anonymous';
  const password = url.password ? decodeURIComponent(url.password) : url.username ? '' : 'sockstap@';
  const socket = await opts.dial(dst);
  socket.on('error', () => {});
  const ftp = await FtpClient.open(socket, opts.timeouts.connect);
  try {
    await ftp.login(user, password);
    await ftp.command('TYPE', 'I');
    if (isDir) await serveDirectory(ftp, dst, path, url, req, res, opts, report);
    else await serveFile(ftp, dst, path, url, req, res, opts, report);
  } finally {
    await ftp.quit();
  }
}

async function serveFile(
  ftp: FtpClient,
  dst: HostPort,
  path: FtpPath,
  url: URL,
  req: IncomingMessage,
  res: ServerResponse,
  opts: ServeFtpOptions,
  report: Report,
): Promise<void> {
  const arg = pathArg(path);
  const sizeReply = await ftp.command('SIZE', arg);
  const size = sizeReply.code === 213 ? parseSizeReply(sizeReply.text) : null;
  const mdtmReply = await ftp.command('MDTM', arg);
  const mdtm = mdtmReply.code === 213 ? parseMdtm(mdtmReply.text) : null;
  if (size === null && sizeReply.code === 550) {
    // Not a file: a directory gets its listing URL, as Squid does.
    const cwd = await ftp.command('CWD', arg);
    if (cwd.code === 250) throw new FtpHttpError(301, 'a directory', { Location: `${url.href}/` });
  }
  const key = ftpUrl(dst, path);
  const head = size !== null ? ftpCacheHead(path, size, mdtm) : null;
  const cacheReq = { method: 'GET', url: key, headers: {} };
  if (opts.cache && head) {
    const hit = await opts.cache.lookup(cacheReq);
    // Validated by SIZE and MDTM (RFC 3659 §4, §3): the same file, served without a transfer.
    if (hit && hit.size === size && ftpEntryValid(hit.head.headers, size, mdtm)) {
      const body = await hit.openBody();
      if (body) {
        report.hit();
        report.type(contentTypeOf(path));
        res.writeHead(200, httpHead(head));
        if (req.method === 'HEAD') {
          body.destroy();
          res.end();
          return;
        }
        await stream(body, res, null, report, size);
        return;
      }
    }
  }
  const data = await ftp.openData(dst, opts.dial);
  try {
    ftp.send('RETR', arg);
    const first = await ftp.next();
    if (first.code >= 400) throw new FtpHttpError(first.code === 550 ? 404 : 502, `RETR: ${first.code} ${first.text}`);
    report.type(contentTypeOf(path));
    res.writeHead(200, httpHead(head ?? { status: 200, headers: { 'content-type': contentTypeOf(path) } }));
    const writer = opts.cache && head && req.method !== 'HEAD' ? opts.cache.beginStore(cacheReq, head) : null;
    if (req.method === 'HEAD') {
      data.destroy();
      res.end();
      if (first.code < 200) await ftp.next().catch(() => undefined);
      return;
    }
    const got = await stream(data, res, writer, report);
    const final = first.code >= 200 ? first : await ftp.next();
    if (writer) {
      if (final.code === 226 || final.code === 250) {
        // Awaited: the access record (and the next request) comes after the commit.
        if (got === size) await writer.end();
        else writer.abort();
      } else writer.abort();
    }
    if (final.code >= 400) res.destroy(); // the client must see the truncation
  } finally {
    data.destroy();
  }
}

function httpHead(head: { headers: Record<string, unknown> }): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(head.headers)) if (typeof v === 'string') out[k] = v;
  return out;
}

/** Pipes `src` to the response (and the cache), with back-pressure; resolves with the byte count. */
/**
 * Stream `src` to the client (and the cache writer). `expected`, when known, is the body length the
 * client was promised: a client that closes once it has it (curl does, before our stream has seen
 * its own end) has not "gone away".
 */
function stream(src: Readable, res: ServerResponse, writer: CacheWriter | null, report: Report, expected: number | null = null): Promise<number> {
  return new Promise((resolve, reject) => {
    let n = 0;
    src.on('data', (chunk: Buffer) => {
      n += chunk.length;
      report.sent(chunk.length);
      writer?.write(chunk);
      if (!res.write(chunk)) {
        src.pause();
        res.once('drain', () => src.resume());
      }
    });
    src.once('end', () => {
      res.end();
      resolve(n);
    });
    src.once('error', (err) => {
      writer?.abort();
      reject(err);
    });
    res.once('close', () => {
      if (expected !== null && n >= expected) {
        src.destroy();
        resolve(n);
      } else if (!res.writableFinished) {
        writer?.abort();
        src.destroy();
        reject(new Error('client went away'));
      }
    });
  });
}

interface ListingEntry {
  name: string;
  dir: boolean;
  size: number | null;
  modified: Date | null;
}

/** RFC 3659 §7.2: "fact=value;fact=value; name". */
function parseMlsdLine(line: string): ListingEntry | null {
  const sp = line.indexOf(' ');
  if (sp < 0) return null;
  const name = line.slice(sp + 1);
  const facts = new Map<string, string>();
  for (const f of line.slice(0, sp).split(';')) {
    const eq = f.indexOf('=');
    if (eq > 0) facts.set(f.slice(0, eq).toLowerCase(), f.slice(eq + 1));
  }
  const type = (facts.get('type') ?? 'file').toLowerCase();
  if (type === 'cdir' || type === 'pdir' || name === '.' || name === '..') return null;
  const size = facts.get('size');
  const modify = facts.get('modify');
  return {
    name,
    dir: type === 'dir',
    size: size && /^\d+$/.test(size) ? Number(size) : null,
    modified: modify ? parseMdtm(modify) : null,
  };
}

async function readAll(data: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    data.on('data', (c: Buffer) => {
      n += c.length;
      if (n > MAX_LISTING_BYTES) {
        data.destroy();
        resolve(Buffer.concat(chunks).toString('utf8'));
        return;
      }
      chunks.push(c);
    });
    data.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    data.once('error', reject);
  });
}

async function listing(ftp: FtpClient, dst: HostPort, opts: ServeFtpOptions, verb: 'MLSD' | 'NLST'): Promise<string | null> {
  const data = await ftp.openData(dst, opts.dial);
  try {
    ftp.send(verb);
    const first = await ftp.next();
    if (first.code >= 400) return null;
    const text = await readAll(data);
    const final = first.code >= 200 ? first : await ftp.next();
    return final.code < 400 ? text : null;
  } finally {
    data.destroy();
  }
}

async function serveDirectory(
  ftp: FtpClient,
  dst: HostPort,
  path: FtpPath,
  url: URL,
  req: IncomingMessage,
  res: ServerResponse,
  opts: ServeFtpOptions,
  report: Report,
): Promise<void> {
  if (path.segments.length > 0 || path.absolute) {
    const cwd = await ftp.command('CWD', pathArg(path) || '/');
    if (cwd.code !== 250) throw new FtpHttpError(404, `CWD: ${cwd.code} ${cwd.text}`);
  }
  let entries: ListingEntry[] = [];
  const mlsd = await listing(ftp, dst, opts, 'MLSD');
  if (mlsd !== null) {
    entries = mlsd.split(/\r?\n/).filter(Boolean).map(parseMlsdLine).filter((e): e is ListingEntry => e !== null);
  } else {
    const nlst = await listing(ftp, dst, opts, 'NLST');
    if (nlst === null) throw new FtpHttpError(502, 'the FTP server lists neither with MLSD nor with NLST');
    entries = nlst
      .split(/\r?\n/)
      .filter(Boolean)
      .map((n) => ({ name: n.slice(n.lastIndexOf('/') + 1), dir: false, size: null, modified: null }));
  }
  entries.sort((a, b) => Number(b.dir) - Number(a.dir) || a.name.localeCompare(b.name));
  const cut = entries.length > MAX_LISTING_ENTRIES;
  const title = escapeHtml(`Index of ${loggableFtpUrl(url)}`);
  const rows = entries.slice(0, MAX_LISTING_ENTRIES).map((e) => {
    const href = encodeURIComponent(e.name) + (e.dir ? '/' : '');
    const size = e.dir ? '-' : e.size === null ? '' : String(e.size);
    const when = e.modified ? e.modified.toISOString().replace('T', ' ').slice(0, 19) : '';
    return `<tr><td><a href="${escapeHtml(href)}">${escapeHtml(e.name)}${e.dir ? '/' : ''}</a></td><td>${size}</td><td>${when}</td></tr>`;
  });
  const parent = path.segments.length > 0 ? '<tr><td><a href="../">../</a></td><td></td><td></td></tr>\n' : '';
  const body =
    `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>${title}</title></head><body>\n<h1>${title}</h1>\n` +
    `<table>\n<tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr>\n${parent}${rows.join('\n')}\n</table>\n` +
    (cut ? `<p>Only the first ${MAX_LISTING_ENTRIES} entries are shown.</p>\n` : '') +
    '</body></html>\n';
  report.type('text/html');
  res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-cache' });
  res.end(req.method === 'HEAD' ? undefined : body);
  if (req.method !== 'HEAD') report.sent(Buffer.byteLength(body));
}
