/**
 * A real Squid (HTTP proxy) for upstream tests: a config in a temp dir, http_port on loopback, no
 * cache_dir, access.log in the temp dir so a test can read the CONNECT or absolute URL. Optional
 * Basic auth through basic_ncsa_auth and an htpasswd file. Started with `squid -N`, killed by PID.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, isRoot, killChild, waitForPort } from './dante.js';

export interface Squid {
  port: number;
  accessLog(): string;
  stop(): Promise<void>;
}

export function squidMissing(): string | null {
  const r = spawnSync('sh', ['-c', 'command -v squid']);
  return r.status === 0 ? null : 'squid is not installed (apt-get install squid)';
}

const NCSA = '/usr/lib/squid/basic_ncsa_auth';

/** The htpasswd line for user:password (Apache MD5 through openssl), or null without openssl. */
function htpasswdLine(user: string, password: string): string | null {
  const r = spawnSync('openssl', ['passwd', '-apr1', password]);
  return r.status === 0 ? `${user}:${r.stdout.toString().trim()}\n` : null;
}

export async function startSquid(options: { user?: string; password?: string } = {}): Promise<Squid> {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-squid-'));
  // Squid drops to its effective user (proxy) when started as root: it must write here.
  chmodSync(dir, 0o777);
  const port = await freePort();
  const conf = join(dir, 'squid.conf');
  const log = join(dir, 'access.log');
  const auth: string[] = [];
  if (options.user !== undefined) {
    const line = htpasswdLine(options.user, options.password ?? '');
    if (!line || !existsSync(NCSA)) throw new Error('squid Basic auth needs openssl and basic_ncsa_auth');
    writeFileSync(join(dir, 'passwd'), line, { mode: 0o644 });
    auth.push(
      `auth_param basic program ${NCSA} ${join(dir, 'passwd')}`,
      'auth_param basic realm sockstap-test',
      'acl authed proxy_auth REQUIRED',
      'http_access deny !authed',
    );
  }
  writeFileSync(
    conf,
    [
      `http_port 127.0.0.1:${port}`,
      `pid_filename ${join(dir, 'squid.pid')}`,
      `access_log stdio:${log} squid`,
      `cache_log ${join(dir, 'cache.log')}`,
      'cache_store_log none',
      'cache deny all',
      'cache_mem 8 MB',
      `coredump_dir ${dir}`,
      'netdb_filename none',
      'shutdown_lifetime 0 seconds',
      'dns_v4_first on',
      ...(isRoot() ? ['cache_effective_user proxy'] : []),
      ...auth,
      'acl blocked dstdomain .blocked.test',
      'http_access deny blocked',
      'http_access allow localhost',
      'http_access deny all',
      '',
    ].join('\n'),
  );
  const child = spawn('squid', ['-N', '-f', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  try {
    await waitForPort(port, '127.0.0.1', 20_000, child);
  } catch (err) {
    await killChild(child);
    const cacheLog = existsSync(join(dir, 'cache.log')) ? readFileSync(join(dir, 'cache.log'), 'utf8') : '';
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`squid did not start: ${(err as Error).message}\n${out}\n${cacheLog}`);
  }
  return {
    port,
    accessLog: () => (existsSync(log) ? readFileSync(log, 'utf8') : ''),
    async stop() {
      await killChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
