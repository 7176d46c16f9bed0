import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { firstAstring, trailingLiteral } from '../../src/taps/imap/imap-tap.js';

describe('IMAP literal markers (RFC 3501 §4.3, RFC 7888, RFC 3516)', () => {
  test('found only at the end of the line', () => {
    assert.deepEqual(trailingLiteral(Buffer.from('a1 LOGIN {5}\r\n')), { size: 5, sync: true });
    assert.deepEqual(trailingLiteral(Buffer.from('a1 APPEND INBOX {310+}\r\n')), { size: 310, sync: false });
    assert.deepEqual(trailingLiteral(Buffer.from('* 1 FETCH (BINARY[] ~{12}\r\n')), { size: 12, sync: true });
    assert.equal(trailingLiteral(Buffer.from('a1 SELECT {5} x\r\n')), null);
    assert.equal(trailingLiteral(Buffer.from('* OK done\r\n')), null);
  });
  test('astring arguments', () => {
    assert.equal(firstAstring('alice secret'), 'alice');
    assert.equal(firstAstring('"al \\"x\\" ice" {6}'), 'al "x" ice');
    assert.equal(firstAstring('{5}'), null);
  });
});
