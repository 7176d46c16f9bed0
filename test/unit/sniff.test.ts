/**
 * The sniffers, with no sockets: every classifier fed one byte at a time (verdicts must be
 * monotone), real ClientHellos made by node:tls over an in-memory stream (also re-framed into
 * several records), greetings in the formats real servers send, and seeded fuzzing.
 */
import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { describe, test } from 'node:test';
import {
  firstCommandLine,
  HTTP2_PREFACE,
  MAX_REQUEST_LINE,
  parseClientHello,
  resolveFtpOrSmtp,
  sniffClient,
  sniffServer,
  type SniffVerdict,
} from '../../src/sniff/index.js';
import { rng, randomBytes } from '../helpers/random.js';



/**
 * Feeds `bytes` to `classify` one byte at a time (every prefix, as successive reads would) and
 * checks the verdicts are monotone: 'need-more' until a final answer, which then stays exactly
 * the same for every longer prefix. Returns the final verdict (or need-more) and the prefix
 * length at which it was reached.
 */
function feedByteByByte(
  classify: (bytes: Buffer) => SniffVerdict,
  bytes: Buffer,
  label = '',
): { verdict: SniffVerdict; at: number } {
  let final: SniffVerdict | null = null;
  let at = -1;
  for (let n = 0; n <= bytes.length; n++) {
    // A fresh copy: the classifier must not depend on the underlying buffer past the prefix.
    const v = classify(Buffer.from(bytes.subarray(0, n)));
    if (final) {
      assert.deepEqual(v, final, `${label}: verdict changed at ${n} bytes after being final at ${at}`);
    } else if (v.verdict !== 'need-more') {
      final = v;
      at = n;
    }
  }
  return { verdict: final ?? { verdict: 'need-more' }, at };
}

const client = (port: number) => (b: Buffer): SniffVerdict => sniffClient(b, port);
const server = (port: number) => (b: Buffer): SniffVerdict => sniffServer(b, port);

function expectMatch(v: SniffVerdict, proto: string, label: string): Extract<SniffVerdict, { verdict: 'match' }> {
  assert.equal(v.verdict, 'match', `${label}: ${JSON.stringify(v)}`);
  assert.ok(v.verdict === 'match');
  assert.equal(v.proto, proto, label);
  return v;
}

describe('sniffClient: HTTP/1.x request line (RFC 9112 §3)', () => {
  const cases: [string, string, string][] = [
    ['GET / HTTP/1.1\r\nHost: example.com\r\n\r\n', 'GET', '/'],
    ['POST /form?a=1&b=%20 HTTP/1.0\r\n', 'POST', '/form?a=1&b=%20'],
    ['CONNECT example.com:443 HTTP/1.1\r\n', 'CONNECT', 'example.com:443'],
    ['OPTIONS * HTTP/1.1\r\n', 'OPTIONS', '*'],
    ['GET http://example.com/x HTTP/1.1\r\n', 'GET', 'http://example.com/x'],
    ['PROPFIND /dav/ HTTP/1.1\r\n', 'PROPFIND', '/dav/'],
    ['M-SEARCH * HTTP/1.1\r\n', 'M-SEARCH', '*'],
    ["X!#$%&'*+-.^_`|~9 /t HTTP/1.9\r\n", "X!#$%&'*+-.^_`|~9", '/t'],
    // As lenient as an origin may be, so a tap cannot be bypassed (the HTTP tap then answers 400
    // where Node's parser refuses): RFC 9112 §2.2 empty lines first, a bare LF, obs-text.
    ['\r\nGET / HTTP/1.1\r\n', 'GET', '/'],
    ['\n\nGET /lf HTTP/1.1\n', 'GET', '/lf'],
    ['GET / HTTP/1.1\n', 'GET', '/'],
    ['GET /\u00e9 HTTP/1.1\r\n', 'GET', '/\u00e9'],
  ];
  for (const [text, method, target] of cases) {
    test(JSON.stringify(text.split('\r\n')[0]), () => {
      const bytes = Buffer.from(text, 'latin1');
      const { verdict, at } = feedByteByByte(client(80), bytes, text);
      const m = expectMatch(verdict, 'http', text);
      assert.deepEqual(m.info, { method, target });
      // Decided at the request line's LF, not before, not after.
      assert.equal(at, text.indexOf('\n', text.search(/[^\r\n]/)) + 1);
    });
  }

  const refused: [string, number][] = [
    [' GET / HTTP/1.1\r\n', 1],
    ['\rGET / HTTP/1.1\r\n', 2], // a CR that does not end an empty line
    ['\n\n\n\n\nGET / HTTP/1.1\r\n', 5], // more empty lines than a client sends
    ['GET  / HTTP/1.1\r\n', 5], // two spaces: the target would be empty
    ['GET / HTTP/2.0\r\n', 12],
    ['GET / HTTP/1.1\r\r\n', 16],
    ['GET / http/1.1\r\n', 7],
    ['GET /a\tb HTTP/1.1\r\n', 7],
    ['G(T / HTTP/1.1\r\n', 2],
    ['\x16\x03\x01', 1],
  ];
  for (const [text, at] of refused) {
    test(`no-match for ${JSON.stringify(text)} at byte ${at}`, () => {
      const r = feedByteByByte((b) => sniffClient(b, 80), Buffer.from(text, 'latin1'), text);
      // TLS-looking bytes are a need-more for the TLS sniffer; the rest is decided early.
      if (text.startsWith('\x16')) assert.equal(r.verdict.verdict, 'need-more');
      else {
        assert.equal(r.verdict.verdict, 'no-match');
        assert.equal(r.at, at);
      }
    });
  }

  test('a request line longer than MAX_REQUEST_LINE is no-match exactly at the cap', () => {
    const long = Buffer.from(`GET /${'a'.repeat(MAX_REQUEST_LINE)} HTTP/1.1\r\n`, 'latin1');
    assert.equal(sniffClient(long.subarray(0, MAX_REQUEST_LINE - 1), 80).verdict, 'need-more');
    assert.equal(sniffClient(long.subarray(0, MAX_REQUEST_LINE), 80).verdict, 'no-match');
    assert.equal(sniffClient(long, 80).verdict, 'no-match');
    const fits = Buffer.from(`GET /${'a'.repeat(MAX_REQUEST_LINE - 16)} HTTP/1.1\r\n`, 'latin1');
    assert.equal(fits.length, MAX_REQUEST_LINE);
    expectMatch(sniffClient(fits, 80), 'http', 'line of exactly the cap');
  });
});

describe('sniffClient: other client-first protocols', () => {
  test('HTTP/2 prior-knowledge preface (RFC 9113 §3.4), then a SETTINGS frame', () => {
    const settings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    const { verdict, at } = feedByteByByte(client(80), Buffer.concat([HTTP2_PREFACE, settings]), 'h2');
    expectMatch(verdict, 'http2', 'preface');
    assert.equal(at, 24);
  });

  test('"PRI * HTTP/2.0" without the rest of the preface is not HTTP/1', () => {
    const r = feedByteByByte(client(80), Buffer.from('PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n'), 'pri');
    assert.equal(r.verdict.verdict, 'no-match');
  });

  for (const line of ['SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5', 'SSH-2.0-PuTTY_Release_0.81', 'SSH-2.0-Go']) {
    test(`SSH identification ${line} (RFC 4253 §4.2)`, () => {
      const bytes = Buffer.from(`${line}\r\n\x00\x00\x05\xdc\x06\x14`, 'latin1');
      const m = expectMatch(feedByteByByte(client(22), bytes, line).verdict, 'ssh', line);
      assert.equal(m.info.banner, line);
    });
  }

  test('an SSH identification line over 255 bytes is no-match', () => {
    const r = feedByteByByte(client(22), Buffer.from(`SSH-2.0-${'x'.repeat(300)}\r\n`), 'long ssh');
    assert.equal(r.verdict.verdict, 'no-match');
  });

  test('Telnet option negotiation (RFC 854) from the client', () => {
    const r = feedByteByByte(client(23), Buffer.from([0xff, 0xfb, 0x18, 0xff, 0xfd, 0x01]), 'telnet');
    expectMatch(r.verdict, 'telnet', 'IAC WILL TERMINAL-TYPE');
    assert.equal(r.at, 3);
  });

  test('empty input is need-more; binary is no-match on its first byte', () => {
    assert.equal(sniffClient(Buffer.alloc(0), 80).verdict, 'need-more');
    assert.equal(sniffClient(Buffer.from([0x00]), 80).verdict, 'no-match');
    assert.equal(sniffClient(Buffer.from([0x80, 0x01]), 80).verdict, 'no-match');
  });
});

describe('sniffServer: greetings as real servers send them', () => {
  const greetings: [string, string, string?][] = [
    // SMTP (RFC 5321 §4.2, §3.1)
    ['220 mail.example.com ESMTP Postfix (Ubuntu)\r\n', 'smtp'],
    ['220 mx.example.org ESMTP Exim 4.96 Mon, 01 Jan 2024 00:00:00 +0000\r\n', 'smtp'],
    ['220 host.example.com ESMTP Sendmail 8.15.2/8.15.2; Mon, 1 Jan 2024 00:00:00 GMT\r\n', 'smtp'],
    ['220 EXCH01.corp.example.com Microsoft ESMTP MAIL Service ready at Mon, 1 Jan 2024 00:00:00 +0000\r\n', 'smtp'],
    ['220 mx.google.com ESMTP a1b2c3d4e5f6g7.123 - gsmtp\r\n', 'smtp'],
    ['220-smtp.example.net ESMTP\r\n220-no UCE\r\n220 ready\r\n', 'smtp'],
    ['220 ftp.example.com ESMTP OpenSMTPD\r\n', 'smtp'],
    ['220 mail.example.net ready\r\n', 'smtp'],
    // FTP (RFC 959 §4.2)
    ['220 (vsFTPd 3.0.5)\r\n', 'ftp'],
    ['220 ProFTPD Server (Debian) [::ffff:192.0.2.1]\r\n', 'ftp'],
    ['220 Microsoft FTP Service\r\n', 'ftp'],
    ['220-FileZilla Server 1.8.0\r\n220 Please visit https://filezilla-project.org/\r\n', 'ftp'],
    [
      '220---------- Welcome to Pure-FTPd [privsep] [TLS] ----------\r\n220-You are user number 1 of 50 allowed.\r\n' +
        '220-Local time is now 12:00. Server port: 21.\r\n220-IPv6 connections are also welcome on this server.\r\n' +
        '220 You will be disconnected after 15 minutes of inactivity.\r\n',
      'ftp',
    ],
    ['220-Welcome\r\n  any text, RFC 959 allows it\r\n220 FTP ready\r\n', 'ftp'],
    ['220 FTP server ready\n', 'ftp'],
    // POP3 (RFC 1939 §4), IMAP (RFC 3501 §7.1), NNTP (RFC 3977 §5.1)
    ['+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n', 'pop3'],
    ['+OK Dovecot (Ubuntu) ready.\r\n', 'pop3'],
    ['+OK\r\n', 'pop3'],
    ['* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Ubuntu) ready.\r\n', 'imap'],
    ['* PREAUTH IMAP4rev1 server logged in as Smith\r\n', 'imap'],
    ['* BYE Too many connections\r\n', 'imap'],
    ['200 news.example.com InterNetNews server INN 2.7.1 ready (transit mode)\r\n', 'nntp'],
    ['201 NNTP Service Ready, posting prohibited\r\n', 'nntp'],
    // SSH (RFC 4253 §4.2)
    ['SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5\r\n', 'ssh'],
    ['SSH-2.0-dropbear_2022.83\r\n', 'ssh'],
    ['SSH-1.99-Cisco-1.25\r\n', 'ssh'],
    ['SSH-2.0-OpenSSH_for_Windows_8.1\n', 'ssh'],
  ];
  for (const [text, proto] of greetings) {
    test(`${proto}: ${JSON.stringify(text.split('\r\n')[0])}`, () => {
      const bytes = Buffer.concat([Buffer.from(text, 'latin1'), Buffer.from('EHLO trailing bytes\r\n')]);
      const { verdict, at } = feedByteByByte(server(0), bytes, text);
      const m = expectMatch(verdict, proto, text);
      assert.equal(at, text.length, 'decided at the greeting\'s last LF');
      assert.equal(m.info.ambiguous, undefined);
      assert.equal(m.info.banner, text.replace(/\r?\n$/, '').split(/\r?\n/).join('\n'));
    });
  }

  test('a 220 that names neither is ambiguous ftp-or-smtp', () => {
    for (const text of ['220 host.example.net ready\r\n', '220\r\n', '220-one\r\n220 two\r\n']) {
      const m = expectMatch(feedByteByByte(server(0), Buffer.from(text), text).verdict, 'ftp', text);
      assert.equal(m.info.ambiguous, 'ftp-or-smtp', text);
    }
  });

  test('Telnet server negotiation (RFC 854)', () => {
    expectMatch(feedByteByByte(server(23), Buffer.from([0xff, 0xfd, 0x18, 0xff, 0xfd, 0x20])).verdict, 'telnet', 'DO TTYPE');
  });

  const refused = [
    '221 bye\r\n',
    '220x\r\n',
    '421 Service not available\r\n',
    '-ERR no\r\n',
    '+OKAY\r\n',
    '* NO\r\n',
    '* OKAY\r\n',
    '202 ready\r\n',
    'HTTP/1.1 200 OK\r\n',
    'SSH-\r\n',
    'hello\r\n',
    '\xff\x01',
  ];
  for (const text of refused) {
    test(`no-match: ${JSON.stringify(text)}`, () => {
      assert.equal(feedByteByByte(server(0), Buffer.from(text, 'latin1'), text).verdict.verdict, 'no-match');
    });
  }

  test('greetings past their caps are no-match', () => {
    assert.equal(sniffServer(Buffer.from(`+OK ${'x'.repeat(5000)}\r\n`), 110).verdict, 'no-match');
    const many = Buffer.from(`${'220-line of a long welcome text\r\n'.repeat(600)}220 ready\r\n`);
    assert.equal(sniffServer(many, 21).verdict, 'no-match');
    assert.equal(sniffServer(Buffer.from(`220 ${'y'.repeat(5000)}`), 21).verdict, 'no-match');
  });
});

describe('resolveFtpOrSmtp: the client\'s first command, then the port', () => {
  test('commands decide', () => {
    for (const line of ['USER anonymous', 'AUTH TLS', 'FEAT', 'SYST', 'OPTS UTF8 ON', 'PASV', 'user x']) {
      assert.equal(resolveFtpOrSmtp(line, 25), 'ftp', line);
    }
    for (const line of ['EHLO client.example', 'HELO x', 'MAIL FROM:<a@b>', 'ehlo x']) {
      assert.equal(resolveFtpOrSmtp(line, 21), 'smtp', line);
    }
  });
  test('the port is the last hint', () => {
    assert.equal(resolveFtpOrSmtp('', 21), 'ftp');
    assert.equal(resolveFtpOrSmtp('NOOP', 25), 'smtp');
    assert.equal(resolveFtpOrSmtp('', 587), 'smtp');
    assert.equal(resolveFtpOrSmtp('', 465), 'smtp');
    assert.equal(resolveFtpOrSmtp('QUIT', 2121), 'ftp');
  });
  test('firstCommandLine waits for the LF, caps the line at 512', () => {
    assert.equal(firstCommandLine(Buffer.from('EHLO x')), 'need-more');
    assert.equal(firstCommandLine(Buffer.from('EHLO x\r\nMAIL')), 'EHLO x');
    assert.equal(firstCommandLine(Buffer.from('x'.repeat(512))), null);
  });
});

/**
 * A real ClientHello: node:tls (OpenSSL) connected to an in-memory stream, whose first write is
 * the client's first flight. No socket involved.
 */
async function realClientHello(options: tls.ConnectionOptions): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let tlsSocket: tls.TLSSocket | null = null;
  const hello = new Promise<Buffer>((resolve, reject) => {
    const wire = new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk);
        const all = Buffer.concat(chunks);
        if (parseClientHello(all).verdict !== 'need-more' || all.length > 64 * 1024) resolve(all);
        callback();
      },
    });
    tlsSocket = tls.connect({ ...options, socket: wire });
    tlsSocket.on('error', reject);
  });
  try {
    return await hello;
  } finally {
    (tlsSocket as tls.TLSSocket | null)?.destroy();
  }
}

/** The handshake bytes of a single-record first flight, framed again as records of the given sizes. */
function reframe(flight: Buffer, sizes: number[]): Buffer {
  assert.equal(flight[0], 22);
  const length = flight.readUInt16BE(3);
  assert.equal(flight.length, 5 + length, 'the captured flight is one record');
  const handshake = flight.subarray(5);
  const records: Buffer[] = [];
  let at = 0;
  for (const size of sizes) {
    const part = handshake.subarray(at, at + size);
    records.push(Buffer.from([22, 3, 1, part.length >> 8, part.length & 0xff]), part);
    at += size;
  }
  assert.equal(at, handshake.length);
  return Buffer.concat(records);
}

describe('parseClientHello: real ClientHellos (RFC 8446 §4.1.2, RFC 6066 §3, RFC 7301 §3.1)', async () => {
  const withAll = await realClientHello({ servername: 'www.example.com', ALPNProtocols: ['h2', 'http/1.1'] });
  const tls12 = await realClientHello({ servername: 'legacy.example.org', maxVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'] });
  // Node sends no server_name for an IP address (RFC 6066 §3: literal addresses are not permitted).
  const bare = await realClientHello({ host: '192.0.2.1' });

  test('SNI and ALPN from a TLS 1.3 ClientHello, fed one byte at a time', () => {
    const { verdict, at } = feedByteByByte(client(443), withAll, 'tls13');
    const m = expectMatch(verdict, 'tls', 'tls13');
    assert.deepEqual(m.info, { sni: 'www.example.com', alpn: ['h2', 'http/1.1'] });
    assert.equal(at, withAll.length);
  });

  test('a TLS 1.2-only client', () => {
    const m = expectMatch(feedByteByByte(parseClientHello, tls12, 'tls12').verdict, 'tls', 'tls12');
    assert.deepEqual(m.info, { sni: 'legacy.example.org', alpn: ['http/1.1'] });
  });

  test('no server_name, no ALPN', () => {
    const m = expectMatch(parseClientHello(bare), 'tls', 'bare');
    assert.deepEqual(m.info, {});
  });

  test('the same handshake split over two records', () => {
    const handshakeLength = withAll.length - 5;
    const split = reframe(withAll, [40, handshakeLength - 40]);
    const { verdict, at } = feedByteByByte(parseClientHello, split, 'two records');
    assert.deepEqual(expectMatch(verdict, 'tls', 'two records').info, { sni: 'www.example.com', alpn: ['h2', 'http/1.1'] });
    assert.equal(at, split.length);
    // Split inside the 4-byte handshake header too.
    const tiny = reframe(withAll, [1, 2, 1, handshakeLength - 4]);
    assert.deepEqual(expectMatch(parseClientHello(tiny), 'tls', 'header split').info.sni, 'www.example.com');
  });

  test('random record splits (seeded) give the same answer', () => {
    const rand = rng(8446);
    const handshakeLength = withAll.length - 5;
    for (let i = 0; i < 50; i++) {
      const sizes: number[] = [];
      for (let left = handshakeLength; left > 0; ) {
        const n = Math.min(left, 1 + Math.floor(rand() * 120));
        sizes.push(n);
        left -= n;
      }
      const framed = reframe(withAll, sizes);
      const v = i < 5 ? feedByteByByte(parseClientHello, framed, `split ${i}`).verdict : parseClientHello(framed);
      assert.deepEqual(expectMatch(v, 'tls', `split ${i}`).info, { sni: 'www.example.com', alpn: ['h2', 'http/1.1'] });
    }
  });

  test('malformed hellos are no-match', () => {
    const mutate = (f: (b: Buffer) => void): Buffer => {
      const b = Buffer.from(withAll);
      f(b);
      return b;
    };
    const handshakeLength = withAll.length - 5;
    const cases: [string, Buffer][] = [
      ['record type alert', mutate((b) => (b[0] = 21))],
      ['record version 2.0', mutate((b) => (b[1] = 2))],
      ['record version 3.5', mutate((b) => (b[2] = 5))],
      ['zero-length record', mutate((b) => b.writeUInt16BE(0, 3))],
      ['record over 2^14', mutate((b) => b.writeUInt16BE(0x4001, 3))],
      ['ServerHello, not ClientHello', mutate((b) => (b[5] = 2))],
      ['handshake over the cap', mutate((b) => b.writeUIntBE(0x10000, 6, 3))],
      ['handshake one byte short', (() => {
        const b = mutate((x) => x.writeUIntBE(x.readUIntBE(6, 3) - 1, 6, 3));
        return b;
      })()],
      ['session id over 32 bytes', mutate((b) => (b[5 + 4 + 2 + 32] = 33))],
      [
        'alert between two fragments',
        (() => {
          const two = reframe(withAll, [40, handshakeLength - 40]);
          return Buffer.concat([two.subarray(0, 45), Buffer.from([21, 3, 3, 0, 2, 1, 0]), two.subarray(45)]);
        })(),
      ],
    ];
    for (const [label, bytes] of cases) {
      assert.equal(feedByteByByte(parseClientHello, bytes, label).verdict.verdict, 'no-match', label);
      assert.equal(sniffClient(bytes, 443).verdict, 'no-match', `${label} (sniffClient)`);
    }
  });

  test('fuzz: mutated real hellos never throw and stay monotone (seeded)', () => {
    const rand = rng(6066);
    for (let i = 0; i < 400; i++) {
      const b = Buffer.from(rand() < 0.5 ? withAll : tls12);
      const flips = 1 + Math.floor(rand() * 4);
      for (let k = 0; k < flips; k++) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
      const cut = rand() < 0.3 ? b.subarray(0, Math.floor(rand() * b.length)) : b;
      const v = parseClientHello(cut);
      assert.ok(['match', 'need-more', 'no-match'].includes(v.verdict));
      if (i < 20) feedByteByByte(parseClientHello, cut, `mutation ${i}`);
    }
  });
});

describe('fuzz: random bytes never throw, verdicts stay monotone (seeded)', () => {
  const classifiers: [string, (b: Buffer) => SniffVerdict][] = [
    ['sniffClient', client(80)],
    ['sniffServer', server(21)],
    ['parseClientHello', parseClientHello],
  ];

  test('random buffers', () => {
    const rand = rng(1939);
    for (let i = 0; i < 3000; i++) {
      const b = randomBytes(rand, Math.floor(rand() * (rand() < 0.1 ? 20_000 : 600)));
      for (const [, classify] of classifiers) {
        const v = classify(b);
        assert.ok(['match', 'need-more', 'no-match'].includes(v.verdict));
      }
      const line = firstCommandLine(b);
      assert.ok(line === null || typeof line === 'string');
      assert.ok(['ftp', 'smtp'].includes(resolveFtpOrSmtp(b.toString('latin1'), Math.floor(rand() * 65536))));
    }
  });

  test('known beginnings followed by random bytes, fed one byte at a time', () => {
    const rand = rng(3501);
    const starts = [
      'GET /', 'POST / HTTP/1.', 'PRI * HTTP/2.0\r\n', 'SSH-2.0-', '220-', '220 ', '+OK', '* OK', '* PRE', '200 ', '201',
      '\x16\x03\x01\x00', '\xff\xfb', '',
    ];
    for (let i = 0; i < 600; i++) {
      const start = Buffer.from(starts[Math.floor(rand() * starts.length)]!, 'latin1');
      // Mostly printable tails, so line-based parsers get deep before deciding.
      const tail = Buffer.from(
        Array.from({ length: Math.floor(rand() * 80) }, () =>
          rand() < 0.85 ? 0x20 + Math.floor(rand() * 95) : [0x0d, 0x0a, 0x00, 0xff][Math.floor(rand() * 4)]!,
        ),
      );
      const bytes = Buffer.concat([start, tail]);
      for (const [name, classify] of classifiers) feedByteByByte(classify, bytes, `${name} ${JSON.stringify(bytes.toString('latin1'))}`);
    }
  });
});
