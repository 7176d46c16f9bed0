/**
 * The tap decision and sniffing inside real tunnels: a SOCKSTAP rule picks the tunnel, the
 * sniffer names the protocol (TLS with its SNI and ALPN, an SSH banner, unknown bytes), the
 * protocol lands in sessions.jsonl, REJECT can name a TLS server name, and the bytes arrive
 * untouched. A tunnel no rule picks stays raw.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { selfSignedCert } from '../helpers/tls.js';

let tlsServer: tls.Server;
let tlsPort = 0;
let sshServer: net.Server;
let sshPort = 0;
let proxy: TestProxy;
const { key, cert } = selfSignedCert('sni.test');

before(async () => {
  tlsServer = tls.createServer({ key, cert, ALPNProtocols: ['h2', 'http/1.1'] }, (s) => {
    s.on('error', () => {});
    s.on('data', (d) => s.write(Buffer.concat([Buffer.from('tls-echo:'), d])));
  });
  await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', r));
  tlsPort = (tlsServer.address() as net.AddressInfo).port;
  // A server-first protocol: the server speaks its banner, then echoes.
  sshServer = net.createServer((s) => {
    s.on('error', () => {});
    s.write('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n');
    s.pipe(s);
  });
  await new Promise<void>((r) => sshServer.listen(0, '127.0.0.1', r));
  sshPort = (sshServer.address() as net.AddressInfo).port;
  proxy = await startProxy([
    '-P127.0.0.1:0/socks',
    `SOCKSTAP=tls,ssh,http:127.0.0.1:*`,
    'REJECT=tls:blocked.test:*',
    'TIMEOUT=sniff:300ms',
  ]);
});
after(async () => {
  await proxy.stop();
  proxy.cleanup();
  await new Promise((r) => tlsServer.close(r));
  await new Promise((r) => sshServer.close(r));
});

async function socksTo(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: proxy.port(), type: 5 },
    command: 'connect',
    destination: { host, port },
  });
  return socket;
}

function tlsOver(socket: net.Socket, servername: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ socket, servername, ALPNProtocols: ['h2', 'http/1.1'], rejectUnauthorized: false }, () => resolve(t));
    t.once('error', reject);
  });
}

describe('sniffing inside tapped tunnels', () => {
  test('TLS: the handshake passes untouched; SNI and ALPN are recorded', async () => {
    const t = await tlsOver(await socksTo(tlsPort), 'sni.test');
    assert.equal(t.alpnProtocol, 'h2');
    const reply = await new Promise<Buffer>((resolve) => {
      t.once('data', resolve);
      t.write('hello');
    });
    assert.equal(reply.toString(), 'tls-echo:hello');
    t.destroy();
  });

  test('TLS: REJECT on the server name closes the tunnel', async () => {
    await assert.rejects(tlsOver(await socksTo(tlsPort), 'blocked.test'));
  });

  test('a server-first banner (SSH) is recognised and relayed', async () => {
    const s = await socksTo(sshPort);
    const banner = await new Promise<string>((resolve) => s.once('data', (d) => resolve(d.toString())));
    assert.match(banner, /^SSH-2\.0-OpenSSH/);
    const echo = await new Promise<string>((resolve) => {
      s.once('data', (d) => resolve(d.toString()));
      s.write('SSH-2.0-client\r\n');
    });
    assert.equal(echo, 'SSH-2.0-client\r\n');
    s.destroy();
  });

  test('a tunnel no rule picks stays raw; unknown bytes stay raw', async () => {
    // localhost is not 127.0.0.1 by name: no rule picks it.
    const untapped = await tlsOver(await socksTo(tlsPort, 'localhost'), 'sni.test');
    untapped.destroy();
    const s = await socksTo(sshPort);
    await new Promise((r) => s.once('data', r));
    s.destroy();
  });

  test('sessions.jsonl records what was found', async () => {
    await proxy.stop(2000);
    const records = proxy.sessions();
    const tlsRecords = records.filter((r) => r.proto === 'tls');
    const ok = tlsRecords.find((r) => (r.tls as { sni: string }).sni === 'sni.test' && r.result === 'ok');
    assert.ok(ok, JSON.stringify(records, null, 1));
    assert.deepEqual((ok.tls as { alpn: string[] }).alpn, ['h2', 'http/1.1']);
    assert.ok(tlsRecords.some((r) => (r.tls as { sni: string }).sni === 'blocked.test' && r.result === 'EDENIED'));
    assert.ok(records.some((r) => r.proto === 'ssh'));
    assert.ok(records.some((r) => String(r.dst).startsWith('localhost:') && r.proto === 'raw'));
    assert.match(proxy.readLog('sockstap.log'), /tls server name refused .*EDENIED/);
  });
});
