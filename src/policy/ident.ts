/**
 * RFC 1413 identification: ask the identd of the client's host which user owns the client's
 * connection to us. Used to check a SOCKS4 request's USERID (IDENT=do): replies 92 (identd not
 * reachable) and 93 (it names another user) exist for that.
 */
import { connect } from 'node:net';
import { ProxyError } from '../core/errors.js';

/** RFC 1413 §3: the well-known identd port. */
export const IDENT_PORT = 113;
/** RFC 1413 §6: a response line is at most 1000 characters (we add room for CR LF). */
const MAX_RESPONSE = 1002;

export interface IdentQuery {
  /** The client's address and port: the identd host and its "port-on-server". */
  clientAddress: string;
  clientPort: number;
  /** Our end of the client's connection: the "port-on-client" and the address to query from. */
  localAddress: string;
  localPort: number;
  timeoutMs: number;
  /** Overrides 113 (tests); else env SOCKSTAP_IDENT_PORT, else 113. */
  identPort?: number;
}

export type IdentResponse =
  | { kind: 'USERID'; serverPort: number; clientPort: number; opsys: string; user: string }
  | { kind: 'ERROR'; serverPort: number; clientPort: number; error: string };

/**
 * One response line without its CR LF (RFC 1413 §6):
 * `<port-on-server> , <port-on-client> : USERID : <opsys>[,<charset>] : <user-id>` or
 * `... : ERROR : <error-type>`. The user id is everything after the third colon (it may contain
 * colons); spaces around it are dropped. Null when the line is not a response.
 */
export function parseIdentResponse(line: string): IdentResponse | null {
  const m = /^\s*(\d{1,5})\s*,\s*(\d{1,5})\s*:\s*(USERID|ERROR)\s*:(.*)$/i.exec(line);
  if (!m) return null;
  const serverPort = Number(m[1]);
  const clientPort = Number(m[2]);
  const rest = m[4]!;
  if (m[3]!.toUpperCase() === 'ERROR') return { kind: 'ERROR', serverPort, clientPort, error: rest.trim() };
  const colon = rest.indexOf(':');
  if (colon < 0) return null;
  const opsys = rest.slice(0, colon).trim();
  const user = rest.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
  if (opsys === '' || user === '') return null;
  return { kind: 'USERID', serverPort, clientPort, opsys, user };
}

function identPortFor(opts: IdentQuery): number {
  if (opts.identPort !== undefined) return opts.identPort;
  const env = Number(process.env.SOCKSTAP_IDENT_PORT);
  return Number.isInteger(env) && env > 0 && env < 65536 ? env : IDENT_PORT;
}

/** The user id the client's identd gives for the connection; EIDENTUNREACH on any failure. */
export function queryIdent(opts: IdentQuery): Promise<string> {
  return new Promise((resolve, reject) => {
    const port = identPortFor(opts);
    const socket = connect({ host: opts.clientAddress, port, localAddress: opts.localAddress });
    let received = '';
    let settled = false;
    const done = (err: ProxyError | null, user?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(user!);
    };
    const timer = setTimeout(
      () => done(new ProxyError('EIDENTUNREACH', `identd at ${opts.clientAddress}:${port} did not answer in time`)),
      opts.timeoutMs,
    );
    socket.setEncoding('latin1');
    socket.on('connect', () => socket.write(`${opts.clientPort} , ${opts.localPort}\r\n`));
    socket.on('error', (err) => done(new ProxyError('EIDENTUNREACH', `identd at ${opts.clientAddress}:${port}: ${err.message}`, { cause: err })));
    socket.on('data', (chunk: string) => {
      received += chunk;
      const eol = received.indexOf('\n');
      if (eol < 0) {
        if (received.length > MAX_RESPONSE) done(new ProxyError('EIDENTUNREACH', 'identd response line too long'));
        return;
      }
      const line = received.slice(0, eol).replace(/\r$/, '');
      const r = parseIdentResponse(line);
      if (!r) return done(new ProxyError('EIDENTUNREACH', 'identd sent a malformed response'));
      if (r.serverPort !== opts.clientPort || r.clientPort !== opts.localPort) {
        return done(new ProxyError('EIDENTUNREACH', 'identd answered about another connection'));
      }
      if (r.kind === 'ERROR') return done(new ProxyError('EIDENTUNREACH', `identd error: ${r.error}`));
      done(null, r.user);
    });
    socket.on('end', () => done(new ProxyError('EIDENTUNREACH', 'identd closed without a response')));
  });
}
