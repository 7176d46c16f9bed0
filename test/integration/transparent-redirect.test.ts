/**
 * The transparent door behind iptables REDIRECT, in network namespaces this test creates: a client
 * namespace fetches pages from the server namespace's address (IPv4 and IPv6); the proxy namespace
 * between them REDIRECTs port 80 to sockstap's transparent port. sockstap must find the original
 * destination (SO_ORIGINAL_DST), record it in sessions.jsonl, tap the HTTP (access.log has the URL)
 * and cache it (the second fetch is a TCP_HIT that the server never sees). A connection made to the
 * port directly (not redirected) falls back to the Host header.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ADDR, eventually, NetnsLab, netnsSkipReason, startNetnsOrigin, startNetnsProxy, type NetnsOrigin, type NetnsProxy } from '../helpers/netns.js';

const PORT = 3129;
const skip = netnsSkipReason();
if (skip) console.log(`transparent-redirect: skipped: ${skip}`);

describe('transparent door behind iptables REDIRECT (network namespaces)', { skip: skip ?? false, timeout: 55_000 }, () => {
  let lab: NetnsLab;
  let origin: NetnsOrigin;
  let proxy: NetnsProxy;

  before(async () => {
    lab = new NetnsLab('r');
    lab.setup();
    origin = await startNetnsOrigin(lab);
    proxy = await startNetnsProxy(lab, [`-P${PORT}/transparent`, 'SOCKSTAP=http', 'CACHE=do']);
    for (const tool of ['iptables', 'ip6tables']) {
      lab.in('proxy', tool, ['-t', 'nat', '-A', 'PREROUTING', '-i', 'p0', '-p', 'tcp', '--dport', '80', '-j', 'REDIRECT', '--to-ports', String(PORT)]);
    }
  });

  after(async () => {
    await proxy?.stop();
    await origin?.stop();
    lab?.teardown();
  });

  test('IPv4: the original destination is recorded, the HTTP is tapped, the second fetch is a cache hit', async () => {
    const url = `http://${ADDR.server}/redirected`;
    const first = lab.curl(url);
    assert.equal(first.status, 200, first.headers);
    assert.match(first.body, /page \/redirected from the server namespace/);
    const second = lab.curl(url);
    assert.equal(second.status, 200);
    assert.equal(second.body, first.body);

    const recs = await eventually('two sessions', () => {
      const r = proxy.sessions().filter((s) => s.dst === `${ADDR.server}:80`);
      return r.length >= 2 ? r : undefined;
    });
    for (const r of recs) {
      assert.equal(r.door, 'transparent');
      assert.deepEqual(r.transparent, { via: 'redirect' });
      assert.equal(r.proto, 'http');
      assert.equal(String(r.client).split(':')[0], ADDR.client);
    }
    const access = await eventually('two access.log lines', () => {
      const l = proxy.lines('access.log').filter((x) => x.includes(`http://${ADDR.server}/redirected`));
      return l.length >= 2 ? l : undefined;
    });
    assert.match(access[0] ?? '', /TCP_MISS\/200/);
    assert.match(access[1] ?? '', /TCP_(MEM_)?HIT\/200/);
    // The hit never reached the server.
    await origin.request('/redirected');
    assert.equal(origin.requests().filter((r) => r.url === '/redirected').length, 1);
  });

  test('IPv6: SO_ORIGINAL_DST through ip6tables REDIRECT', async () => {
    const res = lab.curl(`http://[${ADDR.server6}]/six`, ['-g']);
    assert.equal(res.status, 200, res.headers);
    const rec = await eventually('the IPv6 session', () => proxy.sessions().find((s) => s.dst === `[${ADDR.server6}]:80`));
    assert.equal(rec.door, 'transparent');
    assert.deepEqual(rec.transparent, { via: 'redirect' });
    await eventually('the IPv6 access.log line', () => proxy.lines('access.log').find((l) => l.includes(`http://[${ADDR.server6}]/six`)));
  });

  test('a connection made to the port directly falls back to the Host header', async () => {
    const res = lab.curl(`http://${ADDR.proxyClientSide}:${PORT}/by-host`, ['-H', `Host: ${ADDR.server}`]);
    assert.equal(res.status, 200, res.headers);
    const rec = await eventually('the Host-header session', () =>
      proxy.sessions().find((s) => (s.transparent as { via?: string } | undefined)?.via === 'host'),
    );
    assert.equal(rec.dst, `${ADDR.server}:80`);
    await origin.request('/by-host');
  });

  test('sockstap said what transparent interception can do (one log line)', () => {
    assert.equal(proxy.lines('sockstap.log').filter((l) => / transparent: /.test(l)).length, 1);
  });
});
