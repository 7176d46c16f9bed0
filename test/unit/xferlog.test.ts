import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ctimeText, formatXferlogLine } from '../../src/observe/xferlog.js';

test('xferlog(5) line: 18 space-separated fields, names made safe, at least one second', () => {
  const time = new Date(2026, 10, 2, 9, 5, 7).getTime();
  const line = formatXferlogLine({
    time,
    durationMs: 120,
    remoteHost: '127.0.0.1',
    bytes: 1048576,
    file: 'pub/my file\n.bin',
    type: 'binary',
    direction: 'download',
    accessMode: 'a',
    user: 'anonymous',
    complete: true,
    server: 'ftp.test:21',
    sessionId: 'x',
  });
  assert.equal(line, 'Mon Nov  2 09:05:07 2026 1 127.0.0.1 1048576 pub/my_file%0a.bin b _ o a anonymous ftp 0 * c\n');
  assert.equal(ctimeText(new Date(2026, 0, 15, 23, 59, 0)), 'Thu Jan 15 23:59:00 2026');
  const up = formatXferlogLine({
    time,
    durationMs: 2600,
    remoteHost: '::1',
    bytes: 5,
    file: '/in.txt',
    type: 'ascii',
    direction: 'upload',
    accessMode: 'r',
    user: null,
    complete: false,
    server: 'ftp.test:21',
    sessionId: 'y',
  });
  assert.equal(up.split(/ +/).length, 18); // ctime pads a one-digit day with a second space
  assert.match(up, / 3 ::1 5 \/in\.txt a _ i r - ftp 0 \* i\n$/);
});
