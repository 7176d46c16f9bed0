/**
 * The SMTP tap against Debian's aiosmtpd, with Python's smtplib and a raw pipelining client going
 * through the SOCKS door: a refused recipient gets 550 from the proxy and the server never sees
 * it, the accepted message arrives byte for byte, replies stay in order in a pipelined batch, the
 * size limit answers 552, AUTH never reaches a log, and the envelope lands in sessions.jsonl.
 */
import assert from 'node:assert/strict';
import type net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { eventually, HAVE_AIOSMTPD, pythonViaSocks, startMailProxy, startSmtpServer, type MailProxy, type SmtpServer } from '../helpers/mail.js';

const skip = HAVE_AIOSMTPD ? false : 'needs python3-aiosmtpd and python3-socks';

let smtpd: SmtpServer;
let proxy: MailProxy;

/** The suite under the tap's own rule and under the default job (`npm start`: SOCKSTAP=all CACHE=do, an auto door). */
const RULES = ['REJECT=smtp:blocked@example.test:*', 'REJECT=smtp:*@spam.test:*'];
const JOBS: Array<[string, string[]]> = [
  ['SOCKSTAP=smtp', ['-P127.0.0.1:0/socks', 'SOCKSTAP=smtp', ...RULES, 'TIMEOUT=sniff:2s']],
  ['the default job', ['-P127.0.0.1:0/auto', 'SOCKSTAP=all', 'CACHE=do', ...RULES]],
];
for (const [job, jobArgs] of JOBS) {
  describe(`under ${job}`, () => {
    before(async () => {
      if (skip) return;
      smtpd = await startSmtpServer();
      proxy = await startMailProxy(
        jobArgs,
        { MAXSIZE: '4k' },
      );
    });
    after(async () => {
      if (skip) return;
      await proxy.stop();
      await smtpd.stop();
    });

    const MESSAGE =
      'From: alice@example.test\r\nTo: bob@example.test\r\nSubject: through the tap\r\n' +
      'Message-ID: <tap-1@example.test>\r\n\r\nline one\r\n.a line that starts with a dot\r\n..two dots\r\nlast line\r\n';

    function smtpSessions(): Array<Record<string, any>> {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed JSON records
      return proxy.sessions().filter((s) => s.proto === 'smtp') as Array<Record<string, any>>;
    }

    describe('SMTP tap', { skip }, () => {
      test('a refused recipient gets 550 from the proxy; the server never sees it; the message arrives intact', async () => {
        const script = `
import smtplib, json
msg = sys.argv[2].encode()
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), local_hostname='client.example.test')
s.login('mailer', 'smtp-Secret-77')
refused = s.sendmail('alice@example.test', ['bob@example.test', 'blocked@example.test', 'carol@example.test'], msg)
print(json.dumps({k: [v[0], v[1].decode()] for k, v in refused.items()}))
s.quit()
`;
        const r = await pythonViaSocks(proxy.port, script, [String(smtpd.port), MESSAGE]);
        assert.equal(r.code, 0, r.stderr);
        const refused = JSON.parse(r.stdout) as Record<string, [number, string]>;
        assert.deepEqual(Object.keys(refused), ['blocked@example.test']);
        assert.equal(refused['blocked@example.test']![0], 550);

        const recs = smtpd.records();
        const seen = recs.filter((x) => x.event === 'rcpt').map((x) => x.address);
        assert.deepEqual(seen, ['bob@example.test', 'carol@example.test']);
        const data = recs.find((x) => x.event === 'data');
        assert.ok(data);
        assert.deepEqual(data.rcpt, ['bob@example.test', 'carol@example.test']);
        assert.equal(Buffer.from(data.content!, 'base64').toString('latin1'), MESSAGE);

        const s = await eventually(() => smtpSessions().find((x) => x.smtp?.helo === 'client.example.test'), 'smtp session');
        assert.equal(s.smtp.from, 'alice@example.test');
        assert.deepEqual(
          s.smtp.rcpt.map((x: { to: string; reply: string }) => [x.to, x.reply.slice(0, 3)]),
          [
            ['bob@example.test', '250'],
            ['blocked@example.test', '550'],
            ['carol@example.test', '250'],
          ],
        );
        assert.equal(s.smtp.size, MESSAGE.length);
        assert.equal(s.smtp.accepted, true);
        assert.equal(s.smtp.messageId, '<tap-1@example.test>');
        assert.equal(s.smtp.auth.mechanism, 'PLAIN');
        assert.equal(s.smtp.auth.ok, true);
        assert.ok(s.bytesUp > MESSAGE.length && s.bytesDown > 0);
        // RFC 4954: the AUTH exchange never reaches a log (PLAIN carries the password in base64).
        const logs = proxy.allLogs();
        assert.ok(!logs.includes('smtp-Secret-77'));
        assert.ok(!logs.includes(Buffer.from('\0mailer\0smtp-Secret-77').toString('base64')));
      });

      test('a pipelined batch gets its replies in command order, the proxy refusal in its place', async () => {
        const { socket } = await SocksClient.createConnection({
          proxy: { host: '127.0.0.1', port: proxy.port, type: 5 },
          command: 'connect',
          destination: { host: '127.0.0.1', port: smtpd.port },
        });
        const replies = collectReplies(socket);
        assert.match(await replies.next(), /^220 /);
        socket.write('EHLO pipe.example.test\r\n');
        assert.match(await replies.next(), /^250[ -]/);
        // RFC 2920 §3.1: MAIL, RCPTs and DATA in one batch.
        socket.write(
          'MAIL FROM:<alice@example.test>\r\nRCPT TO:<one@example.test>\r\nRCPT TO:<x@spam.test>\r\n' +
            'RCPT TO:<two@example.test>\r\nRCPT TO:<blocked@example.test>\r\nDATA\r\n',
        );
        const batch = [];
        for (let i = 0; i < 6; i++) batch.push((await replies.next()).slice(0, 3));
        assert.deepEqual(batch, ['250', '250', '550', '250', '550', '354']);
        socket.write('Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n');
        assert.match(await replies.next(), /^250 /);
        assert.match(await replies.next(), /^221 /);
        socket.destroy();
        const data = smtpd.records().filter((x) => x.event === 'data').at(-1)!;
        assert.deepEqual(data.rcpt, ['one@example.test', 'two@example.test']);
        const seen = smtpd.records().filter((x) => x.event === 'rcpt').map((x) => x.address);
        assert.ok(!seen.includes('x@spam.test') && !seen.includes('blocked@example.test'));
      });

      test('MAXSIZE: a declared SIZE over the limit and a message over it both get 552', async () => {
        const script = `
import smtplib
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
s.ehlo('big.example.test')
code, _ = s.mail('alice@example.test', ['SIZE=100000'])
print('declared', code)
s.rset()
s.mail('alice@example.test')
s.rcpt('bob@example.test')
try:
    code, _ = s.data(b'Subject: big\\r\\n\\r\\n' + b'x' * 78 + b'\\r\\n' + (b'y' * 78 + b'\\r\\n') * 100)
    print('data', code)
except smtplib.SMTPDataError as e:
    print('data', e.smtp_code)
except smtplib.SMTPServerDisconnected:
    print('data disconnected')
`;
        const before = smtpd.records().filter((x) => x.event === 'data').length;
        const r = await pythonViaSocks(proxy.port, script, [String(smtpd.port)]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /declared 552/);
        assert.match(r.stdout, /data 552/);
        // The server got no message (it was cut off before the final dot).
        assert.equal(smtpd.records().filter((x) => x.event === 'data').length, before);
      });
    });

    /** SMTP replies (multi-line ones joined) from a socket, one at a time. */
    function collectReplies(socket: net.Socket): { next(): Promise<string> } {
      let buf = '';
      let cur = '';
      const ready: string[] = [];
      let wake: (() => void) | null = null;
      socket.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        let i: number;
        while ((i = buf.indexOf('\r\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 2);
          cur += line + '\n';
          if (line[3] !== '-') {
            ready.push(cur);
            cur = '';
          }
        }
        wake?.();
      });
      return {
        async next() {
          while (ready.length === 0) {
            await new Promise<void>((resolve, reject) => {
              const t = setTimeout(() => reject(new Error(`no reply; have ${JSON.stringify(buf)}`)), 5000);
              wake = () => {
                clearTimeout(t);
                wake = null;
                resolve();
              };
            });
          }
          return ready.shift()!;
        },
      };
    }
  });
}
