/**
 * sessions.jsonl: one JSON object per finished connection, written when the session ends. The
 * record holds names, addresses, byte counts and per-protocol sections; never a credential.
 */
import type { Session } from '../core/session.js';
import { LineFile, type LineFileHooks } from './log.js';

export class SessionsLogWriter {
  private readonly file: LineFile;
  constructor(path: string, hooks: LineFileHooks = {}) {
    this.file = new LineFile(path);
    this.file.hooks = hooks;
  }

  /** Open the file again (SIGHUP, SIGUSR1: logrotate moved it away). */
  reopen(): void {
    this.file.reopen();
  }

  get path(): string {
    return this.file.path;
  }

  write(session: Session): void {
    this.file.write(JSON.stringify(session.toRecord()) + '\n');
  }

  close(): Promise<void> {
    return this.file.close();
  }
}
