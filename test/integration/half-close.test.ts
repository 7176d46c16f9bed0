/**
 * Half-close through the relay with a real client: ncat (without --no-shutdown) sends its input,
 * shuts down its sending side at end of input, and must still receive the server's whole reply,
 * which the server only sends after it has seen that end.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const REPLY = Buffer.alloc(2 * 1024 * 1024, 'sockstap-half-close ');
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

let server: net.Server;
let serverPort = 0;
let proxy: TestProxy;
before(async () => {
  // Replies only after the client's FIN: what was received, then 2 MiB, then FIN.
  server = net.createServer({ allowHalfOpen: true }, (s) => {
    const got: Buffer[] = [];
    s.on('data', (d) => got.push(d));
    s.on('end', () => {
      s.write(`received ${Buffer.concat(got).length} bytes\n`);
      s.end(REPLY);
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  serverPort = (server.address() as net.AddressInfo).port;
  proxy = await startProxy(['-P127.0.0.1:0/auto']);
});
after(async () => {
  await proxy.stop();
  proxy.cleanup();
  await new Promise((r) => server.close(r));
});

function ncat(proxyType: 'socks5' | 'socks4' | 'http', input: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      'ncat',
      ['--proxy', `127.0.0.1:${proxy.port()}`, '--proxy-type', proxyType, '127.0.0.1', String(serverPort)],
      { encoding: 'buffer', timeout: 20_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr.toString()}`)) : resolve(stdout)),
    );
    child.stdin!.end(input);
  });
}

describe('half-close with ncat', () => {
  for (const type of ['socks5', 'socks4', 'http'] as const) {
    test(`ncat --proxy-type ${type} gets the whole reply after shutting down its side`, async () => {
      const input = Buffer.alloc(100_000, 'x');
      const out = await ncat(type, input);
      const head = `received ${input.length} bytes\n`;
      assert.equal(out.subarray(0, head.length).toString(), head);
      assert.equal(out.length, head.length + REPLY.length);
      assert.equal(sha(out.subarray(head.length)), sha(REPLY));
    });
  }
});
