/**
 * The NNTP tap with Python's nntplib through the SOCKS door against the test NNTP server: GROUP,
 * ARTICLE, POST recorded; the second ARTICLE by Message-ID is answered from the proxy's store
 * (the server's log shows one ARTICLE). And the fallbacks every tapped tunnel keeps: a banner
 * that matches nothing, a server that never speaks and a client that never speaks each end as a
 * working plain relay.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { eventually, have, pythonViaSocks, startMailProxy, type MailProxy } from '../helpers/mail.js';
import { startNntpServer, type NntpServer } from '../helpers/nntp-server.js';

const skip = have(`/usr/bin/python3 -c 'import nntplib, socks'`) ? false : 'needs python3 nntplib and python3-socks';

const ARTICLE =
  'From: poster@example.test\r\nNewsgroups: test.group\r\nSubject: cached\r\nMessage-ID: <art-1@nntp.test>\r\n\r\n' +
  'first body line\r\n.starts with a dot\r\nlast\r\n';

let news: NntpServer;
let proxy: MailProxy;

/**
 * Each suite runs under the tap's own narrow rule and under the default job (`npm start`:
 * SOCKSTAP=all CACHE=do on an auto door), where the server's port is one never seen and the
 * connect strategy must find the banner on its own (issue: the tap keeps its promise).
 */
const JOBS: Array<[string, string[]]> = [
  ['SOCKSTAP=nntp,smtp,pop,imap', ['-P127.0.0.1:0/socks', 'SOCKSTAP=nntp,smtp,pop,imap', 'TIMEOUT=sniff:300ms']],
  ['the default job', ['-P127.0.0.1:0/auto', 'SOCKSTAP=all', 'CACHE=do']],
];

for (const [job, jobArgs] of JOBS) {
  describe(`under ${job}`, () => {
    before(async () => {
      news = await startNntpServer('test.group', [{ number: 1, messageId: '<art-1@nntp.test>', text: ARTICLE }]);
      proxy = await startMailProxy(jobArgs);
    });
    after(async () => {
      await proxy.stop();
      await news.close();
    });

    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed JSON records
    type Rec = Record<string, any>;

    describe('NNTP tap', { skip }, () => {
      test('ARTICLE twice by Message-ID: the second comes from the proxy; GROUP and POST recorded', async () => {
        const script = `
import nntplib, json, io
s = nntplib.NNTP('127.0.0.1', int(sys.argv[1]), readermode=False)
out = {}
resp, count, first, last, name = s.group('test.group')
out['group'] = name
out['a1'] = b'\\r\\n'.join(s.article('<art-1@nntp.test>')[1].lines).decode('latin1')
out['a2'] = b'\\r\\n'.join(s.article('<art-1@nntp.test>')[1].lines).decode('latin1')
s.post(io.BytesIO(b'From: me@example.test\\r\\nNewsgroups: test.group\\r\\nSubject: new\\r\\nMessage-ID: <post-9@nntp.test>\\r\\n\\r\\nposted body\\r\\n'))
s.quit()
print(json.dumps(out))
`;
        const r = await pythonViaSocks(proxy.port, script, [String(news.port)]);
        assert.equal(r.code, 0, r.stderr);
        const out = JSON.parse(r.stdout) as Record<string, string>;
        assert.equal(out.group, 'test.group');
        const expected = ARTICLE.slice(0, -2);
        assert.equal(out.a1, expected);
        assert.equal(out.a2, expected);
        assert.equal(news.commands.filter((c) => c.startsWith('ARTICLE')).length, 1);
        assert.equal(news.articles.at(-1)!.messageId, '<post-9@nntp.test>');
        const s = await eventually(() => proxy.sessions().find((x: Rec) => x.proto === 'nntp') as Rec, 'nntp session');
        assert.equal(s.nntp.group, 'test.group');
        assert.equal(s.nntp.cacheHits, 1);
        assert.equal(s.nntp.articles, 2);
        assert.equal(s.nntp.posts[0].messageId, '<post-9@nntp.test>');
        assert.match(s.nntp.posts[0].reply, /^240 /);
        assert.ok(s.nntp.commands.includes('GROUP test.group'));
      });
    });

    /** A server speaking `banner` (or nothing) that echoes back what it gets, prefixed. */
    async function echoServer(banner: string | null): Promise<{ port: number; close(): Promise<void> }> {
      const sockets = new Set<net.Socket>();
      const server = net.createServer((s) => {
        sockets.add(s);
        s.on('error', () => {});
        if (banner) s.write(banner);
        s.on('data', (d: Buffer) => s.write(Buffer.concat([Buffer.from('echo:'), d])));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      return {
        port: (server.address() as net.AddressInfo).port,
        close: async () => {
          for (const s of sockets) s.destroy();
          await new Promise((r) => server.close(r));
        },
      };
    }

    function readUntil(socket: net.Socket, text: string): Promise<string> {
      return new Promise((resolve, reject) => {
        let got = '';
        const t = setTimeout(() => reject(new Error(`waited for ${text}, got ${JSON.stringify(got)}`)), 5000);
        const on = (d: Buffer): void => {
          got += d.toString('latin1');
          if (got.includes(text)) {
            clearTimeout(t);
            socket.off('data', on);
            resolve(got);
          }
        };
        socket.on('data', on);
      });
    }

    describe('tapped tunnels that are not mail or news stay plain relays', () => {
      const cases: Array<[string, string | null, boolean]> = [
        ['a banner that matches nothing', 'HELLO THERE 42\r\n', false],
        ['a server that never speaks', null, false],
        ['a client that never speaks (nor the server) past the sniff window', null, true],
      ];
      for (const [name, banner, waitFirst] of cases) {
        test(name, async () => {
          const srv = await echoServer(banner);
          const { socket } = await SocksClient.createConnection({
            proxy: { host: '127.0.0.1', port: proxy.port, type: 5 },
            command: 'connect',
            destination: { host: '127.0.0.1', port: srv.port },
          });
          if (banner) assert.match(await readUntil(socket, '\n'), /^HELLO THERE 42/);
          if (waitFirst) await new Promise((r) => setTimeout(r, 600));
          socket.write('EHLO not-really\r\n');
          assert.match(await readUntil(socket, 'echo:EHLO not-really\r\n'), /echo:EHLO not-really/);
          socket.end();
          await new Promise((r) => socket.once('close', r));
          const rec = await eventually(
            () => proxy.sessions().find((x: Rec) => x.dst === `127.0.0.1:${srv.port}`) as Rec,
            'session record',
          );
          assert.equal(rec.proto, 'raw');
          assert.ok(rec.bytesUp >= 'EHLO not-really\r\n'.length);
          await srv.close();
        });
      }
    });
  });
}
