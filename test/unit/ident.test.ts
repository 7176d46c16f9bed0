import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseIdentResponse } from '../../src/policy/ident.js';

describe('RFC 1413 response line', () => {
  it('parses USERID with spaces, charset and colons in the user id', () => {
    assert.deepEqual(parseIdentResponse('6193, 23 : USERID : UNIX : stjohns'), {
      kind: 'USERID',
      serverPort: 6193,
      clientPort: 23,
      opsys: 'UNIX',
      user: 'stjohns',
    });
    assert.deepEqual(parseIdentResponse('6195,23:USERID:OTHER,US-ASCII:a:b c'), {
      kind: 'USERID',
      serverPort: 6195,
      clientPort: 23,
      opsys: 'OTHER,US-ASCII',
      user: 'a:b c',
    });
  });

  it('parses ERROR', () => {
    assert.deepEqual(parseIdentResponse('6191, 23 : ERROR : NO-USER'), {
      kind: 'ERROR',
      serverPort: 6191,
      clientPort: 23,
      error: 'NO-USER',
    });
  });

  it('refuses lines that are not responses', () => {
    for (const bad of ['', 'hello', '1,2 : USERID : UNIX', '1,2 : USERID : UNIX :   ', 'x,2 : USERID : UNIX : u', '1,2 : OTHER : x : y']) {
      assert.equal(parseIdentResponse(bad), null, bad);
    }
  });
});
