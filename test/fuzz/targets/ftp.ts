/**
 * FTP control lines (src/taps/ftp/wire.ts, src/taps/ftp/paths.ts): commands, what is recorded of
 * them, replies and multi-line replies, PASV/EPSV answers, PORT/EPRT arguments, MDTM and SIZE, and
 * the path → ftp:// URL → path round trip the cache keys depend on.
 */
import { lineText } from '../../../src/net/lines.js';
import { ftpUrl, pathArg, resolvePath, urlPath, type FtpPath } from '../../../src/taps/ftp/paths.js';
import {
  formatPortArg,
  parseCommand,
  parseEprtArg,
  parseEpsvReply,
  parseMdtm,
  parsePasvReply,
  parsePortArg,
  parseReplyLine,
  parseSizeReply,
  recordedCommand,
  ReplyAssembler,
} from '../../../src/taps/ftp/wire.js';
import { check, splitLines } from '../invariants.js';

export const maxLen = 2048;
export const dictionary = ['USER ', 'PASS ', 'ACCT ', 'RETR ', 'CWD ', 'PORT ', 'EPRT |1|', 'EPRT |2|', '227 Entering Passive Mode (', '229 Entering Extended Passive Mode (|||', '213 ', '220-', '220 ', '\r\n', '..', '/', '%2F', '%', '\xff\xf4\xff\xf2', '20240229123456.789'];

export function seeds(): Buffer[] {
  return [
    'USER anonymous\r\nPASS guest@\r\nCWD /pub/../pub/./x\r\nRETR a file.txt\r\nQUIT\r\n',
    '220-welcome\r\n text\r\n220 ready\r\n227 Entering Passive Mode (127,0,0,1,4,1)\r\n229 Entering Extended Passive Mode (|||6446|)\r\n',
    'PORT 127,0,0,1,7,208\r\nEPRT |2|::1|5282|\r\nEPRT |1|132.235.1.2|6275|\r\n',
    '213 20240229123456.789\r\n213 1234567\r\nMDTM x\r\n',
    '\xff\xf4\xff\xf2ABOR\r\nSITE CHMOD 644 x\r\nACCT secret\r\n',
  ].map((s) => Buffer.from(s, 'latin1'));
}

export function fuzz(data: Buffer): void {
  const assembler = new ReplyAssembler(256);
  let cwd: FtpPath = { absolute: false, segments: [] };
  for (const raw of splitLines(data)) {
    const text = lineText(raw);
    const cmd = parseCommand(text);
    check(cmd.verb === '' || /^[A-Z]{1,8}$/.test(cmd.verb), 'a verb is 1-8 letters', cmd);
    const rec = recordedCommand(cmd, 64);
    if (cmd.verb === 'PASS' || cmd.verb === 'ACCT') check(rec === `${cmd.verb} ****`, 'PASS and ACCT are masked', rec);
    check(rec.length <= 64 + 3, 'a recorded command is capped', rec.length);

    const reply = parseReplyLine(text);
    if (reply.code !== null) check(reply.code >= 100 && reply.code <= 599, 'a reply code', reply);
    const done = assembler.push(text);
    if (done) check(done.code >= 100 && done.code <= 599, 'an assembled reply has a code', done);

    const pasv = parsePasvReply(text);
    if (pasv) {
      check(pasv.port >= 1 && pasv.port <= 65535 && /^\d{1,3}(\.\d{1,3}){3}$/.test(pasv.host!), 'PASV host and port', pasv);
      const back = parsePortArg(formatPortArg(pasv.host!, pasv.port));
      check(back !== null && back.host === pasv.host && back.port === pasv.port, 'PORT round trip', { pasv, back });
    }
    const epsv = parseEpsvReply(text);
    if (epsv) check(epsv.host === null && epsv.port >= 1 && epsv.port <= 65535, 'EPSV port', epsv);
    const port = parsePortArg(cmd.arg);
    if (port) check(port.port >= 1 && port.port <= 65535, 'PORT port', port);
    const eprt = parseEprtArg(cmd.arg);
    if (eprt) check(eprt.port >= 1 && eprt.port <= 65535, 'EPRT port', eprt);
    const mdtm = parseMdtm(cmd.arg);
    if (mdtm) check(!Number.isNaN(mdtm.getTime()), 'MDTM is a time', cmd.arg);
    const size = parseSizeReply(cmd.arg);
    if (size !== null) check(Number.isSafeInteger(size) && size >= 0, 'SIZE is a count', size);

    if (cmd.verb === 'CWD' || cmd.verb === 'RETR') {
      const p = resolvePath(cwd, cmd.arg);
      check(p.segments.length <= 64 && p.segments.every((s) => s !== '' && s !== '.' && s !== '..' && !s.includes('/')), 'a resolved path has plain segments', p);
      if (cmd.verb === 'CWD') cwd = p;
      if (p.segments.every((s) => !/[\r\n\0]/.test(s))) {
        const url = ftpUrl({ host: 'ftp.example.com', port: 2121 }, p);
        const back = urlPath(new URL(url));
        check(back !== null && back.absolute === p.absolute && back.segments.join('/') === p.segments.join('/'), 'path → ftp:// URL → path', { p, url, back });
        check(pathArg(back!) === pathArg(p), 'the command argument survives the URL');
      }
    }
  }
}
