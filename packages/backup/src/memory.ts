/**
 * Keeping memory flat while streaming. Node frees an ArrayBuffer's memory only when the
 * garbage collector collects its (tiny) JS object, and with a small JS heap that
 * happens rarely: a backup that allocates a few hundred MB/s of short-lived buffers
 * would otherwise hold a hundred MB or more of dead buffers at any time. So the hot
 * loops ask for a minor collection (a scavenge: ~1 ms on this heap) after every
 * `GC_EVERY_BYTES` of data they allocated.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const GC_EVERY_BYTES = 48 * 1024 * 1024;

type GcFn = (opts?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;
let gc: GcFn | undefined | null;

function gcFunction(): GcFn | null {
  if (gc !== undefined) return gc;
  try {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as GcFn;
  } catch {
    gc = null;
  }
  return gc;
}

/** Counts bytes allocated by a hot loop and collects young garbage every so often. */
export class AllocationMeter {
  #bytes = 0;
  add(n: number): void {
    this.#bytes += n;
    if (this.#bytes >= GC_EVERY_BYTES) {
      this.#bytes = 0;
      gcFunction()?.({ type: 'major' });
    }
  }
}
