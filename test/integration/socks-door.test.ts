/**
 * The SOCKS front doors on real loopback sockets, driven directly: a listener in the test hands
 * each accepted socket to socks4Door/socks5Door with a small real TunnelSink (net.connect, the
 * relay, runBind, runUdpAssociate). Clients are the `socks` npm package and raw sockets.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { SocksClient, type SocksProxy } from 'socks';
import type { Accounts, Config, ListenSpec } from '../../src/config/types.js';
import { codeFromSystemError } from '../../src/core/errors.js';
import { Session } from '../../src/core/session.js';
import type { Tunnel } from '../../src/core/tunnel.js';
import type { DoorContext, DoorHandler, TunnelSink } from '../../src/frontdoors/door.js';
import { socks4Door } from '../../src/frontdoors/socks4.js';
import { socks5Door } from '../../src/frontdoors/socks5.js';
import { runBind } from '../../src/net/bind.js';
import { relay } from '../../src/net/relay.js';
import { runUdpAssociate } from '../../src/net/udp-relay.js';
import { ProxyEvents } from '../../src/observe/events.js';
import type { LogFields, Logger } from '../../src/observe/log.js';
import { startEcho, type EchoServer } from '../helpers/origin.js';
import { NameCache } from '../../src/net/dns.js';
import { Runtime } from '../../src/runtime.js';

class MemoryLogger implements Logger {
  lines: string[] = [];
  private add(level: string, msg: string, fields?: LogFields): void {
    this.lines.push(`${level} ${msg} ${JSON.stringify(fields ?? {})}`);
  }
  debug(msg: string, fields?: LogFields): void {
    this.add('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.add('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.add('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.add('error', msg, fields);
  }
}

function accountsOf(users: Record<string, string>): Accounts {
  return {
    source: '-list{...}',
    has: (u) => Object.hasOwn(users, u),
    verify: (u, p) => Object.hasOwn(users, u) && users[u] === p,
  };
}

interface DoorServer {
  port: number;
  host: string;
  log: MemoryLogger;
  sessions: Session[];
  /** Datagram destinations the UDP policy refuses. */
  blockedUdpPorts: Set<number>;
  close(): Promise<void>;
}

/** A listener that hands every connection to `door`, with a real sink. */
async function startDoor(
  door: DoorHandler,
  options: { host?: string; handshakeMs?: number; accounts?: Accounts | null; ident?: boolean; socks4Auth?: 'userid' | 'none' } = {},
): Promise<DoorServer> {
  const host = options.host ?? '127.0.0.1';
  const log = new MemoryLogger();
  const sessions: Session[] = [];
  const blockedUdpPorts = new Set<number>();
  // The doors read only timeouts, accounts, ident and socks4Auth; the rest of Config is not needed here.
  const config = {
    timeouts: { connect: 5000, handshake: options.handshakeMs ?? 5000, idle: 0, sniff: 300, drain: 0 },
    accounts: options.accounts ?? null,
    ident: options.ident ?? false,
    socks4Auth: options.socks4Auth,
  } as unknown as Config;
  const sink: TunnelSink = {
    async handle(tunnel: Tunnel) {
      if (tunnel.command === 'bind') {
        const r = await runBind(tunnel, {
          timeoutMs: 5000,
          idleMs: 0,
          resolve: async (h) => (await lookup(h, { all: true })).map((a) => a.address),
        });
        tunnel.session.result = r.result;
        return;
      }
      const server = net.connect({ host: tunnel.dst.host, port: tunnel.dst.port });
      tunnel.session.adopt(server);
      server.on('error', (err) => {
        if (!server.remoteAddress) tunnel.replyFailure(codeFromSystemError(err), err.message);
      });
      await once(server, 'connect').catch(() => null);
      if (!server.remoteAddress) return;
      tunnel.replySuccess({ address: server.localAddress!, port: server.localPort! });
      await relay(tunnel.socket, server, { idleMs: 0 });
    },
    forwardHttp() {
      throw new Error('not used');
    },
    async associateUdp(tunnel: Tunnel) {
      await runUdpAssociate(tunnel, { idleMs: 0, names: new NameCache(), checkDestination: (_h, p) => !blockedUdpPorts.has(p) });
    },
  };
  const listen: ListenSpec = { host, port: 0, door: 'socks' };
  const ctx: DoorContext = { listen, config: () => config, sink, log, events: new ProxyEvents(), runtime: new Runtime() };
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    socket.on('error', () => {});
    const session = new Session({
      clientAddress: socket.remoteAddress!,
      clientPort: socket.remotePort!,
      door: 'socks',
      listen: `${host}:0`,
    });
    session.adopt(socket);
    sessions.push(session);
    door(socket, session, ctx);
  });
  server.listen(0, host);
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    host,
    log,
    sessions,
    blockedUdpPorts,
    close: async () => {
      for (const s of sessions) s.close();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const proxyOf = (d: DoorServer, type: 4 | 5, auth?: { userId?: string; password?: string }): SocksProxy => ({
  host: d.host,
  port: d.port,
  type,
  ...auth,
});

/** Write, then collect everything until the peer closes. */
async function exchange(socket: net.Socket, data: Buffer | string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.write(data);
  socket.end();
  await once(socket, 'close');
  return Buffer.concat(chunks);
}

/** Raw client: send `bytes`, collect until the proxy closes. */
async function rawExchange(d: DoorServer, bytes: Buffer): Promise<Buffer> {
  const s = net.connect(d.port, d.host);
  s.on('error', () => {});
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  s.write(bytes);
  await once(s, 'close');
  return Buffer.concat(chunks);
}

describe('SOCKS door: CONNECT', () => {
  let echo: EchoServer;
  let d4: DoorServer;
  let d5: DoorServer;
  before(async () => {
    echo = await startEcho();
    d4 = await startDoor(socks4Door);
    d5 = await startDoor(socks5Door);
  });
  after(async () => {
    await d4.close();
    await d5.close();
    await echo.close();
  });

  it('SOCKS4 to an address, SOCKS4a and SOCKS5 to a name', async () => {
    const cases: Array<[DoorServer, 4 | 5, string, string]> = [
      [d4, 4, '127.0.0.1', 'socks4'],
      [d4, 4, 'localhost', 'socks4a'],
      [d5, 5, '127.0.0.1', 'socks5'],
      [d5, 5, 'localhost', 'socks5'],
    ];
    for (const [d, type, host, proto] of cases) {
      const before = d.sessions.length;
      const { socket } = await SocksClient.createConnection({
        command: 'connect',
        destination: { host, port: echo.port },
        proxy: proxyOf(d, type, { userId: 'carol' }),
      });
      const got = await exchange(socket, `hello via ${proto} to ${host}`);
      assert.equal(got.toString(), `hello via ${proto} to ${host}`);
      const session = d.sessions[before]!;
      assert.equal(session.frontProtocol, proto);
      assert.equal(session.dst?.host, host, 'a name stays a name');
    }
  });

  it('keeps the bytes a client sends in the same packet as its request', async () => {
    const port = Buffer.from([echo.port >> 8, echo.port & 255]);
    // SOCKS5: greeting, request and payload in one write, before any reply is read.
    const bytes5 = Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1]), port, Buffer.from('early bytes')]);
    const s5 = net.connect(d5.port, d5.host);
    const got5 = await exchange(s5, bytes5);
    assert.deepEqual(got5, Buffer.concat([Buffer.from([5, 0]), got5.subarray(2, 12), Buffer.from('early bytes')]));
    assert.deepEqual([...got5.subarray(2, 6)], [5, 0, 0, 1]);
    // SOCKS4a likewise.
    const bytes4 = Buffer.concat([Buffer.from([4, 1]), port, Buffer.from([0, 0, 0, 1, 0]), Buffer.from('localhost\0early4')]);
    const got4 = await exchange(net.connect(d4.port, d4.host), bytes4);
    assert.equal(got4[1], 90);
    assert.equal(got4.subarray(8).toString(), 'early4');
  });

  it('answers a refused connection with SOCKS4 91 and SOCKS5 REP 5', async () => {
    const closed = net.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as net.AddressInfo).port;
    closed.close();
    await once(closed, 'close');
    const p = [port >> 8, port & 255];
    const r4 = await rawExchange(d4, Buffer.from([4, 1, ...p, 127, 0, 0, 1, 0]));
    assert.deepEqual([...r4.subarray(0, 2)], [0, 91]);
    const r5 = await rawExchange(d5, Buffer.from([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, ...p]));
    assert.deepEqual([...r5.subarray(0, 4)], [5, 0, 5, 5]);
  });

  it('answers malformed requests with REP 7, REP 8, REP 1 and 91, one log line each', async () => {
    const lines = d5.log.lines.length;
    assert.deepEqual([...(await rawExchange(d5, Buffer.from([5, 1, 0, 5, 9, 0, 1, 1, 2, 3, 4, 0, 80])))], [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual([...(await rawExchange(d5, Buffer.from([5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80])))], [5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual([...(await rawExchange(d5, Buffer.from([5, 1, 0, 5, 1, 0, 3, 0, 0, 80])))], [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    // A greeting of another version has no reply: a clean close.
    assert.equal((await rawExchange(d5, Buffer.from([6, 1, 0]))).length, 0);
    assert.equal(d5.log.lines.length - lines, 4, d5.log.lines.slice(lines).join('\n'));
    assert.deepEqual([...(await rawExchange(d4, Buffer.from([4, 7, 0, 80, 1, 2, 3, 4, 0])))], [0, 91, 0, 0, 0, 0, 0, 0]);
    // A user id that never ends is refused at its cap, not buffered.
    const endless = Buffer.concat([Buffer.from([4, 1, 0, 80, 1, 2, 3, 4]), Buffer.alloc(4000, 0x61)]);
    assert.deepEqual([...(await rawExchange(d4, endless))], [0, 91, 0, 0, 0, 0, 0, 0]);
  });

  it('offers no method to a client that offers none acceptable', async () => {
    assert.deepEqual([...(await rawExchange(d5, Buffer.from([5, 1, 2])))], [5, 0xff]);
  });
});

describe('SOCKS door: handshake timeout', () => {
  let echo: EchoServer;
  let d: DoorServer;
  before(async () => {
    echo = await startEcho();
    d = await startDoor(socks5Door, { handshakeMs: 500 });
  });
  after(async () => {
    await d.close();
    await echo.close();
  });

  it('closes a stalled half handshake while another client is served', async () => {
    const stalled = net.connect(d.port, d.host);
    stalled.on('error', () => {});
    stalled.write(Buffer.from([5, 2, 0])); // half a greeting, then nothing
    const closedStalled = once(stalled, 'close');
    const { socket } = await SocksClient.createConnection({
      command: 'connect',
      destination: { host: '127.0.0.1', port: echo.port },
      proxy: proxyOf(d, 5),
    });
    assert.equal((await exchange(socket, 'meanwhile')).toString(), 'meanwhile');
    await closedStalled;
    assert.equal(d.log.lines.filter((l) => l.includes('handshake timeout')).length, 1, d.log.lines.join('\n'));
  });
});

describe('SOCKS5 door: RFC 1929 username/password', () => {
  let echo: EchoServer;
  let d: DoorServer;
  let d4: DoorServer;
  before(async () => {
    echo = await startEcho();
    d = await startDoor(socks5Door, { accounts: accountsOf({ alice: 'wonder-land' }) });
    d4 = await startDoor(socks4Door, { accounts: accountsOf({ alice: 'wonder-land' }), socks4Auth: 'userid' });
  });
  after(async () => {
    await d.close();
    await d4.close();
    await echo.close();
  });

  it('lets the right user in and records the user', async () => {
    const { socket } = await SocksClient.createConnection({
      command: 'connect',
      destination: { host: '127.0.0.1', port: echo.port },
      proxy: proxyOf(d, 5, { userId: 'alice', password: 'wonder-land' }),
    });
    assert.equal((await exchange(socket, 'authed')).toString(), 'authed');
    assert.equal(d.sessions.at(-1)!.user, 'alice');
  });

  it('answers a wrong password with status 1, closes, and never logs the password', async () => {
    const reply = await rawExchange(d, Buffer.from([5, 1, 2, 1, 5, ...Buffer.from('alice'), 9, ...Buffer.from('bad-guess')]));
    assert.deepEqual([...reply], [5, 2, 1, 1]);
    await assert.rejects(
      SocksClient.createConnection({
        command: 'connect',
        destination: { host: '127.0.0.1', port: echo.port },
        proxy: proxyOf(d, 5, { userId: 'alice', password: 'wonder-lan' }),
      }),
    );
    const log = d.log.lines.join('\n');
    assert.match(log, /authentication failed/);
    assert.doesNotMatch(log, /bad-guess|wonder-lan/);
  });

  it('refuses a client that offers only "no authentication"', async () => {
    assert.deepEqual([...(await rawExchange(d, Buffer.from([5, 1, 0])))], [5, 0xff]);
  });

  it('SOCKS4 with SOCKS4AUTH=userid: a known user id passes, an unknown one gets 91', async () => {
    const p = [echo.port >> 8, echo.port & 255];
    const ok = await exchange(net.connect(d4.port, d4.host), Buffer.from([4, 1, ...p, 127, 0, 0, 1, ...Buffer.from('alice'), 0, 0x78]));
    assert.deepEqual([...ok.subarray(0, 2), ...ok.subarray(8)], [0, 90, 0x78]);
    const refused = await rawExchange(d4, Buffer.from([4, 1, ...p, 127, 0, 0, 1, ...Buffer.from('mallory'), 0]));
    assert.deepEqual([...refused], [0, 91, 0, 0, 0, 0, 0, 0]);
  });
});

describe('SOCKS door: IPv6', () => {
  let echo: EchoServer;
  let d: DoorServer;
  before(async () => {
    echo = await startEcho('::1');
    d = await startDoor(socks5Door, { host: '::1' });
  });
  after(async () => {
    await d.close();
    await echo.close();
  });

  it('serves a client on [::1] to an IPv6 destination and replies with an IPv6 BND.ADDR', async () => {
    const p = [echo.port >> 8, echo.port & 255];
    const got = await exchange(
      net.connect(d.port, '::1'),
      Buffer.from([5, 1, 0, 5, 1, 0, 4, ...Buffer.alloc(15), 1, ...p, ...Buffer.from('six')]),
    );
    assert.deepEqual([...got.subarray(0, 6)], [5, 0, 5, 0, 0, 4]);
    assert.deepEqual([...got.subarray(6, 22)], [...Buffer.alloc(15), 1]);
    assert.equal(got.subarray(24).toString(), 'six');
    assert.equal(d.sessions.at(-1)!.dst?.host, '::1');
  });
});

/** BIND: the "server" connects back to the announced address, from `fromAddress`. */
async function bindOnce(d: DoorServer, type: 4 | 5, expectedHost: string, fromAddress: string): Promise<{ ok: boolean; relayed?: string }> {
  const client = new SocksClient({
    command: 'bind',
    destination: { host: expectedHost, port: 0 },
    proxy: proxyOf(d, type),
    timeout: 5000,
  });
  const bound = new Promise<{ host: string; port: number }>((resolve) => client.once('bound', (info) => resolve(info.remoteHost!)));
  const established = new Promise<net.Socket>((resolve, reject) => {
    client.once('established', (info) => resolve(info.socket));
    client.once('error', reject);
  });
  client.connect();
  const at = await bound;
  // SOCKS4: 0.0.0.0 means "the proxy's own address".
  const host = at.host === '0.0.0.0' ? d.host : at.host;
  const server = net.connect({ host, port: at.port, localAddress: fromAddress });
  server.on('error', () => {});
  try {
    const socket = await established;
    server.write('from server');
    const got = await new Promise<string>((resolve) => socket.once('data', (c: Buffer) => resolve(c.toString())));
    socket.destroy();
    return { ok: true, relayed: got };
  } catch {
    return { ok: false };
  } finally {
    server.destroy();
  }
}

describe('SOCKS door: BIND', () => {
  let d4: DoorServer;
  let d5: DoorServer;
  before(async () => {
    d4 = await startDoor(socks4Door);
    d5 = await startDoor(socks5Door);
  });
  after(async () => {
    await d4.close();
    await d5.close();
  });

  for (const type of [4, 5] as const) {
    it(`SOCKS${type}: the expected host connects in and is relayed`, async () => {
      const r = await bindOnce(type === 4 ? d4 : d5, type, '127.0.0.1', '127.0.0.1');
      assert.deepEqual(r, { ok: true, relayed: 'from server' });
    });

    it(`SOCKS${type}: another host gets the failure reply`, async () => {
      const d = type === 4 ? d4 : d5;
      const r = await bindOnce(d, type, '127.0.0.1', '127.0.0.2');
      assert.deepEqual(r, { ok: false });
      assert.equal(d.sessions.at(-1)!.result, 'EBINDPEER');
    });
  }

  it('SOCKS4 raw: first reply names the listener, second reply 91 for a stranger', async () => {
    const s = net.connect(d4.port, d4.host);
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.write(Buffer.from([4, 2, 0, 21, 127, 0, 0, 1, 0]));
    await once(s, 'data');
    const first = Buffer.concat(chunks);
    assert.deepEqual([...first.subarray(0, 2), ...first.subarray(4, 8)], [0, 90, 127, 0, 0, 1]);
    const stranger = net.connect({ host: '127.0.0.1', port: first.readUInt16BE(2), localAddress: '127.0.0.3' });
    stranger.on('error', () => {});
    await once(s, 'close');
    stranger.destroy();
    assert.deepEqual([...Buffer.concat(chunks).subarray(8)], [0, 91, 0, 0, 0, 0, 0, 0]);
  });
});

describe('SOCKS5 door: UDP ASSOCIATE', () => {
  let d: DoorServer;
  let echo: UdpSocket;
  let echoPort: number;
  const received: string[] = [];
  before(async () => {
    d = await startDoor(socks5Door);
    echo = createSocket('udp4');
    echo.on('message', (msg, rinfo) => {
      received.push(msg.toString());
      echo.send(Buffer.concat([Buffer.from('echo:'), msg]), rinfo.port, rinfo.address);
    });
    echo.bind(0, '127.0.0.1');
    await once(echo, 'listening');
    echoPort = echo.address().port;
  });
  after(async () => {
    await d.close();
    echo.close();
  });

  it('relays a datagram both ways, drops fragments and refused destinations', async () => {
    // createConnection() takes only CONNECT: drive the client through its events.
    const associate = new SocksClient({ command: 'associate', destination: { host: '0.0.0.0', port: 0 }, proxy: proxyOf(d, 5) });
    const established = new Promise<{ socket: net.Socket; remoteHost?: { host: string; port: number } }>((resolve, reject) => {
      associate.once('established', resolve);
      associate.once('error', reject);
    });
    associate.connect();
    const { socket: control, remoteHost } = await established;
    const relayAt = remoteHost!;
    const client = createSocket('udp4');
    client.bind(0, '127.0.0.1');
    await once(client, 'listening');
    const answers: Array<{ host: string; port: number; data: string }> = [];
    const gotAnswer = new Promise<void>((resolve) =>
      client.on('message', (msg) => {
        const f = SocksClient.parseUDPFrame(msg);
        answers.push({ host: f.remoteHost.host, port: f.remoteHost.port, data: f.data.toString() });
        resolve();
      }),
    );
    const send = (frame: Buffer): Promise<void> =>
      new Promise((resolve, reject) => client.send(frame, relayAt.port, relayAt.host, (e) => (e ? reject(e) : resolve())));
    d.blockedUdpPorts.add(echoPort + 1);
    // A fragment (FRAG=1) and a refused destination go first; both must be dropped.
    await send(SocksClient.createUDPFrame({ frameNumber: 1, remoteHost: { host: '127.0.0.1', port: echoPort }, data: Buffer.from('fragment') }));
    await send(SocksClient.createUDPFrame({ remoteHost: { host: '127.0.0.1', port: echoPort + 1 }, data: Buffer.from('refused') }));
    await send(SocksClient.createUDPFrame({ remoteHost: { host: 'localhost', port: echoPort }, data: Buffer.from('ping') }));
    await gotAnswer;
    assert.deepEqual(answers, [{ host: '127.0.0.1', port: echoPort, data: 'echo:ping' }]);
    assert.deepEqual(received, ['ping']);
    control.destroy();
    client.close();
  });
});

describe('SOCKS4 door: IDENT=do (RFC 1413)', () => {
  let echo: EchoServer;
  let d: DoorServer;
  let identd: net.Server;
  let identUser = 'alice';
  const identSockets = new Set<net.Socket>();
  before(async () => {
    echo = await startEcho();
    d = await startDoor(socks4Door, { ident: true });
    identd = net.createServer((s) => {
      identSockets.add(s);
      s.on('close', () => identSockets.delete(s));
      s.on('error', () => {});
      s.setEncoding('latin1');
      s.once('data', (q: string) => {
        const [a, b] = q.trim().split(',').map((x) => x.trim());
        s.end(`${a} , ${b} : USERID : UNIX : ${identUser}\r\n`);
      });
    });
    identd.listen(0, '127.0.0.1');
    await once(identd, 'listening');
    process.env.SOCKSTAP_IDENT_PORT = String((identd.address() as net.AddressInfo).port);
  });
  after(async () => {
    delete process.env.SOCKSTAP_IDENT_PORT;
    for (const s of identSockets) s.destroy();
    identd.close();
    await d.close();
    await echo.close();
  });

  const request = (user: string): Buffer => Buffer.from([4, 1, echo.port >> 8, echo.port & 255, 127, 0, 0, 1, ...Buffer.from(user), 0]);

  it('passes when identd names the same user', async () => {
    identUser = 'alice';
    const got = await exchange(net.connect(d.port, d.host), Buffer.concat([request('alice'), Buffer.from('hi')]));
    assert.deepEqual([...got.subarray(0, 2)], [0, 90]);
    assert.equal(got.subarray(8).toString(), 'hi');
  });

  it('answers 93 when identd names another user', async () => {
    identUser = 'bob';
    assert.deepEqual([...(await rawExchange(d, request('alice')))], [0, 93, 0, 0, 0, 0, 0, 0]);
  });

  it('answers 92 when identd cannot be reached', async () => {
    const closed = net.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const saved = process.env.SOCKSTAP_IDENT_PORT;
    process.env.SOCKSTAP_IDENT_PORT = String((closed.address() as net.AddressInfo).port);
    closed.close();
    await once(closed, 'close');
    try {
      assert.deepEqual([...(await rawExchange(d, request('alice')))], [0, 92, 0, 0, 0, 0, 0, 0]);
    } finally {
      process.env.SOCKSTAP_IDENT_PORT = saved;
    }
  });
});
