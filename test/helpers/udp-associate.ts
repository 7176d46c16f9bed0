/**
 * A SOCKS5 UDP ASSOCIATE (RFC 1928 §7) through a proxy on loopback, with the `socks` package: the
 * control connection and the relay address datagrams go to.
 */
import type net from 'node:net';
import { SocksClient } from 'socks';

/** Associate for a client that will send from 127.0.0.1:`clientPort` (only that port is accepted then). */
export async function udpAssociate(proxyPort: number, clientPort: number): Promise<{ control: net.Socket; relay: { host: string; port: number } }> {
  const associate = new SocksClient({
    command: 'associate',
    destination: { host: '127.0.0.1', port: clientPort },
    proxy: { host: '127.0.0.1', port: proxyPort, type: 5 },
  });
  const established = new Promise<{ socket: net.Socket; remoteHost?: { host: string; port: number } }>((resolve, reject) => {
    associate.once('established', resolve);
    associate.once('error', reject);
  });
  associate.connect();
  const { socket, remoteHost } = await established;
  return { control: socket, relay: remoteHost! };
}
