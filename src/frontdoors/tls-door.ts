/**
 * TLS doors: `-PPORT/https` (an HTTP proxy reached over TLS, as browsers and curl's
 * `--proxy https://` know it) and `-PPORT/socks+tls` (SOCKS4/5 inside TLS, as stunnel'd SOCKS or
 * GOST's `socks5+tls`). The accepted socket is wrapped in a server-side TLS socket with the
 * CERTFILE=/KEYFILE= pair of the configuration in force (read at load, so a reload takes a
 * renewed certificate for new connections); once the handshake is done the door gets the TLS
 * socket as if it were the client's. The handshake is bounded by TIMEOUT=handshake; a failed one
 * is a `sockstap.log` line. These connections are relayed in JavaScript (native/splice.ts never
 * splices an encrypted socket) and the native accept path does not serve these listeners.
 */
import type { Socket } from 'node:net';
import tls from 'node:tls';
import type { Config } from '../config/types.js';
import type { Logger } from '../observe/log.js';

const contexts = new WeakMap<NonNullable<Config['doorTls']>, tls.SecureContext>();

function contextOf(config: Config): tls.SecureContext | null {
  const d = config.doorTls;
  if (!d) return null;
  let c = contexts.get(d);
  if (!c) {
    c = tls.createSecureContext({ cert: d.cert, key: d.key });
    contexts.set(d, c);
  }
  return c;
}

export function acceptTls(socket: Socket, config: Config, log: Logger, listen: string, then: (socket: Socket) => void): void {
  socket.on('error', () => {});
  const context = contextOf(config);
  const client = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
  if (!context) {
    socket.destroy();
    return;
  }
  const t = new tls.TLSSocket(socket, { isServer: true, secureContext: context, ALPNProtocols: ['http/1.1'] });
  let done = false;
  const timer = setTimeout(() => {
    if (done) return;
    done = true;
    log.info('TLS door handshake timed out', { client, listen, ms: config.timeouts.handshake });
    t.destroy();
  }, config.timeouts.handshake);
  timer.unref();
  t.on('error', (err: Error) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    log.info('TLS door handshake failed', { client, listen, error: err.message.slice(0, 200) });
    t.destroy();
  });
  t.once('secure', () => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    // Errors after this point are the door's (accept adds its own handler).
    t.removeAllListeners('error');
    then(t);
  });
  // Start reading (the listener accepts paused) without flowing: bytes after the handshake wait
  // in the TLS socket's buffer for the door.
  t.read(0);
}
