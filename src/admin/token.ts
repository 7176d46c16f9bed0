/**
 * The admin token (INTERFACE.md, Admin): a random secret that sockstap writes at first start to
 * STATEDIR/admin.token (mode 0600) and reads at every later start. A state-changing admin request
 * (every POST) carries it as `Authorization: Bearer TOKEN` when ADMINAUTH is not given, so only a
 * user who can read the state directory may close sessions or reload.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, closeSync, fstatSync, mkdirSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export const TOKEN_FILE = 'admin.token';
/** A token file larger than this is not a token sockstap wrote. */
const MAX_TOKEN_BYTES = 256;
const TOKEN_RE = /^[A-Za-z0-9_-]{32,200}$/;

export interface AdminToken {
  path: string;
  value: string;
  /** True when this start created it. */
  created: boolean;
}

/** Read STATEDIR/admin.token, or create it (0600) when it is missing or not a token. */
export function loadAdminToken(stateDir: string): AdminToken {
  mkdirSync(stateDir, { recursive: true });
  const path = join(stateDir, TOKEN_FILE);
  const existing = readToken(path);
  if (existing) return { path, value: existing, created: false };
  const value = randomBytes(32).toString('base64url');
  // O_CREAT with mode 0600 (the umask may only take bits away); an unusable old file is replaced.
  const fd = openSync(path, 'w', 0o600);
  try {
    if ((fstatSync(fd).mode & 0o077) !== 0) chmodSync(path, 0o600);
    writeSync(fd, `${value}\n`);
  } finally {
    closeSync(fd);
  }
  return { path, value, created: true };
}

function readToken(path: string): string | null {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return null;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.size > MAX_TOKEN_BYTES) return null;
    // Readable by others: not a secret any more; make a new one.
    if ((st.mode & 0o077) !== 0) return null;
    const buf = Buffer.alloc(MAX_TOKEN_BYTES);
    const n = readSync(fd, buf, 0, buf.length, 0);
    const text = buf.subarray(0, n).toString('utf8').trim();
    return TOKEN_RE.test(text) ? text : null;
  } finally {
    closeSync(fd);
  }
}

/** Whether an Authorization header carries this token as a Bearer credential (constant time). */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header) return false;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) return false;
  const a = Buffer.from(m[1]!);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}
