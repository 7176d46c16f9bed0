/**
 * A minimal SOCKS5 server (no auth, CONNECT only) around src/net/relay.ts, so the relay can be
 * measured on its own, with the splice thread, the JavaScript fast path or pipe(), next to the
 * real proxy.
 *
 *   npx tsx bench/socks-relay.ts PORT [splice|fast|pipe]
 *
 * Loopback only; prints "ready PORT" on stdout once listening.
 */
import net, { type Socket } from 'node:net';
import { relay, type RelayMode } from '../src/net/relay.js';

const port = Number(process.argv[2] ?? 22091);
const mode: RelayMode = process.argv[3] === 'pipe' ? 'pipe' : process.argv[3] === 'fast' ? 'fast' : 'splice';
/** A handshake that does not finish in this time is closed. */
const HANDSHAKE_MS = 10_000;
/** Longest valid greeting + request: 2+255 and 4+1+255+2. */
const MAX_HANDSHAKE_BYTES = 600;

const REPLY_OK = Buffer.from([5, 0, 0, 1, 127, 0, 0, 1, 0, 0]);
const REPLY_FAIL = Buffer.from([5, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
const METHOD_NONE = Buffer.from([5, 0]);

/** Parses the request at `off`: the destination and where it ends, or null when incomplete. */
function parseRequest(b: Buffer, off: number): { host: string; port: number; end: number } | null | 'bad' {
  if (b.length < off + 5) return null;
  if (b[off] !== 5 || b[off + 1] !== 1) return 'bad';
  const atyp = b[off + 3];
  let host: string;
  let p: number;
  if (atyp === 1) {
    if (b.length < off + 10) return null;
    host = `${b[off + 4]}.${b[off + 5]}.${b[off + 6]}.${b[off + 7]}`;
    p = off + 8;
  } else if (atyp === 3) {
    const len = b[off + 4]!;
    if (b.length < off + 5 + len + 2) return null;
    host = b.toString('latin1', off + 5, off + 5 + len);
    p = off + 5 + len;
  } else if (atyp === 4) {
    if (b.length < off + 22) return null;
    const parts: string[] = [];
    for (let i = 0; i < 8; i++) parts.push(b.readUInt16BE(off + 4 + i * 2).toString(16));
    host = parts.join(':');
    p = off + 20;
  } else {
    return 'bad';
  }
  return { host, port: b.readUInt16BE(p), end: p + 2 };
}

function serve(client: Socket): void {
  client.on('error', () => {});
  let buf: Buffer = Buffer.alloc(0);
  let greeted = 0; // bytes of the greeting once answered
  const timer = setTimeout(() => client.destroy(), HANDSHAKE_MS);

  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    if (buf.length > MAX_HANDSHAKE_BYTES) return void client.destroy();
    if (!greeted) {
      if (buf.length < 2 || buf.length < 2 + buf[1]!) return;
      if (buf[0] !== 5 || !buf.subarray(2, 2 + buf[1]!).includes(0)) return void client.destroy();
      greeted = 2 + buf[1]!;
      client.write(METHOD_NONE);
    }
    const req = parseRequest(buf, greeted);
    if (req === null) return;
    clearTimeout(timer);
    if (req === 'bad') return void client.end(REPLY_FAIL);
    client.removeListener('data', onData);
    client.pause();
    if (buf.length > req.end) client.unshift(buf.subarray(req.end));
    const server = net.connect({ host: req.host, port: req.port, allowHalfOpen: true, noDelay: true });
    server.on('error', () => {});
    let connected = false;
    server.once('connect', () => {
      connected = true;
      client.write(REPLY_OK);
      void relay(client, server, { idleMs: 15 * 60_000, mode });
    });
    server.once('close', () => {
      if (!connected) client.end(REPLY_FAIL);
    });
  };
  client.on('data', onData);
  client.resume();
}

const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, serve);
server.listen(port, '127.0.0.1', () => process.stdout.write(`ready ${port}\n`));
const stop = (): void => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
