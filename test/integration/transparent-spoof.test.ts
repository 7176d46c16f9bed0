/**
 * SPOOF=client (full transparency), in network namespaces this test creates: the client's port-80
 * connections are REDIRECTed to sockstap's transparent port in the proxy namespace, and sockstap's
 * outgoing connection carries the client's own address as its source (IP_TRANSPARENT before
 * bind). The server namespace routes its replies back through the proxy namespace, where a
 * `-m socket` mark and a local route in table 100 deliver them to sockstap's transparent socket.
 * The server's log must show the client's address, not the proxy's. IPv4 and IPv6.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ADDR, eventually, NetnsLab, netnsSkipReason, startNetnsOrigin, startNetnsProxy, tproxySkipReason, type NetnsOrigin, type NetnsProxy } from '../helpers/netns.js';

const PORT = 3131;
let skip = netnsSkipReason();
let lab: NetnsLab | undefined;
if (!skip) {
  lab = new NetnsLab('s');
  lab.setup();
  // The replies are found by the iptables `socket` match (xt_socket), which the TPROXY probe checks.
  skip = tproxySkipReason(lab);
  if (skip) lab.teardown();
}
if (skip) console.log(`transparent-spoof: skipped: ${skip}`);

function routeRepliesToSockets(l: NetnsLab, family: 4 | 6): void {
  const ipt = family === 4 ? 'iptables' : 'ip6tables';
  const ip = family === 4 ? [] : ['-6'];
  l.in('proxy', ipt, ['-t', 'nat', '-A', 'PREROUTING', '-i', 'p0', '-p', 'tcp', '--dport', '80', '-j', 'REDIRECT', '--to-ports', String(PORT)]);
  // A reply addressed to the client whose connection is one of our transparent sockets: local.
  l.in('proxy', ipt, ['-t', 'mangle', '-A', 'PREROUTING', '-p', 'tcp', '-m', 'socket', '--transparent', '-j', 'MARK', '--set-mark', '1']);
  l.in('proxy', 'ip', [...ip, 'rule', 'add', 'fwmark', '1', 'lookup', '100']);
  l.in('proxy', 'ip', [...ip, 'route', 'add', 'local', family === 4 ? '0.0.0.0/0' : '::/0', 'dev', 'lo', 'table', '100']);
}

describe('SPOOF=client: the server sees the client address (network namespaces)', { skip: skip ?? false, timeout: 55_000 }, () => {
  let origin: NetnsOrigin;
  let proxy: NetnsProxy;

  before(async () => {
    if (!lab) throw new Error('no lab');
    origin = await startNetnsOrigin(lab);
    proxy = await startNetnsProxy(lab, [`-P${PORT}/transparent`, 'SOCKSTAP=http', 'SPOOF=client']);
    routeRepliesToSockets(lab, 4);
    routeRepliesToSockets(lab, 6);
  });

  after(async () => {
    await proxy?.stop();
    await origin?.stop();
    lab?.teardown();
  });

  const spoofWired = (remote: string, proxyAddress: string): string =>
    remote === proxyAddress
      ? `the server saw the proxy's address ${remote}: Pipeline.dial does not call dialSpoofed() for transparent sessions with SPOOF=client yet (docs/transparent.md)`
      : `the server saw ${remote}`;

  test('IPv4: the server log shows the client address', async () => {
    const res = lab!.curl(`http://${ADDR.server}/spoofed`);
    assert.equal(res.status, 200, res.headers);
    assert.match(res.body, /page \/spoofed from the server namespace/);
    const seen = await origin.request('/spoofed');
    assert.equal(seen.remote, ADDR.client, spoofWired(seen.remote, ADDR.proxyServerSide));
    const rec = await eventually('the session', () => proxy.sessions().find((s) => s.dst === `${ADDR.server}:80`));
    assert.deepEqual(rec.transparent, { via: 'redirect' });
    assert.equal(rec.proto, 'http');
  });

  test('IPv6: the server log shows the client address', async () => {
    const res = lab!.curl(`http://[${ADDR.server6}]/spoofed6`, ['-g']);
    assert.equal(res.status, 200, res.headers);
    const seen = await origin.request('/spoofed6');
    assert.equal(seen.remote, ADDR.client6, spoofWired(seen.remote, ADDR.proxyServerSide6));
  });
});
