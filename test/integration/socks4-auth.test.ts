/**
 * Issue 13, finding 9: a SOCKS4 user id carries no password, so with AUTHORIZER set a known user
 * name alone is no login. SOCKS4 is refused (91) unless IDENT=do confirms the user id or the
 * administrator opts in to the weak form with SOCKS4AUTH=userid. SOCKS5 with a password is
 * served throughout.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { curl, PAGE, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

let origin: Origin;
before(async () => {
  origin = await startOrigin();
});
after(async () => {
  await origin.close();
});

/** A SOCKS4 CONNECT to the origin with this user id; the reply's CD byte. */
async function socks4Cd(port: number, userId: string): Promise<number> {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  await once(s, 'connect');
  s.write(Buffer.from([4, 1, origin.port >> 8, origin.port & 255, 127, 0, 0, 1, ...Buffer.from(userId), 0]));
  while (Buffer.concat(chunks).length < 8 && !s.destroyed) await Promise.race([once(s, 'data'), once(s, 'close')]);
  s.destroy();
  return Buffer.concat(chunks)[1] ?? -1;
}

describe('SOCKS4 with AUTHORIZER, no IDENT', () => {
  let proxy: TestProxy;
  before(async () => {
    proxy = await startProxy(['-P127.0.0.1:0/socks', 'AUTHORIZER=-list{alice:alice-pw}']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  it('a known user id alone is refused with 91 and the reason logged', async () => {
    assert.equal(await socks4Cd(proxy.port(), 'alice'), 91);
    const r = await curl(['--socks4', `127.0.0.1:${proxy.port()}`, '--proxy-user', 'alice:', origin.url('/')]);
    assert.notEqual(r.code, 0, 'curl --socks4 with a bare user id must not get through');
    await proxy.stop();
    assert.match(proxy.readLog('sockstap.log'), /SOCKS4AUTH=userid/);
  });
});

describe('SOCKS4 with AUTHORIZER and SOCKS4AUTH=userid (the weak form, opted in)', () => {
  let proxy: TestProxy;
  before(async () => {
    proxy = await startProxy(['-P127.0.0.1:0/socks', 'AUTHORIZER=-list{alice:alice-pw}', 'SOCKS4AUTH=userid']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  it('a known user id passes, an unknown one gets 91', async () => {
    const r = await curl(['--socks4', `127.0.0.1:${proxy.port()}`, '--proxy-user', 'alice:', origin.url('/')]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(PAGE));
    assert.equal(await socks4Cd(proxy.port(), 'mallory'), 91);
  });

  it('SOCKS5 still needs the password', async () => {
    const bad = await curl(['--socks5', `127.0.0.1:${proxy.port()}`, '--proxy-user', 'alice:wrong', origin.url('/')]);
    assert.notEqual(bad.code, 0);
    const good = await curl(['--socks5', `127.0.0.1:${proxy.port()}`, '--proxy-user', 'alice:alice-pw', origin.url('/')]);
    assert.equal(good.code, 0, good.stderr);
  });
});

describe('SOCKS4 with AUTHORIZER and IDENT=do', () => {
  let proxy: TestProxy;
  let identd: net.Server;
  const identSockets = new Set<net.Socket>();
  before(async () => {
    // identd says every connection is alice's.
    identd = net.createServer((s) => {
      identSockets.add(s);
      s.on('close', () => identSockets.delete(s));
      s.on('error', () => {});
      s.setEncoding('latin1');
      s.once('data', (q: string) => {
        const [a, b] = q.trim().split(',').map((x) => x.trim());
        s.end(`${a} , ${b} : USERID : UNIX : alice\r\n`);
      });
    });
    identd.listen(0, '127.0.0.1');
    await once(identd, 'listening');
    process.env.SOCKSTAP_IDENT_PORT = String((identd.address() as net.AddressInfo).port);
    proxy = await startProxy(['-P127.0.0.1:0/socks', 'AUTHORIZER=-list{alice:alice-pw,bob:bob-pw}', 'IDENT=do']);
  });
  after(async () => {
    delete process.env.SOCKSTAP_IDENT_PORT;
    await proxy.stop();
    proxy.cleanup();
    for (const s of identSockets) s.destroy();
    identd.close();
  });

  it('the user id identd confirms passes; a known user identd does not confirm gets 93', async () => {
    assert.equal(await socks4Cd(proxy.port(), 'alice'), 90);
    assert.equal(await socks4Cd(proxy.port(), 'bob'), 93);
    assert.equal(await socks4Cd(proxy.port(), 'mallory'), 91);
  });
});
