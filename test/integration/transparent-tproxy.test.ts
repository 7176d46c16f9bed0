/**
 * The transparent door behind iptables TPROXY, in network namespaces this test creates: the proxy
 * namespace diverts the client's port-80 connections to sockstap's transparent listener without
 * rewriting them (mangle TPROXY, fwmark, a local route in table 100), so the original destination
 * is the accepted socket's own local address. The listener must carry IP_TRANSPARENT, or the
 * kernel drops the diverted packets. IPv4 and IPv6.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ADDR, eventually, NetnsLab, netnsSkipReason, startNetnsOrigin, startNetnsProxy, tproxySkipReason, type NetnsOrigin, type NetnsProxy } from '../helpers/netns.js';

const PORT = 3130;
let skip = netnsSkipReason();
let lab: NetnsLab | undefined;
if (!skip) {
  lab = new NetnsLab('t');
  lab.setup();
  skip = tproxySkipReason(lab);
  if (skip) lab.teardown();
}
if (skip) console.log(`transparent-tproxy: skipped: ${skip}`);

/** The Squid/kernel-documented TPROXY setup, for one address family, inside the proxy namespace. */
function divert(l: NetnsLab, family: 4 | 6): void {
  const ipt = family === 4 ? 'iptables' : 'ip6tables';
  const ip = family === 4 ? ['ip'] : ['ip', '-6'];
  // Packets of connections that already have a local socket: deliver locally (the mark below).
  l.in('proxy', ipt, ['-t', 'mangle', '-N', 'DIVERT']);
  l.in('proxy', ipt, ['-t', 'mangle', '-A', 'PREROUTING', '-p', 'tcp', '-m', 'socket', '-j', 'DIVERT']);
  l.in('proxy', ipt, ['-t', 'mangle', '-A', 'DIVERT', '-j', 'MARK', '--set-mark', '1']);
  l.in('proxy', ipt, ['-t', 'mangle', '-A', 'DIVERT', '-j', 'ACCEPT']);
  // New connections to port 80 from the client side: hand them to the transparent listener.
  l.in('proxy', ipt, ['-t', 'mangle', '-A', 'PREROUTING', '-i', 'p0', '-p', 'tcp', '--dport', '80', '-j', 'TPROXY', '--tproxy-mark', '0x1/0x1', '--on-port', String(PORT)]);
  l.in('proxy', ip[0]!, [...ip.slice(1), 'rule', 'add', 'fwmark', '1', 'lookup', '100']);
  l.in('proxy', ip[0]!, [...ip.slice(1), 'route', 'add', 'local', family === 4 ? '0.0.0.0/0' : '::/0', 'dev', 'lo', 'table', '100']);
}

describe('transparent door behind iptables TPROXY (network namespaces)', { skip: skip ?? false, timeout: 55_000 }, () => {
  let origin: NetnsOrigin;
  let proxy: NetnsProxy;

  before(async () => {
    if (!lab) throw new Error('no lab');
    origin = await startNetnsOrigin(lab);
    proxy = await startNetnsProxy(lab, [`-P${PORT}/transparent`, 'SOCKSTAP=http', 'CACHE=do']);
    divert(lab, 4);
    divert(lab, 6);
  });

  after(async () => {
    await proxy?.stop();
    await origin?.stop();
    lab?.teardown();
  });

  test('the listener has IP_TRANSPARENT (sockstap.ts calls prepareTransparentListener)', () => {
    const line = proxy.lines('sockstap.log').find((l) => / transparent listener /.test(l));
    assert.ok(
      line,
      'no "transparent listener" line in sockstap.log: sockstap.ts openListener must call prepareTransparentListener(server, log, addr) for transparent listeners (docs/transparent.md)',
    );
    assert.match(line, /tproxy=true/);
  });

  test('IPv4: the original destination is the socket local address; the HTTP is tapped', async () => {
    const res = lab!.curl(`http://${ADDR.server}/tproxied`);
    assert.equal(res.status, 200, res.headers);
    assert.match(res.body, /page \/tproxied from the server namespace/);
    const rec = await eventually('the session', () => proxy.sessions().find((s) => s.dst === `${ADDR.server}:80`));
    assert.equal(rec.door, 'transparent');
    assert.deepEqual(rec.transparent, { via: 'tproxy' });
    assert.equal(rec.proto, 'http');
    await eventually('the access.log line', () => proxy.lines('access.log').find((l) => l.includes(`http://${ADDR.server}/tproxied`)));
    // Not spoofed: the server sees the proxy's address.
    assert.equal((await origin.request('/tproxied')).remote, ADDR.proxyServerSide);
  });

  test('IPv6: the same through ip6tables TPROXY', async () => {
    const res = lab!.curl(`http://[${ADDR.server6}]/tproxied6`, ['-g']);
    assert.equal(res.status, 200, res.headers);
    const rec = await eventually('the IPv6 session', () => proxy.sessions().find((s) => s.dst === `[${ADDR.server6}]:80`));
    assert.deepEqual(rec.transparent, { via: 'tproxy' });
    await origin.request('/tproxied6');
  });
});
