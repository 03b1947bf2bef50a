/**
 * What to undo when the process is interrupted (SIGINT, SIGTERM) in the middle of an
 * operation: a repository lock to release (else another machine's prune waits for its
 * expiry), a restore's staging directory or temporary files to remove (else hundreds of
 * MiB of partial data stay in the target). The library registers and unregisters; only
 * the program that owns the process (the CLI) installs the signal handlers and runs them
 * (`runInterruptCleanups`) before it exits.
 */
const cleanups = new Set<() => Promise<unknown>>();

/** Registers `fn` to run on interruption; returns the function that unregisters it. */
export function onInterrupt(fn: () => Promise<unknown>): () => void {
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/**
 * Runs every registered clean-up at once, for at most `timeoutMs`; failures are ignored
 * (the process is going). Then, for a moment, those registered meanwhile: the signal can
 * come between a lock object's write and its registration, a few microtasks later.
 */
export async function runInterruptCleanups(timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (let pass = 0; pass < 3; pass++) {
    const all = [...cleanups];
    cleanups.clear();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled(all.map(async (fn) => fn())), new Promise((r) => (timer = setTimeout(r, Math.max(0, end - Date.now()))))]);
    clearTimeout(timer);
    if (Date.now() >= end) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}
