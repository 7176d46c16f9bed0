/**
 * What the connect strategy costs a server-first protocol on a port it has never seen: the time
 * from the SOCKS5 CONNECT reply to the server's banner, under the default job (SOCKSTAP=all
 * CACHE=do), for the first connection to a destination and for the next ones, beside the same
 * through an untapped relay. `npx tsx bench/banner-wait.ts [ROUNDS]`; loopback only, bounded.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { SocksClient } from 'socks';
import { loadConfig } from '../src/config/load.js';
import { startSockstap } from '../src/sockstap.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const rounds = Number(process.argv[2] ?? 20);

async function bannerServer(): Promise<net.Server> {
  const s = net.createServer((c) => {
    c.on('error', () => {});
    c.end('220 bench.test FTP ready\r\n');
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return s;
}

async function waitBanner(proxyPort: number, port: number): Promise<number> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: proxyPort, type: 5 },
    command: 'connect',
    destination: { host: '127.0.0.1', port },
    timeout: 5000,
  });
  const t0 = performance.now();
  await new Promise<void>((r) => socket.once('data', () => r()));
  const ms = performance.now() - t0;
  socket.destroy();
  return ms;
}

const median = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-bench-'));
  const tapped = await startSockstap(loadConfig(['-P127.0.0.1:0/auto', 'SOCKSTAP=all', 'CACHE=do', `STATEDIR=${dir}/a`], { cwd: dir }));
  const plain = await startSockstap(loadConfig(['-P127.0.0.1:0/auto', `STATEDIR=${dir}/b`], { cwd: dir }));
  const first: number[] = [];
  const second: number[] = [];
  const relay: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const srv = await bannerServer();
    const port = (srv.address() as net.AddressInfo).port;
    first.push(await waitBanner(tapped.addresses()[0]!.port, port));
    second.push(await waitBanner(tapped.addresses()[0]!.port, port));
    relay.push(await waitBanner(plain.addresses()[0]!.port, port));
    await new Promise<void>((r) => srv.close(() => r()));
  }
  console.log(`banner wait after the CONNECT reply, median of ${rounds} (ms):`);
  console.log(`  tapped, never-seen port (first connection): ${median(first).toFixed(1)}`);
  console.log(`  tapped, the same destination again:         ${median(second).toFixed(1)}`);
  console.log(`  untapped relay:                             ${median(relay).toFixed(1)}`);
  await tapped.stop(0);
  await plain.stop(0);
  rmSync(dir, { recursive: true, force: true });
}
await main();
