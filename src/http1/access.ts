/**
 * The one access record builder: every HTTP request the doors and taps answer, and every request
 * head they could not parse, becomes one AccessRecord (observe/access-log.ts writes it Squid-like).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Session } from '../core/session.js';
import type { AccessRecord } from '../observe/events.js';

/** What a record says about the outcome; the rest comes from the request and the session. */
export type AccessOutcome = Pick<AccessRecord, 'resultCode' | 'status' | 'bytes' | 'url' | 'hierarchy' | 'contentType'> & {
  mountedFrom?: string | undefined;
};

/**
 * The record of one request (`req`) of `session` that began at `started`; without `req`, the
 * record of a request head that could not be parsed (method NONE, as Squid logs it).
 */
export function accessRecord(req: IncomingMessage | null, session: Session, started: number, outcome: AccessOutcome): AccessRecord {
  const now = Date.now();
  // Every field named (no rest and spread): one record per request, on the hit path too.
  const record: AccessRecord = {
    time: now,
    elapsedMs: req ? now - started : 0,
    clientAddress: session.clientAddress,
    method: req ? (req.method ?? '-') : 'NONE',
    user: session.user,
    sessionId: session.id,
    resultCode: outcome.resultCode,
    status: outcome.status,
    bytes: outcome.bytes,
    url: outcome.url,
    hierarchy: outcome.hierarchy,
    contentType: outcome.contentType,
  };
  if (outcome.mountedFrom !== undefined) record.mountedFrom = outcome.mountedFrom;
  if (req) {
    record.httpVersion = req.httpVersion;
    const referer = req.headers.referer;
    const userAgent = req.headers['user-agent'];
    if (referer) record.referer = referer;
    if (userAgent) record.userAgent = userAgent;
  }
  return record;
}

/** Bytes of the response head Node wrote or queued (status line and fields); 0 before it did. */
export function headBytes(res: ServerResponse): number {
  const head = writtenHead(res);
  return head !== null ? Buffer.byteLength(head, 'latin1') : 0;
}

/** The response head exactly as Node serialized it (status line, fields, CRLF CRLF); null before it did. */
export function writtenHead(res: ServerResponse): string | null {
  // `_header` is Node's serialized response head; it is not in the typings but has been stable
  // since Node 0.x and is the only exact record of what the head was on the wire.
  const head = (res as unknown as { _header?: string | null })._header;
  return typeof head === 'string' ? head : null;
}
