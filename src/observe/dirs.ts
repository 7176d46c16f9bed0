/**
 * Before anything listens: LOGDIR, STATEDIR and (when the cache is on) CACHEDIR must exist or be
 * made, and be writable by the user sockstap runs as; the log files are created there, so
 * `tail -f` works before the first request. A problem is one sentence naming the parameter, the
 * directory, why, and the user (the caller makes it a StartError: exit status 1).
 */
import { accessSync, closeSync, constants, mkdirSync, openSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { dirname, join } from 'node:path';

export const LOG_FILES = ['access.log', 'sessions.jsonl', 'xferlog', 'sockstap.log'] as const;

export interface DirectoryNeed {
  /** LOGDIR, STATEDIR or CACHEDIR. */
  param: string;
  dir: string;
  /** Files to create (append mode, never truncated) once the directory is usable. */
  files?: readonly string[];
}

export function currentUser(): string {
  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined;
  let name: string | undefined;
  try {
    name = userInfo().username;
  } catch {
    name = undefined;
  }
  return uid === undefined ? (name ?? 'unknown') : `${name ?? 'uid'} (uid ${uid})`;
}

function reason(err: NodeJS.ErrnoException, dir: string): string {
  switch (err.code) {
    case 'ENOTDIR': {
      // Name the part of the path that is a file.
      let p = dir;
      while (dirname(p) !== p) {
        try {
          if (!statSync(p).isDirectory()) return `${p} is not a directory`;
        } catch {
          // missing: look further up
        }
        p = dirname(p);
      }
      return 'a part of the path is not a directory';
    }
    case 'EEXIST':
      return `${dir} exists and is not a directory`;
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EROFS':
      return 'read-only file system';
    case 'ENOSPC':
      return 'no space left on the device';
    default:
      return err.code ?? err.message;
  }
}

/** The first problem found, or null when every directory is ready (and its files exist). */
export function prepareDirectories(needs: readonly DirectoryNeed[]): string | null {
  for (const need of needs) {
    const { dir } = need;
    const problem = (why: string): string =>
      `${need.param} ${dir} cannot be used: ${why}; sockstap runs as user ${currentUser()} (choose another ${need.param}= or fix the owner/permissions)`;
    try {
      mkdirSync(dir, { recursive: true });
      if (!statSync(dir).isDirectory()) return problem(`${dir} is not a directory`);
      accessSync(dir, constants.W_OK | constants.X_OK);
      // access() says yes to root on a read-only mount: a real write is the test.
      const probe = join(dir, `.sockstap-write-test-${process.pid}`);
      writeFileSync(probe, '');
      unlinkSync(probe);
    } catch (err) {
      return problem(reason(err as NodeJS.ErrnoException, dir));
    }
    for (const name of need.files ?? []) {
      try {
        closeSync(openSync(join(dir, name), 'a'));
      } catch (err) {
        return `${need.param} ${dir}: cannot create ${name}: ${reason(err as NodeJS.ErrnoException, join(dir, name))}; sockstap runs as user ${currentUser()}`;
      }
    }
  }
  return null;
}
