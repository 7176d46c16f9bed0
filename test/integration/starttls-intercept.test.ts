/**
 * SMTP STARTTLS and POP3 STLS through SOCKS: with STLS=mitm the tap keeps reading commands inside the TLS
 * (the session record has the envelope given after the upgrade); without STLS the tunnel is relayed
 * untouched after the 220, and the client sees the server's own certificate.
 */
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { after, before, test } from 'node:test';
import { SocksClient } from 'socks';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { testPki, type TestPki } from '../helpers/tls.js';

/** A small SMTP server with STARTTLS (RFC 3207) that records what it got after the upgrade. */
async function startSmtp(key: Buffer, cert: Buffer): Promise<{ port: number; got: string[]; close(): void }> {
  const got: string[] = [];
  const serve = (s: net.Socket | tls.TLSSocket, secure: boolean): void => {
    let buf = '';
    let data = false;
    s.on('error', () => {});
    s.on('data', (c: Buffer) => {
      buf += c.toString('latin1');
      let i;
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (data) {
          if (line === '.') {
            data = false;
            s.write('250 queued\r\n');
          }
          continue;
        }
        if (secure) got.push(line);
        const verb = line.split(' ')[0]!.toUpperCase();
        if (verb === 'EHLO') s.write(secure ? '250-smtp.test\r\n250 8BITMIME\r\n' : '250-smtp.test\r\n250 STARTTLS\r\n');
        else if (verb === 'STARTTLS') {
          s.write('220 go ahead\r\n');
          s.removeAllListeners('data');
          const t = new tls.TLSSocket(s as net.Socket, { isServer: true, key, cert });
          serve(t, true);
          return;
        } else if (verb === 'DATA') {
          data = true;
          s.write('354 go\r\n');
        } else if (verb === 'QUIT') {
          s.end('221 bye\r\n');
        } else s.write('250 ok\r\n');
      }
    });
  };
  const server = net.createServer((s) => {
    s.write('220 smtp.test ESMTP\r\n');
    serve(s, false);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, got, close: () => server.close() };
}

/** Line-at-a-time SMTP client: `expect` reads until a final reply line. */
class Lines {
  private buf = '';
  private waiters: Array<() => void> = [];
  constructor(public s: net.Socket | tls.TLSSocket) {
    this.listen(s);
  }
  listen(s: net.Socket | tls.TLSSocket): void {
    this.s = s;
    s.on('data', (c: Buffer) => {
      this.buf += c.toString('latin1');
      for (const w of this.waiters.splice(0)) w();
    });
  }
  final = /^(\d{3}) [^\r\n]*\r\n/m;
  async reply(): Promise<string> {
    for (;;) {
      const m = this.final.exec(this.buf);
      if (m) {
        const end = m.index + m[0].length;
        const text = this.buf.slice(0, end);
        this.buf = this.buf.slice(end);
        return text;
      }
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
  async cmd(line: string): Promise<string> {
    this.s.write(`${line}\r\n`);
    return this.reply();
  }
}

async function session(socksPort: number, smtpPort: number, ca: Buffer | string): Promise<{ issuer: string }> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: socksPort, type: 5 },
    command: 'connect',
    destination: { host: 'localhost', port: smtpPort },
    timeout: 10_000,
  });
  const c = new Lines(socket);
  assert.match(await c.reply(), /^220 /);
  assert.match(await c.cmd('EHLO client.test'), /STARTTLS/);
  assert.match(await c.cmd('STARTTLS'), /^220 /);
  socket.removeAllListeners('data');
  const t = await new Promise<tls.TLSSocket>((resolve, reject) => {
    const s = tls.connect({ socket, servername: 'localhost', ca });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
  c.listen(t);
  assert.match(await c.cmd('EHLO client.test'), /^250 /m);
  assert.match(await c.cmd('MAIL FROM:<alice@a.test>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<bob@b.test>'), /^250 /);
  assert.match(await c.cmd('DATA'), /^354 /);
  assert.match(await c.cmd('Subject: hi\r\n\r\nhello\r\n.'), /^250 /);
  await c.cmd('QUIT');
  const issuer = String(t.getPeerCertificate().issuer.CN);
  t.destroy();
  return { issuer };
}

let pki: TestPki;
let smtp: Awaited<ReturnType<typeof startSmtp>>;

before(async () => {
  pki = testPki();
  const { key, cert } = pki.issue(['localhost']);
  smtp = await startSmtp(key, cert);
});
after(() => {
  smtp.close();
  pki.cleanup();
});

test('STLS=mitm: the SMTP tap reads the envelope sent after STARTTLS', async () => {
  const proxy: TestProxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=smtp', 'STLS=mitm', `TLSCAFILE=${pki.caFile}`]);
  try {
    const ca = readFileSync(join(proxy.stateDir, 'ca', 'ca.pem'));
    const r = await session(proxy.port('socks'), smtp.port, ca);
    assert.match(r.issuer, /sockstap interception CA/);
    assert.ok(smtp.got.includes('MAIL FROM:<alice@a.test>'), 'the server got the envelope inside its TLS');
    await proxy.stop();
    const s = proxy.sessions().find((x) => x.proto === 'smtp');
    assert.ok(s, 'an smtp session');
    const section = s.smtp as { starttls: boolean; from: string | null; rcpt: Array<{ to: string }> };
    assert.equal(section.starttls, true);
    assert.equal(section.from, 'alice@a.test');
    assert.deepEqual(section.rcpt.map((r) => r.to), ['bob@b.test']);
    assert.equal((s.tls as { intercepted: boolean }).intercepted, true);
  } finally {
    await proxy.stop();
    proxy.cleanup();
  }
});

test('without STLS the tunnel is relayed untouched after STARTTLS: the server certificate is its own', async () => {
  const proxy: TestProxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=smtp']);
  try {
    const r = await session(proxy.port('socks'), smtp.port, pki.caPem);
    assert.equal(r.issuer, 'sockstap test origin CA');
    await proxy.stop();
    const s = proxy.sessions().find((x) => x.proto === 'smtp');
    const section = s!.smtp as { starttls: boolean; from: string | null };
    assert.equal(section.starttls, true);
    assert.equal(section.from, null, 'nothing after the upgrade was read');
  } finally {
    await proxy.stop();
    proxy.cleanup();
  }
});

/** A POP3 server with STLS (RFC 2595 §4). */
async function startPop3(key: Buffer, cert: Buffer): Promise<{ port: number; close(): void }> {
  const serve = (s: net.Socket | tls.TLSSocket): void => {
    let buf = '';
    s.on('error', () => {});
    s.on('data', (c: Buffer) => {
      buf += c.toString('latin1');
      let i;
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const verb = buf.slice(0, i).split(' ')[0]!.toUpperCase();
        buf = buf.slice(i + 2);
        if (verb === 'STLS') {
          s.write('+OK begin TLS\r\n');
          s.removeAllListeners('data');
          serve(new tls.TLSSocket(s as net.Socket, { isServer: true, key, cert }));
          return;
        }
        if (verb === 'STAT') s.write('+OK 0 0\r\n');
        else if (verb === 'QUIT') s.end('+OK bye\r\n');
        else s.write('+OK\r\n');
      }
    });
  };
  const server = net.createServer((s) => {
    s.write('+OK POP3 ready\r\n');
    serve(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, close: () => server.close() };
}

test('STLS=mitm: the POP3 tap reads USER and STAT sent after STLS', async () => {
  const { key, cert } = pki.issue(['localhost']);
  const pop = await startPop3(key, cert);
  const proxy: TestProxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=pop3', 'STLS=mitm', `TLSCAFILE=${pki.caFile}`]);
  try {
    const ca = readFileSync(join(proxy.stateDir, 'ca', 'ca.pem'));
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5 },
      command: 'connect',
      destination: { host: 'localhost', port: pop.port },
      timeout: 10_000,
    });
    const c = new Lines(socket);
    c.final = /^[+-](OK|ERR)[^\r\n]*\r\n/m;
    assert.match(await c.reply(), /^\+OK/);
    assert.match(await c.cmd('STLS'), /^\+OK/);
    socket.removeAllListeners('data');
    const t = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket, servername: 'localhost', ca });
      s.once('secureConnect', () => resolve(s));
      s.once('error', reject);
    });
    c.listen(t);
    assert.match(await c.cmd('USER alice'), /^\+OK/);
    assert.match(await c.cmd('PASS secret-pw'), /^\+OK/);
    assert.match(await c.cmd('STAT'), /^\+OK 0 0/);
    await c.cmd('QUIT');
    t.destroy();
    await proxy.stop();
    const s = proxy.sessions().find((x) => x.proto === 'pop3');
    const section = s!.pop3 as { stls: boolean; user: string | null; commands: string[] };
    assert.equal(section.stls, true);
    assert.equal(section.user, 'alice');
    assert.ok(section.commands.includes('STAT'), JSON.stringify(section.commands));
    assert.ok(!proxy.readLog('sessions.jsonl').includes('secret-pw'), 'the password is masked');
  } finally {
    await proxy.stop();
    proxy.cleanup();
    pop.close();
  }
});
