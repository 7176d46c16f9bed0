/**
 * The sniffers: pure functions of the first bytes of each direction (and a port hint) that answer
 * match / need-more / no-match. The peek (src/net/peek.ts) feeds them; taps never import them.
 */
import { sniffRequestLine, sniffHttp2Preface } from './http.js';
import { parseClientHello } from './tls.js';
import { sniffSshIdentification, sniffTelnetNegotiation } from './banner.js';
import { NEED_MORE, NO_MATCH, type SniffVerdict } from './types.js';

export type { SniffInfo, SniffVerdict, TapProtocol } from './types.js';
export { CLIENT_FIRST, SERVER_FIRST } from './types.js';
export { parseClientHello, MAX_CLIENT_HELLO } from './tls.js';
export { sniffRequestLine, sniffHttp2Preface, MAX_REQUEST_LINE, HTTP2_PREFACE } from './http.js';
export { sniffServer, resolveFtpOrSmtp, firstCommandLine, sniffSshIdentification, sniffTelnetNegotiation } from './banner.js';

/**
 * Client-first classifiers in priority order. Where two could accept the same bytes ("PRI * ..."
 * is also an HTTP/1 request line until its version; an SSH identification line could be a method
 * token), the earlier one wins, and a later one's match waits until every earlier one has said
 * no-match, so the answer for a prefix never changes with more bytes.
 */
const CLIENT_CLASSIFIERS: readonly ((bytes: Buffer) => SniffVerdict)[] = [
  parseClientHello,
  sniffHttp2Preface,
  sniffSshIdentification,
  sniffRequestLine,
  sniffTelnetNegotiation,
];

/**
 * The client's first bytes: TLS ClientHello (SNI, ALPN), HTTP/2 preface, SSH identification,
 * HTTP/1.x request line (method, target), Telnet negotiation. `portHint` never overrides the
 * bytes: every client-first protocol here is told by its own first bytes.
 */
export function sniffClient(bytes: Buffer, portHint: number): SniffVerdict {
  if (bytes.length === 0) return NEED_MORE;
  for (const classify of CLIENT_CLASSIFIERS) {
    const v = classify(bytes);
    if (v.verdict !== 'no-match') return v;
  }
  return NO_MATCH;
}
