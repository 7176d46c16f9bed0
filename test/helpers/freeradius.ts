/**
 * A real FreeRADIUS (Debian's freeradius) for the -radius{} tests: /etc/freeradius/3.0 copied to a
 * temp dir, trimmed to the pap and files modules, one virtual server listening for auth on a
 * free loopback UDP port, a client 127.0.0.1 with the test's secret (Message-Authenticator
 * required), the users given in mods-config/files/authorize. Started in the foreground (-f) and
 * stopped by PID.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import dgram from 'node:dgram';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killChild } from './dante.js';

const SOURCE = '/etc/freeradius/3.0';

export interface FreeRadius {
  port: number;
  log(): string;
  stop(): Promise<void>;
}

export function freeradiusMissing(): string | null {
  if (spawnSync('sh', ['-c', 'command -v freeradius']).status !== 0) return 'freeradius is not installed (apt-get install freeradius)';
  try {
    readdirSync(SOURCE);
  } catch {
    return `${SOURCE} is missing`;
  }
  return null;
}

function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.once('error', reject);
    s.bind(0, '127.0.0.1', () => {
      const port = s.address().port;
      s.close(() => resolve(port));
    });
  });
}

/** `users`: lines of FreeRADIUS's users file (mods-config/files/authorize). */
export async function startFreeRadius(secret: string, users: string): Promise<FreeRadius> {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-radius-'));
  const d = join(dir, 'raddb');
  cpSync(SOURCE, d, { recursive: true, verbatimSymlinks: true });
  const conf = join(d, 'radiusd.conf');
  const text = readFileSync(conf, 'utf8')
    .replace(/^logdir = .*$/m, `logdir = ${join(dir, 'log')}`)
    .replace(/^raddbdir = .*$/m, `raddbdir = ${d}`)
    .replace(/^run_dir = .*$/m, `run_dir = ${join(dir, 'run')}`)
    .replace(/^\s*user = freerad\s*$/m, '')
    .replace(/^\s*group = freerad\s*$/m, '');
  writeFileSync(conf, text);
  mkdirSync(join(dir, 'log'));
  mkdirSync(join(dir, 'run'));
  for (const f of readdirSync(join(d, 'sites-enabled'))) rmSync(join(d, 'sites-enabled', f));
  for (const f of readdirSync(join(d, 'mods-enabled'))) if (!['pap', 'files', 'always', 'expr'].includes(f)) rmSync(join(d, 'mods-enabled', f));
  const port = await freeUdpPort();
  writeFileSync(
    join(d, 'sites-enabled', 'sockstap'),
    `server default {\nlisten {\n  type = auth\n  ipaddr = 127.0.0.1\n  port = ${port}\n}\nauthorize {\n  files\n  pap\n}\nauthenticate {\n  Auth-Type PAP {\n    pap\n  }\n}\npost-auth {\n}\n}\n`,
  );
  writeFileSync(join(d, 'clients.conf'), `client localhost {\n  ipaddr = 127.0.0.1\n  secret = ${JSON.stringify(secret)}\n  require_message_authenticator = yes\n}\n`);
  writeFileSync(join(d, 'mods-config', 'files', 'authorize'), users);
  const logFile = join(dir, 'radius.log');
  const child: ChildProcess = spawn('freeradius', ['-f', '-d', d, '-l', logFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (x: Buffer) => (stderr = (stderr + x.toString()).slice(-4000)));
  const log = (): string => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  for (let i = 0; !/Ready to process requests/.test(log()); i++) {
    if (child.exitCode !== null || i > 200) {
      await killChild(child);
      throw new Error(`freeradius did not start: ${stderr}\n${log()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    log,
    async stop(): Promise<void> {
      await killChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
