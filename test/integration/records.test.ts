/**
 * Cleaner records (issue 18): a CONNECT line's hierarchy field names the dialed address as a GET
 * line's does, and `sockstap report` counts an FTP data connection for its control session's
 * destination, not as a destination of its own. Against `sockstap demo`'s origin, with curl.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDemo, type Demo } from '../../src/demo.js';
import { readReport } from '../../src/report.js';
import { curl } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

let demo: Demo;
let proxy: TestProxy;
const HOSTS = 'HOSTS={example.test,ftp.example.test}/127.0.0.1';

before(async () => {
  demo = await startDemo({ ports: { http: 0, ftp: 0, smtp: 0 } });
  proxy = await startProxy(['-P127.0.0.1:0/auto', 'SOCKSTAP=ftp', HOSTS]);
});
after(async () => {
  await proxy?.stop();
  proxy?.cleanup();
  await demo?.close();
});

test('CONNECT lines carry the dialed address in the hierarchy field, as GET lines do', async () => {
  const p = `127.0.0.1:${proxy.port()}`;
  const url = `http://example.test:${demo.ports.http}/hello.txt`;
  assert.equal((await curl(['-x', `http://${p}`, url])).code, 0);
  assert.equal((await curl(['-p', '-x', `http://${p}`, url])).code, 0);
  await proxy.stop();
  const lines = proxy.readLog('access.log').trim().split('\n');
  const get = lines.find((l) => / GET http:\/\/example\.test/.test(l));
  const connect = lines.find((l) => / CONNECT example\.test:/.test(l));
  assert.ok(get && connect, lines.join('\n'));
  assert.match(get, / HIER_DIRECT\/127\.0\.0\.1 /);
  assert.match(connect, / HIER_DIRECT\/127\.0\.0\.1 -$/);
});

test('sockstap report folds FTP data connections into their control session destination', async () => {
  const ftpProxy = await startProxy(['-P127.0.0.1:0/auto', 'SOCKSTAP=ftp', HOSTS]);
  try {
    const p = `127.0.0.1:${ftpProxy.port()}`;
    for (const path of ['/pub/', '/pub/hello.txt', '/pub/data/numbers.txt']) {
      const r = await curl(['--socks5-hostname', p, `ftp://ftp.example.test:${demo.ports.ftp}${path}`]);
      assert.equal(r.code, 0, r.stderr);
    }
    await ftpProxy.stop();
    // Three data connections were made, each to a port of its own.
    const data = ftpProxy.sessions().filter((s) => s.proto === 'ftp-data');
    assert.equal(data.length, 3, JSON.stringify(ftpProxy.sessions()));
    const report = readReport(ftpProxy.stateDir, 0);
    const names = report.destinations.map((d) => d.name);
    assert.deepEqual(names, [`ftp.example.test:${demo.ports.ftp}`], JSON.stringify(report.destinations));
    const total = report.destinations[0]!;
    assert.equal(total.sessions, 6, 'three control and three data sessions');
    assert.ok(total.down >= 'Hello over FTP from the sockstap demo.\n'.length);
  } finally {
    await ftpProxy.stop();
    ftpProxy.cleanup();
  }
});
