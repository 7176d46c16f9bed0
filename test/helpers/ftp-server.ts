/**
 * A real FTP server for tests: Debian's pyftpdlib on 127.0.0.1, port 0, serving a fresh temporary
 * root to `anonymous` and to the user alice (both may read and write).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

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
Base = FTPHandler
if len(sys.argv) > 5:
    # AUTH TLS (RFC 4217) with PyOpenSSL: certificate and key files, TLS required on both channels.
    from pyftpdlib.handlers import TLS_FTPHandler, TLS_DTPHandler
    class DTP(TLS_DTPHandler):
        # curl starts a data connection's TLS handshake before its transfer command; pyftpdlib
        # 1.5.7 takes that early ClientHello for a disconnect (DTPHandler.readable) and closes.
        def readable(self):
            if getattr(self, '_ssl_accepting', False):
                return True
            return super().readable()
        # Each data connection's TLS says whether it resumed the control connection's session;
        # with 'reuse' one that did not is refused, as vsftpd's require_ssl_reuse does.
        def _do_ssl_handshake(self):
            super()._do_ssl_handshake()
            if self._ssl_established and not getattr(self, '_reuse_seen', False):
                self._reuse_seen = True
                from OpenSSL._util import lib
                reused = bool(lib.SSL_session_reused(self.socket._ssl))
                logging.info('data tls session reused=%s', reused)
                if not reused and len(sys.argv) > 6 and sys.argv[6] == 'reuse':
                    self.cmd_channel.respond('522 SSL connection failed: session reuse required')
                    self.close()
    TLS_FTPHandler.dtp_handler = DTP
    TLS_FTPHandler.certfile = sys.argv[4]
    TLS_FTPHandler.keyfile = sys.argv[5]
    TLS_FTPHandler.tls_control_required = True
    TLS_FTPHandler.tls_data_required = True
    Base = TLS_FTPHandler
class Handler(Base):
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

/** Whether pyftpdlib's TLS_FTPHandler can run (it needs PyOpenSSL: python3-openssl). */
export function pyftpdlibTlsAvailable(): boolean {
  return spawnSync('/usr/bin/python3', ['-c', 'import OpenSSL; from pyftpdlib.handlers import TLS_FTPHandler'], { stdio: 'ignore' }).status === 0;
}

/**
 * `tls`: AUTH TLS required on the control connection and PROT P on data (pyftpdlib's
 * TLS_FTPHandler); `requireReuse`: a data connection that does not resume the control
 * connection's TLS session is refused (522), as vsftpd's require_ssl_reuse does.
 */
export async function startFtpServer(password = FTP_PASSWORD, tls?: { key: Buffer; cert: Buffer; requireReuse?: boolean }): Promise<TestFtpServer> {
  const root = mkdtempSync(join(tmpdir(), 'sockstap-ftp-'));
  const args = [root, FTP_USER, password];
  if (tls) {
    writeFileSync(join(root, '..', `${basename(root)}.key`), tls.key, { mode: 0o600 });
    writeFileSync(join(root, '..', `${basename(root)}.crt`), tls.cert);
    args.push(join(root, '..', `${basename(root)}.crt`), join(root, '..', `${basename(root)}.key`));
    if (tls.requireReuse) args.push('reuse');
  }
  const child: ChildProcess = spawn('/usr/bin/python3', ['-c', SCRIPT, ...args], {
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
      for (const f of args.slice(3, 5)) rmSync(f, { force: true });
    },
  };
}
