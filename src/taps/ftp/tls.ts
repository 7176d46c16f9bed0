/**
 * FTP data connections under `PROT P` (RFC 4217 §9) when the control connection's AUTH TLS was
 * intercepted (STLS=mitm): the data connection is TLS on both sides too. The client gets the leaf
 * its control connection got (same name, same context, so a client that resumes its control
 * session on the data connection, as curl does, may); the server is asked to resume the control
 * connection's TLS session (RFC 4217 §10 lets servers require it: vsftpd's require_ssl_reuse)
 * and is verified as any intercepted server when it makes a full handshake instead. Both
 * handshakes run at once: some clients start theirs only after the transfer command's 150, and
 * some servers theirs as soon as the connection is accepted.
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { toProxyError } from '../../core/errors.js';
import { acceptClientTls, connectServerTls, leafContextOf } from '../../tls/intercept.js';
import type { TapContext } from '../tap.js';

/** The control connection's two TLS sessions (client side with the leaf, server side verified). */
export interface ControlTls {
  client: TLSSocket;
  server: TLSSocket;
}

/**
 * The data connection's two TLS sessions; on a failure (logged) both sockets are closed and
 * returned as they are, so the data relay records the transfer as failed.
 */
export async function protectData(
  ctx: TapContext,
  control: ControlTls,
  client: Socket,
  server: Socket,
): Promise<{ client: Socket; server: Socket }> {
  const context = leafContextOf(control.client);
  const log = ctx.services.log;
  const fail = (reason: string): { client: Socket; server: Socket } => {
    log.info('ftp data connection: TLS failed', { session: ctx.session.id, client: ctx.session.clientLabel, reason });
    client.destroy();
    server.destroy();
    return { client, server };
  };
  if (!context) return fail('the control connection has no interception leaf');
  const reuse = control.server.getSession();
  const [up, down] = await Promise.allSettled([
    connectServerTls(server, { config: ctx.config, name: ctx.dst.host, offerHttp: false, port: ctx.dst.port, sessions: ctx.services.runtime.tlsSessions, ...(reuse ? { reuse } : {}) }),
    acceptClientTls(client, context, { alpn: false, handshakeMs: ctx.config.timeouts.handshake }),
  ]);
  if (up.status === 'rejected') {
    if (down.status === 'fulfilled' && down.value.ok) down.value.socket.destroy();
    return fail(toProxyError(up.reason).message);
  }
  const accepted = down.status === 'fulfilled' ? down.value : { ok: false as const, rejected: false, reason: String(down.reason) };
  if (!accepted.ok) {
    up.value.socket.destroy();
    return fail(accepted.reason);
  }
  const tlsClient = accepted.socket;
  const tlsServer = up.value.socket;
  // A destroyed TLS session does not always close the socket it wraps.
  tlsClient.once('close', () => client.destroy());
  tlsServer.once('close', () => server.destroy());
  return { client: tlsClient, server: tlsServer };
}
