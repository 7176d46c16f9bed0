#!/usr/bin/env node
// The test suite's pre-step (npm's `pretest`): the Debian packages that tests run as real clients
// or servers. Missing ones are installed with apt-get when we run as root; otherwise we say which
// are missing and the tests that need them say why they skip.
import { execFileSync, spawnSync } from 'node:child_process';

/** command → Debian package */
const NEEDED = {
  curl: 'curl',
  ncat: 'ncat',
  openssl: 'openssl',
};

const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const missing = Object.entries(NEEDED).filter(([cmd]) => !has(cmd)).map(([, pkg]) => pkg);

if (missing.length === 0) process.exit(0);
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
if (!isRoot) {
  console.error(`test-prereqs: missing Debian packages ${missing.join(' ')} (not root: install them with apt-get)`);
  process.exit(0);
}
console.error(`test-prereqs: installing ${missing.join(' ')}`);
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
try {
  execFileSync('apt-get', ['install', '-y', '--no-install-recommends', ...missing], { stdio: 'inherit', env });
} catch {
  execFileSync('apt-get', ['update'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '--no-install-recommends', ...missing], { stdio: 'inherit', env });
}
