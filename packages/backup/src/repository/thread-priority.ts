/**
 * A worker thread below the main thread in the scheduler's eyes (issue 13).
 *
 * A backup's main thread hands work to the chunk workers and takes their results: the
 * walk, the lstat of every entry, dedup, packing and sealing are all on it, and on the
 * 50,000-file tree it is the pipeline's critical path. With two cores, the main thread,
 * two workers and V8's helper threads want more than two CPUs, and each message that
 * wakes a worker let the kernel put that worker on the main thread's core. A first
 * backup of the tree on a quiet machine: the main thread used ~1.0 s of CPU but was busy
 * for ~2.25 s of its CPU profile (which counts time off the CPU where it happened: 354 ms
 * "in" postMessage, waking a worker), while each worker sat idle ~1.1 s waiting for its
 * next batch; per-thread schedstat at load average ~5: 1.06 s running, 3.6 s waiting to run.
 *
 * So once two workers run (each lowers itself when the pool links them: chunk-worker.ts's
 * 'peer'; a backup with one worker is left as it is: a second backup of the tree, 6
 * interleaved pairs with the workers lowered from the start: wall 1.033, slower in 6 of
 * 6; lowered only with two: 0.993), each worker thread asks for a nice value `delta`
 * above the process's own (Linux:
 * setpriority on the thread's own ID, which moves that thread alone; an unprivileged
 * process may always lower its priority). The main thread keeps the process's priority.
 * Against other programs, the workers weigh a little less than a thread at the process's
 * priority (at +5, a weight of 335 against 1024); with nothing else running, they use both
 * cores as before. Elsewhere (no /proc/thread-self) nothing changes. Failures are ignored: the
 * priority is a hint, never a reason for a backup to fail.
 */
import { readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';

/** The nice steps chunk workers take above the process's (see the header; measured in this file's commit). */
export const WORKER_NICE_DELTA = 5;

/**
 * Lowers the calling thread's priority by `delta` nice steps (at most to 19) and returns
 * its new nice value; undefined where threads cannot be told apart (not Linux) or the
 * call failed.
 */
export function lowerThisThreadPriority(delta: number): number | undefined {
  if (process.platform !== 'linux' || !(delta > 0)) return undefined;
  try {
    // "<pid>/task/<tid>": this thread's kernel ID.
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (!Number.isInteger(tid) || tid <= 0) return undefined;
    const nice = Math.min(19, getPriority(tid) + delta);
    setPriority(tid, nice);
    return nice;
  } catch {
    return undefined;
  }
}
