/**
 * Child process of relay.test.ts: a tunnel handed to the splice thread whose outer sockets end at
 * once and hold nothing open (unref'd). The process must stay alive until the thread reports the
 * tunnel's end, as it would for a JavaScript relay; it prints that end.
 */
import net, { type AddressInfo, type Socket } from 'node:net';
import { relay } from '../../src/net/relay.js';

async function pair(): Promise<[Socket, Socket]> {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const near = net.connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, allowHalfOpen: true });
  const [far] = await Promise.all([accepted, new Promise((resolve) => near.once('connect', resolve))]);
  server.close();
  return [near, far];
}

const [client, proxyClient] = await pair();
const [proxyServer, origin] = await pair();
const done = relay(proxyClient, proxyServer, { idleMs: 0, mode: 'splice' });
for (const [s, data] of [
  [client, 'up'],
  [origin, 'down!'],
] as const) {
  s.on('error', () => {});
  s.resume();
  s.end(data);
  s.unref();
}
const r = await done;
process.stdout.write(`done ${r.result} ${r.up} ${r.down}\n`);
