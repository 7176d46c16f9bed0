/**
 * A small bounded disk store of news articles keyed by Message-ID (RFC 3977 §3.6: a Message-ID
 * names one article for ever, so a stored copy never goes stale). Files live under
 * `STATEDIR/nntp-cache/`, named by the SHA-256 of the Message-ID, written to a temporary name and
 * renamed into place, so a crash never leaves a half article that would be served. The total size
 * is bounded; the oldest files go first.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Default bound of the whole store. */
export const DEFAULT_STORE_BYTES = 64 * 1024 * 1024;
/** Articles larger than this are relayed but not kept (they are collected in memory first). */
export const MAX_ARTICLE_BYTES = 1024 * 1024;

/** RFC 3977 §3.6: "<" 1*248 printable US-ASCII except ">" ">", at most 250 octets. */
export function isMessageId(text: string): boolean {
  return text.length >= 3 && text.length <= 250 && /^<[\x21-\x3d\x3f-\x7e]+>$/.test(text);
}

export class ArticleStore {
  /** File name → size, oldest first; loaded from the directory at first use. */
  private index: Map<string, number> | null = null;
  private total = 0;
  private loading: Promise<void> | null = null;
  /** Articles being written: served from memory until their file is in place. */
  private readonly writing = new Map<string, Buffer>();

  constructor(
    readonly dir: string,
    private readonly maxBytes = DEFAULT_STORE_BYTES,
  ) {}

  private fileOf(messageId: string): string {
    return createHash('sha256').update(messageId, 'latin1').digest('hex') + '.art';
  }

  private load(): Promise<void> {
    this.loading ??= (async () => {
      await mkdir(this.dir, { recursive: true });
      const entries: Array<{ name: string; size: number; mtime: number }> = [];
      for (const name of await readdir(this.dir)) {
        if (!name.endsWith('.art')) continue;
        try {
          const s = await stat(join(this.dir, name));
          entries.push({ name, size: s.size, mtime: s.mtimeMs });
        } catch {
          // Removed by another process meanwhile.
        }
      }
      entries.sort((a, b) => a.mtime - b.mtime);
      this.index = new Map(entries.map((e) => [e.name, e.size]));
      this.total = entries.reduce((n, e) => n + e.size, 0);
    })();
    return this.loading;
  }

  /** The stored article (dot-stuffed lines, CRLF, without the final "."), or null. */
  async get(messageId: string): Promise<Buffer | null> {
    if (!isMessageId(messageId)) return null;
    const name = this.fileOf(messageId);
    const inFlight = this.writing.get(name);
    if (inFlight) return inFlight;
    await this.load();
    try {
      const bytes = await readFile(join(this.dir, name));
      // Used again: move to the young end of the eviction order.
      const size = this.index!.get(name);
      this.index!.delete(name);
      this.index!.set(name, size ?? bytes.length);
      return bytes;
    } catch {
      return null;
    }
  }

  async put(messageId: string, article: Buffer): Promise<void> {
    if (!isMessageId(messageId) || article.length > MAX_ARTICLE_BYTES || article.length > this.maxBytes) return;
    const name = this.fileOf(messageId);
    if (this.writing.has(name)) return;
    this.writing.set(name, article);
    try {
      await this.load();
      if (this.index!.has(name)) return;
      const tmp = join(this.dir, `.${name}.${randomBytes(6).toString('hex')}.tmp`);
      await writeFile(tmp, article);
      await rename(tmp, join(this.dir, name));
    } finally {
      this.writing.delete(name);
    }
    this.index!.set(name, article.length);
    this.total += article.length;
    for (const [old, size] of this.index!) {
      if (this.total <= this.maxBytes) break;
      this.index!.delete(old);
      this.total -= size;
      await unlink(join(this.dir, old)).catch(() => {});
    }
  }
}
