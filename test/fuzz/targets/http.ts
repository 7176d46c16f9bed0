/**
 * HTTP/1 request heads: the request-line and HTTP/2-preface sniffers (src/sniff/http.ts), then, for
 * whatever Node's own parser (llhttp, which the HTTP tap and door use) accepts, sockstap's handling
 * of the head: the absolute-form target (src/taps/http/forward.ts), hop-by-hop removal, the parsed
 * header view and the body kind (src/taps/http/headers.ts). Bodies, chunked ones included, are
 * decoded by llhttp; the target checks that the body never exceeds the bytes sent.
 */
import { sniffClient, sniffHttp2Preface, sniffRequestLine } from '../../../src/sniff/index.js';
import { absoluteHttpTarget as absoluteTarget } from '../../../src/http1/authority.js';
import {
  appendVia,
  connectionOptions,
  headersFromRaw,
  HOP_BY_HOP_FIELDS,
  rawFromHeaders,
  requestBodyKind,
  withoutHopByHop,
} from '../../../src/taps/http/headers.js';
import { check, monotoneSniffer } from '../invariants.js';

export const maxLen = 9000;
export const dictionary = [
  'GET ',
  'POST ',
  'CONNECT ',
  ' HTTP/1.1\r\n',
  ' HTTP/1.0\r\n',
  'http://',
  'Host: ',
  'Connection: ',
  'keep-alive, x-drop',
  'Transfer-Encoding: chunked\r\n',
  'Content-Length: ',
  '\r\n\r\n',
  '\r\n',
  '0\r\n\r\n',
  ':8080',
  '[::1]',
  '@',
  '%2e%2e/',
  'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
];

export function seeds(): Buffer[] {
  return [
    'GET http://www.example.com/a?b=c HTTP/1.1\r\nHost: www.example.com\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n\r\n',
    'POST /upload HTTP/1.1\r\nHost: a:8080\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
    'PUT http://user:pw@[::1]:8080/x HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc',
    'GET / HTTP/1.1\nHost: a\n\n',
    'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
    'GET http://h/%2e%2e/x HTTP/1.1\r\nVia: 1.0 a\r\nTE: trailers\r\nUpgrade: h2c\r\n\r\n',
  ].map((s) => Buffer.from(s, 'latin1'));
}

// Node's parser binding, the one http.Server runs; `_http_common` is its long-standing home.
interface LlhttpParser {
  initialize(type: number, resource: object): void;
  execute(b: Buffer): number | Error;
  finish(): number | Error | undefined;
  close(): void;
  [k: number]: unknown;
}
const { HTTPParser } = process.getBuiltinModule('_http_common') as {
  HTTPParser: (new () => LlhttpParser) & { REQUEST: number; kOnHeaders: number; kOnHeadersComplete: number; kOnBody: number; kOnMessageComplete: number; kOnExecute: number };
};

interface Head {
  raw: string[];
  url: string;
  method: number;
}

function parseHeads(data: Buffer): { heads: Head[]; body: number } {
  const parser = new HTTPParser();
  parser.initialize(HTTPParser.REQUEST, {});
  const heads: Head[] = [];
  let pendingRaw: string[] = [];
  let pendingUrl = '';
  let body = 0;
  parser[HTTPParser.kOnHeaders] = (raw: string[], url: string) => {
    pendingRaw.push(...raw);
    pendingUrl += url;
  };
  parser[HTTPParser.kOnHeadersComplete] = (_maj: number, _min: number, raw: string[] | undefined, method: number, url: string | undefined) => {
    heads.push({ raw: [...pendingRaw, ...(raw ?? [])], url: pendingUrl + (url ?? ''), method });
    pendingRaw = [];
    pendingUrl = '';
    return 0;
  };
  parser[HTTPParser.kOnBody] = (b: Buffer) => {
    body += b.length;
  };
  parser[HTTPParser.kOnMessageComplete] = () => {};
  parser.execute(data);
  parser.finish();
  parser.close();
  return { heads, body };
}

export function fuzz(data: Buffer): void {
  const line = monotoneSniffer('sniffRequestLine', sniffRequestLine, data);
  if (line.verdict === 'match') {
    check(line.info.method !== undefined && line.info.method.length > 0 && line.info.target !== undefined && line.info.target.length > 0, 'a request line has a method and a target', line);
    // RFC 9112 §2.2: empty lines before the request line are skipped; then the method comes first.
    let start = 0;
    while (data[start] === 0x0d || data[start] === 0x0a) start++;
    check(data.subarray(start, start + line.info.method!.length).toString('latin1') === line.info.method, 'the method is the first bytes after any empty lines');
  }
  monotoneSniffer('sniffHttp2Preface', sniffHttp2Preface, data);
  monotoneSniffer('sniffClient', (b) => sniffClient(b, 80), data);

  const { heads, body } = parseHeads(data);
  check(body <= data.length, 'llhttp decoded more body than was sent', { body, length: data.length });
  for (const h of heads) {
    const t = absoluteTarget(h.url);
    if (t) {
      check(t.port >= 1 && t.port <= 65535 && t.path.startsWith('/'), 'an absolute target has a port and a path', { url: h.url, t });
      check(t.host === t.host.toLowerCase(), 'the host is lower-case', t);
      // No normalisation: the path is the request-target's own bytes ("/" added only when empty or "?...").
      check(h.url.includes(t.path) || t.path === '/' || (t.path.startsWith('/?') && h.url.includes(t.path.slice(1))), 'the path is kept as sent', { url: h.url, t });
    }
    const options = connectionOptions(h.raw);
    const kept = withoutHopByHop(h.raw);
    check(kept.length % 2 === 0, 'name/value pairs stay pairs');
    for (let i = 0; i < kept.length; i += 2) {
      const name = kept[i]!.toLowerCase();
      check(!HOP_BY_HOP_FIELDS.has(name) && !options.has(name), 'a hop-by-hop field was forwarded', { name, raw: h.raw });
    }
    appendVia(kept, '1.1', '1.1 sockstap');
    const parsed = headersFromRaw(kept);
    rawFromHeaders(parsed);
    const kind = requestBodyKind(parsed as { 'transfer-encoding'?: string; 'content-length'?: string });
    check(kind === 'none' || kind === 'length' || kind === 'chunked', 'a body kind');
  }
}
