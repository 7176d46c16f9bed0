/**
 * No password anywhere (issue 13 finding 7, issue 12 item 5): every login form of every protocol
 * goes through the proxy with tabs for separators, odd case, and `@` and `:` in the passwords:
 * FTP USER/PASS; POP3 USER/PASS, APOP, AUTH PLAIN (inline and on the continuation line) and AUTH
 * LOGIN; IMAP LOGIN (quoted and as literals), AUTHENTICATE PLAIN (inline SASL-IR and continued);
 * SMTP AUTH PLAIN and LOGIN; NNTP AUTHINFO USER/PASS and AUTHINFO SASL PLAIN; SOCKS5 user/password
 * (good and wrong); HTTP Proxy-Authorization (good, wrong, odd case, CONNECT); ftp:// and http://
 * URLs with user:password whose password holds an unencoded `@`. Real servers (pyftpdlib,
 * dovecot, aiosmtpd, the test NNTP server, a Node origin); sockstap runs as its command line, and
 * after it stopped every file under STATEDIR and LOGDIR and everything it printed are searched for
 * each password and its base64 and URL-encoded forms. POP3 and IMAP records name the user of a
 * SASL PLAIN login.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { pyftpdlibAvailable, startFtpServer, type TestFtpServer } from '../helpers/ftp-server.js';
import { eventually, HAVE_AIOSMTPD, HAVE_DOVECOT, startDovecot, startSmtpServer, type Dovecot, type SmtpServer } from '../helpers/mail.js';
import { startNntpServer, type NntpServer } from '../helpers/nntp-server.js';
import { startOrigin, type Origin } from '../helpers/origin.js';
import { runCli, type CliProcess } from '../helpers/process.js';

const skip = HAVE_DOVECOT && HAVE_AIOSMTPD && pyftpdlibAvailable() ? false : 'needs dovecot, python3-aiosmtpd, python3-socks and python3-pyftpdlib';

/** Each password: `@` and `:` inside, and a tail (`<tag>-w0rd`) that no log line has any other reason to hold. */
const pw = (tag: string): string => `Se@cr3t:${tag}-w0rd`;
const PROXY_PW = pw('proxy');
const WRONG_PW = pw('wrong');
const FTP_PW = pw('ftp');
const MAIL_PW = pw('mail');
const SMTP_PW = pw('smtp');
const NNTP_PW = pw('nntp');
const ORIGIN_PW = pw('origin');
const SECRETS = [PROXY_PW, WRONG_PW, FTP_PW, MAIL_PW, SMTP_PW, NNTP_PW, ORIGIN_PW];
const USER = 'alice';

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const plain = (user: string, password: string): string => b64(`\0${user}\0${password}`);

/** What must never be found (in any case): the password, its tail, its URL encoding, every base64 form a client sends. */
function needles(password: string): string[] {
  const tail = password.slice(password.lastIndexOf(':') + 1);
  return [password, tail, encodeURIComponent(password), b64(password), plain(USER, password), b64(`${USER}:${password}`)];
}

/** A line-oriented client on a tunnel: send lines, wait for the reply line that matches. */
class Chat {
  private buf = '';
  private readonly lines: string[] = [];
  private wake: (() => void) | null = null;
  private closed = false;
  readonly port: number;
  constructor(readonly socket: net.Socket) {
    this.port = socket.localPort!;
    socket.on('data', (d: Buffer) => {
      this.buf += d.toString('latin1');
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        this.lines.push(this.buf.slice(0, i).replace(/\r$/, ''));
        this.buf = this.buf.slice(i + 1);
      }
      this.wake?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    socket.on('error', () => {});
  }
  send(line: string): void {
    this.socket.write(`${line}\r\n`);
  }
  raw(bytes: string): void {
    this.socket.write(bytes);
  }
  /** The first line (from here on) that matches `re`; earlier lines are skipped. */
  async expect(re: RegExp, ms = 10_000): Promise<string> {
    const seen: string[] = [];
    const end = Date.now() + ms;
    for (;;) {
      while (this.lines.length > 0) {
        const l = this.lines.shift()!;
        seen.push(l);
        if (re.test(l)) return l;
      }
      if (this.closed || Date.now() > end) throw new Error(`no line matching ${re}; got ${JSON.stringify(seen)}`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 100);
      });
      this.wake = null;
    }
  }
  async close(): Promise<void> {
    if (this.closed) return;
    const done = new Promise<void>((r) => this.socket.once('close', () => r()));
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
    await done;
  }
}

let socksPort = 0;
let httpPort = 0;

async function via(dstPort: number, password = PROXY_PW): Promise<Chat> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: socksPort, type: 5, userId: USER, password },
    command: 'connect',
    destination: { host: '127.0.0.1', port: dstPort },
    timeout: 10_000,
  });
  return new Chat(socket);
}

/** One raw HTTP exchange with the HTTP door (the request as written, `Connection: close`); the whole answer. */
function rawHttp(request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(httpPort, '127.0.0.1');
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('end', () => resolve(out));
    s.on('error', reject);
    s.setTimeout(15_000, () => s.destroy(new Error(`no answer: ${out}`)));
    s.write(request);
  });
}

const auth = (password = PROXY_PW, scheme = 'Basic'): string => `Proxy-Authorization: ${scheme} ${b64(`${USER}:${password}`)}\r\n`;

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p);
    if (st.isDirectory()) out.push(...filesUnder(p));
    else if (st.isFile()) out.push(p);
  }
  return out;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed JSON records
type Rec = Record<string, any>;

let ftp: TestFtpServer;
let dovecot: Dovecot;
let smtp: SmtpServer;
let nntp: NntpServer;
let origin: Origin;
let socksProxy: CliProcess;
let httpProxy: CliProcess;
const dirs: string[] = [];
let socksLogDir = '';

function sessions(): Rec[] {
  try {
    return readFileSync(join(socksLogDir, 'sessions.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Rec);
  } catch {
    return [];
  }
}

/** The record of the session through the SOCKS door with this protocol whose local port was `port`. */
function sessionOf(chat: Chat, proto: string): Promise<Rec> {
  const port = chat.port;
  return eventually(
    () => sessions().find((s) => s.proto === proto && String(s.client).endsWith(`:${port}`)) ?? null,
    `${proto} session (client port ${port}) in ${JSON.stringify(sessions().map((s) => [s.client, s.proto]))}`,
  );
}

describe('no password in any file or output', { skip }, () => {
  before(async () => {
    ftp = await startFtpServer(FTP_PW);
    writeFileSync(join(ftp.root, 'file.txt'), 'ftp file body\n');
    dovecot = await startDovecot([Buffer.from('From: a@example.test\r\nSubject: s\r\n\r\nbody\r\n')], MAIL_PW);
    smtp = await startSmtpServer();
    nntp = await startNntpServer('test.group', [], { user: USER, password: NNTP_PW });
    // Cacheable answers, so that the URL with user:password becomes a cache entry under STATEDIR.
    origin = await startOrigin((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=600' });
      res.end(`origin body for ${req.url}\n`);
    });
    const start = (name: string, args: string[]): CliProcess => {
      const dir = mkdtempSync(join(tmpdir(), `sockstap-secrets-${name}-`));
      dirs.push(dir);
      if (name === 'socks') socksLogDir = join(dir, 'log');
      return runCli([...args, `AUTHORIZER=-list{${USER}:${PROXY_PW}}`, `STATEDIR=${join(dir, 'state')}`, `LOGDIR=${join(dir, 'log')}`]);
    };
    socksProxy = start('socks', ['-P127.0.0.1:0/socks', 'SOCKSTAP=all', 'TIMEOUT=sniff:2s']);
    httpProxy = start('http', ['-P127.0.0.1:0/http', 'CACHE=do']);
    socksPort = Number((await socksProxy.waitFor(/socks door on 127\.0\.0\.1:(\d+)/))[1]);
    httpPort = Number((await httpProxy.waitFor(/http door on 127\.0\.0\.1:(\d+)/))[1]);
  });
  after(async () => {
    socksProxy?.kill('SIGKILL');
    httpProxy?.kill('SIGKILL');
    await Promise.all([ftp?.stop(), dovecot?.stop(), smtp?.stop(), nntp?.close(), origin?.close()]);
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  test('FTP: USER, PASS<TAB>, odd-case pass', async () => {
    const c = await via(ftp.port);
    await c.expect(/^220 /);
    c.send(`USER ${USER}`);
    await c.expect(/^331 /);
    c.send(`PASS\t${FTP_PW}`);
    await c.expect(/^\d{3} /);
    c.send(`pAsS ${FTP_PW}`);
    await c.expect(/^230 /);
    c.send('QUIT');
    await c.expect(/^221 /);
    await c.close();
    const s = await sessionOf(c, 'ftp');
    assert.equal(s.ftp.user, USER);
    assert.deepEqual(s.ftp.commands.filter((x: string) => /^pass/i.test(x)), ['PASS ****', 'PASS ****']);
  });

  test('POP3: USER then PASS<TAB> and odd case, APOP', async () => {
    const c = await via(dovecot.popPort);
    await c.expect(/^\+OK/);
    c.send(`user\t${USER}`);
    await c.expect(/^[+-]/);
    c.send(`PASS\t${MAIL_PW}`);
    await c.expect(/^[+-]/);
    c.send(`USER ${USER}`);
    await c.expect(/^\+OK/);
    c.send(`pass ${MAIL_PW}`);
    await c.expect(/^\+OK/);
    c.send('QUIT');
    await c.expect(/^\+OK/);
    await c.close();
    const s = await sessionOf(c, 'pop3');
    assert.equal(s.pop3.user, USER);
    assert.deepEqual(s.pop3.commands.filter((x: string) => /^pass/i.test(x)), ['PASS ***', 'PASS ***']);
    const a = await via(dovecot.popPort);
    await a.expect(/^\+OK/);
    a.send(`apop\t${USER}\t0123456789abcdef0123456789abcdef`);
    await a.expect(/^[+-]/);
    a.send('QUIT');
    await a.expect(/^\+OK/);
    await a.close();
    const sa = await sessionOf(a, 'pop3');
    assert.deepEqual(sa.pop3.commands.slice(0, 1), [`APOP ${USER} ***`]);
  });

  test('POP3 AUTH PLAIN names the user: inline, on the continuation line, and AUTH LOGIN', async () => {
    const forms: Array<(c: Chat) => Promise<void>> = [
      async (c) => {
        c.send(`AUTH PLAIN ${plain(USER, MAIL_PW)}`);
      },
      async (c) => {
        // dovecot knows no TAB separator: a client that does not wait sends its response as a command.
        c.send('auth\tplain');
        c.send(plain(USER, MAIL_PW));
        await c.expect(/^-ERR/);
        await c.expect(/^-ERR/);
        c.send('auth plain');
        await c.expect(/^\+ ?$/);
        c.send(plain(USER, MAIL_PW));
      },
      async (c) => {
        c.send('AUTH LOGIN');
        await c.expect(/^\+ /);
        c.send(b64(USER));
        await c.expect(/^\+ /);
        c.send(b64(MAIL_PW));
      },
    ];
    for (const form of forms) {
      const c = await via(dovecot.popPort);
      await c.expect(/^\+OK/);
      await form(c);
      await c.expect(/^\+OK/);
      c.send('STAT');
      await c.expect(/^\+OK 1 /);
      c.send('QUIT');
      await c.expect(/^\+OK/);
      await c.close();
      const s = await sessionOf(c, 'pop3');
      assert.equal(s.pop3.user, USER, JSON.stringify(s.pop3));
    }
  });

  test('IMAP AUTHENTICATE PLAIN names the user: SASL-IR inline and continued; LOGIN quoted, literal, with tabs', async () => {
    const forms: Array<(c: Chat) => Promise<void>> = [
      async (c) => {
        c.send(`a1 AUTHENTICATE PLAIN ${plain(USER, MAIL_PW)}`);
      },
      async (c) => {
        c.send('a1 authenticate plain');
        await c.expect(/^\+/);
        c.send(plain(USER, MAIL_PW));
      },
      async (c) => {
        c.send('a1 AUTHENTICATE LOGIN');
        await c.expect(/^\+/);
        c.send(b64(USER));
        await c.expect(/^\+/);
        c.send(b64(MAIL_PW));
      },
      async (c) => {
        c.send(`a0\tLOGIN\t${USER}\t"${MAIL_PW}"`);
        await c.expect(/BAD/);
        c.send(`a1 login ${USER} "${MAIL_PW}"`);
      },
      async (c) => {
        // dovecot knows no TAB separator: the response of a client that does not wait is a command.
        c.send(`a0 authenticate\tplain`);
        c.send(plain(USER, MAIL_PW));
        await c.expect(/BAD/);
        await c.expect(/BAD/);
        c.send(`a1 AUTHENTICATE plain`);
        await c.expect(/^\+/);
        c.send(plain(USER, MAIL_PW));
      },
      async (c) => {
        c.raw(`a1 LOGIN {${USER.length}+}\r\n${USER} {${MAIL_PW.length}+}\r\n${MAIL_PW}\r\n`);
      },
    ];
    for (const form of forms) {
      const c = await via(dovecot.imapPort);
      await c.expect(/^\* OK/);
      await form(c);
      await c.expect(/^a1 OK/);
      c.send('a2 LOGOUT');
      await c.expect(/^a2 OK/);
      await c.close();
      const s = await sessionOf(c, 'imap');
      assert.equal(s.imap.user, USER, JSON.stringify(s.imap));
    }
  });

  test('SMTP AUTH PLAIN and LOGIN, inline, continued, with a tab', async () => {
    const forms: Array<(c: Chat) => Promise<void>> = [
      async (c) => c.send(`AUTH PLAIN ${plain(USER, SMTP_PW)}`),
      async (c) => {
        // aiosmtpd knows no TAB separator: the response of a client that does not wait is a command.
        c.send('auth\tplain');
        c.send(plain(USER, SMTP_PW));
        await c.expect(/^500 /);
        await c.expect(/^500 /);
        c.send('auth PLAIN');
        await c.expect(/^334/);
        c.send(plain(USER, SMTP_PW));
      },
      async (c) => {
        c.send('AUTH LOGIN');
        await c.expect(/^334 /);
        c.send(b64(USER));
        await c.expect(/^334 /);
        c.send(b64(SMTP_PW));
      },
    ];
    for (const form of forms) {
      const c = await via(smtp.port);
      await c.expect(/^220 /);
      c.send('EHLO client.test');
      await c.expect(/^250 /);
      await form(c);
      await c.expect(/^235 /);
      c.send('QUIT');
      await c.expect(/^221/);
      await c.close();
      await sessionOf(c, 'smtp');
    }
  });

  test('NNTP AUTHINFO USER/PASS with tabs and odd case, AUTHINFO SASL PLAIN', async () => {
    const forms: Array<(c: Chat) => Promise<void>> = [
      async (c) => {
        c.send(`AUTHINFO USER ${USER}`);
        await c.expect(/^381/);
        c.send(`AUTHINFO\tPASS ${NNTP_PW}`);
      },
      async (c) => {
        c.send(`authinfo\tuser\t${USER}`);
        await c.expect(/^381/);
        c.send(`authinfo pass\t${NNTP_PW}`);
      },
      async (c) => c.send(`AUTHINFO SASL PLAIN ${plain(USER, NNTP_PW)}`),
      async (c) => {
        c.send('AUTHINFO SASL PLAIN');
        await c.expect(/^383/);
        c.send(plain(USER, NNTP_PW));
      },
    ];
    for (const form of forms) {
      const c = await via(nntp.port);
      await c.expect(/^200 /);
      await form(c);
      await c.expect(/^281 /);
      c.send('QUIT');
      await c.expect(/^205/);
      await c.close();
      const s = await sessionOf(c, 'nntp');
      assert.equal(s.nntp.user, USER, JSON.stringify(s.nntp));
      assert.ok(s.nntp.commands.some((x: string) => /^AUTHINFO (PASS|SASL)/.test(x)), JSON.stringify(s.nntp));
    }
  });

  test('SOCKS5 with a wrong password is refused', async () => {
    await assert.rejects(via(origin.port, WRONG_PW));
  });

  test('HTTP door: Proxy-Authorization good, wrong, odd case, CONNECT; ftp:// and http:// URLs with user:password', async () => {
    const host = `127.0.0.1:${origin.port}`;
    let r = await rawHttp(`GET http://${host}/a HTTP/1.1\r\nHost: ${host}\r\n${auth()}Connection: close\r\n\r\n`);
    assert.match(r, /^HTTP\/1\.1 200 /);
    r = await rawHttp(`GET http://${host}/b HTTP/1.1\r\nHost: ${host}\r\n${auth(PROXY_PW, 'bAsIc')}Connection: close\r\n\r\n`);
    assert.match(r, /^HTTP\/1\.1 200 /);
    r = await rawHttp(`GET http://${host}/c HTTP/1.1\r\nHost: ${host}\r\n${auth(WRONG_PW)}Connection: close\r\n\r\n`);
    assert.match(r, /^HTTP\/1\.1 407 /);
    r = await rawHttp(`CONNECT ${host} HTTP/1.1\r\nHost: ${host}\r\n${auth(WRONG_PW)}\r\n`);
    assert.match(r, /^HTTP\/1\.1 407 /);
    // The password's `@` unencoded: the user information runs to the last `@`.
    r = await rawHttp(`GET http://${USER}:${ORIGIN_PW}@${host}/d HTTP/1.1\r\nHost: ${host}\r\n${auth()}Connection: close\r\n\r\n`);
    assert.match(r, /^HTTP\/1\.1 200 /);
    const ftpHost = `127.0.0.1:${ftp.port}`;
    for (const userinfo of [`${USER}:${FTP_PW}`, `${USER}:${encodeURIComponent(FTP_PW)}`]) {
      r = await rawHttp(`GET ftp://${userinfo}@${ftpHost}/file.txt HTTP/1.1\r\nHost: ${ftpHost}\r\n${auth()}Connection: close\r\n\r\n`);
      assert.match(r, /^HTTP\/1\.1 200 [^]*ftp file body/);
      r = await rawHttp(`GET ftp://${userinfo}@${ftpHost}/ HTTP/1.1\r\nHost: ${ftpHost}\r\n${auth()}Connection: close\r\n\r\n`);
      assert.match(r, /^HTTP\/1\.1 200 [^]*file\.txt/);
    }
    // Refused by the proxy (wrong Proxy-Authorization): the URL is logged as the client sent it, without its password.
    r = await rawHttp(`GET ftp://${USER}:${FTP_PW}@${ftpHost}/file.txt HTTP/1.1\r\nHost: ${ftpHost}\r\n${auth(WRONG_PW)}Connection: close\r\n\r\n`);
    assert.match(r, /^HTTP\/1\.1 407 /);
    r = await rawHttp(`GET http://${USER}:${ORIGIN_PW}@${host}/e HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    assert.match(r, /^HTTP\/1\.1 407 /);
    // A wrong FTP password in the URL: refused by the server, and still never logged.
    r = await rawHttp(`GET ftp://${USER}:${WRONG_PW}@${ftpHost}/file.txt HTTP/1.1\r\nHost: ${ftpHost}\r\n${auth()}Connection: close\r\n\r\n`);
    assert.doesNotMatch(r, /^HTTP\/1\.1 200 /);
  });

  test('after both processes stopped: no password under STATEDIR or LOGDIR, nor in what they printed', async () => {
    for (const p of [socksProxy, httpProxy]) {
      p.kill('SIGTERM');
      assert.equal(await p.exited, 0);
    }
    const places: Array<{ name: string; text: string }> = [
      { name: 'socks proxy stdout+stderr', text: socksProxy.output() },
      { name: 'http proxy stdout+stderr', text: httpProxy.output() },
    ];
    for (const d of dirs) for (const f of filesUnder(d)) places.push({ name: f, text: readFileSync(f).toString('latin1') });
    // Case-insensitive: a tap that upper-cases what it took for a verb must not hide a leak.
    const lower = places.map((p) => p.text.toLowerCase());
    const access = places.find((p) => /secrets-http-[^/]*\/log\/access\.log$/.test(p.name));
    assert.ok(access, 'the HTTP door wrote access.log');
    assert.match(access.text, new RegExp(` ftp://${USER}@127\\.0\\.0\\.1:${ftp.port}/file\\.txt `));
    assert.match(access.text, new RegExp(` http://127\\.0\\.0\\.1:${origin.port}/d `));
    assert.match(access.text, new RegExp(`TCP_DENIED/407 \\d+ GET ftp://${USER}@127\\.0\\.0\\.1:${ftp.port}/file\\.txt `));
    assert.match(access.text, new RegExp(`TCP_DENIED/407 \\d+ GET http://${USER}@127\\.0\\.0\\.1:${origin.port}/e `));
    assert.ok(places.some((p) => p.name.includes('/cache/') && p.text.includes(`:${origin.port}/d`)), 'the cache holds /d');
    const found: string[] = [];
    for (const secret of SECRETS) {
      for (const needle of needles(secret)) {
        for (const [i, p] of places.entries()) {
          const at = lower[i]!.indexOf(needle.toLowerCase());
          if (at >= 0) found.push(`${p.name}: ${JSON.stringify(needle)} in ${JSON.stringify(p.text.slice(Math.max(0, at - 80), at + needle.length + 20))}`);
        }
      }
    }
    assert.deepEqual(found, []);
  });
});
