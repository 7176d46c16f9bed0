/**
 * Server greetings (FTP, SMTP, POP3, IMAP, NNTP, SSH, Telnet; src/sniff/banner.ts) and the
 * client's first command line that settles an FTP-or-SMTP 220.
 */
import { firstCommandLine, resolveFtpOrSmtp, sniffServer, sniffSshIdentification, sniffTelnetNegotiation } from '../../../src/sniff/index.js';
import { check, monotoneSniffer } from '../invariants.js';

export const maxLen = 20_000;
export const dictionary = ['220', '220-', '220 ', '200 ', '201 ', '+OK', '* OK', '* PREAUTH', '* BYE', 'SSH-2.0-', 'SSH-1.99-', '\r\n', 'ESMTP', 'FTP', '\xff\xfb\x01', '\xff\xfd\x18', 'EHLO ', 'USER '];

export function seeds(): Buffer[] {
  return [
    '220 mail.example.com ESMTP Postfix\r\n',
    '220-ftp.example.com FTP server\r\n220-welcome\r\n220 ready\r\n',
    '220 service ready\r\n',
    '+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n',
    '* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n',
    '200 news.example.com NNRP ready (posting ok)\r\n',
    '201 news.example.com no posting\n',
    'SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n',
    '\xff\xfb\x01\xff\xfb\x03login: ',
    '\x01EHLO client.example\r\n',
  ].map((s) => Buffer.from(s, 'latin1'));
}

const PORTS = [21, 25, 110, 119, 143, 587, 2121, 0];

export function fuzz(data: Buffer): void {
  const port = PORTS[(data[0] ?? 0) % PORTS.length]!;
  const v = monotoneSniffer('sniffServer', (b) => sniffServer(b, port), data);
  if (v.verdict === 'match') {
    check(['ftp', 'smtp', 'pop3', 'imap', 'nntp', 'ssh', 'telnet'].includes(v.proto), 'a server-first protocol', v);
  }
  monotoneSniffer('sniffSshIdentification', sniffSshIdentification, data);
  monotoneSniffer('sniffTelnetNegotiation', sniffTelnetNegotiation, data);
  const line = firstCommandLine(data);
  if (typeof line === 'string') {
    check(!line.includes('\n') && line.length <= 512, 'one command line, at most 512 bytes', line.length);
    const proto = resolveFtpOrSmtp(line, port);
    check(proto === 'ftp' || proto === 'smtp', 'FTP or SMTP', proto);
  }
}
