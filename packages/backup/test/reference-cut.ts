/** The spec's cut (spec/backup-format.md §6.1) written out plainly, for tests of FastCdc's fast paths. */
import type { ChunkerParams } from '../src/chunker/fastcdc.js';

/** spec §6.1's cut, as written there: no fast path. */
export function referenceCut(gearBytes: Uint8Array, p: ChunkerParams, data: Uint8Array, start: number, end: number, eof: boolean): number {
  const gear = new Int32Array(256);
  const dv = new DataView(gearBytes.buffer, gearBytes.byteOffset, 1024);
  for (let i = 0; i < 256; i++) gear[i] = dv.getInt32(4 * i, true);
  const bits = Math.log2(p.avgSize);
  const high = (k: number) => (k >= 32 ? -1 : ~((1 << (32 - k)) - 1));
  const available = end - start;
  if (available <= p.minSize) return eof ? available : -1;
  const limit = Math.min(available, p.maxSize);
  let h = 0;
  for (let i = p.minSize; i < limit; i++) {
    h = ((h << 1) + gear[data[start + i]!]!) | 0;
    if ((h & (i < p.avgSize ? high(bits + 2) : high(bits - 2))) === 0) return i + 1;
  }
  return limit === p.maxSize || eof ? limit : -1;
}
