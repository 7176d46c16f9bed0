/**
 * Real mail servers and clients for the mail tap tests: Debian's aiosmtpd (python3-aiosmtpd) with
 * a handler that records every envelope command it saw, dovecot (dovecot-imapd, dovecot-pop3d)
 * started as a non-daemon with its own configuration in a temporary directory and a passwd-file
 * user, and Python's smtplib/poplib/imaplib/nntplib running through the proxy with PySocks
 * (python3-socks).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { parseSize } from '../../src/config/units.js';
import type { Config } from '../../src/config/types.js';
import { startSockstap, type Sockstap } from '../../src/sockstap.js';

export const PYTHON = '/usr/bin/python3';

export function have(check: string): boolean {
  return spawnSync('sh', ['-c', check], { stdio: 'ignore' }).status === 0;
}

export const HAVE_AIOSMTPD = have(`${PYTHON} -c 'import aiosmtpd, socks'`);
export const HAVE_DOVECOT = have('command -v dovecot') && have(`${PYTHON} -c 'import socks'`);

/** A free loopback port for servers that cannot listen on port 0 and tell (dovecot). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Run a Python script with PySocks routing every socket through the SOCKS5 proxy at `proxyPort`. */
export function pythonViaSocks(
  proxyPort: number,
  script: string,
  args: string[] = [],
  timeoutMs = 15_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const prelude = [
    'import socket, socks, sys',
    `socks.set_default_proxy(socks.SOCKS5, '127.0.0.1', ${proxyPort})`,
    'socket.socket = socks.socksocket',
  ].join('\n');
  return new Promise((resolve) => {
    const child = spawn(PYTHON, ['-c', `${prelude}\n${script}`, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

export interface SmtpServerRecord {
  /** 'rcpt' for every RCPT TO the server saw, 'data' for every message it received. */
  event: 'mail' | 'rcpt' | 'data';
  address?: string;
  from?: string;
  rcpt?: string[];
  /** base64 of the message as the server received it */
  content?: string;
}

export interface SmtpServer {
  port: number;
  records(): SmtpServerRecord[];
  stop(): Promise<void>;
}

const AIOSMTPD_SERVER = `
import asyncio, base64, json, sys
from aiosmtpd.smtp import SMTP, AuthResult
log = open(sys.argv[1], 'a', buffering=1)
def record(obj):
    log.write(json.dumps(obj) + '\\n')
class Recorder:
    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        record({'event': 'mail', 'address': address})
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return '250 OK'
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        record({'event': 'rcpt', 'address': address})
        envelope.rcpt_tos.append(address)
        return '250 OK'
    async def handle_DATA(self, server, session, envelope):
        record({'event': 'data', 'from': envelope.mail_from, 'rcpt': envelope.rcpt_tos,
                'content': base64.b64encode(envelope.original_content).decode()})
        return '250 Message accepted for delivery'
def authenticator(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=True)
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: SMTP(Recorder(), auth_require_tls=False, authenticator=authenticator), '127.0.0.1', 0)
    print('PORT', srv.sockets[0].getsockname()[1], flush=True)
    await srv.serve_forever()
asyncio.run(main())
`;

/** aiosmtpd on a free port, recording what it saw to a JSON-lines file. */
export async function startSmtpServer(): Promise<SmtpServer> {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-smtpd-'));
  const logFile = join(dir, 'envelopes.jsonl');
  const child = spawn(PYTHON, ['-c', AIOSMTPD_SERVER, logFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  const port = await waitForPort(child, /PORT (\d+)/);
  return {
    port,
    records: () =>
      existsSync(logFile)
        ? readFileSync(logFile, 'utf8')
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l) as SmtpServerRecord)
        : [],
    stop: async () => {
      await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function waitForPort(child: ChildProcess, re: RegExp): Promise<number> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not start: ${out}`));
    }, 10_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      const m = re.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', () => {
      clearTimeout(timer);
      reject(new Error(`server exited: ${out}`));
    });
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(t);
}

export interface Dovecot {
  imapPort: number;
  popPort: number;
  user: string;
  password: string;
  /** Message files in the user's Maildir (new/ and cur/). */
  messageCount(): number;
  log(): string;
  stop(): Promise<void>;
}

/**
 * dovecot serving IMAP and POP3 for one passwd-file user whose Maildir holds `messages`. Runs in
 * the foreground (`-F`) with every path in a temporary directory; the mail user is `nobody`.
 */
export async function startDovecot(messages: Buffer[], password = 's3cr3t-Pa55', tls?: { key: Buffer; cert: Buffer }): Promise<Dovecot> {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-dovecot-'));
  // dovecot's auth and mail processes run as other users: they must reach the files.
  chmodSync(dir, 0o755);
  const [imapPort, popPort] = [await freePort(), await freePort()];
  const home = join(dir, 'home', 'alice');
  const maildir = join(home, 'Maildir');
  for (const d of ['cur', 'new', 'tmp']) mkdirSync(join(maildir, d), { recursive: true });
  messages.forEach((m, i) => writeFileSync(join(maildir, 'new', `${1_700_000_000 + i}.M${i}P1.test`), m));
  const isRoot = process.getuid?.() === 0;
  const uid = isRoot ? 65534 : process.getuid!();
  const gid = isRoot ? 65534 : process.getgid!();
  if (isRoot) {
    for (const p of [join(dir, 'home'), home, maildir, ...['cur', 'new', 'tmp'].map((d) => join(maildir, d))]) chownSync(p, uid, gid);
    for (const f of readdirSync(join(maildir, 'new'))) chownSync(join(maildir, 'new', f), uid, gid);
  }
  // base64 (dovecot's .b64 encoding): the password may hold ':', the passwd-file separator.
  writeFileSync(join(dir, 'passwd'), `alice:{PLAIN.b64}${Buffer.from(password).toString('base64')}:${uid}:${gid}::${home}\n`);
  const conf = join(dir, 'dovecot.conf');
  // `tls`: ssl = yes, so IMAP and POP3 offer STARTTLS/STLS with this certificate.
  let ssl = 'ssl = no';
  if (tls) {
    writeFileSync(join(dir, 'server.key'), tls.key, { mode: 0o600 });
    writeFileSync(join(dir, 'server.crt'), tls.cert);
    ssl = `ssl = yes\nssl_cert = <${dir}/server.crt\nssl_key = <${dir}/server.key`;
  }
  writeFileSync(
    conf,
    `base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
${ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${dir}/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%u ${dir}/passwd
}
service imap-login {
  inet_listener imap {
    port = ${imapPort}
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    port = ${popPort}
  }
  inet_listener pop3s {
    port = 0
  }
}
service anvil {
  chroot =
}
`,
  );
  const child = spawn('dovecot', ['-F', '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.resume();
  child.stderr!.resume();
  await waitListening(imapPort);
  await waitListening(popPort);
  return {
    imapPort,
    popPort,
    user: 'alice',
    password,
    messageCount: () => ['new', 'cur'].reduce((n, d) => n + readdirSync(join(maildir, d)).length, 0),
    log: () => (existsSync(join(dir, 'dovecot.log')) ? readFileSync(join(dir, 'dovecot.log'), 'utf8') : ''),
    stop: async () => {
      await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function waitListening(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on 127.0.0.1:${port}`);
}

export interface MailProxy {
  proxy: Sockstap;
  config: Config;
  port: number;
  stateDir: string;
  sessions(): Array<Record<string, unknown>>;
  /** Every file under LOGDIR, concatenated (for "no password anywhere"). */
  allLogs(): string;
  stop(): Promise<void>;
}

/**
 * sockstap from a command line, with extra SOCKSTAP rule parameters (MAXSIZE) merged into every rule.
 */
export async function startMailProxy(args: string[], ruleParams: Record<string, string> = {}): Promise<MailProxy> {
  const stateDir = mkdtempSync(join(tmpdir(), 'sockstap-mail-'));
  const loaded = loadConfig([...args, `STATEDIR=${stateDir}`], { cwd: stateDir });
  const maxSize = ruleParams.MAXSIZE !== undefined ? parseSize(ruleParams.MAXSIZE, 'MAXSIZE') : undefined;
  const config: Config = {
    ...loaded,
    taps: loaded.taps.map((t) => ({
      ...t,
      params: { ...t.params, ...ruleParams },
      set: maxSize !== undefined ? { ...t.set, maxSize } : t.set,
    })),
  };
  const proxy = await startSockstap(config);
  const port = proxy.addresses()[0]!.port;
  const read = (name: string): string => {
    const p = join(config.logDir, name);
    return existsSync(p) ? readFileSync(p, 'utf8') : '';
  };
  let stopped = false;
  return {
    proxy,
    config,
    port,
    stateDir,
    sessions: () =>
      read('sessions.jsonl')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    allLogs: () => (existsSync(config.logDir) ? readdirSync(config.logDir).map(read).join('\n') : ''),
    stop: async () => {
      if (!stopped) {
        stopped = true;
        await proxy.stop(0);
      }
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** Wait until `pred` holds (session records are written when a connection has ended). */
export async function eventually<T>(fn: () => T | undefined | null | false, what: string, timeoutMs = 5000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
