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
import { refuseRequest } from '../http1/error-page.js';
import { PROXY_VIA } from '../taps/http/headers.js';
import type { HttpDoorRequest } from '../taps/http/tap.js';
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
      refuseRequest(req, res, session, this.deps.events, 'EPROTO', 'the ftp:// URL is malformed');
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
          refuseRequest(req, res, session, this.deps.events, e.code, e.message);
        },
      );
  }

  forwardHttp(req: IncomingMessage, res: ServerResponse, session: Session): void {
    if (/^ftp:\/\//i.test(req.url ?? '')) {
      this.fetchFtpUrl(req, res, session);
      return;
    }
    this.deps.http.serveDoorRequest(req, res, this.httpDoorRequest(req, session));
  }

  /** Origin-form requests a MOUNT maps (reverse proxy): served like forwardHttp's, to the real URL. */
  reverseHttp(req: IncomingMessage, res: ServerResponse, session: Session, virtual: HostPort & { path: string }): boolean {
    return this.deps.http.serveDoorRequest(req, res, this.httpDoorRequest(req, session), virtual);
  }

  /** What the HTTP tap needs of the pipeline for a request of the HTTP door. */
  private httpDoorRequest(req: IncomingMessage, session: Session): HttpDoorRequest {
    const config = this.deps.config();
    const routesFor = this.dialer.httpRoutes(config, session);
    return {
      session,
      config,
      cache: config.cache.enabled ? this.deps.cache() : null,
      admit: async (dst) => {
        this.acct.acquireUser(session);
        if (dst) await this.decider.authorize(session, ['http'], dst);
      },
      shape: () => this.acct.shapeClient(session, req.socket, config, null),
      dial: (d) => this.dialer.dial(d, session),
      authorize: async (d) => void (await this.decider.authorize(session, ['http'], d)),
      refused: (e) => this.acct.refused(session, e, 'http request'),
      ...(routesFor ? { routesFor } : {}),
    };
  }
}
