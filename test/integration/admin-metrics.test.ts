/**
 * GET /metrics: the text parses as Prometheus exposition format, and its counters match the
 * transfers this test makes through real SOCKS4/SOCKS5/HTTP clients (tunnels with known byte
 * counts, a refused destination, a refused port, a forwarded HTTP request, a refusal at accept).
 * GET /api/stats carries the same figures as JSON.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { nativeDoorAvailable } from '../../src/native/door.js';
import { startEcho, startOrigin, type EchoServer, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

// ---- a small parser of the Prometheus text exposition format (version 0.0.4) ----

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface Family {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf('=', i);
    assert.ok(eq > i, `label name expected: ${line}`);
    const name = text.slice(i, eq);
    assert.match(name, /^[a-zA-Z_][a-zA-Z0-9_]*$/, `label name: ${line}`);
    assert.equal(text[eq + 1], '"', `label value must be quoted: ${line}`);
    let j = eq + 2;
    let value = '';
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === '\\') {
        const n = text[++j];
        assert.ok(n === '\\' || n === '"' || n === 'n', `bad escape in ${line}`);
        value += n === 'n' ? '\n' : n;
      } else value += text[j];
    }
    assert.equal(text[j], '"', `unterminated label value: ${line}`);
    assert.ok(!(name in labels), `label ${name} twice: ${line}`);
    labels[name] = value;
    i = j + 1;
    if (text[i] === ',') i++;
    else assert.equal(i, text.length, `junk after label: ${line}`);
  }
  return labels;
}

function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  if (families.has(name)) return families.get(name);
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const f = families.get(name.slice(0, -suffix.length));
      if (f && (f.type === 'histogram' || (f.type === 'summary' && suffix !== '_bucket'))) return f;
    }
  }
  return undefined;
}

function parsePrometheus(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  assert.ok(text.endsWith('\n'), 'exposition ends with a newline');
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) continue; // other comments are allowed
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      assert.match(name, NAME, line);
      const f = families.get(name) ?? { name, type: 'untyped', help: '', samples: [] };
      if (kind === 'TYPE') {
        assert.ok(['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest), `type: ${line}`);
        assert.equal(f.samples.length, 0, `TYPE after samples: ${line}`);
        f.type = rest;
      } else f.help = rest;
      families.set(name, f);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(line);
    assert.ok(m, `not a sample line: ${JSON.stringify(line)}`);
    const [, name, labelText, valueText] = m as unknown as [string, string, string | undefined, string];
    // Values are Go ParseFloat numbers: "NaN" and "+Inf" in any letter case (prom-client writes "Nan").
    const special = valueText.toLowerCase();
    const value = special === '+inf' || special === 'inf' ? Infinity : special === '-inf' ? -Infinity : special === 'nan' ? NaN : Number(valueText);
    assert.ok(special === 'nan' || !Number.isNaN(value), `value: ${line}`);
    const family = familyOf(name, families);
    assert.ok(family, `sample without # TYPE: ${line}`);
    family.samples.push({ name, labels: parseLabels(labelText ?? '', line), value });
  }
  // Histograms: cumulative buckets that end in +Inf == _count.
  for (const f of families.values()) {
    if (f.type !== 'histogram') continue;
    const series = new Map<string, Sample[]>();
    for (const s of f.samples.filter((x) => x.name.endsWith('_bucket'))) {
      const { le, ...rest } = s.labels;
      assert.ok(le !== undefined, `bucket without le in ${f.name}`);
      const key = JSON.stringify(rest);
      series.set(key, [...(series.get(key) ?? []), s]);
    }
    for (const [key, buckets] of series) {
      for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, `${f.name} buckets grow`);
      const inf = buckets.at(-1)!;
      assert.equal(inf.labels.le, '+Inf');
      const count = f.samples.find((x) => x.name === `${f.name}_count` && JSON.stringify(x.labels) === key);
      assert.equal(count?.value, inf.value, `${f.name}_count == +Inf bucket`);
    }
  }
  return families;
}

/** The value of one series (0 when absent); `name` may be a histogram's `_count`. */
function value(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const f = familyOf(name, families);
  if (!f) return 0;
  const hit = f.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return hit.reduce((sum, s) => sum + s.value, 0);
}

// ---- the proxy under test ----

let echo: EchoServer;
let origin: Origin;
let proxy: TestProxy;
let base = '';
const auth = { authorization: `Basic ${Buffer.from('ops:metrics-pw').toString('base64')}` };

before(async () => {
  echo = await startEcho();
  origin = await startOrigin();
  proxy = await startProxy([
    '-P127.0.0.1:0/socks',
    '-P127.0.0.1:0/http',
    'ADMIN=127.0.0.1:0',
    'ADMINAUTH=-list{ops:metrics-pw}',
    'REJECT=*:blocked.example:*',
  ]);
  base = proxy.proxy.adminUrl!;
});
after(async () => {
  await proxy.stop();
  proxy.cleanup();
  await echo.close();
  await origin.close();
});

async function scrape(url = base): Promise<Map<string, Family>> {
  const r = await fetch(url + 'metrics', { headers: auth });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parsePrometheus(await r.text());
}

// any: the /api/stats document is read field by field; the assertions are its type check.
type Json = any;

async function stats(): Promise<Json> {
  const r = await fetch(base + 'api/stats', { headers: auth });
  assert.equal(r.status, 200);
  return (await r.json()) as Json;
}

/** Open a SOCKS tunnel to the echo server. */
async function openTunnel(type: 4 | 5): Promise<net.Socket> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: proxy.port('socks'), type },
    command: 'connect',
    destination: { host: '127.0.0.1', port: echo.port },
  });
  return socket;
}

/** Send `bytes` through the tunnel and wait for all of them to come back. */
async function echoThrough(socket: net.Socket, bytes: number): Promise<void> {
  let got = 0;
  await new Promise<void>((resolve, reject) => {
    const onData = (c: Buffer): void => {
      got += c.length;
      if (got >= bytes) {
        socket.off('data', onData);
        resolve();
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(Buffer.alloc(bytes, 0x61));
  });
  assert.equal(got, bytes);
}

async function finish(socket: net.Socket): Promise<void> {
  const closed = once(socket, 'close');
  socket.end();
  await closed;
}

/** Until every session the proxy holds has written its end (bounded). */
async function settle(): Promise<void> {
  for (let i = 0; i < 500 && proxy.proxy.sessions.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(proxy.proxy.sessions.size, 0, 'sessions still live');
}

const SIZES = [10_000, 20_000, 30_000];
const SENT = SIZES.reduce((a, b) => a + b, 0);

describe('GET /metrics', () => {
  test('needs ADMINAUTH like everything else', async () => {
    assert.equal((await fetch(base + 'metrics')).status, 401);
  });

  test('counts tunnels, bytes, refusals, errors and HTTP requests as they happened', async () => {
    const before = await scrape();
    assert.equal(value(before, 'sockstap_connections_total'), 0, 'nothing counted before any traffic');
    for (const n of SIZES) {
      const s = await openTunnel(5);
      await echoThrough(s, n);
      await finish(s);
    }
    const s4 = await openTunnel(4);
    await echoThrough(s4, 1000);
    await finish(s4);

    // A destination REJECT names: SOCKS5 refusal (EDENIED).
    await assert.rejects(
      SocksClient.createConnection({
        proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5 },
        command: 'connect',
        destination: { host: 'blocked.example', port: 80 },
      }),
    );
    // A port nobody listens on: ECONNREFUSED.
    const closedPort = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    await assert.rejects(
      SocksClient.createConnection({
        proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5 },
        command: 'connect',
        destination: { host: '127.0.0.1', port: closedPort },
      }),
    );
    // One forwarded HTTP request (absolute-form) through the HTTP door: TCP_MISS.
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: proxy.port('http'), path: origin.url('/page'), agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(status, 200);
    await settle();

    const m = await scrape();
    assert.equal(value(m, 'sockstap_connections_total', { door: 'socks5' }), 5);
    assert.equal(value(m, 'sockstap_connections_total', { door: 'socks4' }), 1);
    assert.equal(value(m, 'sockstap_connections_total', { door: 'http' }), 1);
    assert.equal(value(m, 'sockstap_connections_ended_total', { door: 'socks5', proto: 'raw' }), 5);
    assert.equal(value(m, 'sockstap_connections_live'), 0);

    // The relayed bytes: at least what was sent, at most that plus the SOCKS handshakes.
    const up5 = value(m, 'sockstap_bytes_total', { direction: 'up', door: 'socks5' });
    const down5 = value(m, 'sockstap_bytes_total', { direction: 'down', door: 'socks5' });
    assert.ok(up5 >= SENT && up5 <= SENT + 5 * 64, `up ${up5} for ${SENT} sent`);
    assert.ok(down5 >= SENT && down5 <= SENT + 5 * 64, `down ${down5} for ${SENT} echoed`);
    const up4 = value(m, 'sockstap_bytes_total', { direction: 'up', door: 'socks4' });
    assert.ok(up4 >= 1000 && up4 <= 1000 + 64, `socks4 up ${up4}`);
    assert.ok(value(m, 'sockstap_bytes_total', { direction: 'down', door: 'http' }) > 8000, 'the HTTP page went down');
    assert.ok(value(m, 'sockstap_protocol_bytes_total', { direction: 'up', proto: 'raw' }) >= SENT + 1000);

    assert.equal(value(m, 'sockstap_refusals_total', { door: 'socks5', code: 'EDENIED' }), 1);
    assert.equal(value(m, 'sockstap_refusals_total'), 1);
    assert.equal(value(m, 'sockstap_errors_total', { code: 'ECONNREFUSED' }), 1);
    assert.equal(value(m, 'sockstap_errors_total'), 1);
    // Only tunnels that were established were sniffed: 3 SOCKS5 + 1 SOCKS4, nothing tapped.
    assert.equal(value(m, 'sockstap_sniff_outcomes_total', { proto: 'raw' }), 4);
    assert.equal(value(m, 'sockstap_relay_latency_seconds_count', { door: 'socks5' }), 3);
    assert.equal(value(m, 'sockstap_relay_latency_seconds_count', { door: 'socks4' }), 1);
    assert.equal(value(m, 'sockstap_session_duration_seconds_count', { door: 'socks5' }), 5);
    assert.equal(value(m, 'sockstap_session_duration_seconds_count'), 7);

    assert.equal(value(m, 'sockstap_http_requests_total', { result_code: 'TCP_MISS' }), 1);
    assert.equal(value(m, 'sockstap_cache_misses_total', { result_code: 'TCP_MISS' }), 1);
    assert.equal(value(m, 'sockstap_cache_hits_total'), 0);
    assert.equal(value(m, 'sockstap_http_request_duration_seconds_count', { cache: 'miss' }), 1);
    // No cache open: its gauges read 0.
    assert.equal(familyOf('sockstap_cache_entries', m)?.type, 'gauge');
    assert.equal(value(m, 'sockstap_cache_entries'), 0);
    assert.equal(familyOf('sockstap_cache_memory_bytes', m)?.type, 'gauge');
    assert.equal(value(m, 'sockstap_cache_memory_bytes'), 0);

    // The native accept path's figures (the whole process's): the socks listener's connections
    // were accepted by the relay thread, the first of each source handed over to JavaScript.
    assert.equal(familyOf('sockstap_native_accepted_total', m)?.type, 'counter');
    assert.equal(familyOf('sockstap_native_remembered_total', m)?.type, 'counter');
    assert.equal(familyOf('sockstap_native_handshakes', m)?.type, 'gauge');
    const accepted = value(m, 'sockstap_native_accepted_total');
    if (nativeDoorAvailable()) assert.ok(accepted >= 6, `accepted ${accepted}`);
    assert.ok(value(m, 'sockstap_native_handed_off_total') >= (nativeDoorAvailable() ? 1 : 0));
    assert.ok(value(m, 'sockstap_native_handed_off_total') <= accepted);

    // Process metrics from prom-client, on our registry.
    assert.equal(familyOf('process_cpu_seconds_total', m)?.type, 'counter');
    assert.ok(value(m, 'process_resident_memory_bytes') > 0);
    assert.ok(familyOf('nodejs_eventloop_lag_seconds', m));

    const st = await stats();
    assert.equal(st.doors.socks5.sessions, 5);
    assert.equal(st.doors.socks5.bytesUp, up5);
    // The HTTP door's forwarded request is an http session; the tunnels found nothing (raw).
    assert.equal(st.protocols.raw.sessions, 6);
    assert.equal(st.protocols.http.sessions, 1);
    assert.deepEqual(st.refusalsByCode, { EDENIED: 1 });
    assert.deepEqual(st.errorsByCode, { ECONNREFUSED: 1 });
    assert.equal(st.refused, 1);
    assert.equal(st.http.cacheMisses, 1);
    assert.equal(st.http.hitRatio, 0);
    assert.equal(st.cache, null);
    const dst = (st.topDestinations as Array<{ name: string; sessions: number; bytesUp: number }>).find((d) => d.name === '127.0.0.1');
    assert.ok(dst, JSON.stringify(st.topDestinations));
    assert.equal(dst.sessions, 6); // 4 echo tunnels, the refused port and the HTTP origin
    assert.equal((st.topDestinations as Array<{ name: string; sessions: number }>).find((d) => d.name === 'blocked.example')?.sessions, 1);
    assert.ok(dst.bytesUp >= SENT + 1000);
    assert.equal(st.topDestinations[0].name, '127.0.0.1');
    assert.ok((st.topUsers as Array<{ name: string }>).some((u) => u.name === '-'));
  });

  test('a live tunnel is sampled at scrape time, before it ends', async () => {
    const before = await scrape();
    const upBefore = value(before, 'sockstap_bytes_total', { direction: 'up', door: 'socks5' });
    const s = await openTunnel(5);
    await echoThrough(s, 50_000);
    const during = await scrape();
    assert.equal(value(during, 'sockstap_connections_live', { door: 'socks5', proto: 'raw' }), 1);
    assert.ok(value(during, 'sockstap_bytes_total', { direction: 'up', door: 'socks5' }) >= upBefore + 50_000);
    assert.ok(value(during, 'sockstap_bytes_total', { direction: 'down', door: 'socks5' }) >= 50_000);
    assert.equal(value(during, 'sockstap_connections_total', { door: 'socks5' }), value(before, 'sockstap_connections_total', { door: 'socks5' }) + 1);
    await finish(s);
    await settle();
    const afterEnd = await scrape();
    assert.equal(value(afterEnd, 'sockstap_connections_live'), 0);
    // Counted once, not again at its end.
    assert.equal(value(afterEnd, 'sockstap_connections_total', { door: 'socks5' }), value(during, 'sockstap_connections_total', { door: 'socks5' }));
    const up = value(afterEnd, 'sockstap_bytes_total', { direction: 'up', door: 'socks5' });
    assert.ok(up >= upBefore + 50_000 && up <= upBefore + 50_000 + 64, `up grew by ${up - upBefore}`);
  });
});

describe('refusals at accept', () => {
  test('a source RELIABLE does not name is counted under its listener door', async () => {
    const strict = await startProxy(['-P127.0.0.1:0/socks', 'ADMIN=127.0.0.1:0', 'RELIABLE=10.9.9.9']);
    try {
      const sock = net.connect(strict.port(), '127.0.0.1');
      sock.on('error', () => {});
      await once(sock, 'close');
      const m = await (await fetch(strict.proxy.adminUrl + 'metrics')).text();
      const f = parsePrometheus(m);
      assert.equal(value(f, 'sockstap_refusals_total', { door: 'socks', code: 'EDENIED' }), 1);
      assert.equal(value(f, 'sockstap_connections_total'), 0);
    } finally {
      await strict.stop();
      strict.cleanup();
    }
  });
});
