/**
 * The origin server of the namespace tests, run as its own process inside the server namespace:
 * `node --import tsx netns-origin.ts PORT`. It listens on every address (IPv4 and IPv6), serves a
 * cacheable page, and prints one JSON line per request with the remote address it saw, which is
 * how the SPOOF=client test tells the client's address from the proxy's.
 */
import http from 'node:http';

const port = Number(process.argv[2] ?? 80);
const server = http.createServer((req, res) => {
  const remote = req.socket.remoteAddress ?? '';
  process.stdout.write(`${JSON.stringify({ remote: remote.replace(/^::ffff:/, ''), url: req.url, host: req.headers.host })}\n`);
  const body = `page ${req.url} from the server namespace\n`;
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'cache-control': 'max-age=300' });
  res.end(body);
});
server.listen({ port, host: '::' }, () => process.stdout.write(`listening ${port}\n`));
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
