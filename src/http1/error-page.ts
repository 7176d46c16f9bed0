/**
 * The one error page: what sockstap answers itself over HTTP/1 (a refusal, a failed origin, a
 * request it cannot parse), Squid-like — a status from the one reply table (core/errors.ts) and a
 * short readable body (`sockstap: 502 Bad Gateway` and a line saying why), never cached. Written
 * on a ServerResponse (`writeErrorPage`) or, where Node's server has let go of the socket (CONNECT,
 * Upgrade, parse errors), as the raw bytes of a closing response (`rawErrorPage`). `refuseRequest`
 * adds the access record.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { replyFor, type ProxyErrorCode } from '../core/errors.js';
import type { Session } from '../core/session.js';
import type { ProxyEvents } from '../observe/events.js';
import { accessRecord, headBytes } from './access.js';

/** The realm of the Basic challenge (RFC 7617) of a 407. */
export const PROXY_REALM = 'sockstap';

export interface ErrorPage {
  status: number;
  reason: string;
  /** The media type access.log names. */
  contentType: string;
  /** The Content-Type field. */
  type: string;
  body: string;
}

/** A plain-text page: `sockstap: STATUS REASON`, then the message. */
export function errorPage(status: number, message: string): ErrorPage {
  const reason = http.STATUS_CODES[status] ?? 'Error';
  return { status, reason, contentType: 'text/plain', type: 'text/plain; charset=utf-8', body: `sockstap: ${status} ${reason}\n${message}\n` };
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The 403 of checkpoint 3 (PERMIT/REJECT on URL and method): HTML, since a browser shows it where the page would have been. */
export function forbiddenPage(method: string | undefined, url: string, by: string): ErrorPage {
  const body =
    `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>403 Forbidden</title></head><body>\n` +
    `<h1>403 Forbidden</h1>\n<p>sockstap does not allow ${escapeHtml(method ?? 'this request')} ` +
    `<code>${escapeHtml(url)}</code>.</p>\n<p>Refused by <code>${escapeHtml(by)}</code>.</p>\n</body></html>\n`;
  return { status: 403, reason: 'Forbidden', contentType: 'text/html', type: 'text/html; charset=utf-8', body };
}

/** The fields of a page: its type and length, never stored, and the Basic challenge of a 407. */
function pageFields(page: ErrorPage): Record<string, string | number> {
  const fields: Record<string, string | number> = {
    'Content-Type': page.type,
    'Content-Length': Buffer.byteLength(page.body),
    'Cache-Control': 'no-store',
  };
  if (page.status === 407) fields['Proxy-Authenticate'] = `Basic realm="${PROXY_REALM}"`;
  return fields;
}

/**
 * Writes the page unless a response head was already sent, in which case the client connection is
 * cut (the client sees the truncation). Returns the bytes written.
 */
export function writeErrorPage(req: IncomingMessage, res: ServerResponse, page: ErrorPage): number {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return 0;
  }
  const fields = pageFields(page);
  // A request body we never read would have to be drained before the next request: close instead.
  if (!req.complete) fields.Connection = 'close';
  res.writeHead(page.status, page.reason, fields);
  const withBody = req.method !== 'HEAD';
  res.end(withBody ? page.body : undefined);
  return headBytes(res) + (withBody ? Buffer.byteLength(page.body) : 0);
}

/** The page as the bytes of a whole response after which the connection closes. */
export function rawErrorPage(page: ErrorPage): string {
  let head = `HTTP/1.1 ${page.status} ${page.reason}\r\n`;
  for (const [name, value] of Object.entries(pageFields(page))) head += `${name}: ${value}\r\n`;
  return `${head}Connection: close\r\n\r\n${page.body}`;
}

/**
 * Squid's result code for a request the proxy answered itself: TCP_DENIED when policy or
 * authentication refused it, NONE (Squid's TAG_NONE) for a request it could not make sense of,
 * TCP_MISS when it tried the origin and failed.
 */
export function refusalResultCode(code: ProxyErrorCode): string {
  switch (code) {
    case 'EDENIED':
    case 'EAUTH':
    case 'ELIMIT':
    case 'EIDENTUNREACH':
    case 'EIDENTMISMATCH':
    case 'EBINDPEER':
    case 'EQUOTA':
      return 'TCP_DENIED';
    case 'EPROTO':
    case 'ECMDNOTSUP':
    case 'EATYPNOTSUP':
      return 'TAG_NONE';
    default:
      return 'TCP_MISS';
  }
}

/**
 * Refuses a request with the reply of `code` (403 for EDENIED, 407 with a Basic challenge for
 * EAUTH, 400 for EPROTO, 502/504 for dial failures, ...), or with `page` when given, and records
 * it in access.log.
 */
export function refuseRequest(
  req: IncomingMessage,
  res: ServerResponse,
  session: Session,
  events: ProxyEvents,
  code: ProxyErrorCode,
  message: string,
  url: string = req.url ?? '-',
  mountedFrom?: string,
  page: ErrorPage = errorPage(replyFor(code).http, message),
): void {
  const started = Date.now();
  const bytes = writeErrorPage(req, res, page);
  events.emit(
    'access',
    accessRecord(req, session, started, {
      resultCode: refusalResultCode(code),
      status: page.status,
      bytes,
      url,
      hierarchy: 'HIER_NONE/-',
      contentType: page.contentType,
      mountedFrom,
    }),
  );
}
