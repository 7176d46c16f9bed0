import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CommandQueue, mailboxTarget } from '../../src/taps/line-proxy.js';
import { declaredSize, parsePath } from '../../src/taps/smtp/smtp-tap.js';
import { parseHostList } from '../../src/config/hostlist.js';

describe('SMTP envelope parsing', () => {
  test('paths and SIZE (RFC 5321 §4.1.2, RFC 1870)', () => {
    assert.deepEqual(parsePath('<a@b.test> SIZE=1200 BODY=8BITMIME'), { mailbox: 'a@b.test', params: 'SIZE=1200 BODY=8BITMIME' });
    assert.deepEqual(parsePath('<>'), { mailbox: '', params: '' });
    assert.deepEqual(parsePath('<@relay.test:u@d.test>'), { mailbox: 'u@d.test', params: '' });
    assert.equal(declaredSize('SIZE=1200 BODY=8BITMIME'), 1200);
    assert.equal(declaredSize('BODY=8BITMIME'), null);
  });

  test('a bare CR in the parameters still gives the path (found by the smtp fuzz target)', () => {
    // A path that does not parse is relayed unchecked, so a CR after the path must not hide it
    // from the sender and recipient rules.
    assert.deepEqual(parsePath('<bob@blocked.test> NOTIFY=NEVER\r'), { mailbox: 'bob@blocked.test', params: 'NOTIFY=NEVER\r' });
    assert.deepEqual(parsePath('<bob@blocked.test> X=\rY'), { mailbox: 'bob@blocked.test', params: 'X=\rY' });
    assert.equal(parsePath('bob@blocked.test SIZE=1\r')?.mailbox, 'bob@blocked.test');
    assert.equal(declaredSize('SIZE=99999\r'), 99999);
  });

  test('a mailbox matches USER@DOMAIN and *@DOMAIN host-list elements', () => {
    const list = parseHostList('blocked@example.test,*@spam.test', 'REJECT');
    assert.equal(list.matches(mailboxTarget('blocked@example.test')), true);
    assert.equal(list.matches(mailboxTarget('ok@example.test')), false);
    assert.equal(list.matches(mailboxTarget('anyone@spam.test')), true);
    assert.equal(list.matches(mailboxTarget('')), false);
  });
});

describe('CommandQueue (RFC 2920 §3 reply order)', () => {
  test('a local reply waits behind outstanding server replies, then follows at once', () => {
    const out: string[] = [];
    const q = new CommandQueue<string>((b) => out.push(b.toString()));
    q.forwarded('MAIL');
    q.forwarded('RCPT 1');
    q.local('550 refused\r\n');
    q.forwarded('RCPT 3');
    q.local('550 refused too\r\n');
    assert.equal(out.length, 0);
    assert.equal(q.head(), 'MAIL');
    out.push('250 mail');
    assert.equal(q.done(), 'MAIL');
    out.push('250 rcpt1');
    assert.equal(q.done(), 'RCPT 1');
    assert.deepEqual(out, ['250 mail', '250 rcpt1', '550 refused\r\n']);
    out.push('250 rcpt3');
    q.done();
    assert.deepEqual(out.slice(3), ['250 rcpt3', '550 refused too\r\n']);
    assert.equal(q.outstanding, 0);
    q.local('now\r\n');
    assert.equal(out.at(-1), 'now\r\n');
  });
});
