/**
 * FTP paths as the control connection names them, and the `ftp://` URLs the cache keys them by.
 * RFC 1738 §3.2.2: an ftp URL's path is relative to the login directory, one CWD per segment;
 * an absolute path is written with a leading `%2F`. So `ftp://h/pub/a.bin` is "pub/a.bin" from
 * the login directory and `ftp://h/%2Fpub/a.bin` is "/pub/a.bin".
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { HostPort } from '../../config/types.js';
import type { CacheResponseHead } from '../../cache/http-cache.js';

export interface FtpPath {
  /** From the server's root rather than the login directory. */
  absolute: boolean;
  segments: string[];
}

/** Segments kept at most; a deeper path keeps its last ones (it only has to name the file). */
const MAX_SEGMENTS = 64;

/** `arg` applied to `cwd` the way a Unix server resolves it ("..", ".", "/" handled). */
export function resolvePath(cwd: FtpPath, arg: string): FtpPath {
  const text = arg.trim();
  const absolute = text.startsWith('/') || cwd.absolute;
  const segments = text.startsWith('/') ? [] : [...cwd.segments];
  for (const seg of text.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') segments.pop();
    else segments.push(seg);
  }
  return { absolute, segments: segments.slice(-MAX_SEGMENTS) };
}

/** The cache key of a path on the server `dst`. */
export function ftpUrl(dst: HostPort, path: FtpPath): string {
  const host = dst.host.includes(':') ? `[${dst.host}]` : dst.host;
  const port = dst.port === 21 ? '' : `:${dst.port}`;
  const segs = path.segments.map((s) => encodeURIComponent(s));
  const body = path.absolute ? `%2F${segs.join('/')}` : segs.join('/');
  return new URL(`ftp://${host.toLowerCase()}${port}/${body}`).href;
}

/** The path of an ftp:// URL (RFC 1738 §3.2.2), or null when a segment is not valid. */
export function urlPath(url: URL): FtpPath | null {
  const raw = url.pathname.replace(/^\//, '');
  const parts = raw === '' ? [] : raw.split('/');
  let absolute = false;
  const segments: string[] = [];
  for (let i = 0; i < parts.length; i++) {
    let seg: string;
    try {
      seg = decodeURIComponent(parts[i]!);
    } catch {
      return null;
    }
    if (i === 0 && seg.startsWith('/')) {
      absolute = true;
      seg = seg.slice(1);
    }
    // A CR or LF in a segment would end the FTP command line early (RFC 959 §4.1.3 pathname).
    if (/[\r\n\0]/.test(seg)) return null;
    if (seg === '' && i === parts.length - 1) continue; // trailing slash: a directory
    if (seg === '' || seg === '.' || seg === '..') continue;
    segments.push(seg);
  }
  return { absolute, segments };
}

/** The path as an FTP command argument. */
export function pathArg(p: FtpPath): string {
  return (p.absolute ? '/' : '') + p.segments.join('/');
}

const TYPES: Record<string, string> = {
  txt: 'text/plain',
  html: 'text/html',
  htm: 'text/html',
  css: 'text/css',
  js: 'text/javascript',
  json: 'application/json',
  xml: 'application/xml',
  pdf: 'application/pdf',
  png: 'image/png',
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  gif: 'image/gif',
  svg: 'image/svg+xml',
  zip: 'application/zip',
  gz: 'application/gzip',
  tgz: 'application/gzip',
  tar: 'application/x-tar',
  iso: 'application/x-iso9660-image',
};

export function contentTypeOf(p: FtpPath): string {
  const name = p.segments[p.segments.length - 1] ?? '';
  const ext = name.includes('.') ? name.slice(name.lastIndexOf('.') + 1).toLowerCase() : '';
  return TYPES[ext] ?? 'application/octet-stream';
}

/** The validator of an FTP file: its SIZE and MDTM (RFC 3659 §4, §3), as an HTTP entity tag. */
export function ftpEtag(size: number, mdtm: Date | null): string {
  return `"ftp-${size}-${mdtm ? mdtm.getTime() : 'x'}"`;
}

/**
 * The synthetic HTTP response head an ftp:// entry is stored under: 200, Content-Length = SIZE,
 * Last-Modified = MDTM, and an ETag built from both, so a later request can compare SIZE and MDTM
 * with what is stored.
 */
export function ftpCacheHead(path: FtpPath, size: number, mdtm: Date | null): CacheResponseHead {
  const headers: IncomingHttpHeaders = {
    date: new Date().toUTCString(),
    'content-type': contentTypeOf(path),
    'content-length': String(size),
    etag: ftpEtag(size, mdtm),
  };
  if (mdtm) headers['last-modified'] = mdtm.toUTCString();
  return { status: 200, headers };
}

/**
 * Whether a stored ftp:// entry is still the server's file, from the SIZE and MDTM the server
 * reports now. Entries stored with an MDTM need the same MDTM; an entry stored by the tap from a
 * client that never asked MDTM is valid when the file was last modified no later than the store
 * (its Date; both have one-second resolution, so a change within that same second is missed).
 */
export function ftpEntryValid(stored: IncomingHttpHeaders, size: number, mdtm: Date | null): boolean {
  if (stored['content-length'] !== String(size)) return false;
  if (mdtm === null) return false; // without MDTM (RFC 3659 §3) a same-size change cannot be told
  const lm = stored['last-modified'];
  if (typeof lm === 'string') return Date.parse(lm) === Math.floor(mdtm.getTime() / 1000) * 1000;
  const date = stored.date;
  return typeof date === 'string' && mdtm.getTime() <= Date.parse(date);
}
