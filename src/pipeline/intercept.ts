/**
 * TLS interception of tapped tunnels (STLS=mitm, tls/intercept.ts) as the pipeline runs it: the
 * two TLS sessions of a tunnel whose ClientHello the peek holds, the cache-first variant that
 * answers from the cache before any server is dialed, STARTTLS inside the line taps, and the
 * names whose clients rejected the leaf (pinning), relayed untouched for a while.
 */
import type { Socket } from 'node:net';
import type { HttpCache } from '../cache/http-cache.js';
import { canonicalKey } from '../cache/policy.js';
import type { Config, HostPort, TapRule } from '../config/types.js';
import type { ExpectationRegistry } from '../core/expected.js';
import { ProxyError, toProxyError } from '../core/errors.js';
import type { Tunnel } from '../core/tunnel.js';
import { peekTunnel, type PeekResult } from '../net/peek.js';
import type { HttpTapContext } from '../taps/http/tap.js';
import type { TapContext } from '../taps/tap.js';
import type { CertificateAuthority } from '../tls/ca.js';
import { acceptClientTls, connectServerTls, PinnedNames, serveTlsFailurePage, stlsDecision } from '../tls/intercept.js';
import { isIP } from 'node:net';
import type { Accounting } from './accounting.js';
import type { Decider } from './decide.js';
import type { PipelineDeps } from './deps.js';
import type { Dialer } from './dial.js';
import { SNIFF_MAX_BYTES, tapFor } from './deps.js';

/** A close this soon after the TLS handshake, with no request, is a client refusing the leaf. */
const PINNING_CLOSE_MS = 1000;

export class Interceptor {
  /** SNIs whose clients rejected the interception leaf (pinning): relayed untouched for a while. */
  private readonly pinned = new PinnedNames();

  constructor(
    private readonly deps: PipelineDeps,
    private readonly dialer: Dialer,
    private readonly acct: Accounting,
    private readonly decider: Decider,
    private readonly expectations: ExpectationRegistry,
  ) {}

  /** A reload: names rejected before are tried again. */
  forget(): void {
    this.pinned.forget();
  }

  /**
   * STARTTLS/STLS in a line tap (SMTP, POP3, IMAP) under STLS=mitm: after the server accepted the
   * upgrade, TLS to the server (verified, named as the tunnel's host) and a leaf to the client,
   * and the tap goes on reading commands inside. Undefined when STLS does not intercept this
   * destination (the tap relays the rest, as without interception).
   */
  starttlsUpgrade(tunnel: Tunnel, config: Config): TapContext['upgradeTls'] {
    const ca = this.deps.ca?.() ?? null;
    const { session } = tunnel;
    if (!ca || stlsDecision(config.tls, { clientAddress: session.clientAddress, user: session.user, dst: tunnel.dst, sni: null }) !== 'mitm') return undefined;
    const name = tunnel.dst.host;
    if (this.pinned.has(name)) return undefined;
    const log = this.deps.log;
    return async (client, server) => {
      let upstream;
      try {
        upstream = await connectServerTls(server, { config, name, offerHttp: false, port: tunnel.dst.port, sessions: this.deps.runtime.tlsSessions });
      } catch (err) {
        const e = toProxyError(err);
        log.warn('starttls server refused, connection closed', { session: session.id, client: session.clientLabel, name, reason: e.message });
        session.result = 'EUPSTREAM';
        throw e;
      }
      const context = await ca.leafContext(name, upstream.altNames);
      const accepted = await acceptClientTls(client, context, { alpn: false, handshakeMs: config.timeouts.handshake });
      if (!accepted.ok) {
        upstream.socket.destroy();
        if (accepted.rejected && this.pinned.add(name)) {
          log.info('tls client rejected the interception certificate; its tunnels are relayed untouched for a while', {
            session: session.id,
            client: session.clientLabel,
            name,
            reason: accepted.reason,
          });
        }
        session.settle('EPROTO');
        throw new ProxyError('EPROTO', accepted.reason);
      }
      session.sections.tls = { sni: null, alpn: [], intercepted: true, subject: upstream.subject };
      return { client: accepted.socket, server: upstream.socket };
    };
  }

  /**
   * Whether an intercepted HTTPS tunnel to this destination may be answered from the cache with
   * no server: the rule taps tls, STLS=mitm covers the destination, which is a name (the client's
   * SNI will have to name it too) not remembered as pinned, and the cache holds a fresh https://
   * response under it.
   */
  httpsFromCache(tunnel: Tunnel, rule: TapRule, config: Config, cache: HttpCache | null): boolean {
    if (!cache || !rule.protocols.includes('tls') || !config.tls || !this.deps.ca?.()) return false;
    const dst = tunnel.dst;
    if (isIP(dst.host) !== 0 || this.pinned.has(dst.host)) return false;
    const session = tunnel.session;
    if (stlsDecision(config.tls, { clientAddress: session.clientAddress, user: session.user, dst, sni: null }) !== 'mitm') return false;
    const key = canonicalKey(`https://${dst.host}:${dst.port}/`);
    return key !== null && cache.hasFreshUnder(key.origin);
  }

  /**
   * TLS interception of a tapped tunnel whose ClientHello the peek holds, when the first STLS rule
   * that matches says mitm. False when it does not apply (the caller relays the TLS untouched):
   * no STLS rule or `-mitm`, no CA, a client offering ALPN without http/1.1, or a name whose
   * client rejected the leaf before. True when the tunnel was handled here, whatever the outcome.
   */
  async intercept(
    tunnel: Tunnel,
    rule: TapRule,
    config: Config,
    peek: PeekResult,
    dialed: Socket | null,
    cache: HttpCache | null,
  ): Promise<boolean> {
    const { session } = tunnel;
    const sni = peek.info.sni ?? null;
    const decision = stlsDecision(config.tls, { clientAddress: session.clientAddress, user: session.user, dst: tunnel.dst, sni });
    if (decision !== 'mitm') return false;
    const ca = this.deps.ca?.() ?? null;
    if (!ca) return false;
    const alpn = peek.info.alpn ?? [];
    const http11 = alpn.includes('http/1.1');
    // The tap speaks HTTP/1.1 only: a client that cannot is left alone rather than broken.
    if (alpn.length > 0 && !http11) return false;
    const name = sni ?? tunnel.dst.host;
    if (this.pinned.has(name)) return false;
    if (!this.acct.shapeClient(session, tunnel.socket, config, rule)) return (dialed?.destroy(), true);
    // Cache-first (httpsFromCache): the SNI names the destination and the cache can still answer
    // under it, so the leaf is issued from the SNI alone and the server is dialed only when needed.
    const fromCache =
      dialed === null &&
      cache !== null &&
      sni !== null &&
      sni.toLowerCase().replace(/\.$/, '') === tunnel.dst.host.toLowerCase().replace(/\.$/, '') &&
      this.httpsFromCache(tunnel, rule, config, cache);
    if (fromCache) return this.interceptFromCache(tunnel, rule, config, peek, cache, ca, name, http11);
    const server = dialed ?? (await this.dialer.dialLate(tunnel));
    if (!server) return true;
    const section = session.sections.tls as { intercepted: boolean; subject: string | null };
    const raw = tunnel.socket;
    const readBase = raw.bytesRead - raw.readableLength;
    const writtenBase = raw.bytesWritten;
    const log = this.deps.log;
    const handshakeMs = config.timeouts.handshake;

    let upstream: Awaited<ReturnType<typeof connectServerTls>> | null = null;
    let failure: string | null = null;
    try {
      upstream = await connectServerTls(server, { config, name, offerHttp: http11, port: tunnel.dst.port, sessions: this.deps.runtime.tlsSessions });
    } catch (err) {
      failure = toProxyError(err).message;
    }
    let context;
    try {
      context = await ca.leafContext(name, upstream?.altNames ?? []);
    } catch (err) {
      log.error('tls leaf certificate could not be issued', { session: session.id, name, error: err instanceof Error ? err.message : String(err) });
      upstream?.socket.destroy();
      server.destroy();
      raw.destroy();
      session.result = 'EUPSTREAM';
      return true;
    }
    const accepted = await acceptClientTls(raw, context, { alpn: http11, handshakeMs });
    // At the end of every path: the raw connection's bytes (TLS records included) are the
    // session's, and the raw socket is closed with its TLS session (a destroyed TLSSocket does not
    // always close the socket it wraps).
    const countBytes = (): void => {
      session.bytesUp = Math.max(session.bytesUp, raw.bytesRead - readBase);
      session.bytesDown = Math.max(session.bytesDown, raw.bytesWritten - writtenBase);
      raw.destroy();
    };
    const rejectedLeaf = (why: string): void => {
      if (this.pinned.add(name)) {
        log.info('tls client rejected the interception certificate; its tunnels are relayed untouched for a while', {
          session: session.id,
          client: session.clientLabel,
          name,
          reason: why,
        });
      }
    };
    if (!accepted.ok) {
      upstream?.socket.destroy();
      server.destroy();
      if (accepted.rejected) rejectedLeaf(accepted.reason);
      session.settle('EPROTO');
      countBytes();
      return true;
    }
    const client = accepted.socket;
    if (!upstream) {
      server.destroy();
      log.warn('tls server refused, the client gets a 502 page', {
        session: session.id,
        client: session.clientLabel,
        dst: `${tunnel.dst.host}:${tunnel.dst.port}`,
        name,
        reason: failure ?? 'unknown',
      });
      session.result = 'EUPSTREAM';
      tunnel.noteFailure?.('EUPSTREAM', failure ?? 'the server could not be reached over TLS');
      const authority = tunnel.dst.port === 443 ? name : `${name}:${tunnel.dst.port}`;
      await serveTlsFailurePage(client, { session, events: this.deps.events, authority, reason: failure ?? 'unknown', handshakeMs });
      countBytes();
      return true;
    }
    section.intercepted = true;
    section.subject = upstream.subject;

    const sniffMs = config.timeouts.sniff;
    const inner = await peekTunnel(client, upstream.socket, {
      timeoutMs: sniffMs,
      maxBytes: SNIFF_MAX_BYTES,
      portHint: tunnel.dst.port,
      want: new Set([...rule.protocols, 'http']),
      verdictMs: Math.max(sniffMs, handshakeMs),
      firstBytesMs: config.timeouts.idle,
    });
    if (inner.firstSpeaker === null && (inner.clientEnded || client.destroyed)) {
      // A close right after the handshake, with nothing asked: a client that pins its servers.
      // A connection opened ahead and closed unused later (a browser's preconnect) is not one.
      if (inner.waitedMs < PINNING_CLOSE_MS) rejectedLeaf('the client closed the connection right after the TLS handshake');
      section.intercepted = false;
      client.destroy();
      upstream.socket.destroy();
      countBytes();
      return true;
    }
    const ctx = this.httpsContext(tunnel, rule, config, peek, cache, name, client, upstream.socket);
    const tap = inner.proto === 'http' || rule.protocols.includes(inner.proto) ? tapFor(this.deps, inner.proto) : undefined;
    if (tap) await tap(ctx);
    else await this.acct.relayCounted(session, client, upstream.socket, config);
    countBytes();
    return true;
  }

  /** The tap context of an intercepted tunnel: the two TLS sessions, https://, TLS dials. */
  httpsContext(
    tunnel: Tunnel,
    rule: TapRule,
    config: Config,
    peek: PeekResult,
    cache: HttpCache | null,
    name: string,
    client: Socket,
    server: Socket | null,
  ): HttpTapContext {
    const { session } = tunnel;
    const dialTls = async (dst: HostPort): Promise<Socket> => {
      const s = await this.dialer.dialOwned(dst, session);
      const same = dst.host === tunnel.dst.host && dst.port === tunnel.dst.port;
      try {
        return (await connectServerTls(s, { config, name: same ? name : dst.host, offerHttp: true, port: dst.port, sessions: this.deps.runtime.tlsSessions })).socket;
      } catch (err) {
        s.destroy();
        throw err;
      }
    };
    return {
      session,
      client,
      server,
      dst: tunnel.dst,
      rule,
      info: peek.info,
      config,
      services: { events: this.deps.events, log: this.deps.log, cache, expectations: this.expectations, runtime: this.deps.runtime },
      scheme: 'https',
      dial: () => dialTls(tunnel.dst),
      dialTo: async (dst, scheme) => {
        if (scheme === 'https') return dialTls(dst);
        return this.dialer.dialOwned(dst, session);
      },
      authorize: async (dst) => void (await this.decider.authorize(session, ['tls', ...tunnel.tags], dst, rule)),
      relay: (c, s) => this.acct.relayCounted(session, c, s, config, rule),
      // No httpRoutes: an HTTP upstream would get https:// requests in the clear; the TLS goes
      // through dial()'s route (CONNECT through it) instead.
    };
  }

  /**
   * An intercepted tunnel answered cache-first: the door has replied, no server is dialed. The
   * leaf names the SNI alone (the name was verified when the cached entries were stored); the
   * HTTP tap dials the server over TLS, verified, only for a request the cache cannot answer.
   */
  async interceptFromCache(
    tunnel: Tunnel,
    rule: TapRule,
    config: Config,
    peek: PeekResult,
    cache: HttpCache,
    ca: CertificateAuthority,
    name: string,
    http11: boolean,
  ): Promise<boolean> {
    const { session } = tunnel;
    const raw = tunnel.socket;
    const readBase = raw.bytesRead - raw.readableLength;
    const writtenBase = raw.bytesWritten;
    // At the end of every path: the raw connection's bytes (TLS records included) are the
    // session's, and the raw socket is closed with its TLS session (a destroyed TLSSocket does not
    // always close the socket it wraps).
    const countBytes = (): void => {
      session.bytesUp = Math.max(session.bytesUp, raw.bytesRead - readBase);
      session.bytesDown = Math.max(session.bytesDown, raw.bytesWritten - writtenBase);
      raw.destroy();
    };
    let context;
    try {
      context = await ca.leafContext(name, [], true);
    } catch (err) {
      this.deps.log.error('tls leaf certificate could not be issued', { session: session.id, name, error: err instanceof Error ? err.message : String(err) });
      raw.destroy();
      session.result = 'EUPSTREAM';
      return true;
    }
    const accepted = await acceptClientTls(raw, context, { alpn: http11, handshakeMs: config.timeouts.handshake });
    if (!accepted.ok) {
      if (accepted.rejected && this.pinned.add(name)) {
        this.deps.log.info('tls client rejected the interception certificate; its tunnels are relayed untouched for a while', {
          session: session.id,
          client: session.clientLabel,
          name,
          reason: accepted.reason,
        });
      }
      session.settle('EPROTO');
      countBytes();
      return true;
    }
    const client = accepted.socket;
    const section = session.sections.tls as { intercepted: boolean; subject: string | null };
    section.intercepted = true;
    const sniffMs = config.timeouts.sniff;
    const inner = await peekTunnel(client, null, {
      timeoutMs: Math.max(sniffMs, config.timeouts.handshake),
      maxBytes: SNIFF_MAX_BYTES,
      portHint: tunnel.dst.port,
      want: new Set([...rule.protocols, 'http']),
    });
    const ctx = this.httpsContext(tunnel, rule, config, peek, cache, name, client, null);
    if (inner.proto === 'http') {
      await this.deps.http.tunnel(ctx);
    } else if (inner.firstSpeaker === null && (inner.clientEnded || client.destroyed)) {
      client.destroy();
    } else {
      // Not HTTP after all: the server is needed, over TLS, and the two sessions are relayed.
      let server: Socket;
      try {
        server = await ctx.dial();
      } catch (err) {
        const e = toProxyError(err);
        this.deps.log.info('connect failed', { session: session.id, client: session.clientLabel, dst: `${tunnel.dst.host}:${tunnel.dst.port}`, code: e.code, reason: e.message });
        session.result = e.code;
        client.destroy();
        countBytes();
        return true;
      }
      await this.acct.relayCounted(session, client, server, config);
    }
    countBytes();
    return true;
  }
}
