/**
 * `sockstap demo`: a small local origin for the README's tour, so it runs on a machine with no
 * internet. On 127.0.0.1 (ports configurable, 0 = any free one):
 * - HTTP on 8000: a small cacheable site (`/`, `/style.css`, `/hello.txt`, `/big.bin` for shaping),
 * - FTP on 2121: an anonymous, read-only directory `/pub/` (passive mode: EPSV, PASV),
 * - a banner on 2525: a minimal SMTP server that greets first and accepts (and drops) mail.
 * The names the tour uses resolve through `HOSTS=` (printed at start). Everything is in memory,
 * every buffer is bounded, nothing is written to disk.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';

export const DEMO_NAMES = ['example.test', 'ftp.example.test', 'mail.example.test'] as const;
export const DEMO_PORTS = { http: 8000, ftp: 2121, smtp: 2525 } as const;

/** The `HOSTS=` setting that makes the demo's names resolve to `host`. */
export function demoHosts(host = '127.0.0.1'): string {
  return `HOSTS={${DEMO_NAMES.join(',')}}/${host}`;
}

const STARTED = new Date();
const BIG = Buffer.alloc(8 * 1024 * 1024, 'sockstap demo big.bin\n');

interface Page {
  type: string;
  body: Buffer;
}

function page(type: string, text: string | Buffer): Page {
  return { type, body: typeof text === 'string' ? Buffer.from(text) : text };
}

const SITE: Record<string, Page> = {
  '/': page(
    'text/html; charset=utf-8',
    `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>sockstap demo</title><link rel="stylesheet" href="/style.css"></head>
<body><h1>sockstap demo site</h1>
<p>This page is served by <code>sockstap demo</code> and may be cached for 5 minutes: fetch it twice
through the proxy and the second answer is a TCP_HIT in access.log.</p>
<ul><li><a href="/hello.txt">hello.txt</a></li><li><a href="/big.bin">big.bin</a> (8 MiB, for BANDWIDTH=)</li>
<li><a href="ftp://ftp.example.test:${DEMO_PORTS.ftp}/pub/">the FTP directory</a></li></ul>
</body></html>
`,
  ),
  '/style.css': page('text/css', 'body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }\n'),
  '/hello.txt': page('text/plain; charset=utf-8', 'Hello from the sockstap demo.\n'),
  '/big.bin': page('application/octet-stream', BIG),
};

const FTP_FILES: Record<string, Buffer> = {
  '/pub/README.txt': Buffer.from('The sockstap demo FTP directory. Fetch a file twice: the second comes from the cache.\n'),
  '/pub/hello.txt': Buffer.from('Hello over FTP from the sockstap demo.\n'),
  '/pub/data/numbers.txt': Buffer.from(Array.from({ length: 1000 }, (_, i) => String(i)).join('\n') + '\n'),
};
const FTP_DIRS = new Set(['/', '/pub', '/pub/data']);

function etag(body: Buffer): string {
  return `"${createHash('sha1').update(body).digest('hex').slice(0, 16)}"`;
}

function httpHandler(req: http.IncomingMessage, res: http.ServerResponse): void {
  const path = (req.url ?? '/').replace(/^[a-z]+:\/\/[^/]*/i, '').split('?')[0] ?? '/';
  const p = SITE[path];
  if (!p || (req.method !== 'GET' && req.method !== 'HEAD')) {
    res.writeHead(p ? 405 : 404, { 'Content-Type': 'text/plain', 'Cache-Control': 'no-store' });
    res.end(p ? 'only GET and HEAD\n' : 'sockstap demo: not found\n');
    return;
  }
  const tag = etag(p.body);
  const headers = {
    'Content-Type': p.type,
    'Cache-Control': 'public, max-age=300',
    ETag: tag,
    'Last-Modified': STARTED.toUTCString(),
  };
  if (req.headers['if-none-match'] === tag) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  res.writeHead(200, { ...headers, 'Content-Length': p.body.length });
  res.end(req.method === 'HEAD' ? undefined : p.body);
}

/** Read CRLF (or LF) lines from a socket, at most 4 KiB each; longer input closes it. */
function onLines(socket: Socket, handle: (line: string) => void): void {
  let buf = '';
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, '');
      buf = buf.slice(nl + 1);
      handle(line);
      if (socket.destroyed) return;
    }
    if (buf.length > 4096) socket.destroy();
  });
  socket.on('error', () => {});
  socket.setTimeout(120_000, () => socket.destroy());
}

function ftpResolve(cwd: string, arg: string): string {
  const parts = (arg.startsWith('/') ? arg : `${cwd}/${arg}`).split('/');
  const out: string[] = [];
  for (const part of parts) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return '/' + out.join('/');
}

function ftpEntries(dir: string): { name: string; dir: boolean; size: number }[] {
  const prefix = dir === '/' ? '/' : `${dir}/`;
  const out: { name: string; dir: boolean; size: number }[] = [];
  for (const d of FTP_DIRS) if (d !== dir && d.startsWith(prefix) && !d.slice(prefix.length).includes('/')) out.push({ name: d.slice(prefix.length), dir: true, size: 0 });
  for (const [f, body] of Object.entries(FTP_FILES)) {
    if (f.startsWith(prefix) && !f.slice(prefix.length).includes('/')) out.push({ name: f.slice(prefix.length), dir: false, size: body.length });
  }
  return out;
}

function mdtm(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

/** An anonymous read-only FTP server (RFC 959, RFC 2428 EPSV, RFC 3659 SIZE/MDTM/MLSD). */
function ftpSession(socket: Socket, host: string): void {
  let cwd = '/';
  let loggedIn = false;
  let passive: net.Server | null = null;
  let dataSocket: Promise<Socket> | null = null;
  const reply = (text: string): void => {
    if (!socket.destroyed) socket.write(`${text}\r\n`);
  };
  const closePassive = (): void => {
    passive?.close();
    passive = null;
  };
  const openPassive = (): Promise<number> =>
    new Promise((resolve, reject) => {
      closePassive();
      const server = net.createServer();
      passive = server;
      dataSocket = new Promise<Socket>((res, rej) => {
        const timer = setTimeout(() => rej(new Error('no data connection')), 30_000);
        server.once('connection', (s) => {
          clearTimeout(timer);
          server.close();
          s.on('error', () => {});
          res(s);
        });
      });
      dataSocket.catch(() => {});
      server.once('error', reject);
      server.listen(0, host, () => resolve((server.address() as AddressInfo).port));
    });
  const transfer = async (body: Buffer | string): Promise<void> => {
    if (!dataSocket) return reply('425 use PASV or EPSV first');
    const pending = dataSocket;
    dataSocket = null;
    reply('150 opening data connection');
    try {
      const s = await pending;
      s.end(body, () => reply('226 transfer complete'));
    } catch {
      reply('425 no data connection');
    }
  };
  onLines(socket, (line) => {
    const sp = line.indexOf(' ');
    const verb = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
    const arg = sp < 0 ? '' : line.slice(sp + 1);
    if (!loggedIn && !['USER', 'PASS', 'QUIT', 'FEAT', 'SYST', 'NOOP', 'AUTH'].includes(verb)) return reply('530 log in first');
    switch (verb) {
      case 'USER':
        return reply(arg.toLowerCase() === 'anonymous' || arg.toLowerCase() === 'ftp' ? '331 any password will do' : '530 anonymous only');
      case 'PASS':
        loggedIn = true;
        return reply('230 logged in, read only');
      case 'SYST':
        return reply('215 UNIX Type: L8');
      case 'FEAT':
        socket.write('211-Features:\r\n EPSV\r\n PASV\r\n SIZE\r\n MDTM\r\n MLST type*;size*;modify*;\r\n211 End\r\n');
        return;
      case 'NOOP':
        return reply('200 ok');
      case 'TYPE':
        return reply('200 type set');
      case 'PWD':
        return reply(`257 "${cwd}"`);
      case 'CWD':
      case 'CDUP': {
        const d = ftpResolve(cwd, verb === 'CDUP' ? '..' : arg);
        if (!FTP_DIRS.has(d)) return reply('550 no such directory');
        cwd = d;
        return reply('250 directory changed');
      }
      case 'EPSV':
        void openPassive().then(
          (port) => reply(`229 entering extended passive mode (|||${port}|)`),
          () => reply('425 cannot open a data port'),
        );
        return;
      case 'PASV':
        void openPassive().then(
          (port) => reply(`227 entering passive mode (${host.split('.').join(',')},${port >> 8},${port & 255})`),
          () => reply('425 cannot open a data port'),
        );
        return;
      case 'SIZE': {
        const f = FTP_FILES[ftpResolve(cwd, arg)];
        return reply(f ? `213 ${f.length}` : '550 not a file');
      }
      case 'MDTM':
        return reply(FTP_FILES[ftpResolve(cwd, arg)] ? `213 ${mdtm(STARTED)}` : '550 not a file');
      case 'RETR': {
        const f = FTP_FILES[ftpResolve(cwd, arg)];
        if (!f) return reply('550 no such file');
        void transfer(f);
        return;
      }
      case 'MLSD':
      case 'NLST':
      case 'LIST': {
        const d = ftpResolve(cwd, arg.startsWith('-') ? '' : arg);
        if (!FTP_DIRS.has(d)) return reply('550 no such directory');
        const entries = ftpEntries(d);
        const when = mdtm(STARTED);
        const lines = entries.map((e) =>
          verb === 'MLSD'
            ? `type=${e.dir ? 'dir' : 'file'};size=${e.size};modify=${when}; ${e.name}`
            : verb === 'NLST'
              ? e.name
              : `${e.dir ? 'drwxr-xr-x' : '-rw-r--r--'} 1 ftp ftp ${String(e.size).padStart(8)} Jan 01 00:00 ${e.name}`,
        );
        void transfer(lines.map((l) => `${l}\r\n`).join(''));
        return;
      }
      case 'STOR':
      case 'APPE':
      case 'DELE':
      case 'MKD':
      case 'RMD':
        return reply('550 the demo directory is read only');
      case 'QUIT':
        reply('221 goodbye');
        closePassive();
        socket.end();
        return;
      default:
        return reply('502 command not offered by the demo server'); // RFC 959 §4.2, RFC 5321 §4.2.3: reply code 502 for a command this server does not offer
    }
  });
  socket.on('close', closePassive);
  reply('220 sockstap demo FTP server ready');
}

/** A banner first, then a minimal SMTP dialogue (RFC 5321); messages are counted and dropped. */
function smtpSession(socket: Socket): void {
  let inData = false;
  let size = 0;
  const reply = (text: string): void => {
    if (!socket.destroyed) socket.write(`${text}\r\n`);
  };
  onLines(socket, (line) => {
    if (inData) {
      if (line === '.') {
        inData = false;
        reply(`250 accepted ${size} bytes (and dropped: this is the demo)`);
      } else if ((size += line.length + 2) > 1024 * 1024) {
        reply('552 too large for the demo');
        socket.end();
      }
      return;
    }
    const verb = line.slice(0, 4).toUpperCase();
    switch (verb) {
      case 'EHLO':
        socket.write('250-mail.example.test hello\r\n250-SIZE 1048576\r\n250 HELP\r\n');
        return;
      case 'HELO':
        return reply('250 mail.example.test');
      case 'MAIL':
      case 'RCPT':
      case 'RSET':
      case 'NOOP':
        return reply('250 ok');
      case 'VRFY':
        return reply('252 cannot verify, will accept');
      case 'HELP':
        return reply('214 sockstap demo banner server: EHLO, MAIL, RCPT, DATA, QUIT');
      case 'DATA':
        inData = true;
        size = 0;
        return reply('354 end with a dot on a line of its own');
      case 'QUIT':
        reply('221 bye');
        socket.end();
        return;
      default:
        return reply('502 command not offered by the demo server'); // RFC 959 §4.2, RFC 5321 §4.2.3: reply code 502 for a command this server does not offer
    }
  });
  reply('220 mail.example.test ESMTP sockstap demo banner');
}

export interface Demo {
  host: string;
  ports: { http: number; ftp: number; smtp: number };
  close(): Promise<void>;
}

function listen(server: net.Server, host: string, port: number, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`demo: cannot listen on ${host}:${port} (${what}): ${err.code === 'EADDRINUSE' ? 'address already in use' : err.message}`)),
    );
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}

export async function startDemo(options: { host?: string; ports?: Partial<Demo['ports']> } = {}): Promise<Demo> {
  const host = options.host ?? '127.0.0.1';
  const want = { ...DEMO_PORTS, ...options.ports };
  const sockets = new Set<Socket>();
  const track = (s: Socket): void => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  };
  const web = http.createServer(httpHandler);
  web.on('connection', track);
  const ftp = net.createServer((s) => {
    track(s);
    ftpSession(s, host);
  });
  const smtp = net.createServer((s) => {
    track(s);
    smtpSession(s);
  });
  const servers = [web, ftp, smtp];
  try {
    const ports = {
      http: await listen(web, host, want.http, 'http'),
      ftp: await listen(ftp, host, want.ftp, 'ftp'),
      smtp: await listen(smtp, host, want.smtp, 'banner'),
    };
    return {
      host,
      ports,
      close: async () => {
        for (const s of sockets) s.destroy();
        await Promise.all(servers.map((s) => new Promise<void>((r) => (s.listening ? s.close(() => r()) : r()))));
      },
    };
  } catch (err) {
    for (const s of servers) if (s.listening) s.close();
    throw err;
  }
}

/** `sockstap demo [HOST=ADDR] [HTTP=PORT] [FTP=PORT] [BANNER=PORT]`; runs until SIGINT/SIGTERM. */
export async function runDemo(argv: string[]): Promise<void> {
  const opts: { host?: string; ports: Partial<Demo['ports']> } = { ports: {} };
  for (const arg of argv) {
    const m = /^(HOST|HTTP|FTP|BANNER)=(.+)$/i.exec(arg);
    if (!m) throw new DemoArgError(`demo: unknown argument ${JSON.stringify(arg)}; expected HOST=ADDR, HTTP=PORT, FTP=PORT or BANNER=PORT`);
    const name = m[1]!.toUpperCase();
    if (name === 'HOST') {
      if (net.isIP(m[2]!) === 0) throw new DemoArgError(`demo: HOST: expected an IP address, got ${JSON.stringify(m[2])}`);
      opts.host = m[2]!;
      continue;
    }
    const port = Number(m[2]);
    if (!/^\d+$/.test(m[2]!) || port > 65535) throw new DemoArgError(`demo: ${name}: expected a port number, got ${JSON.stringify(m[2])}`);
    opts.ports[name === 'HTTP' ? 'http' : name === 'FTP' ? 'ftp' : 'smtp'] = port;
  }
  const demo = await startDemo(opts);
  const h = demo.host;
  process.stdout.write(
    `sockstap demo: http://example.test:${demo.ports.http}/ on ${h}:${demo.ports.http}, ` +
      `ftp://ftp.example.test:${demo.ports.ftp}/pub/ on ${h}:${demo.ports.ftp}, ` +
      `banner mail.example.test:${demo.ports.smtp} on ${h}:${demo.ports.smtp}\n` +
      `sockstap demo: run the proxy with these names: npm start -- '${demoHosts(h)}'\n`,
  );
  const stop = (): void => void demo.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

export class DemoArgError extends Error {}
