#!/usr/bin/env node
// The test suite's pre-step (npm's `pretest`): the Debian packages that tests run as real clients
// or servers. Missing ones are installed with apt-get when we run as root; otherwise we say which
// are missing and the tests that need them say why they skip.
import { execFileSync, spawnSync } from 'node:child_process';

/** Each entry: a shell check that succeeds when the package is usable, and the Debian package. */
const NEEDED = [
  { check: 'command -v curl', pkg: 'curl' },
  { check: 'command -v ncat', pkg: 'ncat' },
  { check: 'command -v openssl', pkg: 'openssl' },
  // the FTP tap's tests run pyftpdlib
  { check: "/usr/bin/python3 -c 'import pyftpdlib'", pkg: 'python3-pyftpdlib' },
  // FTP AUTH TLS tests run pyftpdlib's TLS_FTPHandler, which needs PyOpenSSL
  { check: "/usr/bin/python3 -c 'import OpenSSL'", pkg: 'python3-openssl' },
  // SMTP, POP3, IMAP servers and Python clients for the mail taps
  { check: "/usr/bin/python3 -c 'import aiosmtpd'", pkg: 'python3-aiosmtpd' },
  { check: "/usr/bin/python3 -c 'import socks'", pkg: 'python3-socks' },
  // TLS interception: Python requests as a client, certutil for Chromium's NSS database
  { check: "/usr/bin/python3 -c 'import requests'", pkg: 'python3-requests' },
  { check: 'command -v certutil', pkg: 'libnss3-tools' },
  { check: 'test -x /usr/lib/dovecot/imap', pkg: 'dovecot-imapd' },
  { check: 'test -x /usr/lib/dovecot/pop3', pkg: 'dovecot-pop3d' },
  // transparent interception tests build network namespaces with veth pairs and iptables
  { check: 'command -v ip', pkg: 'iproute2' },
  { check: 'command -v iptables', pkg: 'iptables' },
  // real upstream proxies for the routing tests
  { check: 'command -v danted', pkg: 'dante-server' },
  { check: 'command -v squid', pkg: 'squid' },
  // the PROXY protocol tests put HAProxy (mode tcp, send-proxy, send-proxy-v2, accept-proxy) in front of and behind sockstap
  { check: 'command -v haproxy', pkg: 'haproxy' },
  // AUTHORIZER=-ldap{} and -radius{} are tested against real slapd and FreeRADIUS
  { check: 'test -x /usr/sbin/slapd', pkg: 'slapd' },
  { check: 'command -v ldapadd', pkg: 'ldap-utils' },
  { check: 'command -v freeradius', pkg: 'freeradius' },
  { check: 'command -v radclient', pkg: 'freeradius-utils' },
  // REDIS=: the fleet tests start a real redis-server on a loopback port
  { check: 'command -v redis-server', pkg: 'redis-server' },
  // contrib/logrotate.d/sockstap is run by the real logrotate
  { check: 'command -v logrotate', pkg: 'logrotate' },
  // the dashboard test runs in real headless Chromium
  { check: 'command -v chromium', pkg: 'chromium' },
  // /metrics is checked with Prometheus's own linter, promtool check metrics
  { check: 'command -v promtool', pkg: 'prometheus' },
];

const ok = (check) => spawnSync('sh', ['-c', check], { stdio: 'ignore' }).status === 0;
const missing = [...new Set(NEEDED.filter((n) => !ok(n.check)).map((n) => n.pkg))];

if (missing.length === 0) process.exit(0);
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
if (!isRoot) {
  console.error(`test-prereqs: missing Debian packages ${missing.join(' ')} (not root: install them with apt-get)`);
  process.exit(0);
}
console.error(`test-prereqs: installing ${missing.join(' ')}`);
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
const install = () =>
  execFileSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...missing], { stdio: 'inherit', env });
try {
  install();
} catch {
  execFileSync('apt-get', ['update', '-q'], { stdio: 'inherit', env });
  install();
}
