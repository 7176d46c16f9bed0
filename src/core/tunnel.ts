/**
 * The typed hand-over from a front door to the pipeline: who the client is, where it wants to go,
 * and how to answer it in its own protocol. Front doors build one after their handshake and never
 * dial; the pipeline decides, dials, and calls back exactly one of the reply functions.
 */
import type { Socket } from 'node:net';
import type { HostPort } from '../config/types.js';
import type { ProxyErrorCode } from './errors.js';
import type { Session, TunnelCommand } from './session.js';

export interface BoundAddress {
  address: string;
  port: number;
}

export interface Tunnel {
  session: Session;
  /** The client socket, paused, handshake consumed; bytes that followed the request unshifted. */
  socket: Socket;
  command: TunnelCommand;
  /** The destination as the client named it (name or IP literal). For UDP: the client's hint. */
  dst: HostPort;
  /**
   * Protocol tags PERMIT/REJECT protocol lists match: the door ("socks", "http") and the exact
   * front protocol ("socks4", "socks4a", "socks5", "connect", "tcprelay").
   */
  tags: readonly string[];
  /** CONNECT succeeded (bound = the proxy's outgoing address), or BIND's first reply. */
  replySuccess(bound: BoundAddress): void;
  /** BIND's second reply, naming the host that connected in. */
  replyBindPeer?(peer: BoundAddress): void;
  /** The door's failure reply for the code; the door then closes the client socket. */
  replyFailure(code: ProxyErrorCode, message: string): void;
  /**
   * A failure after replySuccess (a cache-first tunnel whose late dial failed, a stream refused
   * after the reply): the door cannot answer any more, but its own record of the tunnel (the HTTP
   * door's access.log line) carries the failure instead of a success. The pipeline closes the socket.
   */
  noteFailure?(code: ProxyErrorCode, message: string): void;
}
