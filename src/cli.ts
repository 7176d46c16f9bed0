#!/usr/bin/env node
/**
 * The command line: `sockstap [-f FILE.yaml] [-P[HOST:]PORT[/DOOR]]... [NAME=VALUE]...`.
 * No argument at all runs the main job (DEFAULT_JOB). Exit status: 0 after a clean shutdown,
 * 2 for a configuration error (before anything listens), 1 for a failure at start.
 * SIGHUP reloads; SIGTERM/SIGINT drain and stop.
 */
import { HELP_TEXT } from './config/help.js';
import { DEFAULT_JOB, loadConfig } from './config/load.js';
import { ConfigError, type Config } from './config/types.js';
import { formatHostPort } from './core/session.js';
import { reportReady, runPrimary, workerIndex } from './cluster.js';
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
  if (argv[0] === 'ca') {
    await runCa(argv.slice(1));
    return;
  }
  const args = argv.length === 0 ? DEFAULT_JOB : argv;
  let config: Config;
  try {
    config = loadConfig(args, { cwd: process.cwd() });
  } catch (err) {
    if (err instanceof ConfigError) fail(2, `configuration error: ${err.message}`);
    throw err;
  }

  const worker = workerIndex();
  if (config.workers > 1 && worker === 0) {
    // The primary of WORKERS=N: the configuration was checked above, before anything listens.
    process.exit(await runPrimary(config.workers, args));
  }

  let proxy: Sockstap;
  try {
    // Only the first worker echoes the operational log; every worker writes the files.
    proxy = await startSockstap(config, { echo: worker <= 1 });
  } catch (err) {
    if (err instanceof StartError) fail(1, err.message);
    throw err;
  }
  if (worker <= 1) {
    for (const l of proxy.addresses()) {
      process.stdout.write(`sockstap: ${l.door} door on ${formatHostPort(l.host, l.port)}\n`);
    }
    if (proxy.adminUrl) process.stdout.write(`sockstap: dashboard at ${proxy.adminUrl}\n`);
    process.stdout.write(`sockstap: logs in ${config.logDir}\n`);
  }
  reportReady();

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
      process.exit(0);
    }
    stopping = true;
    proxy.log.info('signal', { signal });
    void proxy.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
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
