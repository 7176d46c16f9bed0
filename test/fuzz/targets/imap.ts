/**
 * IMAP command lines (src/taps/imap/imap-tap.ts): literal markers and the first astring (the
 * user name of LOGIN), through the line reader with literals read raw as the tap does.
 */
import { LineReader, LineTooLongError, lineText } from '../../../src/net/lines.js';
import { firstAstring, trailingLiteral } from '../../../src/taps/imap/imap-tap.js';
import { check, onlyThrows } from '../invariants.js';

export const maxLen = 1024;
export const dictionary = ['a1 ', 'LOGIN ', 'AUTHENTICATE ', 'SELECT ', 'FETCH ', 'APPEND ', '{5}\r\n', '{5+}\r\n', '~{3}\r\n', '"', '\\"', '\\\\', '\r\n', 'INBOX', '(', ')'];

export function seeds(): Buffer[] {
  return [
    'a1 LOGIN {5}\r\nalice {6+}\r\nsecret\r\na2 SELECT INBOX\r\na3 FETCH 1 BODY[]\r\n',
    'a1 LOGIN "al\\"ice" "p w"\r\na2 APPEND INBOX ~{3}\r\nabc\r\na3 LOGOUT\r\n',
  ].map((s) => Buffer.from(s, 'latin1'));
}

export function fuzz(data: Buffer): void {
  const reader = new LineReader(256);
  onlyThrows(LineTooLongError, 'LineReader.push', () =>
    reader.push(data, (item) => {
      if (item.kind !== 'line') return;
      const lit = trailingLiteral(item.bytes);
      if (lit) {
        check(Number.isSafeInteger(lit.size) && lit.size >= 0, 'a literal size is a count', lit);
        reader.expectRaw(Math.min(lit.size, 1 << 20));
      }
      const text = lineText(item.bytes);
      const sp = text.indexOf(' ');
      const rest = sp < 0 ? '' : text.slice(sp + 1);
      const sp2 = rest.indexOf(' ');
      const args = sp2 < 0 ? '' : rest.slice(sp2 + 1);
      const user = firstAstring(args);
      if (user !== null) check(user.length <= args.length, 'an astring is inside its arguments', { user, args });
    }),
  );
}
