#!/usr/bin/env node
/**
 * The command line: `sockstap [-f FILE.yaml] [-P[HOST:]PORT[/DOOR]]... [NAME=VALUE]...`.
 * No argument at all runs the main job (DEFAULT_JOB). Exit status: 0 after a clean shutdown,
 * 2 for a configuration error (before anything listens), 1 for a failure at start.
 * SIGHUP reopens the log files and reloads; SIGUSR1 reopens the log files (logrotate's postrotate);
 * SIGTERM/SIGINT drain and stop.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HELP_TEXT } from './config/help.js';
import { DEFAULT_JOB, loadConfig, withDefaultJob } from './config/load.js';
import { ConfigError, type Config } from './config/types.js';
import { describeConfig, summaryLine } from './config/describe.js';
import { DemoArgError, runDemo } from './demo.js';
import { reportReady, runPrimary, workerIndex } from './cluster.js';
import { reportToPrimary } from './cluster-admin.js';
import { startSockstap, StartError, type Sockstap } from './sockstap.js';
import { CaError, caFiles, CertificateAuthority } from './tls/ca.js';
import { dirname } from 'node:path';
import { formatReport, parseSince, readReport, ReportError, type ReportFormat } from './report.js';

const VERSION = '0.1.0';

function fail(status: number, message: string): never {
  process.stderr.write(`sockstap: ${message}\n`);
  process.exit(status);
}

async function main(argv: string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(HELP_TEXT);
    return;
  }
  if (argv.includes('--version')) {
    process.stdout.write(`sockstap ${VERSION}\n`);
    return;
  }
  if (argv[0] === 'report') {
    runReport(argv.slice(1));
    return;
  }
  if (argv[0] === 'demo') {
    try {
      await runDemo(argv.slice(1));
    } catch (err) {
      fail(err instanceof DemoArgError ? 2 : 1, err instanceof Error ? err.message : String(err));
    }
    return;
  }
  if (argv[0] === 'ca') {
    await runCa(argv.slice(1));
    return;
  }
  const checkOnly = argv[0] === 'check';
  if (checkOnly) argv = argv.slice(1);
  // `npm start -- NAME=VALUE ...` (package.json passes --default-job): the main job plus these.
  const args = argv[0] === '--default-job' ? withDefaultJob(argv.slice(1)) : argv.length === 0 ? DEFAULT_JOB : argv;
  let config: Config;
  try {
    config = loadConfig(args, { cwd: process.cwd() });
  } catch (err) {
    if (err instanceof ConfigError) fail(2, `configuration error: ${err.message}`);
    throw err;
  }
  if (checkOnly) {
    // `sockstap check [ARGS]`: validate and show the effective settings; nothing listens.
    process.stdout.write(`sockstap check: configuration OK: ${args.map((a) => (/^REDIS=/i.test(a) ? a.replace(/:[^:@/]*@/, ':***@') : a)).join(' ')}\n${describeConfig(config)}`);
    return;
  }

  const worker = workerIndex();
  if (config.workers > 1 && worker === 0) {
    // The primary of WORKERS=N: the configuration was checked above, before anything listens.
    const removePid = writePidFile(config.stateDir);
    const status = await runPrimary(config.workers, args, config);
    removePid();
    process.exit(status);
  }

  let proxy: Sockstap;
  try {
    // Only the first worker echoes the operational log; every worker writes the files.
    proxy = await startSockstap(config, { echo: worker <= 1 });
  } catch (err) {
    if (err instanceof StartError) fail(1, err.message);
    throw err;
  }
  // WORKERS=N with ADMIN: the admin runs in the primary, over what each worker reports.
  if (worker > 0 && config.admin) reportToPrimary(proxy);
  if (worker <= 1 && proxy.adminTokenPath) {
    process.stdout.write(`sockstap: admin token in ${proxy.adminTokenPath} (POST requests: Authorization: Bearer TOKEN)
`);
  }
  // The process to signal (logrotate's postrotate): this one, or the primary of WORKERS=N.
  const removePid = worker === 0 ? writePidFile(config.stateDir) : () => {};

  // Installing a listener also keeps Node from opening its inspector on SIGUSR1.
  process.on('SIGUSR1', () => proxy.reopenLogs());
  let reloading = false;
  process.on('SIGHUP', () => {
    if (reloading) return;
    reloading = true;
    void (async () => {
      try {
        await proxy.reloadFromOrigin();
      } catch (err) {
        // A broken new configuration is refused; the old one stays in force.
        proxy.log.error('reload refused; the previous configuration stays', {
          error: err instanceof Error ? err.message : String(err),
        });
      } finally {
        reloading = false;
      }
    })();
  });
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      // A second signal: stop at once.
      removePid();
      process.exit(0);
    }
    stopping = true;
    proxy.log.info('signal', { signal });
    void proxy.stop().then(() => {
      removePid();
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // Started by `npm start`: when npm is killed without passing the signal on (a script's
  // `kill <npm pid>`), this process is left to init holding the default job's fixed ports. It
  // stops then, as if the signal had reached it.
  if (process.env.npm_lifecycle_event === 'start' && process.ppid !== 1) {
    // npm runs the script through a shell: this process's parent is the shell, npm its parent.
    const npmPid = parentOf(process.ppid);
    const gone = (pid: number | null): boolean => {
      if (pid === null || pid <= 1) return false;
      try {
        process.kill(pid, 0);
        return false;
      } catch (err) {
        return (err as NodeJS.ErrnoException).code === 'ESRCH';
      }
    };
    const watch = setInterval(() => {
      if (process.ppid === 1 || gone(npmPid)) {
        clearInterval(watch);
        stop('npm-gone');
      }
    }, 1000);
    watch.unref();
  }
  // Ready only once the signals are handled: a SIGTERM right after this line drains and exits 0.
  if (worker <= 1) {
    // One line says what is in force: doors, taps, cache, admin, state and logs.
    process.stdout.write(`sockstap: ready: ${summaryLine(config, proxy.addresses(), proxy.adminUrl ?? (worker > 0 ? process.env.SOCKSTAP_ADMIN_URL : null))}\n`);
  }
  reportReady();
}

/**
 * STATEDIR/sockstap.pid: the pid of the process that takes SIGHUP and SIGUSR1, for
 * contrib/logrotate.d/sockstap and scripts. Written once listening, removed at a clean stop (when
 * it still names this process). A directory that cannot take it costs a warning, not the service.
 */
function writePidFile(stateDir: string): () => void {
  const path = join(stateDir, 'sockstap.pid');
  const mine = `${process.pid}\n`;
  try {
    mkdirSync(stateDir, { recursive: true });
    writeFileSync(path, mine);
  } catch (err) {
    process.stderr.write(`sockstap: cannot write ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}\n`);
    return () => {};
  }
  return () => {
    try {
      if (readFileSync(path, 'utf8') === mine) rmSync(path);
    } catch {
      // already gone
    }
  };
}

/**
 * `sockstap report [--since DATE] [--format table|csv|json] [-f FILE.yaml] [STATEDIR=DIR]`: usage
 * totals from STATEDIR/usage.sqlite (src/report.ts). Status 2 for a bad argument or no database.
 */
function runReport(argv: string[]): void {
  let since = 0;
  let format: ReportFormat = 'table';
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const m = /^--(since|format)(?:=(.*))?$/.exec(arg);
    if (!m) {
      rest.push(arg);
      continue;
    }
    const value = m[2] ?? argv[++i];
    if (value === undefined) fail(2, `report: --${m[1]} needs a value`);
    try {
      if (m[1] === 'since') since = parseSince(value);
      else if (value === 'table' || value === 'csv' || value === 'json') format = value;
      else fail(2, `report: --format: expected table, csv or json, got ${JSON.stringify(value)}`);
    } catch (err) {
      if (err instanceof ReportError) fail(2, `report: ${err.message}`);
      throw err;
    }
  }
  let config: Config;
  try {
    config = loadConfig(rest, { cwd: process.cwd() });
  } catch (err) {
    if (err instanceof ConfigError) fail(2, `configuration error: ${err.message}`);
    throw err;
  }
  try {
    process.stdout.write(formatReport(readReport(config.stateDir, since), format));
  } catch (err) {
    if (err instanceof ReportError) fail(2, `report: ${err.message}`);
    throw err;
  }
}

/**
 * `sockstap ca [--der] [-f FILE.yaml] [STATEDIR=DIR] [CAFILE=FILE CAKEY=FILE]`: the interception
 * CA's certificate on standard output (PEM, or DER with --der), created under STATEDIR/ca when
 * neither file exists yet. Never prints the key.
 */
async function runCa(argv: string[]): Promise<void> {
  const der = argv.includes('--der');
  const rest = argv.filter((a) => a !== '--der');
  const unknown = rest.find((a) => a.startsWith('--'));
  if (unknown) fail(2, `ca: unknown option ${unknown}; expected --der`);
  let config: Config;
  try {
    config = loadConfig(rest, { cwd: process.cwd() });
  } catch (err) {
    if (err instanceof ConfigError) fail(2, `configuration error: ${err.message}`);
    throw err;
  }
  let ca: CertificateAuthority;
  try {
    ca = await CertificateAuthority.load(caFiles(config.stateDir, config.tls));
  } catch (err) {
    if (err instanceof CaError) fail(1, `ca: ${err.message}`);
    throw err;
  }
  if (ca.created) process.stderr.write(`sockstap: created the interception CA in ${dirname(ca.source)}\n`);
  process.stdout.write(der ? ca.der : ca.certPem);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  fail(1, err instanceof Error ? (err.stack ?? err.message) : String(err));
});

/** The parent of process `pid` (Linux /proc), or null. */
function parentOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const m = /\) \S+ (\d+)/.exec(stat);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}
