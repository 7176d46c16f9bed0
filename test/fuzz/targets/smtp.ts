/** SMTP command lines (src/taps/smtp/smtp-tap.ts, src/taps/line-proxy.ts): verbs, paths, SIZE=. */
import { lineText } from '../../../src/net/lines.js';
import { splitCommand } from '../../../src/taps/line-proxy.js';
import { declaredSize, parsePath } from '../../../src/taps/smtp/smtp-tap.js';
import { check, splitLines } from '../invariants.js';

export const maxLen = 1024;
export const dictionary = ['EHLO ', 'HELO ', 'MAIL FROM:', 'RCPT TO:', 'DATA\r\n', '.\r\n', 'BDAT ', 'AUTH PLAIN ', 'STARTTLS', '<>', '<@a,@b:user@host>', ' SIZE=', ' BODY=8BITMIME', '\r\n'];

export function seeds(): Buffer[] {
  return [
    'EHLO client.example\r\nMAIL FROM:<alice@example.com> SIZE=1024 BODY=8BITMIME\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n',
    'MAIL FROM:<>\r\nRCPT TO:<@relay.example:carol@example.net>\r\nRCPT TO: dave@example.net NOTIFY=NEVER\r\n',
    'AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nSTARTTLS\r\nQUIT\r\n',
  ].map((s) => Buffer.from(s, 'latin1'));
}

export function fuzz(data: Buffer): void {
  for (const raw of splitLines(data)) {
    const text = lineText(raw);
    const { verb, args } = splitCommand(text);
    check(text.endsWith(args) && !verb.includes(' '), 'a verb and its arguments', { verb, args });
    const colon = args.indexOf(':');
    const pathText = colon >= 0 ? args.slice(colon + 1) : args;
    const path = parsePath(pathText);
    check(path !== null || !/\S/.test(pathText), 'a path that is not blank parses (an unparsed one goes unchecked)', pathText);
    if (path) {
      check(path.mailbox.length <= text.length, 'a mailbox is part of the line', path);
      if (/^\s*<[^>]*>/.test(pathText)) check(!path.mailbox.includes('>'), 'a mailbox is inside its brackets', path);
      const size = declaredSize(path.params);
      if (size !== null) check(Number.isSafeInteger(size) && size >= 0, 'SIZE= is a count', size);
    }
  }
}
