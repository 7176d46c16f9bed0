/**
 * Command splitting and SASL user names for the line taps (issue 13 finding 7, issue 12 item 5):
 * any white space separates a verb from its arguments, as servers tokenise; the user of a SASL
 * PLAIN or LOGIN response, never its password.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { saslUser, splitCommand } from '../../src/taps/line-proxy.js';
import { nntpRecorded } from '../../src/taps/nntp/nntp-tap.js';
import { pop3Recorded } from '../../src/taps/pop3/pop3-tap.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

test('splitCommand splits on any white space and upper-cases the verb', () => {
  assert.deepEqual(splitCommand('PASS\tpw'), { verb: 'PASS', args: 'pw' });
  assert.deepEqual(splitCommand('pass  \t pw with space'), { verb: 'PASS', args: 'pw with space' });
  assert.deepEqual(splitCommand('AUTHINFO\tPASS pw'), { verb: 'AUTHINFO', args: 'PASS pw' });
  assert.deepEqual(splitCommand('  QUIT'), { verb: 'QUIT', args: '' });
  assert.deepEqual(splitCommand('STAT'), { verb: 'STAT', args: '' });
  assert.deepEqual(splitCommand(''), { verb: '', args: '' });
});

test('recorded POP3 and NNTP commands never hold a credential, whatever the separator', () => {
  for (const line of ['PASS\tSe@cr:et', 'pAsS Se@cr:et', 'PASS\vSe@cr:et']) {
    const { verb, args } = splitCommand(line);
    assert.equal(pop3Recorded(verb, args), 'PASS ***', line);
  }
  for (const line of ['AUTHINFO\tPASS Se@cr:et', 'authinfo pass\tSe@cr:et', 'AUTHINFO  PASS  Se@cr:et']) {
    const { verb, args } = splitCommand(line);
    assert.equal(nntpRecorded(verb, args.trim()), 'AUTHINFO PASS ***', line);
  }
  // A SASL response sent out of turn is no command: recorded as '?'.
  const blob = b64('\0alice\0Se@cr:et');
  assert.equal(pop3Recorded(splitCommand(blob).verb, ''), '?');
  assert.equal(nntpRecorded(splitCommand(blob).verb, ''), '?');
});

test('saslUser: the PLAIN authcid and the LOGIN user, never anything else', () => {
  assert.equal(saslUser('PLAIN', b64('\0alice\0pw'), 0), 'alice');
  assert.equal(saslUser('plain', b64('admin\0alice\0pw'), 0), 'alice');
  assert.equal(saslUser('LOGIN', b64('alice'), 0), 'alice');
  assert.equal(saslUser('LOGIN', b64('pw'), 1), null);
  assert.equal(saslUser('PLAIN', b64('alice-no-nul'), 0), null);
  assert.equal(saslUser('PLAIN', '*', 0), null);
  assert.equal(saslUser('PLAIN', '=', 0), null);
  assert.equal(saslUser('PLAIN', 'not base64!', 0), null);
  assert.equal(saslUser('CRAM-MD5', b64('alice 0123'), 0), null);
  assert.equal(saslUser('PLAIN', b64('\0al\nice\0pw'), 0), null);
});
