/**
 * `https://` hops (PROXY=https://[USER:PASS@]HOST:PORT, YAML `via: https://...`): an HTTP proxy
 * reached over TLS. On the socket connected to the hop, a TLS client session is opened and the
 * proxy's certificate verified — always: against Node's roots, the system bundle and TLSCAFILE=
 * (tls/intercept.ts trustContext), for the hop's name (SNI) or IP address. CONNECT (and its
 * Proxy-Authorization) then travels inside. A failed verification is EUPSTREAM naming the hop
 * and the reason; the credentials are never sent to an unverified proxy.
 */
import { isIP, type Socket } from 'node:net';
import tls from 'node:tls';
import type { TlsConfig } from '../config/types.js';
import { ProxyError } from '../core/errors.js';
import { trustContext } from '../tls/intercept.js';
import { hopLabel, type Hop } from './hop.js';

/** One TlsConfig per trust file, so trustContext's cache holds one context each. */
const trustConfigs = new Map<string, TlsConfig>();

function contextFor(trustFile: string | undefined): tls.SecureContext {
  const key = trustFile ?? '';
  let t = trustConfigs.get(key);
  if (!t) {
    t = { rules: [], verify: true, ...(trustFile ? { trustFile } : {}) } as TlsConfig;
    trustConfigs.set(key, t);
  }
  return trustContext(t);
}

export function tlsToHop(socket: Socket, hop: Hop): Promise<Socket> {
  const label = hopLabel(hop);
  return new Promise((resolve, reject) => {
    let context: tls.SecureContext;
    try {
      context = contextFor(hop.tls?.trustFile);
    } catch (err) {
      socket.destroy();
      reject(new ProxyError('EUPSTREAM', `${label}: ${err instanceof Error ? err.message : String(err)}`));
      return;
    }
    const t = tls.connect({
      socket,
      host: hop.host,
      ...(isIP(hop.host) === 0 ? { servername: hop.host } : {}),
      secureContext: context,
      rejectUnauthorized: true,
      ALPNProtocols: ['http/1.1'],
    });
    const onError = (err: Error): void => {
      t.destroy();
      reject(new ProxyError('EUPSTREAM', `${label}: TLS: ${err.message}`, { cause: err }));
    };
    t.once('error', onError);
    t.once('secureConnect', () => {
      t.off('error', onError);
      resolve(t);
    });
  });
}
