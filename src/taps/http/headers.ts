/**
 * Header rules of a forwarding HTTP proxy, on Node's raw header lists (`rawHeaders`: name, value,
 * name, value, ...), so the case and order of fields and repeated fields survive the trip.
 *
 * Hop-by-hop fields (RFC 9110 §7.6.1) describe one connection, not the message: a proxy removes
 * them, and every field that `Connection` names, in both directions. `Via` (RFC 9110 §7.6.3) is
 * appended in both directions.
 */

import type { IncomingHttpHeaders } from 'node:http';
import type { HeaderEdits } from '../../config/types.js';

/** This proxy's Via entry (RFC 9110 §7.6.3); the version is replaced by the received one. */
export const PROXY_VIA = '1.1 sockstap';

/** Fields that never cross a proxy (RFC 9110 §7.6.1, plus the de facto Proxy-Connection). */
export const HOP_BY_HOP_FIELDS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** The field names a message's `Connection` fields list (RFC 9110 §7.6.1), lower-case. */
export function connectionOptions(rawHeaders: readonly string[]): Set<string> {
  const options = new Set<string>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() !== 'connection') continue;
    for (const token of rawHeaders[i + 1]!.split(',')) {
      const name = token.trim().toLowerCase();
      if (name) options.add(name);
    }
  }
  return options;
}

/** A copy of the raw list without hop-by-hop fields and without the fields `Connection` names. */
export function withoutHopByHop(rawHeaders: readonly string[]): string[] {
  const named = connectionOptions(rawHeaders);
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP_FIELDS.has(lower) || named.has(lower)) continue;
    out.push(name, rawHeaders[i + 1]!);
  }
  return out;
}

/** First value of a field in a raw list (case-insensitive name), or undefined. */
export function rawHeaderValue(rawHeaders: readonly string[], name: string): string | undefined {
  const lower = name.toLowerCase();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() === lower) return rawHeaders[i + 1];
  }
  return undefined;
}

/** Removes every field of that name and appends one with the value (in place). */
export function setRawHeader(rawHeaders: string[], name: string, value: string): void {
  removeRawHeader(rawHeaders, name);
  rawHeaders.push(name, value);
}

/** Removes every field of that name (in place). */
export function removeRawHeader(rawHeaders: string[], name: string): void {
  const lower = name.toLowerCase();
  for (let i = rawHeaders.length - 2; i >= 0; i -= 2) {
    if (rawHeaders[i]!.toLowerCase() === lower) rawHeaders.splice(i, 2);
  }
}

/**
 * The Via entry for one hop (RFC 9110 §7.6.3): the protocol version of the message as this proxy
 * received it, then the proxy's pseudonym. `via` is the configured entry, e.g. "1.1 sockstap";
 * its version is replaced by the received one, so an HTTP/1.0 client yields "1.0 sockstap".
 */
export function viaEntry(receivedVersion: string, via: string): string {
  // Made once per configured entry and version: every response of the hit path carries one.
  let known = viaEntries.get(via);
  if (!known) {
    const m = /^(?:HTTP\/)?\d\.\d\s+(.+)$/.exec(via.trim());
    known = { pseudonym: m ? m[1]! : via.trim(), byVersion: new Map() };
    // A handful of configured entries at most (PROXY_VIA, a configured one): bounded all the same.
    if (viaEntries.size >= 64) viaEntries.clear();
    viaEntries.set(via, known);
  }
  let entry = known.byVersion.get(receivedVersion);
  if (entry === undefined) {
    entry = `${receivedVersion} ${known.pseudonym}`;
    if (known.byVersion.size < 8) known.byVersion.set(receivedVersion, entry);
  }
  return entry;
}

/** Per configured Via entry: its pseudonym and the entries made from it (viaEntry). */
const viaEntries = new Map<string, { pseudonym: string; byVersion: Map<string, string> }>();

/**
 * Appends this hop to Via (in place): a new field line, which RFC 9110 §5.3 makes equivalent to
 * adding a comma-separated member to an existing one.
 */
export function appendVia(rawHeaders: string[], receivedVersion: string, via: string): void {
  rawHeaders.push('Via', viaEntry(receivedVersion, via));
}

/**
 * Whether a request carries a body, by RFC 9112 §6.3: Transfer-Encoding means a body of unknown
 * length; otherwise Content-Length decides; neither means none.
 */
export function requestBodyKind(headers: {
  'transfer-encoding'?: string | undefined;
  'content-length'?: string | undefined;
}): 'none' | 'length' | 'chunked' {
  if (headers['transfer-encoding'] !== undefined) return 'chunked';
  const length = headers['content-length'];
  if (length !== undefined && length !== '0') return 'length';
  return 'none';
}

/** The media type without parameters, as Squid logs it (`text/html; charset=utf-8` → `text/html`). */
export function mediaType(contentType: string | undefined): string {
  if (!contentType) return '';
  // The same few types again and again (every access record): the last answer is kept.
  if (contentType === lastContentType) return lastMediaType;
  const type = contentType.split(/[;\t ]/, 1)[0]!.trim();
  lastContentType = contentType;
  lastMediaType = type;
  return type;
}

let lastContentType = '';
let lastMediaType = '';

/** Applies header rules to a raw list (in place): each `set` replaces its field, then `remove`. */
export function applyHeaderEdits(rawHeaders: string[], edits: HeaderEdits): void {
  for (const [name, value] of edits.set) setRawHeader(rawHeaders, name, value);
  for (const name of edits.remove) removeRawHeader(rawHeaders, name);
}

/**
 * Node's parsed form of a raw list (lower-case names; repeated fields joined with ", " as RFC
 * 9110 §5.3 allows, Set-Cookie kept as a list), for the cache's view of an edited request.
 */
export function headersFromRaw(rawHeaders: readonly string[]): IncomingHttpHeaders {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    const value = rawHeaders[i + 1]!;
    const prev = out[name];
    if (name === 'set-cookie') out[name] = Array.isArray(prev) ? [...prev, value] : [value];
    else out[name] = prev === undefined ? value : `${String(prev)}, ${value}`;
  }
  return out as IncomingHttpHeaders;
}

/** A parsed header object back to a raw list (stored responses), hop-by-hop fields left out. */
export function rawFromHeaders(headers: IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP_FIELDS.has(name)) continue;
    if (Array.isArray(value)) for (const v of value) out.push(name, v);
    else out.push(name, String(value));
  }
  return out;
}
