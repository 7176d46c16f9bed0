/** NNTP command lines (src/taps/nntp/): multi-line replies, what is recorded, message ids. */
import { lineText } from '../../../src/net/lines.js';
import { splitCommand } from '../../../src/taps/line-proxy.js';
import { isMessageId } from '../../../src/taps/nntp/article-store.js';
import { nntpMultiline, nntpRecorded } from '../../../src/taps/nntp/nntp-tap.js';
import { check, splitLines } from '../invariants.js';

export const maxLen = 1024;
export const dictionary = ['ARTICLE ', 'HEAD ', 'BODY ', 'GROUP ', 'LISTGROUP ', 'POST', 'IHAVE ', 'AUTHINFO USER ', 'AUTHINFO PASS ', 'AUTHINFO SASL ', '<', '>', '@', '\r\n', '220 ', '211 '];

export function seeds(): Buffer[] {
  return [
    'GROUP misc.test\r\nARTICLE <45223423@example.com>\r\nHEAD 3000234\r\nAUTHINFO USER alice\r\nAUTHINFO PASS secret\r\nAUTHINFO SASL PLAIN AGFsaWNl\r\n',
    '220 0 <i.am.a.message@example.com>\r\n211 1234 3000234 3002322 misc.test\r\nLISTGROUP misc.test\r\n',
  ].map((s) => Buffer.from(s, 'latin1'));
}

export function fuzz(data: Buffer): void {
  for (const raw of splitLines(data)) {
    const text = lineText(raw);
    const { verb, args } = splitCommand(text);
    const rec = nntpRecorded(verb, args);
    if (verb === 'AUTHINFO' && /^pass /i.test(args)) check(rec === 'AUTHINFO PASS ***', 'AUTHINFO PASS is masked', rec);
    const code = /^\d{3}/.test(text) ? Number(text.slice(0, 3)) : 0;
    check(typeof nntpMultiline(code, verb) === 'boolean', 'multi-line is a yes or no');
    for (const word of args.split(' ')) {
      if (isMessageId(word)) check(word.startsWith('<') && word.endsWith('>') && word.length <= 250, 'a message id', word);
    }
  }
}
