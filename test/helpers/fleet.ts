/**
 * Servers and counters for the shared-limits tests (WORKERS=2, REDIS=): an origin that sends zeros
 * as fast as it may, one that sends a fixed number of bytes, a byte counter, and which process
 * holds a loopback TCP socket (to see which worker carried a connection).
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';

export const MiB = 1024 * 1024;
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface Endless {
  server: net.Server;
  port: number;
  /** Peer ports of accepted connections, in order (the proxy's local ports). */
  peers: number[];
  close(): void;
}

/** Sends zeros as fast as each connection takes them, until it closes; `size` bytes then FIN when given. */
export function startSender(size = Infinity): Promise<Endless> {
  const chunk = Buffer.alloc(64 * 1024);
  const peers: number[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    peers.push(s.remotePort ?? 0);
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.resume();
    let left = size;
    const pump = (): void => {
      while (!s.destroyed && left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (left <= 0) {
          s.end(chunk.subarray(0, n));
          return;
        }
        if (!s.write(chunk.subarray(0, n))) return;
      }
    };
    s.on('drain', pump);
    pump();
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        server,
        port: (server.address() as net.AddressInfo).port,
        peers,
        close: () => {
          for (const s of sockets) s.destroy();
          server.close();
        },
      }),
    ),
  );
}

/** Counts what a socket receives. */
export function counter(socket: net.Socket): { bytes: () => number; closed: Promise<void> } {
  let n = 0;
  socket.on('data', (d: Buffer) => {
    n += d.length;
  });
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  socket.resume();
  return { bytes: () => n, closed };
}

/** The pid among `pids` that holds the IPv4 loopback socket whose local port is `port`, or null. */
export function pidOfLocalPort(port: number, pids: readonly number[]): number | null {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  let inode: string | null = null;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1]?.endsWith(`:${hex}`)) {
      inode = f[9] ?? null;
      break;
    }
  }
  if (!inode || inode === '0') return null;
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${inode}]`) return pid;
      } catch {
        // closed meanwhile
      }
    }
  }
  return null;
}

/** Poll `fn` until it returns a truthy value, or throw `what` after timeoutMs. */
export async function eventually<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 10_000): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}
