/**
 * The fixed lifecycle events every part of the proxy emits; log writers, statistics and the admin
 * API subscribe. Emitters never wait for subscribers and never format anything on the data path.
 */
import { EventEmitter } from 'node:events';
import type { Session } from '../core/session.js';

/** One line of access.log: an HTTP request (HTTP door, tapped HTTP) or a CONNECT tunnel. */
export interface AccessRecord {
  /** ms since the epoch when the request finished */
  time: number;
  elapsedMs: number;
  clientAddress: string;
  /** Squid result code: TCP_MISS, TCP_HIT, TCP_TUNNEL, TCP_DENIED, ... */
  resultCode: string;
  status: number;
  /** bytes sent to the client (head and body) */
  bytes: number;
  method: string;
  /** full URL, or host:port for CONNECT */
  url: string;
  user: string | null;
  /** Squid hierarchy code and peer: "HIER_DIRECT/127.0.0.1", "HIER_NONE/-" */
  hierarchy: string;
  contentType: string;
  referer?: string;
  userAgent?: string;
  /** HTTP version of the client's request ("1.1", "1.0"), for the CLF request line; default "1.1". */
  httpVersion?: string;
  sessionId: string;
}

export interface ProxyEventMap {
  'session-start': [Session];
  'session-end': [Session];
  access: [AccessRecord];
}

export class ProxyEvents extends EventEmitter<ProxyEventMap> {}
