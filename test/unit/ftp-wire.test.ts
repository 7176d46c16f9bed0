import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ftpEntryValid, ftpUrl, resolvePath, urlPath } from '../../src/taps/ftp/paths.js';
import {
  parseCommand,
  parseEprtArg,
  parseEpsvReply,
  parseMdtm,
  parsePasvReply,
  parsePortArg,
  recordedCommand,
  ReplyAssembler,
} from '../../src/taps/ftp/wire.js';

describe('FTP wire grammar', () => {
  test('PASS and ACCT are masked, other commands kept as sent', () => {
    assert.equal(recordedCommand(parseCommand('PASS hunter2')), 'PASS ****');
    assert.equal(recordedCommand(parseCommand('pass hunter2')), 'PASS ****');
    assert.equal(recordedCommand(parseCommand('ACCT secret')), 'ACCT ****');
    assert.equal(recordedCommand(parseCommand('RETR my file.txt')), 'RETR my file.txt');
  });

  test('227 and 229 replies, PORT and EPRT arguments (RFC 959 §4.1.2, RFC 2428)', () => {
    assert.deepEqual(parsePasvReply('Entering Passive Mode (127,0,0,1,195,80).'), { host: '127.0.0.1', port: 50000 });
    assert.equal(parsePasvReply('Entering Passive Mode (127,0,0,1,300,80)'), null);
    assert.deepEqual(parseEpsvReply('Entering Extended Passive Mode (|||6446|)'), { host: null, port: 6446 });
    assert.equal(parseEpsvReply('Entering Extended Passive Mode (|!|6446|)'), null);
    assert.deepEqual(parsePortArg('10,0,0,2,4,1'), { host: '10.0.0.2', port: 1025 });
    assert.equal(parsePortArg('10,0,0,2,4'), null);
    assert.deepEqual(parseEprtArg('|2|1080::8:800:200C:417A|5282|'), { host: '1080::8:800:200C:417A', port: 5282 });
    assert.equal(parseEprtArg('|3|x|1|'), null);
  });

  test('multi-line replies end only at "code SP" (RFC 959 §4.2), fed line by line', () => {
    const a = new ReplyAssembler();
    assert.equal(a.push('211-Features:'), null);
    assert.equal(a.push(' MDTM'), null);
    assert.equal(a.push('211-not yet'), null);
    assert.equal(a.push('2110 not the end either'), null);
    assert.deepEqual(a.push('211 End'), { code: 211, text: 'Features:\n MDTM\n211-not yet\n2110 not the end either\nEnd' });
    assert.deepEqual(a.push('226 Transfer complete.'), { code: 226, text: 'Transfer complete.' });
  });

  test('MDTM time-val (RFC 3659 §2.3)', () => {
    assert.equal(parseMdtm('20261122104338')?.toISOString(), '2026-11-22T10:43:38.000Z');
    assert.equal(parseMdtm('20261122104338.5')?.toISOString(), '2026-11-22T10:43:38.500Z');
    assert.equal(parseMdtm('2026-11-22'), null);
  });

  test('paths resolve like a server and round-trip through ftp:// URLs (RFC 1738 §3.2.2)', () => {
    const cwd = resolvePath({ absolute: false, segments: [] }, 'pub/sub');
    assert.deepEqual(resolvePath(cwd, '../a b.txt'), { absolute: false, segments: ['pub', 'a b.txt'] });
    const dst = { host: 'Example.TEST', port: 21 };
    assert.equal(ftpUrl(dst, resolvePath(cwd, '../a b.txt')), 'ftp://example.test/pub/a%20b.txt');
    assert.equal(ftpUrl(dst, resolvePath(cwd, '/etc/motd')), 'ftp://example.test/%2Fetc/motd');
    assert.deepEqual(urlPath(new URL('ftp://example.test/%2Fetc/motd')), { absolute: true, segments: ['etc', 'motd'] });
    assert.deepEqual(urlPath(new URL('ftp://example.test/pub/a%20b.txt')), { absolute: false, segments: ['pub', 'a b.txt'] });
    assert.equal(urlPath(new URL('ftp://example.test/a%0D%0ADELE%20x')), null);
  });

  test('a stored entry is valid only with the same SIZE and an unchanged MDTM', () => {
    const lm = new Date('2026-01-01T00:00:00Z');
    const stored = { 'content-length': '10', 'last-modified': lm.toUTCString() };
    assert.equal(ftpEntryValid(stored, 10, lm), true);
    assert.equal(ftpEntryValid(stored, 11, lm), false);
    assert.equal(ftpEntryValid(stored, 10, new Date('2026-01-01T00:00:01Z')), false);
    assert.equal(ftpEntryValid(stored, 10, null), false);
    const byDate = { 'content-length': '10', date: new Date('2026-02-01T00:00:00Z').toUTCString() };
    assert.equal(ftpEntryValid(byDate, 10, lm), true);
    assert.equal(ftpEntryValid(byDate, 10, new Date('2026-03-01T00:00:00Z')), false);
  });
});
