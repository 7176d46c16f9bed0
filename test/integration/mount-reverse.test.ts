/**
 * MOUNT as DeleGate uses it: a reverse proxy. Origin-form requests (`GET /mnt/x`, no proxy
 * configured in the client) on the HTTP door and the auto door that a MOUNT maps go to the real
 * URL through the cache, the request rules and access.log; `http://site/*` matches by Host; a
 * request no MOUNT maps keeps the 400 explanation; MountOptions conditions; Location mapped back;
 * an unsupported MountOption stops the start with exit 2.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { AccessRecord } from '../../src/observe/events.js';
import { curl, startOrigin, type Origin } from '../helpers/origin.js';
import { runCli } from '../helpers/process.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

function handler(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = req.url ?? '/';
  if (url.includes('/redirect-abs')) {
    res.writeHead(302, { location: `http://${req.headers.host}/static/moved?x=1`, 'content-length': 0 });
    res.end();
  } else if (url.includes('/redirect-path')) {
    res.writeHead(301, { location: '/static/elsewhere', 'content-length': 0 });
    res.end();
  } else if (url.includes('/redirect-out')) {
    res.writeHead(302, { location: 'http://other.test/static/x', 'content-length': 0 });
    res.end();
  } else {
    res.writeHead(200, { 'cache-control': 'max-age=300', 'content-type': 'text/plain' });
    res.end(`${req.method} ${url} host=${req.headers.host ?? ''}`);
  }
}

let backend: Origin;
let site: Origin;

before(async () => {
  backend = await startOrigin(handler);
  site = await startOrigin(handler);
});
after(async () => {
  await backend.close();
  await site.close();
});

function collect(p: TestProxy): AccessRecord[] {
  const records: AccessRecord[] = [];
  p.proxy.events.on('access', (r) => records.push(r));
  return records;
}

async function get(url: string, extra: string[] = []): Promise<{ status: number; body: string; head: string }> {
  const r = await curl(['-i', ...extra, url]);
  assert.equal(r.code, 0, r.stderr);
  const text = r.stdout.toString();
  const split = text.indexOf('\r\n\r\n');
  const head = text.slice(0, split);
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), head, body: text.slice(split + 4) };
}

/** access.log is written through a buffered stream: wait until `n` lines are there. */
async function accessLines(p: TestProxy, n: number): Promise<string[]> {
  for (let i = 0; i < 200; i++) {
    const lines = p.readLog('access.log').split('\n').filter(Boolean);
    if (lines.length >= n) return lines;
    await new Promise((r) => setTimeout(r, 25));
  }
  return p.readLog('access.log').split('\n').filter(Boolean);
}

describe("DeleGate's own line: -P SERVER=http MOUNT=\"/* http://backend/*\" CACHE=do", () => {
  let p: TestProxy;
  let records: AccessRecord[];
  before(async () => {
    p = await startProxy(['-P127.0.0.1:0', 'SERVER=http', `MOUNT=/* http://127.0.0.1:${backend.port}/*`, 'CACHE=do']);
    records = collect(p);
  });
  after(async () => {
    await p.stop();
    p.cleanup();
  });

  test('origin-form requests are served from the backend, the second one a TCP_HIT', async () => {
    const asked = `http://127.0.0.1:${p.port()}/page?q=1`;
    const before = backend.requests.length;
    const first = await get(asked);
    assert.equal(first.status, 200);
    // The backend sees the real path and its own name in Host (as DeleGate sends it).
    assert.equal(first.body, `GET /page?q=1 host=127.0.0.1:${backend.port}`);
    const accepts = backend.accepts;
    const second = await get(asked);
    assert.equal(second.body, first.body);
    assert.equal(backend.requests.length, before + 1, 'the second request is a hit');
    assert.equal(backend.accepts, accepts);
    const real = `http://127.0.0.1:${backend.port}/page?q=1`;
    const mine = records.filter((r) => r.url === real);
    assert.deepEqual(
      mine.map((r) => `${r.resultCode.replace(/^TCP_MEM_HIT/, 'TCP_HIT')}/${r.status}`),
      ['TCP_MISS/200', 'TCP_HIT/200'],
    );
    assert.ok(mine.every((r) => r.mountedFrom === asked));
    // access.log: the real URL fetched in the URL field, the URL asked for at the end.
    const lines = (await accessLines(p, 2)).filter((l) => l.includes(real));
    assert.equal(lines.length, 2);
    assert.match(lines[0]!, new RegExp(` TCP_MISS/200 \\d+ GET ${escape(real)} - HIER_DIRECT/127\\.0\\.0\\.1 text/plain vurl=${escape(asked)}$`));
    assert.match(lines[1]!, / TCP_(MEM_)?HIT\/200 .* vurl=/);
  });

  test('a Location into the real URL is mapped back to the virtual one; others are left alone', async () => {
    const base = `http://127.0.0.1:${p.port()}`;
    const abs = await get(`${base}/redirect-abs`);
    assert.equal(abs.status, 302);
    assert.match(abs.head, new RegExp(`\r\nLocation: ${escape(base)}/static/moved\\?x=1\r?$`, 'im'));
    const rel = await get(`${base}/redirect-path`);
    assert.match(rel.head, /\r\nLocation: \/static\/elsewhere$/im);
    const out = await get(`${base}/redirect-out`);
    assert.match(out.head, /\r\nLocation: http:\/\/other\.test\/static\/x$/im);
  });
});

describe('MOUNT="/mnt/* http://HOST:PORT/static/*" on the HTTP door and the auto door', () => {
  let p: TestProxy;
  let records: AccessRecord[];
  before(async () => {
    p = await startProxy([
      '-P127.0.0.1:0/http',
      '-P127.0.0.1:0/auto',
      'CACHE=do',
      'REJECT=http:{http://127.0.0.1:*/static/secret*}:*',
      `MOUNT=/mnt/* http://127.0.0.1:${backend.port}/static/*`,
      `MOUNT=/only-post/* http://127.0.0.1:${backend.port}/posted/* method=POST`,
      `MOUNT=/lan/* http://127.0.0.1:${backend.port}/lan/* from={10.0.0.0/8}`,
      `MOUNT=/fo/* http://127.0.0.1:${backend.port}/static/* direction=fo`,
      `MOUNT=/named/* http://127.0.0.1:${backend.port}/named/* vhost={www.test,*.www.test}`,
      `MOUNT=http://site.test/* http://127.0.0.1:${site.port}/*`,
    ]);
    records = collect(p);
  });
  after(async () => {
    await p.stop();
    p.cleanup();
  });

  for (const door of ['http', 'auto'] as const) {
    test(`${door} door: /mnt/x is fetched from /static/x, then a hit`, async () => {
      const path = `/mnt/doc-${door}.txt`;
      const asked = `http://127.0.0.1:${p.port(door)}${path}`;
      const first = await get(asked);
      assert.equal(first.status, 200);
      assert.equal(first.body, `GET /static/doc-${door}.txt host=127.0.0.1:${backend.port}`);
      const second = await get(asked);
      assert.equal(second.body, first.body);
      const real = `http://127.0.0.1:${backend.port}/static/doc-${door}.txt`;
      assert.deepEqual(
        records.filter((r) => r.url === real).map((r) => `${r.resultCode.replace(/^TCP_MEM_HIT/, 'TCP_HIT')}/${r.mountedFrom}`),
        [`TCP_MISS/${asked}`, `TCP_HIT/${asked}`],
      );
      // The second request did not reach the backend.
      assert.equal(backend.requests.filter((r) => r.url === `/static/doc-${door}.txt`).length, 1);
    });
  }

  test('the forward proxy keeps working beside it (absolute-form, MOUNT applied too)', async () => {
    const r = await get(`http://any.test/mnt/fwd`, ['-x', `http://127.0.0.1:${p.port('http')}`]);
    assert.equal(r.body, `GET /static/fwd host=127.0.0.1:${backend.port}`);
  });

  test('a request no MOUNT maps keeps the 400 explanation', async () => {
    for (const door of ['http', 'auto'] as const) {
      const r = await get(`http://127.0.0.1:${p.port(door)}/not-mounted`);
      assert.equal(r.status, 400);
      assert.match(r.body, /send the full URL \(GET http:\/\/host\/path\) or CONNECT host:port/);
    }
    const before = backend.requests.length;
    // A Host-matched MOUNT needs that Host.
    const other = await get(`http://127.0.0.1:${p.port('http')}/`, ['-H', 'Host: nosite.test']);
    assert.equal(other.status, 400);
    assert.equal(backend.requests.length, before);
    const line = records.find((r) => r.url === '/not-mounted');
    assert.equal(line?.resultCode, 'TAG_NONE');
  });

  test('MOUNT="http://site/* ..." matches origin-form requests whose Host is site, on any port', async () => {
    const before = site.requests.length;
    const r = await get(`http://127.0.0.1:${p.port('http')}/index.html`, ['-H', `Host: site.test:${p.port('http')}`]);
    assert.equal(r.status, 200);
    assert.equal(r.body, `GET /index.html host=127.0.0.1:${site.port}`);
    const plain = await get(`http://127.0.0.1:${p.port('auto')}/other.html`, ['-H', 'Host: site.test']);
    assert.equal(plain.body, `GET /other.html host=127.0.0.1:${site.port}`);
    assert.equal(site.requests.length, before + 2);
    const rec = records.find((x) => x.url === `http://127.0.0.1:${site.port}/index.html`);
    assert.equal(rec?.mountedFrom, `http://site.test:${p.port('http')}/index.html`);
  });

  test('REJECT is decided on the real URL', async () => {
    const before = backend.requests.length;
    const asked = `http://127.0.0.1:${p.port('http')}/mnt/secret.txt`;
    const r = await get(asked);
    assert.equal(r.status, 403);
    assert.match(r.body, /static\/secret\.txt/);
    assert.equal(backend.requests.length, before);
    const rec = records.find((x) => x.url === `http://127.0.0.1:${backend.port}/static/secret.txt`);
    assert.equal(rec?.resultCode, 'TCP_DENIED');
    assert.equal(rec?.mountedFrom, asked);
  });

  test('MountOptions: method=, from=, vhost= are conditions; direction=fo leaves Location alone', async () => {
    const base = `http://127.0.0.1:${p.port('http')}`;
    assert.equal((await get(`${base}/only-post/a`)).status, 400);
    const posted = await get(`${base}/only-post/a`, ['-X', 'POST', '--data', 'x=1']);
    assert.equal(posted.status, 200);
    assert.equal(posted.body, `POST /posted/a host=127.0.0.1:${backend.port}`);
    // The client is 127.0.0.1, not in 10.0.0.0/8.
    assert.equal((await get(`${base}/lan/a`)).status, 400);
    assert.equal((await get(`${base}/named/a`)).status, 400);
    const named = await get(`${base}/named/a`, ['-H', `Host: a.www.test:${p.port('http')}`]);
    assert.equal(named.body, `GET /named/a host=127.0.0.1:${backend.port}`);
    const fo = await get(`${base}/fo/redirect-abs`);
    assert.match(fo.head, new RegExp(`\r\nLocation: http://127\\.0\\.0\\.1:${backend.port}/static/moved\\?x=1$`, 'im'));
    const fb = await get(`${base}/mnt/redirect-abs`);
    assert.match(fb.head, new RegExp(`\r\nLocation: ${escape(base)}/mnt/moved\\?x=1$`, 'im'));
    const rel = await get(`${base}/mnt/redirect-path`);
    assert.match(rel.head, /\r\nLocation: \/mnt\/elsewhere$/im);
  });
});

describe('MountOptions sockstap does not implement stop the start', () => {
  for (const [option, named] of [
    ['via={gw.test}', /MountOption "via=\{gw\.test\}" is not supported/],
    ['rserv=10.0.0.1', /MountOption "rserv=10\.0\.0\.1" is not supported/],
    ['direction=bo', /direction=bo .* not supported/],
    ['nosuchoption', /unknown MountOption "nosuchoption"/],
  ] as const) {
    test(`${option}: exit 2, naming it`, async () => {
      const cli = runCli(['-P127.0.0.1:0', 'SERVER=http', `MOUNT=/* http://127.0.0.1:1/* ${option}`]);
      const code = await cli.exited;
      assert.equal(code, 2, cli.output());
      assert.match(cli.output(), named);
      assert.match(cli.output(), /MOUNT/);
    });
  }
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
