/**
 * `npm run soak`: one sockstap process on loopback under churn, idle tunnels, hostile clients and
 * reloads (SIGHUP) together for SOAK_SECONDS (default 600), then the same load against Dante
 * (Debian's dante-server) for comparison. Prints RSS, open fds (/proc/PID/fd), active handles
 * (sockstap's /metrics) and error counts at the start, after the first minute (or half-way, for a
 * run shorter than two minutes) and at the end, and again once every client is gone. Exits 1 when
 * a well-behaved client saw an error, or the sockstap process died.
 *
 * Every loop is bounded by the deadline and every wait by a timeout; every process this starts is
 * stopped by its PID. Traffic stays on 127.0.0.1.
 *
 * Environment: SOAK_SECONDS (600), SOAK_PROXIES (sockstap,dante), SOAK_IDLE idle tunnels (500),
 * SOAK_CHURN concurrent churn clients (8), SOAK_HOSTILE concurrent hostile clients (6),
 * SOAK_RELOAD_SECONDS between reloads (10), SOAK_TAP the SOCKSTAP value (all), SOAK_RATE the churn
 * clients' tunnels per second together (200; 0 = as fast as they go).
 *
 * Why a rate: Dante binds each outgoing socket to its external address before connecting, and a
 * bound port in TIME_WAIT cannot be taken again (tcp_tw_reuse applies to connect() alone), so
 * above about 28,000 / 60 s ≈ 470 tunnels per second it runs out of loopback ports within a
 * minute, and its figures would measure that. 200 per second is the same load for both.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SocksClient } from 'socks';
import { danteMissing, freePort, killChild, startDante, waitForPort, type Dante } from '../test/helpers/dante.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SECONDS = Number(process.env.SOAK_SECONDS ?? 600);
const PROXIES = (process.env.SOAK_PROXIES ?? 'sockstap,dante').split(',').filter(Boolean);
const IDLE = Number(process.env.SOAK_IDLE ?? 500);
const CHURN = Number(process.env.SOAK_CHURN ?? 8);
const HOSTILE = Number(process.env.SOAK_HOSTILE ?? 6);
const RELOAD_SECONDS = Number(process.env.SOAK_RELOAD_SECONDS ?? 10);
const TAP = process.env.SOAK_TAP ?? 'all';
const RATE = Number(process.env.SOAK_RATE ?? 200);
const OP_TIMEOUT = 10_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Origins: an echo server and an HTTP server (keep-alive off: each request is a new tunnel).

interface Origins {
  echoPort: number;
  httpPort: number;
  close(): Promise<void>;
}

async function startOrigins(): Promise<Origins> {
  const sockets = new Set<net.Socket>();
  const echo = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  const body = Buffer.alloc(16 * 1024, 'x');
  const web = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length, 'cache-control': 'no-store' });
    res.end(body);
  });
  web.keepAliveTimeout = 1000;
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  return {
    echoPort: (echo.address() as net.AddressInfo).port,
    httpPort: (web.address() as net.AddressInfo).port,
    async close() {
      for (const s of sockets) s.destroy();
      web.closeAllConnections();
      await new Promise((r) => echo.close(r));
      await new Promise((r) => web.close(r));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The proxies under test

interface Proxy {
  name: string;
  port: number;
  /** PIDs whose RSS and fds are added up (Dante forks children). */
  pids(): number[];
  /** Active handles and the V8 heap in use (sockstap's /metrics); nulls for Dante. */
  runtime(): Promise<{ handles: number | null; heapMiB: number | null }>;
  reload(): void;
  alive(): boolean;
  /** The last lines the proxy logged (printed when it died or a good client saw errors). */
  logTail(): string;
  stop(): Promise<void>;
}

async function startSockstap(): Promise<Proxy> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sockstap-soak-'));
  const port = await freePort();
  const adminPort = await freePort();
  const args = [
    '--import',
    'tsx',
    path.join(ROOT, 'src', 'cli.ts'),
    `-P127.0.0.1:${port}/auto`,
    `SOCKSTAP=${TAP}`,
    `STATEDIR=${dir}`,
    `ADMIN=127.0.0.1:${adminPort}`,
  ];
  const child: ChildProcess = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
  child.stderr!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
  await waitForPort(port, '127.0.0.1', 30_000, child);
  await waitForPort(adminPort, '127.0.0.1', 30_000, child);
  return {
    name: 'sockstap',
    port,
    pids: () => (child.pid ? [child.pid] : []),
    async runtime() {
      const text = await new Promise<string>((resolve) => {
        const req = http.get({ host: '127.0.0.1', port: adminPort, path: '/metrics', timeout: OP_TIMEOUT }, (res) => {
          let t = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (t += c));
          res.on('end', () => resolve(t));
        });
        req.on('error', () => resolve(''));
        req.on('timeout', () => req.destroy());
      });
      // The per-type gauges (nodejs_active_handles{type="Socket"} ...): /metrics drops prom-client's
      // *_total sum, which promtool refuses.
      const counts = [...text.matchAll(/^nodejs_active_handles\{[^}]*\} (\d+)/gm)].map((m) => Number(m[1]));
      const heap = /^nodejs_heap_size_used_bytes (\d+)/m.exec(text);
      return {
        handles: counts.length > 0 ? counts.reduce((a, b) => a + b, 0) : null,
        heapMiB: heap ? Math.round(Number(heap[1]) / 1048576) : null,
      };
    },
    reload: () => child.kill('SIGHUP'),
    alive: () => child.exitCode === null && child.signalCode === null,
    logTail: () => out.split('\n').slice(-15).join('\n'),
    async stop() {
      await killChild(child);
      if (child.exitCode !== 0 && child.exitCode !== null) console.log(`sockstap exited ${child.exitCode}; last output:\n${out.slice(-2000)}`);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** PID and every descendant, from /proc (Dante forks its negotiate/request/io children). */
function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(e));
      children.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number): void => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(root);
  return out;
}

async function startDanteProxy(): Promise<Proxy> {
  const d: Dante = await startDante({ auth: 'none' });
  // danted writes its pid file a moment after it starts listening.
  let pid = 0;
  for (let i = 0; i < 100 && !pid; i++) {
    try {
      pid = Number(readFileSync(path.join(d.dir, 'danted.pid'), 'utf8').trim());
    } catch {
      await sleep(50);
    }
  }
  if (!pid) {
    await d.stop();
    throw new Error('danted wrote no pid file');
  }
  return {
    name: 'dante',
    port: d.port,
    pids: () => processTree(pid),
    runtime: () => Promise.resolve({ handles: null, heapMiB: null }),
    // Dante logs every session end; what explains errors are its other lines.
    logTail: () =>
      d
        .log()
        .split('\n')
        .filter((l) => l !== '' && !/info: pass\(\d+\)/.test(l))
        .slice(-10)
        .join('\n'),
    reload: () => {
      try {
        process.kill(pid, 'SIGHUP');
      } catch {
        // exited: seen by alive()
      }
    },
    alive: () => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    },
    stop: () => d.stop(),
  };
}

// ---------------------------------------------------------------------------------------------
// Figures

/** Sockets in TIME_WAIT on this host (/proc/net/tcp{,6} state 06): the churn's loopback port use. */
function timeWait(): number {
  let n = 0;
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    try {
      for (const line of readFileSync(f, 'utf8').split('\n').slice(1)) if (line.trim().split(/\s+/)[3] === '06') n++;
    } catch {
      // no IPv6
    }
  }
  return n;
}

interface Sample {
  label: string;
  timeWait: number;
  rssKiB: number;
  fds: number;
  processes: number;
  handles: number | null;
  heapMiB: number | null;
}

function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

async function sample(p: Proxy, label: string): Promise<Sample> {
  const pids = p.pids();
  return {
    label,
    timeWait: timeWait(),
    rssKiB: pids.reduce((n, x) => n + rssKiB(x), 0),
    fds: pids.reduce((n, x) => n + fdCount(x), 0),
    processes: pids.length,
    ...(await p.runtime()),
  };
}

// ---------------------------------------------------------------------------------------------
// Load

interface Counters {
  churnOk: number;
  httpOk: number;
  idleOpen: number;
  idlePings: number;
  hostile: number;
  reloads: number;
  /** Errors seen by well-behaved clients (churn, HTTP, idle tunnels). */
  errors: number;
  errorSamples: string[];
}

function noteError(c: Counters, what: string, err: unknown): void {
  c.errors++;
  if (c.errorSamples.length < 10) c.errorSamples.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
}

async function socksConnect(proxyPort: number, port: number): Promise<net.Socket> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: proxyPort, type: 5 },
    command: 'connect',
    destination: { host: '127.0.0.1', port },
    timeout: OP_TIMEOUT,
  });
  return socket;
}

/** Writes `data` and reads the same number of bytes back (the echo), within OP_TIMEOUT. */
function echoRoundTrip(s: net.Socket, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    let n = 0;
    const timer = setTimeout(() => done(new Error(`echo timed out (${n} of ${data.length} bytes)`)), OP_TIMEOUT);
    const onData = (b: Buffer): void => {
      got.push(b);
      n += b.length;
      if (n >= data.length) done(Buffer.concat(got).subarray(0, data.length).equals(data) ? null : new Error('echo differs'));
    };
    const onClose = (): void => done(new Error(`tunnel closed (${n} of ${data.length} bytes back)`));
    const onError = (err: Error): void => done(err);
    const done = (err: Error | null): void => {
      clearTimeout(timer);
      s.off('data', onData);
      s.off('close', onClose);
      s.off('error', onError);
      if (err) reject(err);
      else resolve();
    };
    s.on('data', onData);
    s.once('close', onClose);
    s.once('error', onError);
    s.write(data);
  });
}

/** The churn clients' shared pace: when the next tunnel may start (SOAK_RATE per second together). */
let nextSlot = 0;
async function pace(): Promise<void> {
  if (RATE <= 0) return;
  const now = Date.now();
  const slot = Math.max(now, nextSlot);
  nextSlot = slot + 1000 / RATE;
  if (slot > now) await sleep(slot - now);
}

async function churnClient(proxyPort: number, o: Origins, c: Counters, until: number, k: number): Promise<void> {
  // Binary from its first byte, so the sniffers decide at once (a run of token characters would
  // look like the start of an HTTP method and wait for the sniff window).
  const data = Buffer.alloc(1024);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + k) & 0xff;
  data[0] = 0x00;
  for (let i = 0; Date.now() < until; i++) {
    await pace();
    if (Date.now() >= until) break;
    if (i % 4 === 3) {
      // An HTTP request through the tunnel (the HTTP tap takes it under SOCKSTAP=all).
      try {
        const s = await socksConnect(proxyPort, o.httpPort);
        const status = await new Promise<number>((resolve, reject) => {
          const req = http.request({ createConnection: () => s, host: '127.0.0.1', port: o.httpPort, path: `/soak/${k}/${i}`, timeout: OP_TIMEOUT }, (res) => {
            let bytes = 0;
            res.on('data', (b: Buffer) => (bytes += b.length));
            res.on('end', () => (bytes === 16 * 1024 ? resolve(res.statusCode ?? 0) : reject(new Error(`HTTP body ${bytes} bytes`))));
            res.on('error', reject);
          });
          req.on('timeout', () => req.destroy(new Error('HTTP request timed out')));
          req.on('error', reject);
          req.end();
        });
        s.destroy();
        if (status === 200) c.httpOk++;
        else noteError(c, 'http', new Error(`status ${status}`));
      } catch (err) {
        noteError(c, 'http', err);
        await sleep(50);
      }
      continue;
    }
    let s: net.Socket | null = null;
    try {
      s = await socksConnect(proxyPort, o.echoPort);
      await echoRoundTrip(s, data);
      c.churnOk++;
    } catch (err) {
      noteError(c, 'churn', err);
      await sleep(50); // a proxy that refuses everything is not hammered in a tight loop
    } finally {
      s?.destroy();
    }
  }
}

async function idleTunnels(proxyPort: number, o: Origins, c: Counters, until: number, stopped: Promise<void>): Promise<void> {
  const tunnels: net.Socket[] = [];
  for (let i = 0; i < IDLE && Date.now() < until; i++) {
    try {
      const s = await socksConnect(proxyPort, o.echoPort);
      s.on('error', () => {});
      tunnels.push(s);
      c.idleOpen++;
    } catch (err) {
      noteError(c, 'idle open', err);
    }
  }
  // Every 20 s each idle tunnel echoes one byte: it must have survived churn, hostiles and reloads.
  while (Date.now() < until) {
    await Promise.race([sleep(Math.min(20_000, Math.max(0, until - Date.now()))), stopped]);
    if (Date.now() >= until) break;
    const live = tunnels.filter((s) => !s.destroyed);
    for (let i = 0; i < live.length; i += 50) {
      await Promise.all(
        live.slice(i, i + 50).map(async (s) => {
          try {
            await echoRoundTrip(s, Buffer.from('p'));
            c.idlePings++;
          } catch (err) {
            noteError(c, 'idle tunnel', err);
            s.destroy();
          }
        }),
      );
    }
  }
  for (const s of tunnels) s.destroy();
}

/** One hostile connection: malformed SOCKS, a stalled handshake, a slowloris head, or silence. */
async function hostileOnce(proxyPort: number, o: Origins, kind: number): Promise<void> {
  const s = net.connect({ host: '127.0.0.1', port: proxyPort });
  s.on('error', () => {});
  s.on('data', () => {});
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  await new Promise<void>((r) => {
    s.once('connect', () => r());
    s.once('close', () => r());
  });
  const drip = async (bytes: Buffer, everyMs: number, maxMs: number): Promise<void> => {
    const until = Date.now() + maxMs;
    for (const b of bytes) {
      if (s.destroyed || Date.now() > until) return;
      s.write(Buffer.from([b]));
      await Promise.race([sleep(everyMs), closed]);
    }
  };
  switch (kind % 8) {
    case 0: // bad SOCKS version and garbage
      s.write(Buffer.from([0x06, 0xff, 0x00, 0x13, 0x37]));
      break;
    case 1: // SOCKS5 greeting that claims 255 methods and sends 3
      s.write(Buffer.from([0x05, 0xff, 0x00, 0x01, 0x02]));
      break;
    case 2: // SOCKS5 request with an unknown ATYP, after a valid greeting
      s.write(Buffer.from([0x05, 0x01, 0x00]));
      await sleep(50);
      s.write(Buffer.from([0x05, 0x01, 0x00, 0x09, 0x7f, 0, 0, 1, 0, 80]));
      break;
    case 3: // SOCKS4 user id that never ends
      s.write(Buffer.concat([Buffer.from([0x04, 0x01, 0x00, 0x50, 0x7f, 0x00, 0x00, 0x01]), Buffer.alloc(600, 0x61)]));
      break;
    case 4: // SOCKS5 request dripped one byte a second (a stalled handshake)
      await drip(Buffer.from([0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01, o.echoPort >> 8, o.echoPort & 255]), 1000, 8000);
      break;
    case 5: // slowloris HTTP head at the door: a field byte every 500 ms
      await drip(Buffer.from(`GET http://127.0.0.1:${o.httpPort}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${'z'.repeat(40)}`), 500, 8000);
      break;
    case 6: // slowloris HTTP head inside a SOCKS tunnel (the tap's head wait)
      {
        s.destroy();
        try {
          const t = await socksConnect(proxyPort, o.httpPort);
          t.on('error', () => {});
          const tClosed = new Promise<void>((r) => t.once('close', () => r()));
          const head = Buffer.from(`GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${'z'.repeat(40)}`);
          const until = Date.now() + 8000;
          for (const b of head) {
            if (t.destroyed || Date.now() > until) break;
            t.write(Buffer.from([b]));
            await Promise.race([sleep(500), tClosed]);
          }
          t.destroy();
        } catch {
          // a refusal is fine for a hostile client
        }
      }
      return;
    case 7: // connect and say nothing
      await Promise.race([sleep(5000), closed]);
      break;
  }
  await Promise.race([sleep(2000), closed]);
  s.destroy();
}

async function hostileClient(proxyPort: number, o: Origins, c: Counters, until: number, k: number): Promise<void> {
  for (let i = k; Date.now() < until; i += HOSTILE) {
    const t = Date.now();
    await hostileOnce(proxyPort, o, i);
    c.hostile++;
    if (Date.now() - t < 20) await sleep(50); // refused at once: the proxy is gone or full
  }
}

// ---------------------------------------------------------------------------------------------

function formatSamples(name: string, samples: Sample[]): string {
  const rows = samples.map(
    (s) =>
      `${name.padEnd(9)} ${s.label.padEnd(14)} ${String(Math.round(s.rssKiB / 1024)).padStart(7)} MiB ${String(s.fds).padStart(6)} fds ${String(s.processes).padStart(4)} proc ${s.handles === null ? '     -' : String(s.handles).padStart(6)} handles ${s.heapMiB === null ? '    -' : String(s.heapMiB).padStart(5)} MiB heap ${String(s.timeWait).padStart(7)} time-wait`,
  );
  return rows.join('\n');
}

async function soak(p: Proxy, o: Origins): Promise<{ samples: Sample[]; counters: Counters; died: boolean }> {
  const c: Counters = { churnOk: 0, httpOk: 0, idleOpen: 0, idlePings: 0, hostile: 0, reloads: 0, errors: 0, errorSamples: [] };
  const samples: Sample[] = [await sample(p, 'start')];
  const started = Date.now();
  const until = started + SECONDS * 1000;
  let stop: () => void = () => {};
  const stopped = new Promise<void>((r) => (stop = r));
  const firstMinute = Math.min(60, SECONDS / 2) * 1000;
  const sampler = (async () => {
    await Promise.race([sleep(firstMinute), stopped]);
    samples.push(await sample(p, firstMinute === 60_000 ? 'first minute' : `at ${Math.round(firstMinute / 1000)} s`));
    // Then every two minutes while the load runs, so a trend after the first minute shows.
    for (let at = firstMinute + 120_000; at < until - started - 60_000; at += 120_000) {
      let ended = false;
      await Promise.race([sleep(Math.max(0, started + at - Date.now())), stopped.then(() => (ended = true))]);
      if (ended) break;
      samples.push(await sample(p, `at ${Math.round(at / 1000)} s`));
    }
  })();
  const reloader = (async () => {
    while (Date.now() < until - RELOAD_SECONDS * 1000) {
      await Promise.race([sleep(RELOAD_SECONDS * 1000), stopped]);
      if (Date.now() >= until) break;
      p.reload();
      c.reloads++;
    }
  })();
  const progress = setInterval(() => {
    const t = Math.round((Date.now() - started) / 1000);
    console.log(`  ${p.name} ${t} s: churn ${c.churnOk}, http ${c.httpOk}, idle ${c.idleOpen} (pings ${c.idlePings}), hostile ${c.hostile}, reloads ${c.reloads}, errors ${c.errors}`);
  }, 30_000);
  const load = [
    idleTunnels(p.port, o, c, until, stopped),
    ...Array.from({ length: CHURN }, (_, k) => churnClient(p.port, o, c, until, k)),
    ...Array.from({ length: HOSTILE }, (_, k) => hostileClient(p.port, o, c, until, k)),
  ];
  // The end sample is taken under load, just before the clients stop.
  const endSample = (async () => {
    await sleep(Math.max(0, until - Date.now() - 1500));
    samples.push(await sample(p, 'end (loaded)'));
  })();
  await Promise.all([...load, endSample]);
  stop();
  clearInterval(progress);
  await Promise.all([sampler, reloader]);
  await sleep(3000);
  samples.push(await sample(p, 'end (drained)'));
  samples.sort((a, b) => ['start', 'first', 'at', 'end (loaded)', 'end (drained)'].findIndex((l) => a.label.startsWith(l)) - ['start', 'first', 'at', 'end (loaded)', 'end (drained)'].findIndex((l) => b.label.startsWith(l)));
  return { samples, counters: c, died: !p.alive() };
}

async function main(): Promise<void> {
  console.log(
    `soak: ${SECONDS} s per proxy (${PROXIES.join(', ')}); ${IDLE} idle tunnels, ${CHURN} churn clients (1 in 4 an HTTP request), ${HOSTILE} hostile clients, churn paced at ${RATE > 0 ? `${RATE} tunnels/s` : 'full speed'}, SIGHUP every ${RELOAD_SECONDS} s; sockstap with SOCKSTAP=${TAP} on an auto door`,
  );
  const o = await startOrigins();
  const results: string[] = [];
  let failed = false;
  try {
    for (const name of PROXIES) {
      if (name === 'dante' && danteMissing()) {
        results.push(`dante: skipped (${danteMissing()})`);
        continue;
      }
      // The previous proxy's churn leaves tens of thousands of loopback ports in TIME_WAIT for 60 s;
      // Dante binds its outgoing sockets to its external address first, and a bind cannot take a
      // port in TIME_WAIT, so it would start on an exhausted port range. Each proxy starts clean.
      for (let waited = 0; timeWait() > 2000 && waited < 120; waited++) {
        if (waited === 0) console.log(`  waiting for ${timeWait()} TIME_WAIT sockets to expire before ${name}`);
        await sleep(1000);
      }
      const p = name === 'sockstap' ? await startSockstap() : name === 'dante' ? await startDanteProxy() : null;
      if (!p) throw new Error(`soak: unknown proxy ${name} (sockstap, dante)`);
      try {
        const r = await soak(p, o);
        const c = r.counters;
        results.push(
          [
            formatSamples(name, r.samples),
            `${name.padEnd(9)} well-behaved: ${c.churnOk} echo tunnels, ${c.httpOk} HTTP requests, ${c.idleOpen} idle tunnels (${c.idlePings} pings); ${c.hostile} hostile connections; ${c.reloads} reloads; errors ${c.errors}${r.died ? '; THE PROXY DIED' : ''}`,
            ...c.errorSamples.map((e) => `${name.padEnd(9)}   ${e}`),
            ...(c.errors > 0 || r.died ? [`${name} log, last lines:`, p.logTail()] : []),
          ].join('\n'),
        );
        if (name === 'sockstap' && (c.errors > 0 || r.died)) failed = true;
      } finally {
        await p.stop();
      }
    }
  } finally {
    await o.close();
  }
  console.log(`\n${'proxy'.padEnd(9)} ${'when'.padEnd(14)} ${'RSS'.padStart(11)} ${'fds'.padStart(10)} ${'processes'.padStart(9)} ${'handles'.padStart(13)} ${'V8 heap'.padStart(14)} ${'TIME_WAIT'.padStart(17)}`);
  console.log(results.join('\n'));
  process.exitCode = failed ? 1 : 0;
}

await main();
