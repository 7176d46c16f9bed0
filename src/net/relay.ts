/**
 * Two-way relay between the client socket and the server socket: byte counts, half-close
 * honoured (a side that ends its sending half still receives everything), an idle timeout, and
 * both sides torn down together. No per-chunk allocation or logging.
 */
import type { Socket } from 'node:net';

export interface RelayOptions {
  /** Close both sides after this long with no byte in either direction; 0 = never. */
  idleMs: number;
}

export interface RelayResult {
  /** client → server bytes */
  up: number;
  /** server → client bytes */
  down: number;
  /** 'ok' when both sides ended cleanly, 'idle' on idle timeout, or an error code. */
  result: string;
}

export function relay(client: Socket, server: Socket, options: RelayOptions): Promise<RelayResult> {
  return new Promise((resolve) => {
    const upStart = server.bytesWritten;
    const downStart = server.bytesRead;
    let result = 'ok';
    let pending = 2;
    let idleTimer: NodeJS.Timeout | null = null;
    let lastUp = 0;
    let lastDown = 0;

    const finish = (): void => {
      if (idleTimer) clearInterval(idleTimer);
      idleTimer = null;
      client.destroy();
      server.destroy();
    };
    const onClose = (): void => {
      // One side closed outright: the other cannot be useful any more.
      finish();
      if (--pending === 0) {
        resolve({ up: server.bytesWritten - upStart, down: server.bytesRead - downStart, result });
      }
    };
    const onError = (err: NodeJS.ErrnoException): void => {
      if (result === 'ok') result = err.code ?? 'EUPSTREAM';
    };
    client.on('error', onError);
    server.on('error', onError);
    client.once('close', onClose);
    server.once('close', onClose);

    // pipe() ends the destination when the source ends: half-close forwarded as FIN.
    client.pipe(server);
    server.pipe(client);

    if (options.idleMs > 0) {
      // Sample byte counters instead of resetting a timer per chunk.
      const tick = Math.max(250, Math.min(options.idleMs / 4, 30_000));
      let idleSince = Date.now();
      idleTimer = setInterval(() => {
        const up = server.bytesWritten;
        const down = server.bytesRead;
        if (up !== lastUp || down !== lastDown) {
          lastUp = up;
          lastDown = down;
          idleSince = Date.now();
        } else if (Date.now() - idleSince >= options.idleMs) {
          result = 'idle';
          finish();
        }
      }, tick);
      idleTimer.unref();
    }
    client.resume();
    server.resume();
  });
}
