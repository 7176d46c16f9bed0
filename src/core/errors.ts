/**
 * Typed proxy errors with stable codes, and the one table that turns a code into each front
 * door's failure reply (SOCKS4 CD, SOCKS5 REP, HTTP status). Dialers, policy and the pipeline
 * throw `ProxyError`; only front doors translate, through `replyFor()`. docs/errors.md mirrors
 * this table for users.
 */

export type ProxyErrorCode =
  | 'EDENIED' // policy refused the source, destination, user or time (RELIABLE, PERMIT/REJECT)
  | 'EAUTH' // missing or wrong credentials
  | 'ELIMIT' // a MAXIMA connection limit was reached
  | 'EQUOTA' // a QUOTA= is used up for this period (new connections refused, a live one cut)
  | 'ECONNREFUSED' // the server refused the connection
  | 'EHOSTUNREACH' // no route to the host
  | 'ENETUNREACH' // no route to the network
  | 'ENOTFOUND' // the name does not resolve
  | 'ETIMEDOUT' // connect (or BIND accept) timed out
  | 'ECMDNOTSUP' // command not supported (unknown SOCKS CMD)
  | 'EATYPNOTSUP' // address type not supported
  | 'EPROTO' // malformed request
  | 'EIDENTUNREACH' // RFC 1413: the client's identd could not be reached (SOCKS4 92)
  | 'EIDENTMISMATCH' // RFC 1413: identd names another user (SOCKS4 93)
  | 'EBINDPEER' // BIND: the incoming connection is not from the expected host
  | 'EUPSTREAM' // the server connection failed after it was established, or any other failure
  | 'EUPSTREAMAUTH' // an upstream proxy refused sockstap's own credentials (SOCKS5 auth, HTTP 407)
  | 'ESHUTDOWN'; // the proxy is stopping

export class ProxyError extends Error {
  readonly code: ProxyErrorCode;
  constructor(code: ProxyErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'ProxyError';
  }
}

export interface Reply {
  /** SOCKS4 CD: 90 granted, 91 rejected/failed, 92 identd unreachable, 93 user ids differ. */
  socks4: 91 | 92 | 93;
  /** RFC 1928 §6 REP. */
  socks5: number;
  /** HTTP status for the HTTP door (CONNECT and absolute-form). */
  http: number;
}

export const REPLY_TABLE: Readonly<Record<ProxyErrorCode, Reply>> = {
  EDENIED: { socks4: 91, socks5: 0x02, http: 403 },
  EAUTH: { socks4: 91, socks5: 0x02, http: 407 },
  ELIMIT: { socks4: 91, socks5: 0x01, http: 503 },
  EQUOTA: { socks4: 91, socks5: 0x02, http: 403 },
  ECONNREFUSED: { socks4: 91, socks5: 0x05, http: 502 },
  EHOSTUNREACH: { socks4: 91, socks5: 0x04, http: 502 },
  ENETUNREACH: { socks4: 91, socks5: 0x03, http: 502 },
  ENOTFOUND: { socks4: 91, socks5: 0x04, http: 502 },
  ETIMEDOUT: { socks4: 91, socks5: 0x06, http: 504 },
  ECMDNOTSUP: { socks4: 91, socks5: 0x07, http: 405 },
  EATYPNOTSUP: { socks4: 91, socks5: 0x08, http: 400 },
  EPROTO: { socks4: 91, socks5: 0x01, http: 400 },
  EIDENTUNREACH: { socks4: 92, socks5: 0x02, http: 403 },
  EIDENTMISMATCH: { socks4: 93, socks5: 0x02, http: 403 },
  EBINDPEER: { socks4: 91, socks5: 0x02, http: 403 },
  EUPSTREAM: { socks4: 91, socks5: 0x01, http: 502 },
  EUPSTREAMAUTH: { socks4: 91, socks5: 0x01, http: 502 },
  ESHUTDOWN: { socks4: 91, socks5: 0x01, http: 503 },
};

export function replyFor(code: ProxyErrorCode): Reply {
  return REPLY_TABLE[code];
}

/** Map a Node system error (from net.connect, dns) to a stable proxy error code. */
export function codeFromSystemError(err: unknown): ProxyErrorCode {
  if (err instanceof ProxyError) return err.code;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ECONNREFUSED':
      return 'ECONNREFUSED';
    case 'EHOSTUNREACH':
    case 'EHOSTDOWN':
      return 'EHOSTUNREACH';
    case 'ENETUNREACH':
    case 'ENETDOWN':
    case 'EADDRNOTAVAIL':
    case 'EAFNOSUPPORT':
      return 'ENETUNREACH';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_NONAME':
    case 'EAI_NODATA':
      return 'ENOTFOUND';
    case 'ETIMEDOUT':
      return 'ETIMEDOUT';
    default:
      return 'EUPSTREAM';
  }
}

export function toProxyError(err: unknown): ProxyError {
  if (err instanceof ProxyError) return err;
  const code = codeFromSystemError(err);
  const message = err instanceof Error ? err.message : String(err);
  return new ProxyError(code, message, { cause: err });
}
