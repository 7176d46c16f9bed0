/**
 * Property tests (fast-check) for the pure parsers: generated valid messages parse back to what
 * was encoded however they are chunked, arbitrary bytes never make a final answer change, and the
 * configuration parsers agree with an independent reading. A failure prints the shrunk (minimal)
 * counterexample and the seed to replay it (FC_SEED=... with the path fast-check prints).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import {
  formatIPv6,
  parseSocks4Request,
  parseSocks5Greeting,
  parseSocks5Request,
  parseUserPassRequest,
  writeIPv6,
  type ParseResult,
} from '../../src/wire/socks.js';
import { LineReader, lineText } from '../../src/net/lines.js';
import { sniffClient, sniffRequestLine, sniffServer, parseClientHello } from '../../src/sniff/index.js';
import { parseHostList } from '../../src/config/hostlist.js';
import { parseDuration, parseSize } from '../../src/config/units.js';
import { incrementalParser, monotoneSniffer } from '../fuzz/invariants.js';

const runs = { numRuns: Number(process.env.FC_RUNS ?? 300), ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}) };

/** Cut points that split `bytes` into chunks. */
const chunking = fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 40 });

function chunks(bytes: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const n of sizes) {
    if (at >= bytes.length) break;
    out.push(bytes.subarray(at, at + n));
    at += n;
  }
  if (at < bytes.length) out.push(bytes.subarray(at));
  return out;
}

/**
 * Feeds `msg` then `extra` chunk by chunk into a growing buffer, as the doors do: need-more while
 * the message is incomplete, and the first other answer once it is in.
 */
function feed<T>(parse: (b: Buffer) => ParseResult<T>, msg: Buffer, sizes: number[], extra: Uint8Array = new Uint8Array(0)): ParseResult<T> {
  const bytes = Buffer.concat([msg, extra]);
  let have = 0;
  let last: ParseResult<T> = { status: 'need-more' };
  for (const c of chunks(bytes, sizes)) {
    have += c.length;
    last = parse(bytes.subarray(0, have));
    if (have < msg.length) assert.equal(last.status, 'need-more', `answered after ${have} of ${msg.length} bytes: ${JSON.stringify(last)}`);
    else if (last.status !== 'need-more') break;
  }
  return last;
}

const hostLabel = fc.stringMatching(/^[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?$/);
const hostName = fc.array(hostLabel, { minLength: 1, maxLength: 4 }).map((l) => l.join('.'));
const port = fc.integer({ min: 0, max: 65535 });
const byte = fc.integer({ min: 0, max: 255 });
const ipv4 = fc.tuple(byte, byte, byte, byte).map((b) => b.join('.'));

describe('SOCKS wire (src/wire/socks.ts)', () => {
  test('SOCKS4 and SOCKS4a requests parse back, in any chunking, with pipelined bytes after them', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(1, 2),
        port,
        fc.oneof(ipv4.filter((a) => !a.startsWith('0.0.0.')), hostName),
        fc.stringMatching(/^[a-z0-9._-]{0,40}$/),
        chunking,
        fc.uint8Array({ maxLength: 8 }),
        (cd, p, host, user, sizes, extra) => {
          const isName = !/^\d+\.\d+\.\d+\.\d+$/.test(host);
          const head = Buffer.alloc(8);
          head[0] = 4;
          head[1] = cd;
          head.writeUInt16BE(p, 2);
          if (isName) head.set([0, 0, 0, 1], 4);
          else head.set(host.split('.').map(Number), 4);
          const msg = Buffer.concat([head, Buffer.from(user), Buffer.from([0]), isName ? Buffer.from(`${host}\0`) : Buffer.alloc(0)]);
          const r = feed(parseSocks4Request, msg, sizes, extra);
          assert.equal(r.status, 'ok', JSON.stringify(r));
          if (r.status !== 'ok') return;
          assert.equal(r.consumed, msg.length);
          assert.deepEqual(r.value, { version: isName ? '4a' : '4', command: cd === 1 ? 'connect' : 'bind', port: p, host, userId: user });
        },
      ),
      runs,
    );
  });

  test('SOCKS5 requests parse back in any chunking (IPv4, IPv6, names)', () => {
    const v6 = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b));
    fc.assert(
      fc.property(
        fc.constantFrom(1, 2, 3),
        fc.oneof(ipv4.map((a) => ({ atyp: 1, host: a, bytes: Buffer.alloc(0) })), v6.map((b) => ({ atyp: 4, host: '', bytes: b })), hostName.map((n) => ({ atyp: 3, host: n, bytes: Buffer.alloc(0) }))),
        port,
        chunking,
        (cmd, addr, p, sizes) => {
          let body: Buffer;
          if (addr.atyp === 1) body = Buffer.from(addr.host.split('.').map(Number));
          else if (addr.atyp === 4) body = addr.bytes;
          else body = Buffer.concat([Buffer.from([addr.host.length]), Buffer.from(addr.host)]);
          const msg = Buffer.concat([Buffer.from([5, cmd, 0, addr.atyp]), body, Buffer.from([p >> 8, p & 255])]);
          const r = feed(parseSocks5Request, msg, sizes);
          assert.equal(r.status, 'ok', JSON.stringify(r));
          if (r.status !== 'ok') return;
          assert.equal(r.consumed, msg.length);
          assert.equal(r.value.port, p);
          if (addr.atyp === 4) {
            // Independent reading: ipaddr.js's RFC 5952 text (it keeps the IPv4-mapped tail dotted too).
            const ours = ipaddr.parse(r.value.host);
            assert.deepEqual(Buffer.from(ours.toByteArray()), addr.bytes);
          } else assert.equal(r.value.host, addr.host);
        },
      ),
      runs,
    );
  });

  test('greetings and username/password sub-negotiations parse back in any chunking', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 255 }), fc.string({ maxLength: 255 }), fc.string({ maxLength: 255 }), chunking, (methods, user, pass, sizes) => {
        const g = feed(parseSocks5Greeting, Buffer.concat([Buffer.from([5, methods.length]), Buffer.from(methods)]), sizes);
        assert.equal(g.status, 'ok');
        if (g.status === 'ok') assert.deepEqual(g.value, { offersNoAuth: methods.includes(0), offersUserPass: methods.includes(2) });
        const u = Buffer.from(user, 'utf8').subarray(0, 255);
        const pw = Buffer.from(pass, 'utf8').subarray(0, 255);
        const msg = Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([pw.length]), pw]);
        const r = feed(parseUserPassRequest, msg, sizes);
        assert.equal(r.status, 'ok');
        if (r.status === 'ok') assert.deepEqual(r.value, { user: u.toString('utf8'), password: pw.toString('utf8') });
      }),
      runs,
    );
  });

  test('IPv6 text: formatIPv6 is RFC 5952 text that writeIPv6 reads back to the same 16 bytes', () => {
    // Bias towards zero groups, where "::" placement is decided.
    const group = fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff }));
    fc.assert(
      fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), (groups) => {
        const bytes = Buffer.alloc(16);
        groups.forEach((g, i) => bytes.writeUInt16BE(g, i * 2));
        const text = formatIPv6(bytes, 0);
        const back = Buffer.alloc(16);
        assert.ok(writeIPv6(text, back, 0), text);
        assert.deepEqual(back, bytes, text);
        // The independent RFC 5952 reading (ipaddr.js), except for the mapped form's dotted tail.
        const ref = ipaddr.IPv6.parse(text);
        if (!ref.isIPv4MappedAddress()) assert.equal(text, ref.toRFC5952String());
      }),
      runs,
    );
  });

  test('arbitrary bytes: a prefix never answers differently from the whole', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.constantFrom(4, 5), (raw, v) => {
        const b = Buffer.from(raw);
        if (b.length) b[0] = v;
        incrementalParser('parseSocks4Request', parseSocks4Request, b);
        incrementalParser('parseSocks5Request', parseSocks5Request, b);
        incrementalParser('parseSocks5Greeting', parseSocks5Greeting, b);
      }),
      runs,
    );
  });
});

describe('sniffers (src/sniff/)', () => {
  const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/);
  const target = fc.stringMatching(/^[\x21-\x7e]{1,60}$/);

  test('a request line is recognised in any chunking, with its method and target', () => {
    fc.assert(
      fc.property(token, target, fc.constantFrom('0', '1'), chunking, fc.string({ maxLength: 20 }), (method, t, minor, sizes, after) => {
        const bytes = Buffer.from(`${method} ${t} HTTP/1.${minor}\r\n${after}`, 'latin1');
        let seen = 0;
        let v = sniffRequestLine(bytes.subarray(0, 0));
        for (const c of chunks(bytes, sizes)) {
          seen += c.length;
          v = sniffRequestLine(bytes.subarray(0, seen));
          if (v.verdict !== 'need-more') break;
        }
        assert.equal(v.verdict, 'match');
        if (v.verdict === 'match') assert.deepEqual(v.info, { method, target: t });
      }),
      runs,
    );
  });

  test('arbitrary bytes after likely first bytes: final answers never change (client and server sniffers)', () => {
    const start = fc.constantFrom('', 'GET / HTTP/1.1\r\n', '\x16\x03\x01', '220 ', '220-x\r\n', '+OK', '* OK', '200 ', 'SSH-2.0-', '\xff\xfb', 'PRI * HTTP/2.0');
    fc.assert(
      fc.property(start, fc.uint8Array({ maxLength: 200 }), fc.constantFrom(21, 25, 80, 110, 143, 443), (s, rest, p) => {
        const b = Buffer.concat([Buffer.from(s, 'latin1'), Buffer.from(rest)]);
        monotoneSniffer('sniffClient', (x) => sniffClient(x, p), b);
        monotoneSniffer('sniffServer', (x) => sniffServer(x, p), b);
        monotoneSniffer('parseClientHello', parseClientHello, b);
      }),
      runs,
    );
  });
});

describe('line reader (src/net/lines.ts)', () => {
  test('lines and raw literals come out once and in order, in any chunking', () => {
    const line = fc.oneof(
      fc.stringMatching(/^[^\n{}]{0,30}$/).map((t) => ({ t: `${t}\r\n`, raw: '' })),
      fc.tuple(fc.stringMatching(/^[^\n{}]{0,10}$/), fc.string({ maxLength: 20 })).map(([t, raw]) => ({ t: `${t}{${Buffer.byteLength(raw, 'latin1')}}\r\n`, raw })),
    );
    fc.assert(
      fc.property(fc.array(line, { maxLength: 12 }), fc.string({ maxLength: 20 }).filter((s) => !s.includes('\n')), chunking, (lines, tail, sizes) => {
        const text = lines.map((l) => l.t + l.raw).join('') + tail;
        const bytes = Buffer.from(text, 'latin1');
        const reader = new LineReader(256);
        const got: string[] = [];
        for (const c of chunks(bytes, sizes)) {
          reader.push(c, (item) => {
            const t = item.bytes.toString('latin1');
            if (item.kind === 'raw') {
              // Raw pieces of one literal may come in several items: join them.
              if (got.length && got[got.length - 1]!.startsWith('R:')) got[got.length - 1] += t;
              else got.push(`R:${t}`);
              return;
            }
            got.push(`L:${t}`);
            const m = /\{(\d+)\}$/.exec(lineText(item.bytes));
            if (m) reader.expectRaw(Number(m[1]));
          });
        }
        assert.deepEqual(got, lines.flatMap((l) => (l.raw === '' ? [`L:${l.t}`] : [`L:${l.t}`, `R:${l.raw}`])));
        assert.equal(reader.drain().toString('latin1'), tail);
      }),
      runs,
    );
  });
});

describe('configuration (src/config/hostlist.ts, src/config/units.ts)', () => {
  test('a CIDR element matches exactly the addresses that share its prefix', () => {
    fc.assert(
      fc.property(fc.tuple(byte, byte, byte, byte), fc.integer({ min: 0, max: 32 }), fc.tuple(byte, byte, byte, byte), (net, bits, addr) => {
        const toInt = (b: number[]): number => ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
        const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
        const expected = (toInt(net) & mask) === (toInt(addr) & mask);
        const list = parseHostList(`${net.join('.')}/${bits}`, 'TEST');
        assert.equal(list.matches({ host: addr.join('.') }), expected);
        // The same address IPv4-mapped, and a name that resolved to it.
        assert.equal(list.matches({ host: `::ffff:${addr.join('.')}` }), expected);
        assert.equal(list.matches({ host: 'n.example', addresses: [addr.join('.')] }), expected);
      }),
      runs,
    );
  });

  test('names: exact, case-insensitive, trailing dot; .domain covers subdomains; ! excludes', () => {
    fc.assert(
      fc.property(hostName, hostName, hostLabel, (a, b, sub) => {
        fc.pre(a !== b);
        assert.ok(parseHostList(a, 'T').matches({ host: a.toUpperCase() + '.' }));
        assert.equal(parseHostList(a, 'T').matches({ host: b }), false);
        assert.ok(parseHostList(`.${a}`, 'T').matches({ host: `${sub}.${a}` }));
        assert.ok(parseHostList(`.${a}`, 'T').matches({ host: a }));
        assert.equal(parseHostList(`!${a},*`, 'T').matches({ host: a }), false);
        assert.ok(parseHostList(`!${a},*`, 'T').matches({ host: b }));
        assert.ok(parseHostList(`!${a}`, 'T').matches({ host: b }), 'a list of negations means everything else');
      }),
      runs,
    );
  });

  test('globs (names and URLs) answer as the equivalent regular expression, on short texts', () => {
    const alphabet = fc.constantFrom('a', 'b', '.', '-', '/');
    const text = fc.array(alphabet, { maxLength: 12 }).map((a) => a.join(''));
    const pattern = fc.array(fc.oneof(alphabet, fc.constant('*'), fc.constant('?')), { minLength: 1, maxLength: 8 }).map((a) => a.join(''));
    const esc = (c: string): string => c.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
    fc.assert(
      fc.property(pattern, text, (p, t) => {
        // URL elements: `*` is any run, everything else (`?` too) literal.
        const urlRe = new RegExp(`^http://h/${[...p].map((c) => (c === '*' ? '.*' : esc(c))).join('')}$`, 'i');
        assert.equal(parseHostList(`http://h/${p}`, 'T').matches({ host: 'h', url: `http://h/${t}` }), urlRe.test(`http://h/${t}`), `${p} ~ ${t}`);
        // Name elements: `*` any run, `?` one character (the host list's own characters only).
        const name = p.replace(/\//g, 'x');
        if (!/[*?]/.test(name) || name.startsWith('.')) return;
        const host = `${t.replace(/\//g, 'x')}`;
        const nameRe = new RegExp(`^${[...name.replace(/\.$/, '')].map((c) => (c === '*' ? '.*' : c === '?' ? '.' : esc(c))).join('')}$`, 'i');
        const probe = host.toLowerCase().replace(/\.$/, '');
        assert.equal(parseHostList(name, 'T').matches({ host }), nameRe.test(probe), `${name} ~ ${host}`);
      }),
      runs,
    );
  });

  test('sizes and durations are the number times the unit', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000 }), fc.constantFrom(['', 1], ['k', 1024], ['m', 1024 ** 2], ['g', 1024 ** 3], ['K', 1024], ['kib', 1024], ['MB', 1024 ** 2]), (n, [unit, factor]) => {
        assert.equal(parseSize(`${n}${unit}`, 'T'), n * (factor as number));
      }),
      runs,
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000 }), fc.constantFrom(['ms', 1], ['s', 1000], ['', 1000], ['m', 60_000], ['h', 3_600_000], ['d', 86_400_000]), (n, [unit, factor]) => {
        assert.equal(parseDuration(` ${n}${unit} `, 'T'), n * (factor as number));
      }),
      runs,
    );
  });
});
