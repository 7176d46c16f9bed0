/**
 * The contract of expected tunnels, between the taps that expect them and the pipeline that
 * meets them (its registry is pipeline/expectations.ts, one per running instance). A tap that
 * knows a tunnel is coming (the FTP tap: the data connection its control session announced with
 * PASV/EPSV or will take through a BIND) registers an `Expecter`; the pipeline asks the registry
 * about every CONNECT and BIND and hands a tunnel claimed to its expecter. The pipeline knows
 * nothing of FTP, and no tap knows the pipeline: this contract is all they share.
 */
import type { Socket } from 'node:net';
import type { HostPort } from '../config/types.js';
import type { Session, TunnelCommand } from './session.js';

/** A tunnel as the registry is asked about it. */
export interface TunnelQuery {
  clientAddress: string;
  dst: HostPort;
  command: TunnelCommand;
}

/** What an expected tunnel moved and how it ended (net/relay.ts RelayResult). */
export interface ExpectedResult {
  up: number;
  down: number;
  result: string;
}

/** The pipeline's handle on a tunnel an expecter claimed. */
export interface ExpectedTunnel {
  /** The session id of whoever expected it (an FTP control session). */
  readonly owner: string;
  /** What the tunnel carries, for `session.proto` (ftp-data). */
  readonly proto: string;
  /**
   * CONNECT: relay the two sockets until both ends are done, counting, and report to the owner.
   * Resolves with the counts the pipeline adds to the tunnel's session.
   */
  run(client: Socket, server: Socket, session: Session, idleMs: number): Promise<ExpectedResult>;
  /** BIND, or a CONNECT that could not be dialed: report how it went. */
  finished(r: ExpectedResult): void;
  /** A BIND the pipeline relayed itself: the owner's section on the tunnel's session. */
  record(session: Session): void;
}

/** What a tap registers. */
export interface Expecter {
  /** Whether `claim` would take this tunnel now (no side effect). */
  expects(q: TunnelQuery): boolean;
  /** Take the tunnel (a passive announcement is used once), or null. */
  claim(q: TunnelQuery): ExpectedTunnel | null;
}

/** The registry as a tap sees it (TapServices.expectations). */
export interface ExpectationRegistry {
  /** Register an expecter; returns the undo. */
  add(e: Expecter): () => void;
  /**
   * The one `T` under `key` for this registry, created (and usually registered) on first use:
   * how a tap keeps its bookkeeping per instance without a module-level table.
   */
  part<T>(key: string, create: (registry: ExpectationRegistry) => T): T;
  /** An expecter expects a tunnel it did not before: plans made before may not hold for it. */
  announced(): void;
}
