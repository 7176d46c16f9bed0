/**
 * TLS interception of a tapped tunnel (docs/tls-interception.md): STLS=mitm picks it, the peek
 * has the ClientHello (SNI, ALPN), the server is dialed. Then:
 *
 * 1. a TLS client handshake to the server with the client's SNI, offering only `http/1.1` (what
 *    the HTTP tap speaks), verified (TLSVERIFY=do: the system store plus TLSCAFILE, and the name);
 * 2. a TLS server handshake with the client on the same socket (the sniffed ClientHello was put
 *    back in front of it), with a leaf for the SNI carrying the server certificate's subject
 *    alternative names, signed by sockstap's CA;
 * 3. the two TLS sessions are handed back to the pipeline, which runs the tap for what they carry
 *    (HTTP: the HTTP tap with https:// URLs) or relays between them.
 *
 * When the server fails verification the client still gets a TLS session (a leaf for the SNI) that
 * carries an HTTP 502 page saying why, as Squid's ssl-bump does. A client that rejects the leaf
 * (alert bad_certificate / unknown_ca / certificate_unknown, or a close right after the handshake:
 * pinning) has its SNI remembered for a while (bounded), and its next tunnels are relayed untouched.
 */
import { readFileSync } from 'node:fs';
import { isIP, type Socket } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type { Config, HostPort, TlsConfig } from '../config/types.js';
import { ProxyError } from '../core/errors.js';
import type { Session } from '../core/session.js';
import type { ProxyEvents } from '../observe/events.js';
import type { Logger } from '../observe/log.js';
import { altNamesOf, type CertificateAuthority } from './ca.js';
import { firstMatch } from '../config/first-match.js';
import { tlsTransport } from '../net/shaped-feed.js';
import { markShapedBelow } from '../net/shaped-socket.js';

/** The leaf context each client-side TLS session was accepted with (FTP data connections reuse it). */
const leafContexts = new WeakMap<TLSSocket, tls.SecureContext>();
export function leafContextOf(socket: TLSSocket): tls.SecureContext | undefined {
  return leafContexts.get(socket);
}

/** What the first STLS rule that matches says; 'none' when no rule matches (or there are none). */
export function stlsDecision(
  tlsConfig: TlsConfig | undefined,
  q: { clientAddress: string; user: string | null; dst: HostPort; sni: string | null },
): 'mitm' | 'never' | 'none' {
  if (!tlsConfig || tlsConfig.rules.length === 0) return 'none';
  const user = q.user ?? undefined;
  const rule = firstMatch(
    tlsConfig.rules,
    (rule) =>
      rule.src.matches({ host: q.clientAddress, addresses: [q.clientAddress], user }) &&
      // The destination as the client named it, or the name its ClientHello asked for.
      (rule.dst.matches({ host: q.dst.host, port: q.dst.port, user }) || (q.sni !== null && rule.dst.matches({ host: q.sni, port: q.dst.port, user }))),
  );
  return rule ? rule.action : 'none';
}

/** SNIs whose clients rejected the leaf: relayed untouched for a while. Bounded, forgotten at reload. */
export class PinnedNames {
  private readonly names = new Map<string, number>();
  constructor(
    readonly maxEntries = 4096,
    readonly ttlMs = 60 * 60 * 1000,
  ) {}

  has(name: string, now = Date.now()): boolean {
    const key = name.toLowerCase();
    const at = this.names.get(key);
    if (at === undefined) return false;
    if (now - at >= this.ttlMs) {
      this.names.delete(key);
      return false;
    }
    return true;
  }

  /** True when the name was not remembered yet (the caller logs once). */
  add(name: string, now = Date.now()): boolean {
    const key = name.toLowerCase();
    const fresh = !this.has(key, now);
    this.names.delete(key);
    this.names.set(key, now);
    while (this.names.size > this.maxEntries) {
      const oldest = this.names.keys().next().value;
      if (oldest === undefined) break;
      this.names.delete(oldest);
    }
    return fresh;
  }

  forget(): void {
    this.names.clear();
  }
}

/** The trust anchors for servers: Node's bundled roots, the system bundle, TLSCAFILE. One per config. */
const trustContexts = new WeakMap<TlsConfig, tls.SecureContext>();
const SYSTEM_BUNDLES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', '/etc/ssl/cert.pem'];

export class TrustError extends Error {}

/** Reads TLSCAFILE and the system bundle; throws TrustError for an unreadable TLSCAFILE. */
export function trustContext(t: TlsConfig): tls.SecureContext {
  let ctx = trustContexts.get(t);
  if (ctx) return ctx;
  const ca: string[] = [...tls.rootCertificates];
  const system = process.env.SSL_CERT_FILE ? [process.env.SSL_CERT_FILE] : SYSTEM_BUNDLES;
  for (const file of system) {
    try {
      ca.push(readFileSync(file, 'utf8'));
      break;
    } catch {
      // not on this system
    }
  }
  if (t.trustFile) {
    let text: string;
    try {
      text = readFileSync(t.trustFile, 'utf8');
    } catch (err) {
      throw new TrustError(`TLSCAFILE: cannot read ${t.trustFile}: ${(err as Error).message}`);
    }
    if (!/-----BEGIN CERTIFICATE-----/.test(text)) throw new TrustError(`TLSCAFILE: ${t.trustFile} holds no PEM certificate`);
    ca.push(text);
  }
  ctx = tls.createSecureContext({ ca });
  trustContexts.set(t, ctx);
  return ctx;
}

/**
 * TLS sessions of servers, for resumption (bounded), with what the verified full handshake showed:
 * a resumed session carries no certificate, and was verified when it was made.
 */
interface KnownSession {
  session: Buffer;
  subject: string | null;
  altNames: ReturnType<typeof altNamesOf>;
  /** The trust anchors it was verified with: a reload with others verifies again. */
  trust: tls.SecureContext;
}
const MAX_SERVER_SESSIONS = 1024;

/** The servers' TLS sessions of one running instance (src/runtime.ts), by `name:port`; the oldest is forgotten first. */
export class ServerTlsSessions {
  private readonly known = new Map<string, KnownSession>();

  get(key: string): KnownSession | undefined {
    return this.known.get(key);
  }

  remember(key: string, session: KnownSession): void {
    this.known.delete(key);
    this.known.set(key, session);
    while (this.known.size > MAX_SERVER_SESSIONS) {
      const oldest = this.known.keys().next().value;
      if (oldest === undefined) break;
      this.known.delete(oldest);
    }
  }

  forget(key: string): void {
    this.known.delete(key);
  }
}

export interface ServerTls {
  socket: TLSSocket;
  /** The server certificate's subject (`CN=a.test, O=...`), null without a certificate. */
  subject: string | null;
  altNames: ReturnType<typeof altNamesOf>;
  alpn: string | null;
}

/**
 * TLS client handshake to the server over `raw` (connected): the client's SNI, ALPN `http/1.1`
 * when asked, verified when TLSVERIFY=do. Rejects with a ProxyError('EUPSTREAM') whose message
 * says why (the certificate's verification error, a name mismatch, the handshake's failure).
 */
export function connectServerTls(
  raw: Socket,
  o: {
    config: Config;
    name: string;
    offerHttp: boolean;
    port: number;
    sessions: ServerTlsSessions;
    /** A session to resume (an FTP data connection's control session's); not remembered. */
    reuse?: Buffer;
  },
): Promise<ServerTls> {
  const t = o.config.tls!;
  const servername = isIP(o.name) ? undefined : o.name;
  const sessionKey = `${o.name}:${o.port}`;
  return new Promise<ServerTls>((resolve, reject) => {
    let socket: TLSSocket;
    let trust: tls.SecureContext;
    try {
      trust = trustContext(t);
    } catch (err) {
      reject(new ProxyError('EUPSTREAM', (err as Error).message));
      return;
    }
    const known = o.sessions.get(sessionKey);
    const resumable = o.reuse
      ? { session: o.reuse, subject: null, altNames: [] as ReturnType<typeof altNamesOf>, trust }
      : known && known.trust === trust
        ? known
        : undefined;
    // Sessions that arrive before the verdict (TLS 1.2) wait for it; TLS 1.3 tickets come after.
    let verified: { subject: string | null; altNames: ReturnType<typeof altNamesOf> } | null = null;
    let early: Buffer | null = null;
    try {
      socket = tls.connect({
        socket: raw,
        ...(servername ? { servername } : {}),
        ...(o.offerHttp ? { ALPNProtocols: ['http/1.1'] } : {}),
        secureContext: trust,
        rejectUnauthorized: false,
        // The name is checked below, with the verification result.
        checkServerIdentity: () => undefined,
        ...(resumable ? { session: resumable.session } : {}),
      });
    } catch (err) {
      reject(new ProxyError('EUPSTREAM', `TLS to the server could not start: ${(err as Error).message}`));
      return;
    }
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ProxyError('ETIMEDOUT', `the server's TLS handshake took longer than ${o.config.timeouts.handshake} ms`));
    }, o.config.timeouts.handshake);
    timer.unref();
    socket.on('session', (s: Buffer) => {
      if (o.reuse) return;
      if (verified) o.sessions.remember(sessionKey, { session: s, ...verified, trust });
      else early = s;
    });
    const fail = (err: Error): void => {
      clearTimeout(timer);
      reject(new ProxyError('EUPSTREAM', `the server's TLS handshake failed: ${err.message}`));
    };
    socket.once('error', fail);
    socket.once('close', () => fail(new Error('the server closed the connection')));
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.removeListener('error', fail);
      socket.removeAllListeners('close');
      socket.on('error', () => {});
      const alpn = socket.alpnProtocol;
      const alpnName = typeof alpn === 'string' ? alpn : null;
      if (resumable && socket.isSessionReused()) {
        // Resumed: no certificate is sent again; the full handshake that made it was verified.
        verified = { subject: resumable.subject, altNames: resumable.altNames };
        resolve({ socket, ...verified, alpn: alpnName });
        return;
      }
      const peer = socket.getPeerCertificate(false);
      const hasCert = peer && Object.keys(peer).length > 0;
      if (t.verify) {
        let why: string | null = null;
        if (!socket.authorized) why = String(socket.authorizationError ?? 'the certificate is not trusted');
        else if (!hasCert) why = 'the server sent no certificate';
        else {
          const mismatch = tls.checkServerIdentity(o.name, peer);
          if (mismatch) why = mismatch.message;
        }
        if (why !== null) {
          socket.destroy();
          o.sessions.forget(sessionKey);
          reject(new ProxyError('EUPSTREAM', `the server's certificate for ${o.name} failed verification: ${explain(why)}`));
          return;
        }
      }
      let subject: string | null = null;
      if (hasCert && peer.raw) {
        try {
          subject = new X509Certificate(peer.raw).subject.split('\n').join(', ');
        } catch {
          subject = null;
        }
      }
      verified = { subject, altNames: altNamesOf(hasCert ? peer.subjectaltname : undefined) };
      if (early) o.sessions.remember(sessionKey, { session: early, ...verified, trust });
      resolve({ socket, ...verified, alpn: alpnName });
    });
  });
}

/** OpenSSL's verification codes (what Node gives) in words, for the 502 page and the log. */
const VERIFY_WORDS: Readonly<Record<string, string>> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: 'the certificate is self-signed and not trusted',
  SELF_SIGNED_CERT_IN_CHAIN: 'a self-signed certificate in the chain is not trusted',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'the certificate was signed by an unknown authority',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'the certificate was signed by an unknown authority',
  UNABLE_TO_GET_ISSUER_CERT: 'the certificate was signed by an unknown authority',
  CERT_HAS_EXPIRED: 'the certificate has expired',
  CERT_NOT_YET_VALID: 'the certificate is not valid yet',
  CERT_REVOKED: 'the certificate was revoked',
  CERT_UNTRUSTED: 'the certificate is not trusted',
};

function explain(why: string): string {
  const words = VERIFY_WORDS[why];
  return words ? `${words} (${why})` : why;
}

export type ClientTlsResult =
  | { ok: true; socket: TLSSocket }
  /** `rejected`: the client refused the leaf (an alert about the certificate). */
  | { ok: false; rejected: boolean; reason: string };

/** Alerts (as Node's OpenSSL error codes) a client sends when it does not accept our certificate. */
const REJECTING_ALERTS = /ALERT_(BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN|UNSUPPORTED_CERTIFICATE|ACCESS_DENIED|DECRYPT_ERROR)/;

/**
 * TLS server handshake with the client on `raw` (its ClientHello back in front of it), with the
 * leaf `context`. Resolves once the handshake is over or has failed (never rejects).
 */
export function acceptClientTls(raw: Socket, context: tls.SecureContext, o: { alpn: boolean; handshakeMs: number }): Promise<ClientTlsResult> {
  return new Promise((resolve) => {
    const writtenBefore = raw.bytesWritten;
    // BANDWIDTH=/QUOTA= on the client connection: the TLS records pass its hooks (net/shaped-feed.ts).
    const transport = tlsTransport(raw);
    const socket = new tls.TLSSocket(transport as Socket, {
      isServer: true,
      secureContext: context,
      ...(o.alpn ? { ALPNProtocols: ['http/1.1'] } : {}),
    });
    if (transport !== raw) markShapedBelow(socket);
    leafContexts.set(socket, context);
    let settled = false;
    const done = (r: ClientTlsResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const timer = setTimeout(() => {
      socket.destroy();
      done({ ok: false, rejected: false, reason: `the client's TLS handshake took longer than ${o.handshakeMs} ms` });
    }, o.handshakeMs);
    timer.unref();
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? '';
      const reset = code === 'ECONNRESET' && raw.bytesWritten > writtenBefore;
      done({ ok: false, rejected: REJECTING_ALERTS.test(code) || reset, reason: `${code || 'error'}: ${err.message}` });
      socket.destroy();
    });
    const closed = (): void => {
      // A close once our certificate went out, without finishing: the client did not accept it
      // (Node's client verifies after the server's Finished and just closes).
      const sawLeaf = raw.bytesWritten > writtenBefore;
      done({
        ok: false,
        rejected: sawLeaf,
        reason: sawLeaf ? 'the client closed the connection after receiving the certificate' : 'the client closed the connection during the TLS handshake',
      });
      socket.destroy();
    };
    socket.once('end', closed);
    socket.once('close', closed);
    socket.once('secure', () => {
      socket.removeListener('end', closed);
      socket.removeListener('close', closed);
      socket.removeAllListeners('error');
      socket.on('error', () => {});
      done({ ok: true, socket });
    });
  });
}

/**
 * The answer when interception cannot reach a trustworthy server: one HTTP 502 page inside the
 * client's TLS session (the first request's line is read, bounded), an access record, then close.
 */
export function serveTlsFailurePage(
  client: TLSSocket,
  o: { session: Session; events: ProxyEvents; authority: string; reason: string; handshakeMs: number },
): Promise<void> {
  return new Promise((resolve) => {
    const started = Date.now();
    let head = Buffer.alloc(0);
    let answered = false;
    const timer = setTimeout(() => answer(), o.handshakeMs);
    timer.unref();
    const answer = (): void => {
      if (answered) return;
      answered = true;
      clearTimeout(timer);
      client.removeAllListeners('data');
      const line = /^([A-Z]{1,20}) (\/[^ \r\n]*) HTTP\/1\.[01]\r?\n/.exec(head.toString('latin1'));
      const method = line ? line[1]! : 'NONE';
      const path = line ? line[2]! : '/';
      const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
      const body =
        `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>502 Bad Gateway</title></head><body>\n` +
        `<h1>502 Bad Gateway</h1>\n<p>sockstap could not open a trustworthy connection to <code>${esc(o.authority)}</code>.</p>\n` +
        `<p>${esc(o.reason)}</p>\n</body></html>\n`;
      const reply =
        `HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `Cache-Control: no-store\r\nConnection: close\r\n\r\n${method === 'HEAD' ? '' : body}`;
      if (client.writable) client.end(reply);
      else client.destroy();
      o.events.emit('access', {
        time: Date.now(),
        elapsedMs: Date.now() - started,
        clientAddress: o.session.clientAddress,
        resultCode: 'TCP_MISS',
        status: 502,
        bytes: Buffer.byteLength(reply),
        method,
        url: `https://${o.authority}${path}`,
        user: o.session.user,
        hierarchy: 'HIER_NONE/-',
        contentType: 'text/html',
        sessionId: o.session.id,
      });
      const closeTimer = setTimeout(() => client.destroy(), o.handshakeMs);
      closeTimer.unref();
    };
    client.on('data', (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      if (head.includes('\r\n\r\n') || head.includes('\n\n') || head.length > 16 * 1024) answer();
    });
    client.once('end', answer);
    client.once('close', () => {
      answer();
      resolve();
    });
    client.resume();
  });
}

/** Node's `alpnProtocol` as the session record's list, for the client side. */
export function offersHttp11(alpn: readonly string[]): boolean {
  return alpn.includes('http/1.1');
}

export type { Logger };
