/**
 * V8 settings for a `coffer-relay serve` process (issue 13): no incremental marking.
 *
 * A relay streaming uploads passes every body through array buffers (a socket read, the
 * HTTP parser's copy, a batch waiting for its file write). Its old generation holds
 * ~14 MB, just above V8's 8 MB marking threshold, and once it has served a backup or two
 * V8 leaves it little more room than its young generation's capacity: from then on it
 * started a round of incremental marking every 100-300 ms of uploading (measured with
 * --trace-gc on one relay, four 1 GiB backups in a row: no full collection in the first
 * two but the one at start-up, then 25-30 in each of the next ones, with concurrent
 * marking threads beside them; the relay's CPU per GiB 0.9-1.0 s, then 1.4-1.7 s).
 * Without incremental marking a full collection happens when the old generation reaches
 * its limit, all at once: one in the whole run (at start-up), the relay's CPU per GiB
 * 0.8-1.0 s in every round. The price is a pause of a full collection of that small heap
 * (milliseconds) instead of marking steps.
 *
 * COFFER_V8_DEFAULT_HEAP=1 keeps V8's defaults (for comparisons), as for the `coffer` CLI.
 */
import { setFlagsFromString } from 'node:v8';

let tuned = false;

/** For the process that runs `coffer-relay serve`: never for a relay inside a test process. */
export function tuneHeapForRelay(env: NodeJS.ProcessEnv = process.env): boolean {
  if (tuned || env.COFFER_V8_DEFAULT_HEAP === '1') return tuned;
  setFlagsFromString('--no-incremental-marking');
  tuned = true;
  return true;
}
