/**
 * V8 heap settings for a `coffer backup` process (and, below, `coffer restore`), set before the command does any work
 * (issue 13). The backup library's tuneHeapForBackup sets the same growth policy, but
 * only once the repository is open, and measured on the 50,000-file tree that came too
 * late twice over:
 *
 * - By then (key file read, repository opened, index loaded) the main thread's young
 *   generation had already grown from 1 MiB semi-spaces to 4–8 MiB.
 * - Starting a worker thread sets --semi-space-growth-factor back to 2 for the whole
 *   process (V8 configures the new isolate's heap and raises a factor below 2 to 2, in the
 *   process-wide flag), so after the chunk workers started, the main thread's young
 *   generation grew on to its 2 × 16 MiB maximum: 32 MiB committed, mostly garbage,
 *   counted in peak RSS.
 *
 * So the flags are set here at once and set again while each new worker starts (until it
 * is online). Measured in one run against the build before (3 runs each, medians): peak
 * RSS of a first backup 204 → 182 MiB on the 50,000-file tree, 182 → 174 MiB on the 1 GiB
 * set, wall time unchanged within noise; the main thread's new space 32 → 4 MiB
 * committed, each chunk worker's 8 → 2 MiB. Only growth policies change, never a limit; COFFER_V8_DEFAULT_HEAP=1 keeps
 * V8's defaults (for comparisons).
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import type { Worker } from 'node:worker_threads';

const FLAGS = ['--semi-space-growth-factor=1', '--heap-growing-percent=20'];

function apply(): void {
  for (const f of FLAGS) setFlagsFromString(f);
}

let tuned = false;

/**
 * Starting a worker sets the process-wide growth factor back to 2 (above): `set` runs
 * again every millisecond while each new worker starts, and once more when it is online.
 */
function reapplyWhileWorkersStart(set: () => void): void {
  process.on('worker', (w: Worker) => {
    // The new isolate's heap is configured on the worker's thread at some moment before
    // it is online: set the flags again every millisecond until then, and once more after.
    // A collection on this thread in the moment between that reset and the next setting
    // can still grow the young generation one step (seen once in ~10 CI runs: 16 MiB
    // instead of 8 for a restore); without this, it grows to V8's 32 MiB.
    const again = setInterval(set, 1);
    again.unref();
    const stop = () => {
      clearInterval(again);
      set();
    };
    w.once('online', stop);
    w.once('exit', stop);
  });
}

/** For the process that runs `coffer backup` (runMain): never for run() inside a test process. */
export function tuneHeapEarly(env: NodeJS.ProcessEnv = process.env): boolean {
  if (tuned || env.COFFER_V8_DEFAULT_HEAP === '1') return tuned;
  tuned = true;
  apply();
  reapplyWhileWorkersStart(apply);
  return true;
}

/**
 * The young generation (both semi-spaces) of a `coffer restore` grows no further than this.
 * Measured on the 50,000-file tree (3 restores each, one session): V8's default lets it
 * grow to 32 MiB, most of it garbage counted in peak RSS (161–167 MiB); holding it here
 * cuts peak RSS to 135–140 MiB, about what the backup's policy (1 MiB semi-spaces from
 * the start) gives, with a quarter of that policy's collections: its +8–14% CPU came
 * from collecting a busy young generation of 2 MiB.
 */
export const RESTORE_NEW_SPACE_BYTES = 8 * 1024 * 1024;

let restoreTuned = false;

/**
 * For the process that runs `coffer restore`: the young generation grows as V8 decides
 * until it reaches RESTORE_NEW_SPACE_BYTES, then its growth factor is set to 1 (checked
 * after each collection until then; nothing after). Old-generation growth is left as is.
 */
export function tuneHeapForRestore(env: NodeJS.ProcessEnv = process.env): boolean {
  if (restoreTuned || tuned || env.COFFER_V8_DEFAULT_HEAP === '1') return restoreTuned;
  restoreTuned = true;
  const hold = () => {
    const ns = getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    if (!ns || ns.space_size < RESTORE_NEW_SPACE_BYTES) return false;
    setFlagsFromString('--semi-space-growth-factor=1');
    return true;
  };
  // Restore's writer threads (restore-writer.ts) would otherwise let it grow on to 32 MiB.
  let held = false;
  reapplyWhileWorkersStart(() => {
    if (held) setFlagsFromString('--semi-space-growth-factor=1');
  });
  if ((held = hold())) return true;
  const obs = new PerformanceObserver(() => {
    if ((held = hold())) obs.disconnect();
  });
  obs.observe({ entryTypes: ['gc'] });
  return true;
}

let readingTuned = false;

/**
 * For a process that runs any other repository command (check, prune, copy, diff, find,
 * ls, dump, stats, …): the old generation grows by 20% of the live heap at a time, not
 * by V8's default (a multiple of it, for a fast-growing heap), so peak RSS follows what
 * the command holds rather than its garbage. Measured on a 200,000-file repository
 * (two snapshots; /usr/bin/time, the same machine and moment): check 413 → 249 MB (user
 * CPU 6.65 → 6.70 s), prune --dry-run 402 → 239 MB, diff 211 → 152 MB, find 175 →
 * 138 MB, ls 171 → 139 MB, stats --mode raw-data 168 → 134 MB. The young generation is
 * left as V8 sizes it (holding it too cost CPU for no memory here).
 */
export function tuneHeapForReading(env: NodeJS.ProcessEnv = process.env): boolean {
  if (readingTuned || tuned || restoreTuned || env.COFFER_V8_DEFAULT_HEAP === '1') return readingTuned;
  readingTuned = true;
  setFlagsFromString('--heap-growing-percent=20');
  return true;
}

let relayHeapSet = false;

/**
 * A `coffer backup` process (the settings above on: runMain, not run() inside a test
 * process) whose repository is on the relay (context.ts calls this once it has the
 * backend) runs V8 without incremental marking (issue
 * 13): full collections happen when the old generation's limit is reached, all at once,
 * and no longer start early. With the SDK loaded its heap sits just
 * above V8's 8 MB marking threshold, so every pack's worth of array buffers coming and
 * going (external memory, counted against that limit) started a round of incremental
 * marking: 32–43 full collections per GiB backed up (a local backup: 4–7), with
 * concurrent marking threads beside them. Without it: 4–9, and the client's CPU was
 * lower in 16 of 16 interleaved pairs (medians 3.71/3.93 s against 4.01/4.40 s per GiB);
 * the price is peak RSS (median 260 against 243 MiB: garbage array buffers wait for the
 * limit). COFFER_V8_DEFAULT_HEAP=1 keeps V8's defaults, as for the settings above.
 */
export function tuneHeapForRelayBackup(env: NodeJS.ProcessEnv = process.env): boolean {
  // Not for a restore: its peak RSS grew by 22 MiB (1 GiB from coffer:, 6 pairs) for 10% less CPU.
  if (relayHeapSet || env.COFFER_V8_DEFAULT_HEAP === '1' || !tuned) return relayHeapSet;
  setFlagsFromString('--no-incremental-marking');
  relayHeapSet = true;
  return true;
}
