/**
 * Real servers for tests: an HTTP origin that counts accepted connections and requests, a TCP echo
 * server, and a runner for curl. All on loopback, port 0.
 */
import { execFile } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';

export interface Origin {
  server: http.Server;
  port: number;
  host: string;
  url(path?: string): string;
  accepts: number;
  requests: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders }>;
  close(): Promise<void>;
}

export type OriginHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** A page whose bytes every test can compare with. */
export const PAGE = Buffer.from('<html><body>' + 'sockstap-origin '.repeat(512) + '</body></html>\n');

const defaultHandler: OriginHandler = (req, res) => {
  if (req.url?.startsWith('/echo')) {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.end(Buffer.concat(chunks));
    });
    return;
  }
  res.writeHead(200, { 'content-type': 'text/html', 'content-length': PAGE.length });
  res.end(req.method === 'HEAD' ? undefined : PAGE);
};

export async function startOrigin(handler: OriginHandler = defaultHandler, host = '127.0.0.1'): Promise<Origin> {
  const server = http.createServer((req, res) => {
    origin.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    handler(req, res);
  });
  const origin: Origin = {
    server,
    port: 0,
    host,
    accepts: 0,
    requests: [],
    url(path = '/') {
      const h = host.includes(':') ? `[${host}]` : host;
      return `http://${h}:${origin.port}${path}`;
    },
    close() {
      return new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
  server.on('connection', () => origin.accepts++);
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  origin.port = (server.address() as net.AddressInfo).port;
  return origin;
}

export interface EchoServer {
  port: number;
  close(): Promise<void>;
}

export async function startEcho(host = '127.0.0.1'): Promise<EchoServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    s.pipe(s);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

export interface CurlResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Run curl with a time limit; never throws on a non-zero exit. */
export function curl(args: string[], timeoutMs = 15_000): Promise<CurlResult> {
  return new Promise((resolve) => {
    execFile(
      'curl',
      ['-sS', '--max-time', String(Math.ceil(timeoutMs / 1000)), ...args],
      { encoding: 'buffer', timeout: timeoutMs + 2000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
        resolve({ code, stdout, stderr: stderr.toString() });
      },
    );
  });
}
