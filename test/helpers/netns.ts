/**
 * Network namespaces for the transparent-interception tests: a client, a proxy and a server
 * namespace joined by veth pairs, each test's own (named after the process id), with iptables
 * run inside the proxy namespace only. Nothing touches the root namespace's addresses, routes or
 * firewall. `teardown()` deletes the namespaces (which removes their veths and rules); it also runs
 * at process exit, so a failed test leaves nothing behind.
 *
 *   client ns              proxy ns                      server ns
 *   c0 10.77.1.2/24 ─── p0 10.77.1.1/24                            
 *      fd77:1::2/64         fd77:1::1/64                            
 *                          p1 10.77.2.1/24 ─────────── s0 10.77.2.2/24
 *                             fd77:2::1/64                 fd77:2::2/64
 *   default via the proxy                                  default via the proxy
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
export const NETNS_ORIGIN = fileURLToPath(new URL('./netns-origin.ts', import.meta.url));

export const ADDR = {
  client: '10.77.1.2',
  proxyClientSide: '10.77.1.1',
  proxyServerSide: '10.77.2.1',
  server: '10.77.2.2',
  client6: 'fd77:1::2',
  proxyClientSide6: 'fd77:1::1',
  proxyServerSide6: 'fd77:2::1',
  server6: 'fd77:2::2',
} as const;

function run(cmd: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? r.error.message : ''}`.trim() };
}

/**
 * Why namespace tests cannot run here, or null when they can. Checks: root, `ip`, `iptables`,
 * and that a namespace can really be created (a container may forbid it).
 */
export function netnsSkipReason(): string | null {
  const uid = typeof process.getuid === 'function' ? process.getuid() : -1;
  if (process.platform !== 'linux') return `network namespaces are Linux only (platform ${process.platform})`;
  if (uid !== 0) return `not root (uid ${uid}): creating network namespaces, veth pairs and iptables rules needs root`;
  for (const [tool, pkg] of [
    ['ip', 'iproute2'],
    ['iptables', 'iptables'],
  ] as const) {
    if (!run('sh', ['-c', `command -v ${tool}`]).ok) return `${tool} not installed (Debian package ${pkg})`;
  }
  const probe = `stxprobe${process.pid}`;
  const add = run('ip', ['netns', 'add', probe]);
  if (!add.ok) return `cannot create a network namespace (ip netns add: ${add.out})`;
  run('ip', ['netns', 'del', probe]);
  return null;
}

/**
 * Why TPROXY cannot work in this kernel, or null: the iptables TPROXY target and the `socket`
 * match must be available (built in or as modules we can load).
 */
export function tproxySkipReason(lab: NetnsLab): string | null {
  const targets = run('cat', ['/proc/net/ip_tables_targets']).out.split('\n');
  if (!targets.includes('TPROXY')) {
    const mod = run('modprobe', ['xt_TPROXY']);
    if (!mod.ok) return `iptables TPROXY target missing from /proc/net/ip_tables_targets and modprobe xt_TPROXY failed: ${mod.out}`;
  }
  const probe = lab.tryIn('proxy', 'iptables', ['-t', 'mangle', '-A', 'PREROUTING', '-p', 'tcp', '-m', 'socket', '-j', 'ACCEPT']);
  if (!probe.ok) return `iptables socket match unusable: ${probe.out}`;
  lab.tryIn('proxy', 'iptables', ['-t', 'mangle', '-D', 'PREROUTING', '-p', 'tcp', '-m', 'socket', '-j', 'ACCEPT']);
  return null;
}

export type NsRole = 'client' | 'proxy' | 'server';

export class NetnsLab {
  readonly ns: Record<NsRole, string>;
  private readonly children = new Set<ChildProcess>();
  private torn = false;
  private readonly onExit = (): void => this.teardown();

  constructor(tag: string) {
    const base = `stx${process.pid}${tag}`;
    this.ns = { client: `${base}c`, proxy: `${base}p`, server: `${base}s` };
    process.once('exit', this.onExit);
  }

  /** Run a command in a namespace; throws with its output on failure. */
  in(role: NsRole, cmd: string, args: string[]): string {
    try {
      return execFileSync('ip', ['netns', 'exec', this.ns[role], cmd, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      const e = err as { stderr?: string; stdout?: string; message: string };
      throw new Error(`[${role}] ${cmd} ${args.join(' ')}: ${e.stderr || e.stdout || e.message}`);
    }
  }

  tryIn(role: NsRole, cmd: string, args: string[]): { ok: boolean; out: string } {
    return run('ip', ['netns', 'exec', this.ns[role], cmd, ...args]);
  }

  /** Three namespaces, two veth pairs, IPv4 and IPv6 addresses, routes through the proxy. */
  setup(): void {
    const { client, proxy, server } = this.ns;
    for (const n of [client, proxy, server]) execFileSync('ip', ['netns', 'add', n]);
    const tail = String(process.pid % 100000);
    // veth names are at most 15 characters; these are created inside the namespaces at once.
    const vc = `stc${tail}`;
    const vs = `sts${tail}`;
    execFileSync('ip', ['link', 'add', vc, 'netns', client, 'type', 'veth', 'peer', 'name', 'p0', 'netns', proxy]);
    execFileSync('ip', ['link', 'add', vs, 'netns', server, 'type', 'veth', 'peer', 'name', 'p1', 'netns', proxy]);
    this.in('client', 'ip', ['link', 'set', vc, 'name', 'c0']);
    this.in('server', 'ip', ['link', 'set', vs, 'name', 's0']);
    const addr = (role: NsRole, dev: string, v4: string, v6: string): void => {
      this.in(role, 'ip', ['link', 'set', 'lo', 'up']);
      this.in(role, 'ip', ['addr', 'add', `${v4}/24`, 'dev', dev]);
      this.in(role, 'ip', ['-6', 'addr', 'add', `${v6}/64`, 'dev', dev, 'nodad']);
      this.in(role, 'ip', ['link', 'set', dev, 'up']);
    };
    addr('client', 'c0', ADDR.client, ADDR.client6);
    addr('proxy', 'p0', ADDR.proxyClientSide, ADDR.proxyClientSide6);
    addr('proxy', 'p1', ADDR.proxyServerSide, ADDR.proxyServerSide6);
    addr('server', 's0', ADDR.server, ADDR.server6);
    this.in('client', 'ip', ['route', 'add', 'default', 'via', ADDR.proxyClientSide]);
    this.in('client', 'ip', ['-6', 'route', 'add', 'default', 'via', ADDR.proxyClientSide6]);
    this.in('server', 'ip', ['route', 'add', 'default', 'via', ADDR.proxyServerSide]);
    this.in('server', 'ip', ['-6', 'route', 'add', 'default', 'via', ADDR.proxyServerSide6]);
    this.in('proxy', 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    this.in('proxy', 'sysctl', ['-qw', 'net.ipv6.conf.all.forwarding=1']);
  }

  /** A long-running process in a namespace (killed by teardown). */
  spawnIn(role: NsRole, cmd: string, args: string[], options: { cwd?: string } = {}): NsProcess {
    const child = spawn('ip', ['netns', 'exec', this.ns[role], cmd, ...args], { cwd: options.cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return new NsProcess(child);
  }

  /** curl from the client namespace: status, headers and body. */
  curl(url: string, extra: string[] = []): { status: number; headers: string; body: string } {
    const out = this.in('client', 'curl', ['-sS', '--max-time', '10', '-D', '-', ...extra, url]);
    const split = out.indexOf('\r\n\r\n');
    const headers = split < 0 ? out : out.slice(0, split);
    const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(headers)?.[1] ?? 0);
    return { status, headers, body: split < 0 ? '' : out.slice(split + 4) };
  }

  /** Kill the processes, delete the namespaces. Idempotent; runs at exit too. */
  teardown(): void {
    if (this.torn) return;
    this.torn = true;
    process.off('exit', this.onExit);
    for (const c of this.children) c.kill('SIGKILL');
    for (const n of Object.values(this.ns)) spawnSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
  }
}

export class NsProcess {
  private out = '';
  private readonly waiters = new Set<() => void>();
  readonly exited: Promise<number>;

  constructor(readonly child: ChildProcess) {
    const onData = (d: Buffer): void => {
      this.out += d.toString();
      for (const w of this.waiters) w();
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    this.exited = new Promise((resolve) =>
      child.once('exit', (code) => {
        for (const w of this.waiters) w();
        resolve(code ?? 1);
      }),
    );
  }

  output(): string {
    return this.out;
  }

  waitFor(re: RegExp, timeoutMs = 15000): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const m = re.exec(this.out);
        if (m) {
          done();
          resolve(m);
        } else if (this.child.exitCode !== null) {
          done();
          reject(new Error(`process exited (${this.child.exitCode}) before ${re}: ${this.out}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out waiting for ${re}; output so far:\n${this.out}`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Poll `get` until it returns something (log files are written off the data path). */
export async function eventually<T>(what: string, get: () => T | undefined, timeoutMs = 5000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function readLines(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

/** sockstap's command line running in the proxy namespace, with its state in a temporary directory. */
export interface NetnsProxy {
  process: NsProcess;
  state: string;
  lines(name: 'access.log' | 'sessions.jsonl' | 'sockstap.log'): string[];
  sessions(): Array<Record<string, unknown>>;
  stop(): Promise<void>;
}

export async function startNetnsProxy(lab: NetnsLab, args: string[]): Promise<NetnsProxy> {
  const state = mkdtempSync(join(tmpdir(), 'sockstap-netns-'));
  const proc = lab.spawnIn('proxy', process.execPath, ['--import', 'tsx', CLI, ...args, 'RELIABLE=*', `STATEDIR=${state}`]);
  await proc.waitFor(/started/);
  const lines = (name: string): string[] => readLines(join(state, 'log', name));
  return {
    process: proc,
    state,
    lines,
    sessions: () => lines('sessions.jsonl').map((l) => JSON.parse(l) as Record<string, unknown>),
    async stop() {
      await proc.stop();
      if (!process.env.KEEP_STATE) rmSync(state, { recursive: true, force: true });
    },
  };
}

/** The origin (netns-origin.ts) on port 80 in the server namespace, with what it saw. */
export interface NetnsOrigin {
  process: NsProcess;
  requests(): Array<{ remote: string; url: string; host?: string }>;
  /** The request for `url`, once it arrived. */
  request(url: string): Promise<{ remote: string; url: string; host?: string }>;
  stop(): Promise<void>;
}

export async function startNetnsOrigin(lab: NetnsLab): Promise<NetnsOrigin> {
  const proc = lab.spawnIn('server', process.execPath, ['--import', 'tsx', NETNS_ORIGIN, '80']);
  await proc.waitFor(/listening 80/);
  const requests = (): Array<{ remote: string; url: string; host?: string }> =>
    proc
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { remote: string; url: string; host?: string });
  return {
    process: proc,
    requests,
    request: (url) => eventually(`the request for ${url} at the server`, () => requests().find((r) => r.url === url)),
    stop: () => proc.stop(),
  };
}
