/**
 * What a sniffer answers about the bytes seen so far at the start of a tunnel: a sniffer is a pure
 * function of those bytes (and a port hint), so the same prefix always gives the same answer and
 * a final answer ('match' or 'no-match') never changes when more bytes arrive.
 */

/** Application protocols a sniffer can recognise inside a tunnel. */
export type TapProtocol = 'http' | 'http2' | 'tls' | 'ssh' | 'ftp' | 'smtp' | 'pop3' | 'imap' | 'nntp' | 'telnet';

/** What the first bytes tell about the session, for the tap and the session record. */
export interface SniffInfo {
  /** TLS ClientHello server_name, host_name type (RFC 6066 §3). */
  sni?: string;
  /** TLS ClientHello application_layer_protocol_negotiation list, in the client's order (RFC 7301 §3.1). */
  alpn?: string[];
  /** HTTP/1.x request method (RFC 9110 §9). */
  method?: string;
  /** HTTP/1.x request-target as sent (RFC 9112 §3.2). */
  target?: string;
  /** The greeting or identification line(s), CR LF removed, lines joined with '\n'. */
  banner?: string;
  /** A 220 greeting whose text names neither FTP nor SMTP; decided by the client's first command. */
  ambiguous?: 'ftp-or-smtp';
}

export type SniffVerdict<T = SniffInfo> =
  | { verdict: 'match'; proto: TapProtocol; info: T }
  | { verdict: 'need-more' }
  | { verdict: 'no-match' };

export const NEED_MORE: { verdict: 'need-more' } = Object.freeze({ verdict: 'need-more' });
export const NO_MATCH: { verdict: 'no-match' } = Object.freeze({ verdict: 'no-match' });

export function match<T>(proto: TapProtocol, info: T): SniffVerdict<T> {
  return { verdict: 'match', proto, info };
}

/** Protocols recognised from what the client sends first. */
export const CLIENT_FIRST: ReadonlySet<TapProtocol> = new Set<TapProtocol>(['http', 'http2', 'tls', 'ssh', 'telnet']);
/** Protocols recognised from the server's greeting, which the client waits for. */
export const SERVER_FIRST: ReadonlySet<TapProtocol> = new Set<TapProtocol>(['ftp', 'smtp', 'pop3', 'imap', 'nntp', 'ssh', 'telnet']);
