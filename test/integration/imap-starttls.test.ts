/**
 * IMAP STARTTLS (RFC 9051 §6.2.1) through SOCKS5 against a real dovecot with `ssl = yes`: with
 * STLS=mitm the IMAP tap intercepts after STARTTLS (imaplib trusts sockstap's CA only) and its
 * session record shows the commands sent inside the TLS (LOGIN, SELECT, FETCH), the password never
 * logged; without STLS the tunnel is relayed untouched after the OK and imaplib sees dovecot's own
 * certificate.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { eventually, HAVE_DOVECOT, pythonViaSocks, startDovecot, startMailProxy, type Dovecot } from '../helpers/mail.js';
import { testPki, type TestPki } from '../helpers/tls.js';

const skip = HAVE_DOVECOT ? false : 'needs dovecot-imapd, dovecot-pop3d and python3-socks';

const MESSAGES = [
  Buffer.from('From: a@example.test\r\nSubject: first\r\n\r\nhello imap inside tls\r\n'),
  Buffer.from('From: b@example.test\r\nSubject: second\r\n\r\n' + 'second body line\r\n'.repeat(100)),
];

const SCRIPT = `
import imaplib, json, ssl
ctx = ssl.create_default_context(cafile=sys.argv[4])
m = imaplib.IMAP4('localhost', int(sys.argv[1]))
m.starttls(ssl_context=ctx)
issuer = dict(x[0] for x in m.sock.getpeercert()['issuer'])['commonName']
typ, _ = m.login(sys.argv[2], sys.argv[3])
assert typ == 'OK', typ
typ, data = m.select('INBOX')
typ, fetched = m.fetch('1:2', '(BODY.PEEK[])')
bodies = [x[1].decode('latin1') for x in fetched if isinstance(x, tuple)]
m.logout()
print(json.dumps({'issuer': issuer, 'count': data[0].decode(), 'bodies': bodies}))
`;

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed JSON records
type Rec = Record<string, any>;

let pki: TestPki;
let dovecot: Dovecot;

before(async () => {
  if (skip) return;
  pki = testPki();
  dovecot = await startDovecot(MESSAGES, 's3cr3t-Imap-Tls', pki.issue(['localhost']));
});
after(async () => {
  if (skip) return;
  await dovecot.stop();
  pki.cleanup();
});

test('STLS=mitm: LOGIN, SELECT and FETCH after STARTTLS are read by the IMAP tap', { skip }, async () => {
  const proxy = await startMailProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=imap', 'STLS=mitm', `TLSCAFILE=${pki.caFile}`, 'TIMEOUT=sniff:2s']);
  try {
    const ca = join(proxy.stateDir, 'ca', 'ca.pem');
    const r = await pythonViaSocks(proxy.port, SCRIPT, [String(dovecot.imapPort), dovecot.user, dovecot.password, ca]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { issuer: string; count: string; bodies: string[] };
    assert.match(out.issuer, /sockstap interception CA/);
    assert.equal(out.count, '2');
    assert.deepEqual(out.bodies, MESSAGES.map((m) => m.toString('latin1')));
    const s = await eventually(() => proxy.sessions().find((x: Rec) => x.proto === 'imap') as Rec, 'imap session');
    assert.equal(s.tls.intercepted, true);
    assert.match(s.tls.subject, /CN=localhost/);
    assert.equal(s.imap.user, dovecot.user);
    assert.equal(s.imap.mailbox, 'INBOX');
    assert.equal(s.imap.fetches, 2);
    const names = s.imap.commands.map((c: Rec) => `${c.command} ${c.result}`);
    const after = names.slice(names.indexOf('STARTTLS OK') + 1);
    assert.ok(names.includes('STARTTLS OK'), names.join(' | '));
    for (const c of ['LOGIN OK', 'SELECT INBOX OK', 'FETCH OK']) assert.ok(after.includes(c), `${c} after STARTTLS: ${names.join(' | ')}`);
    assert.ok(!proxy.allLogs().includes(dovecot.password), 'no password under LOGDIR');
  } finally {
    await proxy.stop();
  }
});

test('without STLS: relayed untouched after STARTTLS, dovecot\'s own certificate', { skip }, async () => {
  const proxy = await startMailProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=imap', 'TIMEOUT=sniff:2s']);
  try {
    const r = await pythonViaSocks(proxy.port, SCRIPT, [String(dovecot.imapPort), dovecot.user, dovecot.password, pki.caFile]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { issuer: string };
    assert.equal(out.issuer, 'sockstap test origin CA');
    const s = await eventually(() => proxy.sessions().find((x: Rec) => x.proto === 'imap') as Rec, 'imap session');
    assert.equal(s.imap.user, null, 'nothing after the upgrade was read');
    assert.ok(!proxy.allLogs().includes(dovecot.password));
  } finally {
    await proxy.stop();
  }
});
