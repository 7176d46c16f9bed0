import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ArticleStore, isMessageId } from '../../src/taps/nntp/article-store.js';
import { nntpMultiline, nntpRecorded } from '../../src/taps/nntp/nntp-tap.js';

describe('NNTP replies and commands (RFC 3977)', () => {
  test('multi-line codes; 211 only for LISTGROUP', () => {
    assert.equal(nntpMultiline(220, 'ARTICLE'), true);
    assert.equal(nntpMultiline(211, 'GROUP'), false);
    assert.equal(nntpMultiline(211, 'LISTGROUP'), true);
    assert.equal(nntpMultiline(240, 'POST-END'), false);
  });
  test('AUTHINFO PASS masked', () => {
    assert.equal(nntpRecorded('AUTHINFO', 'PASS hunter2'), 'AUTHINFO PASS ***');
    assert.equal(nntpRecorded('AUTHINFO', 'USER bob'), 'AUTHINFO USER bob');
    assert.equal(nntpRecorded('AUTHINFO', 'SASL PLAIN AGJvYgBodW50ZXIy'), 'AUTHINFO SASL PLAIN');
  });
  test('Message-ID syntax (§3.6)', () => {
    assert.equal(isMessageId('<a@b>'), true);
    assert.equal(isMessageId('<a>b>'), false);
    assert.equal(isMessageId('123'), false);
  });
});

describe('ArticleStore', () => {
  test('keeps articles by Message-ID across instances and evicts the oldest past its bound', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sockstap-nntp-store-'));
    try {
      const store = new ArticleStore(dir, 250);
      await store.put('<one@x>', Buffer.alloc(100, 0x61));
      await store.put('<two@x>', Buffer.alloc(100, 0x62));
      assert.equal((await store.get('<one@x>'))?.length, 100);
      await store.put('<three@x>', Buffer.alloc(100, 0x63));
      // <one@x> was used last after <two@x>, so <two@x> goes.
      assert.equal(await store.get('<two@x>'), null);
      assert.equal((await store.get('<three@x>'))?.[0], 0x63);
      const again = new ArticleStore(dir, 250);
      assert.equal((await again.get('<one@x>'))?.[0], 0x61);
      assert.equal(readdirSync(dir).filter((f) => f.endsWith('.tmp')).length, 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
