/** TLS ClientHello (src/sniff/tls.ts) and the client-first sniffer chain (src/sniff/index.ts). */
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { parseClientHello, sniffClient } from '../../../src/sniff/index.js';
import { check, monotoneSniffer } from '../invariants.js';

export const maxLen = 20_000;
export const dictionary = [
  Buffer.from([0x16, 0x03, 0x01]),
  Buffer.from([0x16, 0x03, 0x03, 0x40, 0x00]),
  Buffer.from([0x00, 0x00]), // server_name
  Buffer.from([0x00, 0x10]), // ALPN
  Buffer.from([0x00, 0x2b]), // supported_versions
  Buffer.from('\x02h2\x08http/1.1', 'latin1'),
  'www.example.com',
];

/** Real ClientHellos: node:tls (OpenSSL) writing its first flight into a stream that is no socket. */
function realClientHello(options: tls.ConnectionOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let socket: tls.TLSSocket | null = null;
    const wire = new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk);
        callback();
        resolve(Buffer.concat(chunks));
        setImmediate(() => socket?.destroy());
      },
    });
    socket = tls.connect({ ...options, socket: wire });
    socket.on('error', (err) => (chunks.length ? undefined : reject(err)));
  });
}

/** The handshake of a one-record flight framed again as records of `size` bytes. */
function reframe(flight: Buffer, size: number): Buffer {
  const hs = flight.subarray(5);
  const out: Buffer[] = [];
  for (let i = 0; i < hs.length; i += size) {
    const piece = hs.subarray(i, i + size);
    out.push(Buffer.from([0x16, 0x03, 0x01, piece.length >> 8, piece.length & 0xff]), piece);
  }
  return Buffer.concat(out);
}

export async function seeds(): Promise<Buffer[]> {
  const a = await realClientHello({ servername: 'www.example.com', ALPNProtocols: ['h2', 'http/1.1'] });
  const b = await realClientHello({ servername: 'legacy.example.org', maxVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'] });
  const c = await realClientHello({ host: '192.0.2.1' });
  return [a, b, c, reframe(a, 100), Buffer.from('GET / HTTP/1.1\r\n'), Buffer.from('SSH-2.0-x\r\n')];
}

const HOST = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;

export function fuzz(data: Buffer): void {
  const v = monotoneSniffer('parseClientHello', parseClientHello, data);
  if (v.verdict === 'match') {
    check(v.proto === 'tls', 'a ClientHello is tls');
    if (v.info.sni !== undefined) check(HOST.test(v.info.sni), 'SNI is a host name', v.info.sni);
    if (v.info.alpn !== undefined) check(v.info.alpn.length >= 1 && v.info.alpn.every((p) => p.length >= 1 && p.length <= 255), 'ALPN names', v.info.alpn);
  }
  const c = monotoneSniffer('sniffClient', (b) => sniffClient(b, 443), data);
  if (v.verdict !== 'no-match') check(c.verdict === v.verdict, 'sniffClient puts TLS first', { v, c });
}
