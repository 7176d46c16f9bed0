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
  /** full URL, or host:port for CONNECT; after MOUNT, the real URL fetched */
  url: string;
  /** The URL as the client asked it, when a MOUNT rewrote it (access.log's trailing `vurl=` field). */
  mountedFrom?: string;
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

/** A connection turned away at accept, before it became a session (RELIABLE, MAXIMA). */
export interface RefusalRecord {
  /** ms since the epoch */
  time: number;
  /** the listener's door kind: auto, socks, http, tcprelay, ... */
  door: string;
  /** "host:port" of the client */
  client: string;
  /** the ProxyErrorCode of the refusal: EDENIED (RELIABLE), ELIMIT (MAXIMA), ... */
  code: string;
  /** what refused it, e.g. "RELIABLE" or "MAXIMA=conn:10" */
  by: string;
}

/** One FTP file transfer (RETR, STOR, STOU, APPE) seen by the FTP tap, for xferlog. */
export interface XferRecord {
  /** ms since the epoch when the transfer finished */
  time: number;
  durationMs: number;
  /** The FTP client's address (the proxy's client). */
  remoteHost: string;
  bytes: number;
  /** The path as the client named it, or as the server resolved it when known. */
  file: string;
  type: 'ascii' | 'binary';
  direction: 'download' | 'upload';
  /** xferlog(5) access mode: a anonymous, g guest, r real user. */
  accessMode: 'a' | 'g' | 'r';
  /** The FTP login name (never a password). */
  user: string | null;
  complete: boolean;
  /** "host:port" of the FTP server. */
  server: string;
  sessionId: string;
}

export interface ProxyEventMap {
  'session-start': [Session];
  'session-end': [Session];
  access: [AccessRecord];
  /** A connection refused at accept; it has no session and no session-end. */
  refused: [RefusalRecord];
  /**
   * The front door has just sent its success reply for a tunnel (CONNECT, BIND's first reply, UDP
   * ASSOCIATE): the accept-to-reply time is the relay latency the metrics show. Once per tunnel.
   */
  established: [Session];
  /** One FTP file transfer finished (xferlog). */
  xfer: [XferRecord];
  /** A log file could not be opened or written (its lines are kept and retried), or works again. */
  'log-file': [LogFileRecord];
}

/** A log file's health: `file` is its name under LOGDIR (access.log, sessions.jsonl, xferlog, sockstap.log). */
export type LogFileRecord =
  | { file: string; event: 'error'; code: string }
  | { file: string; event: 'recovered' }
  | { file: string; event: 'dropped'; lines: number };

export class ProxyEvents extends EventEmitter<ProxyEventMap> {}
