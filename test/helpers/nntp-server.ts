/**
 * A small but real NNTP server (RFC 3977) for the NNTP tap tests: CAPABILITIES, MODE READER,
 * GROUP, LISTGROUP, ARTICLE/HEAD/BODY/STAT by number or Message-ID, POST, DATE, QUIT, with
 * dot-stuffing both ways and a log of every command it received. Debian's inn2 needs a system
 * installation (its own user, /var/spool/news, a history database) and leafnode is a caching
 * relay that wants an upstream, so neither can be started unprivileged from a test in a second.
 */
import net from 'node:net';

export interface NntpArticle {
  number: number;
  messageId: string;
  /** Headers and body, CRLF line endings, not dot-stuffed. */
  text: string;
}

export interface NntpServer {
  port: number;
  /** Every command line received, in order, across connections. */
  commands: string[];
  articles: NntpArticle[];
  close(): Promise<void>;
}

function stuffed(text: string): string {
  return text
    .split('\r\n')
    .map((l) => (l.startsWith('.') ? '.' + l : l))
    .join('\r\n');
}

/**
 * `auth`: AUTHINFO USER/PASS (RFC 4643 §2.3: 381, then 281 or 481) and AUTHINFO SASL PLAIN with
 * its initial response inline or after 383 (§2.4) accept this one account.
 */
export async function startNntpServer(group: string, initial: NntpArticle[], auth?: { user: string; password: string }): Promise<NntpServer> {
  const articles = [...initial];
  const commands: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.write('200 nntp-test server ready (posting ok)\r\n');
    let buf = '';
    let posting: string[] | null = null;
    let current = 0;
    /** AUTHINFO state: the user given, or an open SASL PLAIN exchange. */
    let authUser: string | null = null;
    let saslPending = false;
    const plainOk = (b64: string): boolean => {
      const parts = Buffer.from(b64, 'base64').toString('utf8').split('\0');
      return parts.length === 3 && parts[1] === auth?.user && parts[2] === auth?.password;
    };
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      let i: number;
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (posting) {
          if (line === '.') {
            const text = posting.join('\r\n') + '\r\n';
            posting = null;
            const id = /^Message-ID:\s*(\S+)/im.exec(text)?.[1] ?? `<post-${articles.length + 1}@nntp.test>`;
            articles.push({ number: articles.length + 1, messageId: id, text });
            s.write('240 article received ok\r\n');
          } else posting.push(line.startsWith('.') ? line.slice(1) : line);
          continue;
        }
        commands.push(line);
        if (saslPending) {
          saslPending = false;
          s.write(plainOk(line) ? '281 authentication accepted\r\n' : '481 authentication failed\r\n');
          continue;
        }
        // RFC 3977 §3.1: arguments are separated by one or more SP or TAB.
        const [verb = '', arg = ''] = line.split(/[ \t]+(.*)/);
        const find = (): NntpArticle | undefined =>
          arg.startsWith('<') ? articles.find((a) => a.messageId === arg) : articles.find((a) => a.number === (arg ? Number(arg) : current));
        switch (verb.toUpperCase()) {
          case 'CAPABILITIES':
            s.write('101 capability list follows\r\nVERSION 2\r\nREADER\r\nPOST\r\n.\r\n');
            break;
          case 'MODE':
            s.write('200 reader mode, posting ok\r\n');
            break;
          case 'GROUP':
            if (arg !== group) s.write('411 no such group\r\n');
            else {
              current = articles[0]?.number ?? 0;
              s.write(`211 ${articles.length} 1 ${articles.length} ${group}\r\n`);
            }
            break;
          case 'LISTGROUP':
            s.write(`211 ${articles.length} 1 ${articles.length} ${group} list follows\r\n${articles.map((a) => `${a.number}\r\n`).join('')}.\r\n`);
            break;
          case 'ARTICLE':
          case 'HEAD':
          case 'BODY':
          case 'STAT': {
            const a = find();
            if (!a) {
              s.write(arg.startsWith('<') ? '430 no such article\r\n' : '423 no article with that number\r\n');
              break;
            }
            const n = arg.startsWith('<') ? 0 : a.number;
            const split = a.text.indexOf('\r\n\r\n');
            const head = a.text.slice(0, split + 2);
            const body = a.text.slice(split + 4);
            const v = verb.toUpperCase();
            if (v === 'STAT') s.write(`223 ${n} ${a.messageId}\r\n`);
            else if (v === 'ARTICLE') s.write(`220 ${n} ${a.messageId}\r\n${stuffed(a.text)}.\r\n`);
            else if (v === 'HEAD') s.write(`221 ${n} ${a.messageId}\r\n${stuffed(head)}.\r\n`);
            else s.write(`222 ${n} ${a.messageId}\r\n${stuffed(body)}.\r\n`);
            break;
          }
          case 'POST':
            posting = [];
            s.write('340 send article to be posted\r\n');
            break;
          case 'AUTHINFO': {
            const [sub = '', value = ''] = arg.split(/[ \t]+(.*)/);
            const s2 = sub.toUpperCase();
            if (!auth) s.write('503 no authentication here\r\n');
            else if (s2 === 'USER') {
              authUser = value;
              s.write('381 password required\r\n');
            } else if (s2 === 'PASS') {
              s.write(authUser === auth.user && value === auth.password ? '281 authentication accepted\r\n' : '481 authentication failed\r\n');
            } else if (s2 === 'SASL' && /^PLAIN$/i.test(value.split(/[ \t]+/)[0] ?? '')) {
              const initial = value.split(/[ \t]+/)[1];
              if (initial === undefined) {
                saslPending = true;
                s.write('383 \r\n');
              } else s.write(plainOk(initial) ? '281 authentication accepted\r\n' : '481 authentication failed\r\n');
            } else s.write('501 unknown AUTHINFO form\r\n');
            break;
          }
          case 'DATE':
            s.write('111 20240101000000\r\n');
            break;
          case 'QUIT':
            s.end('205 closing connection\r\n');
            break;
          default:
            s.write('500 unknown command\r\n');
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    commands,
    articles,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
