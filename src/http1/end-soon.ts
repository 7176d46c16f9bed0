/**
 * Ends responses at the end of this turn of the event loop (the check phase, `setImmediate`),
 * all of them one after the other, instead of each as soon as it is made.
 *
 * Why: on a busy proxy one turn reads many requests (every connection that has one). Ended one
 * by one between the others' work, every response's write wakes its client's thread again (a
 * wakeup, often an IPI to another CPU and a preemption of this thread): measured under wrk with
 * 50 connections, one involuntary context switch per response, and a third of this process's
 * CPU in the kernel's wakeup path. Written together at the end of the turn, a client thread
 * woken by the first write finds the others' answers ready too. A response waits at most for the
 * rest of its turn's work; on an idle proxy, not at all (the turn has nothing else to do).
 *
 * Bounded: past MAX_PENDING responses waiting, the oldest ones are ended at once.
 */
import type { ServerResponse } from 'node:http';

/** Responses held for the end of the turn at most; more are ended at once (oldest first). */
const MAX_PENDING = 128;

const pending: { res: ServerResponse; chunk: Buffer | undefined }[] = [];
let scheduled = false;

/** The end of `res` (with its last chunk), at the end of this turn of the event loop. */
export function endSoon(res: ServerResponse, chunk?: Buffer): void {
  pending.push({ res, chunk });
  if (pending.length >= MAX_PENDING) {
    endPending();
    return;
  }
  if (scheduled) return;
  scheduled = true;
  setImmediate(onTurnEnd);
}

function onTurnEnd(): void {
  scheduled = false;
  endPending();
}

function endPending(): void {
  // Taken out first: an end() may make another response (a pipelined request) that waits for the next turn.
  const all = pending.splice(0);
  for (const { res, chunk } of all) {
    // The client went away meanwhile ('close' has recorded it): nothing more to send.
    if (res.destroyed || res.writableEnded) continue;
    if (chunk) res.end(chunk);
    else res.end();
  }
}
