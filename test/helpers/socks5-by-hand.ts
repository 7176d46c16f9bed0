/**
 * A SOCKS5 client written by hand (RFC 1928 with RFC 1929 user/password), for tests that must see
 * the exact REP a refusal carries, which client libraries turn into an error message.
 */
import assert from 'node:assert/strict';
import net from 'node:net';

/** RFC 1928 + RFC 1929 by hand, so the test sees the exact reply; resolves with the socket and REP. */
export async function socks5UserPass(port: number, user: string, pass: string, dstPort: number, from?: string): Promise<{ socket: net.Socket; rep: number }> {
  const socket = net.connect({ port, host: '127.0.0.1', ...(from ? { localAddress: from } : {}) });
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let buffered = Buffer.alloc(0);
  const read = (n: number): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (buffered.length >= n) {
          socket.off('data', onData);
          socket.off('close', onClose);
          const out = buffered.subarray(0, n);
          buffered = buffered.subarray(n);
          resolve(out);
        }
      };
      const onData = (d: Buffer): void => {
        buffered = Buffer.concat([buffered, d]);
        check();
      };
      const onClose = (): void => reject(new Error('closed during the SOCKS5 handshake'));
      socket.on('data', onData);
      socket.once('close', onClose);
      check();
    });
  socket.write(Buffer.from([5, 1, 2]));
  assert.deepEqual([...(await read(2))], [5, 2]);
  socket.write(Buffer.concat([Buffer.from([1, user.length]), Buffer.from(user), Buffer.from([pass.length]), Buffer.from(pass)]));
  assert.deepEqual([...(await read(2))], [1, 0]);
  socket.write(Buffer.from([5, 1, 0, 1, 127, 0, 0, 1, dstPort >> 8, dstPort & 0xff]));
  const reply = await read(10);
  socket.pause();
  if (buffered.length > 0) socket.unshift(buffered);
  return { socket, rep: reply[1]! };
}
