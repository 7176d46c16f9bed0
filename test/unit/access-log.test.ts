/**
 * access.log formats, compared with Squid's built-in definitions (squid-cache.org logformat):
 *   squid     %ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt
 *   common    %>a %[ui %[un [%tl] "%rm %ru HTTP/%rv" %>Hs %<st %Ss:%Sh
 *   combined  %>a %[ui %[un [%tl] "%rm %ru HTTP/%rv" %>Hs %<st "%{Referer}>h" "%{User-Agent}>h" %Ss:%Sh
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { AccessLogWriter, clfTime, formatAccessLine, squidQuote } from '../../src/observe/access-log.js';
import type { AccessRecord } from '../../src/observe/events.js';

const originalTz = process.env.TZ;
after(() => {
  if (originalTz === undefined) delete process.env.TZ;
  else process.env.TZ = originalTz;
});

function record(over: Partial<AccessRecord> = {}): AccessRecord {
  return {
    time: 1_286_536_308_779,
    elapsedMs: 180,
    clientAddress: '192.168.0.224',
    resultCode: 'TCP_MISS',
    status: 200,
    bytes: 411,
    method: 'GET',
    url: 'http://example.com/index.html',
    user: null,
    hierarchy: 'HIER_DIRECT/93.184.216.34',
    contentType: 'text/html',
    sessionId: 's1',
    ...over,
  };
}

describe('squid native format', () => {
  test('matches a line as Squid writes it', () => {
    assert.equal(
      formatAccessLine(record(), 'squid'),
      '1286536308.779    180 192.168.0.224 TCP_MISS/200 411 GET http://example.com/index.html - HIER_DIRECT/93.184.216.34 text/html\n',
    );
  });

  test('a CONNECT tunnel, a user, and a denial', () => {
    assert.equal(
      formatAccessLine(
        record({ resultCode: 'TCP_TUNNEL', method: 'CONNECT', url: 'example.com:443', user: 'alice', contentType: '-', bytes: 5234, elapsedMs: 65_432 }),
        'squid',
      ),
      '1286536308.779  65432 192.168.0.224 TCP_TUNNEL/200 5234 CONNECT example.com:443 alice HIER_DIRECT/93.184.216.34 -\n',
    );
    assert.equal(
      formatAccessLine(record({ resultCode: 'TCP_DENIED', status: 407, hierarchy: 'HIER_NONE/-', contentType: 'text/plain', elapsedMs: 0 }), 'squid'),
      '1286536308.779      0 192.168.0.224 TCP_DENIED/407 411 GET http://example.com/index.html - HIER_NONE/- text/plain\n',
    );
  });

  test('zero-pads the status and the milliseconds, dashes empty fields', () => {
    const line = formatAccessLine(record({ time: 1_700_000_000_005, status: 0, contentType: '', hierarchy: '' }), 'squid');
    assert.equal(line, '1700000000.005    180 192.168.0.224 TCP_MISS/000 411 GET http://example.com/index.html - HIER_NONE/- -\n');
  });

  test('elapsed wider than six digits is not cut', () => {
    assert.match(formatAccessLine(record({ elapsedMs: 12_345_678 }), 'squid'), /^\d+\.\d{3} 12345678 /);
  });

  test("user names are encoded as Squid's [ encoding, plus SP", () => {
    assert.equal(squidQuote('alice'), 'alice');
    assert.equal(squidQuote('a b'), 'a%20b');
    assert.equal(squidQuote('50%[x]'), '50%25%5bx%5d');
    assert.equal(squidQuote('back\\slash'), 'back\\\\slash');
    assert.equal(squidQuote('cr\rlf\n'), 'cr\\rlf\\n');
    assert.equal(squidQuote('tab\there'), 'tab%09here');
    assert.equal(squidQuote('jörg'), 'j%c3%b6rg');
  });

  test('random field values never add or remove a field, never break the line', () => {
    for (let i = 0; i < 500; i++) {
      const junk = (): string => randomBytes(1 + (i % 17)).toString('latin1');
      const line = formatAccessLine(
        record({ method: junk(), url: junk(), user: junk(), contentType: junk(), clientAddress: junk(), hierarchy: `HIER_DIRECT/${junk()}` }),
        'squid',
      );
      assert.ok(line.endsWith('\n') && line.indexOf('\n') === line.length - 1, JSON.stringify(line));
      const fields = line.trimStart().slice(0, -1).split(/ +/);
      assert.equal(fields.length, 10, JSON.stringify(line));
    }
  });
});

describe('common and combined formats', () => {
  test('clfTime follows the local time zone', () => {
    process.env.TZ = 'UTC';
    assert.equal(clfTime(Date.UTC(2026, 10, 2, 3, 4, 5)), '02/Nov/2026:03:04:05 +0000');
    process.env.TZ = 'Asia/Kolkata';
    assert.equal(clfTime(Date.UTC(2026, 10, 2, 3, 4, 5)), '02/Nov/2026:08:34:05 +0530');
    process.env.TZ = 'America/Los_Angeles';
    assert.equal(clfTime(Date.UTC(2026, 0, 31, 3, 4, 5)), '30/Jan/2026:19:04:05 -0800');
  });

  test('common is CLF with Squid code:hierarchy', () => {
    process.env.TZ = 'UTC';
    assert.equal(
      formatAccessLine(record({ user: 'alice', httpVersion: '1.0' }), 'common'),
      '192.168.0.224 - alice [08/Oct/2010:11:11:48 +0000] "GET http://example.com/index.html HTTP/1.0" 200 411 TCP_MISS:HIER_DIRECT\n',
    );
  });

  test('combined adds quoted referer and user agent, escaping quotes', () => {
    process.env.TZ = 'UTC';
    assert.equal(
      formatAccessLine(record({ referer: 'http://a.example/', userAgent: 'curl/8.0 "quoted"' }), 'combined'),
      '192.168.0.224 - - [08/Oct/2010:11:11:48 +0000] "GET http://example.com/index.html HTTP/1.1" 200 411 ' +
        '"http://a.example/" "curl/8.0 \\"quoted\\"" TCP_MISS:HIER_DIRECT\n',
    );
    assert.match(formatAccessLine(record(), 'combined'), / "-" "-" TCP_MISS:HIER_DIRECT\n$/);
  });
});

describe('AccessLogWriter', () => {
  test('appends formatted lines and flushes them on close', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sockstap-access-'));
    try {
      const path = join(dir, 'log', 'access.log');
      const writer = new AccessLogWriter(path, 'squid');
      writer.write(record());
      writer.write(record({ method: 'HEAD' }));
      await writer.close();
      const again = new AccessLogWriter(path, 'squid');
      again.write(record({ method: 'POST' }));
      await again.close();
      const lines = readFileSync(path, 'utf8').split('\n').filter(Boolean);
      assert.deepEqual(
        lines.map((l) => l.split(/ +/)[5]),
        ['GET', 'HEAD', 'POST'],
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test('a URL with a password is logged without it', () => {
  const line = formatAccessLine(
    {
      time: 1_700_000_000_000, elapsedMs: 5, clientAddress: '127.0.0.1', resultCode: 'TCP_MISS', status: 200, bytes: 10,
      method: 'GET', url: 'ftp://alice:s3cret@files.example/pub/a.txt', user: 'alice', hierarchy: 'HIER_DIRECT/127.0.0.1',
      contentType: 'text/plain', sessionId: 'x',
    },
    'squid',
  );
  assert.ok(!line.includes('s3cret'), line);
  assert.match(line, / ftp:\/\/alice@files\.example\/pub\/a\.txt /);
});

describe('a request MOUNT rewrote', () => {
  test('the real URL in the URL field, the asked one as a trailing vurl= field in every format', () => {
    const r = record({ url: 'http://backend:8080/static/a', mountedFrom: 'http://site.test/mnt/a b' });
    for (const format of ['squid', 'common', 'combined'] as const) {
      const line = formatAccessLine(r, format);
      assert.ok(line.includes(' http://backend:8080/static/a '), line);
      assert.ok(line.endsWith(' vurl=http://site.test/mnt/a%20b\n'), line);
      assert.equal(line, `${formatAccessLine(record({ url: r.url }), format).slice(0, -1)} vurl=http://site.test/mnt/a%20b\n`);
    }
  });
});

test('URL user information is removed up to the last @ of the authority', () => {
  const cases: Array<[string, string]> = [
    ['ftp://alice:x@Secr3t@host/', 'ftp://alice@host/'],
    ['ftp://alice:a:b@c@127.0.0.1:2121/pub/x?y=@z', 'ftp://alice@127.0.0.1:2121/pub/x?y=@z'],
    ['http://u:p@ss@example.test#frag@x', 'http://u@example.test#frag@x'],
    ['http://:only-pw@example.test/', 'http://@example.test/'],
    ['http://user@example.test/a@b', 'http://user@example.test/a@b'],
    ['http://example.test/a:b@c', 'http://example.test/a:b@c'],
    ['FTP://Alice:PW@Host/', 'FTP://Alice@Host/'],
  ];
  for (const [url, logged] of cases) {
    const line = formatAccessLine(
      {
        time: 1_700_000_000_000, elapsedMs: 5, clientAddress: '127.0.0.1', resultCode: 'TCP_MISS', status: 200, bytes: 10,
        method: 'GET', url, user: null, hierarchy: 'HIER_DIRECT/127.0.0.1', contentType: 'text/plain', sessionId: 'x',
      },
      'squid',
    );
    assert.equal(line.split(' ').filter(Boolean)[6], logged, url);
  }
});
