import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ProxyError } from '../../src/core/errors.js';
import { queryIdent } from '../../src/policy/ident.js';

/** A tiny identd: answers each query line with what `answer` returns (null: say nothing). */
async function startIdentd(answer: (query: string) => string | null): Promise<{ close(): void; port: number; queries: string[] }> {
  const queries: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
      const eol = buf.indexOf('\r\n');
      if (eol < 0) return;
      const q = buf.slice(0, eol);
      queries.push(q);
      const a = answer(q);
      if (a !== null) s.end(a);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const close = (): void => {
    for (const s of sockets) s.destroy();
    server.close();
  };
  return { close, port: (server.address() as AddressInfo).port, queries };
}

const base = { clientAddress: '127.0.0.1', clientPort: 40000, localAddress: '127.0.0.1', localPort: 1080, timeoutMs: 5000 };

describe('queryIdent against a real identd', () => {
  let identd: Awaited<ReturnType<typeof startIdentd>>;
  let mode: 'user' | 'error' | 'silent' | 'wrong-ports' | 'garbage' = 'user';
  before(async () => {
    identd = await startIdentd((q) => {
      const [a, b] = q.split(',').map((x) => x.trim());
      if (mode === 'user') return `${a} , ${b} : USERID : UNIX : alice\r\n`;
      if (mode === 'error') return `${a} , ${b} : ERROR : NO-USER\r\n`;
      if (mode === 'wrong-ports') return `1 , 2 : USERID : UNIX : alice\r\n`;
      if (mode === 'garbage') return 'x'.repeat(5000);
      return null;
    });
  });
  after(() => identd.close());

  it('sends "port-on-server , port-on-client" and returns the user id', async () => {
    mode = 'user';
    const user = await queryIdent({ ...base, identPort: identd.port });
    assert.equal(user, 'alice');
    assert.equal(identd.queries.at(-1), '40000 , 1080');
  });

  for (const m of ['error', 'wrong-ports', 'garbage'] as const) {
    it(`rejects with EIDENTUNREACH on ${m}`, async () => {
      mode = m;
      await assert.rejects(queryIdent({ ...base, identPort: identd.port }), (e: unknown) => e instanceof ProxyError && e.code === 'EIDENTUNREACH');
    });
  }

  it('rejects with EIDENTUNREACH on timeout', async () => {
    mode = 'silent';
    await assert.rejects(queryIdent({ ...base, identPort: identd.port, timeoutMs: 200 }), (e: unknown) => e instanceof ProxyError && e.code === 'EIDENTUNREACH');
  });

  it('rejects with EIDENTUNREACH when nothing listens, and honours SOCKSTAP_IDENT_PORT', async () => {
    const closed = createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    closed.close();
    await once(closed, 'close');
    await assert.rejects(queryIdent({ ...base, identPort: port }), (e: unknown) => e instanceof ProxyError && e.code === 'EIDENTUNREACH');
    mode = 'user';
    process.env.SOCKSTAP_IDENT_PORT = String(identd.port);
    try {
      assert.equal(await queryIdent(base), 'alice');
    } finally {
      delete process.env.SOCKSTAP_IDENT_PORT;
    }
  });
});
