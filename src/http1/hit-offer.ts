/**
 * Where a fresh hit served in JavaScript is offered to the native hit path (frontdoors/
 * native-http.ts decides whether to publish it; native/hits.ts holds what is published). The cache
 * code (taps/http/cached.ts) offers; a native listener registers the sockets it handed over. This
 * module is only the meeting point, so neither side imports the other.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Session } from '../core/session.js';

/** The cache a hit comes from: how it says an entry changed, and how a hit is noted. */
export interface HitSource {
  onEntryChange(fn: (entryId: string) => void): () => void;
  noteHit(entryId: string): void;
  /** With WORKERS=N (a shared index): other workers' changes are looked at by pollShared(). */
  readonly isShared: boolean;
  pollShared(): void;
}

/** A fresh hit of the HTTP door's absolute-form request or a tapped tunnel's request, answered from the memory tier, head and body written. */
export interface HitOffer {
  req: IncomingMessage;
  res: ServerResponse;
  session: Session;
  source: HitSource;
  entryId: string;
  freshUntil: number;
  ageOriginMs: number;
  /** The stored response's Age as served (the value in the head). */
  age: string;
  status: number;
  body: Buffer;
  url: string;
  contentType: string;
  dst: { host: string; port: number };
  /** A tapped tunnel's request: the tunnel's destination (the request is origin-form); null for the HTTP door's. */
  tunnel: { host: string; port: number } | null;
}

export interface HitPublisher {
  offer(o: HitOffer): void;
}

const publishers = new WeakMap<Socket, HitPublisher>();

/** Hits served on this client socket are offered to `p`. */
export function setHitPublisher(socket: Socket, p: HitPublisher): void {
  publishers.set(socket, p);
}

export function hitPublisher(socket: Socket | null | undefined): HitPublisher | undefined {
  return socket ? publishers.get(socket) : undefined;
}
