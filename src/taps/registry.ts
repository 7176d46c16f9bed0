/**
 * Which tap serves which sniffed protocol. A protocol with no tap here (or not in the rule's
 * list) is relayed untouched, with the protocol still recorded in sessions.jsonl.
 */
import type { Tap } from './tap.js';

export const TAPS: Partial<Record<string, Tap>> = {};
