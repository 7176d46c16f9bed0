/**
 * AUTHORIZER=-radius{HOST:PORT,SECRET}[,timeout=D,retries=N,nasid=NAME]: accounts checked by a
 * RADIUS server (RFC 2865) with a PAP Access-Request: User-Name, User-Password (hidden with the
 * shared secret, RFC 2865 §5.2), NAS-Identifier and a Message-Authenticator (RFC 3579 §3.2, which
 * current servers require). The packets are the `radius` package's; the UDP exchange is here:
 * the request is sent again (same identifier and authenticator) until `retries` sends
 * (default 3) have had their share of `timeout` (default 5 s). An Access-Accept whose Response
 * Authenticator checks out is a yes; its Filter-Id values are the user's groups (`group:NAME`
 * scopes); an Access-Reject is a no; silence fails closed (refused, not cached). Answers are
 * cached (AUTHTTL=, policy/auth-cache.ts). The secret and passwords are never logged.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import dgram from 'node:dgram';
import { isIP } from 'node:net';
import { createRequire } from 'node:module';
import type radiusModule from 'radius';
import { ConfigError } from '../config/types.js';
import { parseCount } from '../config/units.js';
import { authorizerOptions, authTimeout, CachedAccounts, type AuthAnswer } from './auth-cache.js';

/** The radius package, loaded the first time a -radius{} account is asked for (about 9 MiB). */
let radiusLoaded: typeof radiusModule | null = null;
function radiusCodec(): typeof radiusModule {
  return (radiusLoaded ??= createRequire(import.meta.url)('radius') as typeof radiusModule);
}

const DEFAULT_TIMEOUT_MS = 5_000;
const DEFAULT_RETRIES = 3;
/** RFC 2865 §5.2: User-Password carries at most 128 bytes. */
const MAX_PASSWORD_BYTES = 128;

export interface RadiusOptions {
  host: string;
  port: number;
  secret: string;
  timeoutMs: number;
  retries: number;
  nasId: string;
}

/** Body `HOST:PORT,SECRET` (`[v6]:PORT`; the secret is the rest, commas included). */
export function parseRadiusAuthorizer(body: string, options: string, param: string, _cwd: string): RadiusAccounts {
  const comma = body.indexOf(',');
  if (comma < 0) throw new ConfigError(param, 'expected -radius{HOST:PORT,SECRET}');
  const hp = body.slice(0, comma).trim();
  const secret = body.slice(comma + 1);
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(hp);
  if (!m) throw new ConfigError(param, `expected HOST:PORT (the RADIUS server, usually port 1812), got ${JSON.stringify(hp)}`);
  const host = m[1] ?? m[2]!;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw new ConfigError(param, 'port must be 1-65535');
  if (m[1] !== undefined && isIP(host) !== 6) throw new ConfigError(param, 'brackets are for IPv6 addresses');
  if (secret === '') throw new ConfigError(param, 'the shared secret is empty');
  const opts: RadiusOptions = { host, port, secret, timeoutMs: DEFAULT_TIMEOUT_MS, retries: DEFAULT_RETRIES, nasId: 'sockstap' };
  for (const { name, value, label } of authorizerOptions(options, param)) {
    if (name === 'timeout') {
      opts.timeoutMs = authTimeout(value, label);
    } else if (name === 'retries') {
      opts.retries = parseCount(value, label);
      if (!Number.isInteger(opts.retries) || opts.retries < 1 || opts.retries > 10) throw new ConfigError(label, 'expected a whole number from 1 to 10');
    } else if (name === 'nasid') {
      if (value === '' || value.length > 64) throw new ConfigError(label, 'expected a name of 1-64 characters');
      opts.nasId = value;
    } else throw new ConfigError(param, `unknown -radius{} option ${JSON.stringify(name)}; expected timeout=DURATION, retries=N or nasid=NAME`);
  }
  return new RadiusAccounts(opts);
}

/**
 * RFC 2865 §3 Response Authenticator (MD5 over the reply with the request's authenticator, then
 * the secret) and, when the reply carries one, its Message-Authenticator (RFC 3579 §3.2: HMAC-MD5
 * over the same bytes with that attribute's value zeroed). Servers before FreeRADIUS 3.2.5 send no
 * Message-Authenticator in replies, so its absence is accepted (the `radius` package's
 * verify_response demands it whenever the request had one).
 */
export function responseAuthentic(reply: Buffer, request: Buffer, secret: string): boolean {
  if (reply.length < 20 || reply.readUInt16BE(2) !== reply.length) return false;
  const copy = Buffer.from(reply);
  request.copy(copy, 4, 4, 20);
  const expected = createHash('md5').update(copy).update(secret, 'utf8').digest();
  if (!timingSafeEqual(expected, reply.subarray(4, 20))) return false;
  for (let i = 20; i + 2 <= copy.length; ) {
    const type = copy[i]!;
    const len = copy[i + 1]!;
    if (len < 2 || i + len > copy.length) return false;
    if (type === 80) {
      if (len !== 18) return false;
      const got = Buffer.from(copy.subarray(i + 2, i + 18));
      copy.fill(0, i + 2, i + 18);
      return timingSafeEqual(got, createHmac('md5', secret).update(copy).digest());
    }
    i += len;
  }
  return true;
}

export class RadiusAccounts extends CachedAccounts {
  constructor(readonly options: RadiusOptions) {
    const h = isIP(options.host) === 6 ? `[${options.host}]` : options.host;
    super(`-radius{${h}:${options.port},***}`);
  }

  protected override acceptable(user: string, password: string): boolean {
    return Buffer.byteLength(password) <= MAX_PASSWORD_BYTES && Buffer.byteLength(user) <= 253;
  }

  protected ask(user: string, password: string): Promise<AuthAnswer> {
    const o = this.options;
    const identifier = randomBytes(1)[0]!;
    const packet = radiusCodec().encode({
      code: 'Access-Request',
      secret: o.secret,
      identifier,
      attributes: [
        ['User-Name', user],
        ['User-Password', password],
        ['NAS-Identifier', o.nasId],
        ['Service-Type', 'Login-User'],
      ],
      add_message_authenticator: true,
    });
    return new Promise<AuthAnswer>((resolveAnswer) => {
      const socket = dgram.createSocket(isIP(o.host) === 6 ? 'udp6' : 'udp4');
      let done = false;
      let sends = 0;
      const finish = (a: AuthAnswer): void => {
        if (done) return;
        done = true;
        clearInterval(resend);
        clearTimeout(limit);
        socket.close();
        resolveAnswer(a);
      };
      const send = (): void => {
        if (sends >= o.retries) return;
        sends++;
        socket.send(packet, o.port, o.host, (err) => {
          if (err) {
            this.log?.warn('RADIUS request could not be sent: refused', { user: user.slice(0, 64), error: err.message });
            finish({ ok: false, undecided: true });
          }
        });
      };
      socket.on('error', (err) => {
        this.log?.warn('RADIUS socket error: refused', { user: user.slice(0, 64), error: err.message });
        finish({ ok: false, undecided: true });
      });
      socket.on('message', (msg, rinfo) => {
        if (rinfo.port !== o.port) return;
        let reply: ReturnType<typeof radiusModule.decode>;
        try {
          reply = radiusCodec().decode({ packet: msg, secret: o.secret });
        } catch {
          return;
        }
        if (reply.identifier !== identifier) return;
        if (!responseAuthentic(msg, packet, o.secret)) {
          this.log?.warn('RADIUS answer with a wrong authenticator (wrong secret?) ignored', { user: user.slice(0, 64) });
          return;
        }
        if (reply.code === 'Access-Accept') {
          const raw = (reply.attributes as Record<string, unknown>)['Filter-Id'];
          const groups = (Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]).map(String).filter((g) => g !== '');
          finish({ ok: true, groups });
        } else if (reply.code === 'Access-Reject') finish({ ok: false });
        else {
          this.log?.info('RADIUS answered neither Accept nor Reject: refused', { user: user.slice(0, 64), code: String(reply.code) });
          finish({ ok: false, undecided: true });
        }
      });
      const resend = setInterval(send, Math.max(1, Math.floor(o.timeoutMs / o.retries)));
      resend.unref();
      const limit = setTimeout(() => {
        this.log?.warn('RADIUS server did not answer in time: refused', { user: user.slice(0, 64), ms: o.timeoutMs });
        finish({ ok: false, undecided: true });
      }, o.timeoutMs);
      limit.unref();
      send();
    });
  }

}
