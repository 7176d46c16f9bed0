/**
 * The POP3 and IMAP taps against a real dovecot (started here as a non-daemon with its own
 * configuration), with Python's poplib and imaplib and curl going through the SOCKS door: RETR of
 * a real message, DELE refused by a read-only rule with the proxy's own -ERR (the message stays),
 * IMAP LOGIN with a literal password, SELECT and FETCH with literals followed exactly, the session
 * sections, and no password anywhere under LOGDIR.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { eventually, HAVE_DOVECOT, pythonViaSocks, startDovecot, startMailProxy, type Dovecot, type MailProxy } from '../helpers/mail.js';

const skip = HAVE_DOVECOT ? false : 'needs dovecot-imapd, dovecot-pop3d and python3-socks';

const MESSAGES = [
  Buffer.from('From: a@example.test\r\nSubject: first\r\nMessage-ID: <m1@example.test>\r\n\r\nhello pop3\r\n.dotted line\r\n'),
  Buffer.from('From: b@example.test\r\nSubject: second\r\n\r\n' + 'body line of the second message\r\n'.repeat(200)),
];

let dovecot: Dovecot;
let proxy: MailProxy;

/** The suite under the taps' own rule and under the default job (`npm start`: SOCKSTAP=all CACHE=do, an auto door). */
const RULES = ['PERMIT=pop:readonly:*', 'REJECT=pop:*:*'];
const JOBS: Array<[string, string[]]> = [
  ['SOCKSTAP=pop,imap', ['-P127.0.0.1:0/socks', 'SOCKSTAP=pop,imap', ...RULES, 'TIMEOUT=sniff:2s']],
  ['the default job', ['-P127.0.0.1:0/auto', 'SOCKSTAP=all', 'CACHE=do', ...RULES]],
];
for (const [job, jobArgs] of JOBS) {
  describe(`under ${job}`, () => {
    before(async () => {
      if (skip) return;
      dovecot = await startDovecot(MESSAGES);
      proxy = await startMailProxy(jobArgs);
    });
    after(async () => {
      if (skip) return;
      await proxy.stop();
      await dovecot.stop();
    });

    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed JSON records
    type Rec = Record<string, any>;

    describe('POP3 tap', { skip }, () => {
      test('RETR of a real message through poplib; DELE refused read-only by the proxy', async () => {
        const script = `
import poplib, json
p = poplib.POP3('127.0.0.1', int(sys.argv[1]))
p.user(sys.argv[2]); p.pass_(sys.argv[3])
resp, lines, octets = p.retr(1)
out = {'retr': b'\\r\\n'.join(lines).decode('latin1')}
try:
    out['dele'] = p.dele(1).decode()
except poplib.error_proto as e:
    out['dele'] = str(e)
out['list'] = len(p.list()[1])
p.quit()
print(json.dumps(out))
`;
        const r = await pythonViaSocks(proxy.port, script, [String(dovecot.popPort), dovecot.user, dovecot.password]);
        assert.equal(r.code, 0, r.stderr);
        const out = JSON.parse(r.stdout) as { retr: string; dele: string; list: number };
        assert.equal(out.retr + '\r\n', MESSAGES[0]!.toString('latin1'));
        assert.match(out.dele, /-ERR .*read-only/);
        assert.equal(out.list, 2);
        assert.equal(dovecot.messageCount(), 2);
        const s = await eventually(() => proxy.sessions().find((x: Rec) => x.proto === 'pop3' && x.pop3?.retrieved) as Rec, 'pop3 session');
        assert.equal(s.pop3.user, dovecot.user);
        assert.equal(s.pop3.retrieved, 1);
        assert.equal(s.pop3.bytes, MESSAGES[0]!.length);
        assert.equal(s.pop3.refused, 1);
        assert.deepEqual(s.pop3.commands.slice(0, 3), ['USER alice', 'PASS ***', 'RETR 1']);
        assert.ok(!proxy.allLogs().includes(dovecot.password));
      });

      test('curl pop3:// through --socks5 lists and retrieves', async () => {
        const url = `pop3://127.0.0.1:${dovecot.popPort}/2`;
        const body = await curl(['--socks5', `127.0.0.1:${proxy.port}`, '-u', `${dovecot.user}:${dovecot.password}`, url]);
        assert.equal(body, MESSAGES[1]!.toString('latin1'));
      });
    });

    describe('IMAP tap', { skip }, () => {
      test('LOGIN with a literal password, SELECT and FETCH through imaplib', async () => {
        const script = `
import imaplib, json
m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
# imaplib sends the password as a literal when it is given as bytes via _literal
m.literal = sys.argv[3].encode()
typ, _ = m._simple_command('LOGIN', sys.argv[2])
assert typ == 'OK', typ
m.state = 'AUTH'
typ, data = m.select('INBOX')
typ, fetched = m.fetch('1:2', '(BODY.PEEK[])')
bodies = [x[1].decode('latin1') for x in fetched if isinstance(x, tuple)]
m.logout()
print(json.dumps({'count': data[0].decode(), 'bodies': bodies}))
`;
        const r = await pythonViaSocks(proxy.port, script, [String(dovecot.imapPort), dovecot.user, dovecot.password]);
        assert.equal(r.code, 0, r.stderr);
        const out = JSON.parse(r.stdout) as { count: string; bodies: string[] };
        assert.equal(out.count, '2');
        assert.deepEqual(out.bodies, MESSAGES.map((m) => m.toString('latin1')));
        const s = await eventually(() => proxy.sessions().find((x: Rec) => x.proto === 'imap' && x.imap?.fetches) as Rec, 'imap session');
        assert.equal(s.imap.user, dovecot.user);
        assert.equal(s.imap.mailbox, 'INBOX');
        assert.equal(s.imap.fetches, 2);
        assert.equal(s.imap.fetchBytes, MESSAGES[0]!.length + MESSAGES[1]!.length);
        const names = s.imap.commands.map((c: Rec) => `${c.command} ${c.result}`);
        assert.deepEqual(names.slice(0, 4), ['CAPABILITY OK', 'LOGIN OK', 'SELECT INBOX OK', 'FETCH OK']);
        assert.ok(!proxy.allLogs().includes(dovecot.password));
      });

      test('curl imap:// through --socks5 fetches a message', async () => {
        const url = `imap://127.0.0.1:${dovecot.imapPort}/INBOX;UID=1`;
        const body = await curl(['--socks5', `127.0.0.1:${proxy.port}`, '-u', `${dovecot.user}:${dovecot.password}`, url]);
        assert.equal(body, MESSAGES[0]!.toString('latin1'));
        // After every session of this file: no password under LOGDIR.
        await eventually(() => proxy.sessions().filter((x: Rec) => x.proto === 'imap').length >= 2, 'imap sessions');
        assert.ok(!proxy.allLogs().includes(dovecot.password));
      });
    });

    function curl(args: string[]): Promise<string> {
      return new Promise((resolve, reject) => {
        execFile('curl', ['-sS', '--max-time', '10', ...args], { encoding: 'latin1' }, (err, stdout, stderr) => {
          if (err) reject(new Error(`curl failed: ${stderr}`));
          else resolve(stdout);
        });
      });
    }
  });
}
