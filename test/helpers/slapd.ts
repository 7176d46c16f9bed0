/**
 * A real OpenLDAP server (Debian's slapd) for the -ldap{} tests: slapd.conf and an MDB database in
 * a temp dir, the memberof overlay, listening on a free loopback port, started in the foreground
 * (-d 0) and stopped by PID; entries loaded with ldapadd (ldap-utils) as the rootdn.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, killChild, waitForPort } from './dante.js';

export const SUFFIX = 'dc=example,dc=test';
export const ROOT_DN = `cn=admin,${SUFFIX}`;
export const ROOT_PW = 'root-secret-ldap';

export interface Slapd {
  url: string;
  port: number;
  /** Add LDIF entries as the rootdn. */
  add(ldif: string): void;
  stop(): Promise<void>;
}

export function slapdMissing(): string | null {
  for (const [bin, pkg] of [['/usr/sbin/slapd', 'slapd'], ['ldapadd', 'ldap-utils']] as const) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) return `${bin} is not installed (apt-get install ${pkg})`;
  }
  return null;
}

export async function startSlapd(): Promise<Slapd> {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-slapd-'));
  mkdirSync(join(dir, 'db'));
  const conf = join(dir, 'slapd.conf');
  writeFileSync(
    conf,
    [
      'include /etc/ldap/schema/core.schema',
      'include /etc/ldap/schema/cosine.schema',
      'include /etc/ldap/schema/inetorgperson.schema',
      'include /etc/ldap/schema/nis.schema',
      'modulepath /usr/lib/ldap',
      'moduleload back_mdb',
      'moduleload memberof',
      `pidfile ${join(dir, 'slapd.pid')}`,
      'database mdb',
      `suffix "${SUFFIX}"`,
      `rootdn "${ROOT_DN}"`,
      `rootpw ${ROOT_PW}`,
      `directory ${join(dir, 'db')}`,
      'maxsize 10485760',
      'overlay memberof',
      'access to attrs=userPassword by self read by anonymous auth by * none',
      'access to * by * read',
      '',
    ].join('\n'),
  );
  const port = await freePort();
  const url = `ldap://127.0.0.1:${port}`;
  const child: ChildProcess = spawn('/usr/sbin/slapd', ['-h', `${url}/`, '-f', conf, '-d', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  try {
    await waitForPort(port, '127.0.0.1', 10_000, child);
  } catch (err) {
    await killChild(child);
    throw new Error(`slapd did not start: ${(err as Error).message}\n${stderr}`);
  }
  return {
    url,
    port,
    add(ldif: string): void {
      const r = spawnSync('ldapadd', ['-x', '-H', url, '-D', ROOT_DN, '-w', ROOT_PW], { input: ldif });
      if (r.status !== 0) throw new Error(`ldapadd: ${r.stderr.toString()}`);
    },
    async stop(): Promise<void> {
      await killChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
