/**
 * BANDWIDTH= and QUOTA= under a TLS session that sockstap terminates (intercepted HTTPS, STARTTLS,
 * FTP AUTH TLS and PROT P data): Node's TLSSocket, given a net.Socket, reads and writes that
 * socket's handle directly, below the stream methods that net/shaped-socket.ts hooks, so the
 * intercepted bytes would be neither shaped nor counted. For a shaped socket, the TLS session is
 * made over this Duplex instead, which reads and writes the socket through its stream methods
 * (every TLS record passes the hooks: the wire bytes are shaped and metered, as for a relayed TLS
 * tunnel). Node then drives the TLS through its JavaScript stream adapter, which costs a little
 * CPU: only shaped sockets take this path.
 */
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { isShaped } from './shaped-socket.js';

export class ShapedFeed extends Duplex {
  constructor(readonly socket: Socket) {
    super({ allowHalfOpen: true });
    socket.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) socket.pause();
    });
    socket.once('end', () => this.push(null));
    socket.on('error', (err) => this.destroy(err));
    socket.once('close', () => {
      if (!this.destroyed) this.destroy();
    });
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.socket.destroyed) {
      cb(new Error('the client connection is closed'));
      return;
    }
    // The callback comes once the shaped socket has taken the chunk (after any wait its buckets set).
    this.socket.write(chunk, (err) => cb(err ?? null));
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.socket.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.socket.destroy();
    cb(err);
  }
}

/** What a TLS session over `socket` should wrap: the socket itself, or a ShapedFeed when it is shaped. */
export function tlsTransport(socket: Socket): Socket | Duplex {
  return isShaped(socket) ? new ShapedFeed(socket) : socket;
}
