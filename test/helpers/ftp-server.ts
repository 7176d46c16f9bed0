/**
 * A real FTP server for tests: Debian's pyftpdlib on 127.0.0.1, port 0, serving a fresh temporary
 * root to `anonymous` and to the user alice (both may read and write).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const FTP_USER = 'alice';
export const FTP_PASSWORD = 's3cret-Pw-7731';

const SCRIPT = `
import sys, logging
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
root, user, password = sys.argv[1], sys.argv[2], sys.argv[3]
a = DummyAuthorizer()
a.add_anonymous(root, perm='elradfmwMT')
a.add_user(user, password, root, perm='elradfmwMT')
class Handler(FTPHandler):
    pass
Handler.authorizer = a
Handler.banner = 'pyftpdlib FTP server ready.'
# The data connections come from the proxy's address (SOCKS CONNECT, BIND), not the client's.
Handler.permit_foreign_addresses = True
server = FTPServer(('127.0.0.1', 0), Handler)
print(server.address[1], flush=True)
server.serve_forever()
`;

export function pyftpdlibAvailable(): boolean {
  return spawnSync('/usr/bin/python3', ['-c', 'import pyftpdlib'], { stdio: 'ignore' }).status === 0;
}

export interface TestFtpServer {
  port: number;
  root: string;
  /** Everything the server logged (its command log is on stderr). */
  log(): string;
  stop(): Promise<void>;
}

export async function startFtpServer(password = FTP_PASSWORD): Promise<TestFtpServer> {
  const root = mkdtempSync(join(tmpdir(), 'sockstap-ftp-'));
  const child: ChildProcess = spawn('/usr/bin/python3', ['-c', SCRIPT, root, FTP_USER, password], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => {
    if (log.length < 1_000_000) log += d.toString();
  });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^(\d+)\n/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`pyftpdlib exited with ${code}: ${log}`)));
    child.once('error', reject);
  });
  return {
    port,
    root,
    log: () => log,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(root, { recursive: true, force: true });
    },
  };
}
