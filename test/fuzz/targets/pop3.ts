/** POP3 command lines (src/taps/pop3/pop3-tap.ts): which replies are multi-line, what is recorded. */
import { lineText } from '../../../src/net/lines.js';
import { splitCommand } from '../../../src/taps/line-proxy.js';
import { pop3Multiline, pop3Recorded } from '../../../src/taps/pop3/pop3-tap.js';
import { check, splitLines } from '../invariants.js';

export const maxLen = 1024;
export const dictionary = ['USER ', 'PASS ', 'APOP ', 'AUTH ', 'RETR ', 'TOP ', 'LIST', 'UIDL', 'CAPA', 'STLS', 'QUIT', '\r\n', ' PLAIN', ' ='];

export function seeds(): Buffer[] {
  return [
    'CAPA\r\nUSER alice\r\nPASS secret\r\nLIST\r\nLIST 1\r\nRETR 1\r\nTOP 1 10\r\nQUIT\r\n',
    'APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\nAUTH\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nUIDL\r\n',
  ].map((s) => Buffer.from(s, 'latin1'));
}

export function fuzz(data: Buffer): void {
  for (const raw of splitLines(data)) {
    const { verb, args } = splitCommand(lineText(raw));
    const multi = pop3Multiline(verb, args);
    check(typeof multi === 'boolean', 'multi-line is a yes or no');
    const rec = pop3Recorded(verb, args);
    if (verb === 'PASS') check(rec === 'PASS ***', 'PASS is masked', rec);
    if (verb === 'APOP') check(rec.endsWith(' ***'), 'the APOP digest is masked', rec);
  }
}
