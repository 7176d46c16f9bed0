/**
 * The HTTP door's requests (not tunnels): absolute-form `http://` and `ftp://` requests, and
 * origin-form requests a MOUNT maps (reverse proxy). Checkpoint 2 for the target, BANDWIDTH=/
 * QUOTA= on the door's client connection, then the HTTP tap's entry (taps/http/cached.ts, the
 * same path as tapped HTTP) or sockstap's FTP client (taps/ftp/url.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config, HostPort } from '../config/types.js';
import { toProxyError } from '../core/errors.js';
import type { Session } from '../core/session.js';
import { serveFtpUrl } from '../taps/ftp/url.js';
import { serveHttp } from '../taps/http/cached.js';
import { absoluteTarget, denyHttp } from '../taps/http/forward.js';
import { PROXY_VIA } from '../taps/http/headers.js';
import { applyMounts, mountRequestOf } from '../taps/http/mount.js';
import type { Accounting } from './accounting.js';
import type { Decider } from './decide.js';
import type { PipelineDeps } from './deps.js';
import type { Dialer } from './dial.js';

export const VIA = PROXY_VIA;

export class HttpDoor {
  constructor(
    private readonly deps: PipelineDeps,
    private readonly dialer: Dialer,
    private readonly acct: Accounting,
    private readonly decider: Decider,
  ) {}

  /** `GET ftp://host/path` through the HTTP door: sockstap's own FTP client, cached like HTTP. */
  private fetchFtpUrl(req: IncomingMessage, res: ServerResponse, session: Session): void {
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      denyHttp(req, res, session, this.deps.events, 'EPROTO', 'the ftp:// URL is malformed');
      return;
    }
    const dst: HostPort = { host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port ? Number(url.port) : 21 };
    session.command = 'http';
    session.dst ??= dst;
    const config = this.deps.config();
    Promise.resolve()
      .then(() => {
        this.acct.acquireUser(session);
        return this.decider.authorize(session, ['http', 'ftp'], dst);
      })
      .then(
        () =>
          this.acct.shapeClient(session, req.socket, config, null) &&
          serveFtpUrl(req, res, {
            session,
            cache: config.cache.enabled ? this.deps.cache() : null,
            dial: (d) => this.dialer.dial(d, session),
            events: this.deps.events,
            log: this.deps.log,
            timeouts: config.timeouts,
          }),
        (err: unknown) => {
          const e = toProxyError(err);
          this.acct.refused(session, e, 'ftp url');
          denyHttp(req, res, session, this.deps.events, e.code, e.message);
        },
      );
  }

  forwardHttp(req: IncomingMessage, res: ServerResponse, session: Session): void {
    if (/^ftp:\/\//i.test(req.url ?? '')) {
      this.fetchFtpUrl(req, res, session);
      return;
    }
    // absoluteTarget keeps the path byte for byte (new URL() would normalise it).
    const target = absoluteTarget(req.url ?? '');
    if (!target) {
      denyHttp(req, res, session, this.deps.events, 'EPROTO', 'the HTTP door forwards absolute http:// URLs only');
      return;
    }
    this.serveForwarded(req, res, session, target, this.deps.config(), false);
  }

  /** Origin-form requests a MOUNT maps (reverse proxy): served like forwardHttp's, to the real URL. */
  reverseHttp(req: IncomingMessage, res: ServerResponse, session: Session, virtual: HostPort & { path: string }): boolean {
    const config = this.deps.config();
    const mounted = applyMounts(config.mounts, virtual, mountRequestOf(req, session, true));
    if (!mounted) return false;
    session.dst ??= { host: mounted.host, port: mounted.port };
    this.serveForwarded(req, res, session, virtual, config, true);
    return true;
  }

  /**
   * Checkpoint 2 for an absolute-form target, then serveHttp. An origin-form (`reverse`) target is
   * virtual: serveHttp maps it and passes the real destination through checkpoint 2 itself.
   */
  private serveForwarded(
    req: IncomingMessage,
    res: ServerResponse,
    session: Session,
    target: HostPort & { path: string },
    config: Config,
    reverse: boolean,
  ): void {
    const dst: HostPort = { host: target.host, port: target.port };
    session.command = 'http';
    session.dst ??= dst;
    const routesFor = this.dialer.httpRoutes(config, session);
    Promise.resolve()
      .then(() => {
        this.acct.acquireUser(session);
        return reverse ? undefined : this.decider.authorize(session, ['http'], dst);
      })
      .then(
        () =>
          // BANDWIDTH=/QUOTA= on the door's client connection, from its first request on.
          this.acct.shapeClient(session, req.socket, config, null) &&
          // The same path as tapped HTTP (taps/http/cached.ts): MOUNT, checkpoint 3, header
          // rules, the cache (CACHE=do) and access.log.
          serveHttp(req, res, {
            session,
            target,
            host: 'target',
            dial: (d) => this.dialer.dial(d, session),
            authorize: async (d) => void (await this.decider.authorize(session, ['http'], d)),
            cache: config.cache.enabled ? this.deps.cache() : null,
            config,
            events: this.deps.events,
            log: this.deps.log,
            via: VIA,
            timeouts: config.timeouts,
            ...(routesFor ? { routesFor } : {}),
            ...(reverse ? { originForm: true } : {}),
          }),
        (err: unknown) => {
          const e = toProxyError(err);
          this.acct.refused(session, e, 'http request');
          denyHttp(req, res, session, this.deps.events, e.code, e.message);
        },
      );
  }
}
