import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pop3Multiline, pop3Recorded } from '../../src/taps/pop3/pop3-tap.js';

describe('POP3 commands (RFC 1939, RFC 2449)', () => {
  test('which +OK replies are multi-line', () => {
    assert.equal(pop3Multiline('RETR', '1'), true);
    assert.equal(pop3Multiline('LIST', ''), true);
    assert.equal(pop3Multiline('LIST', '2'), false);
    assert.equal(pop3Multiline('UIDL', ''), true);
    assert.equal(pop3Multiline('CAPA', ''), true);
    assert.equal(pop3Multiline('DELE', '1'), false);
  });
  test('credentials are masked', () => {
    assert.equal(pop3Recorded('PASS', 'hunter2'), 'PASS ***');
    assert.equal(pop3Recorded('APOP', 'mrose c4c9334bac560ecc979e58001b3e22fb'), 'APOP mrose ***');
    assert.equal(pop3Recorded('AUTH', 'PLAIN AGFsaWNlAHNlY3JldA=='), 'AUTH PLAIN ***');
    assert.equal(pop3Recorded('USER', 'alice'), 'USER alice');
  });
});
