/**
 * Whether bytes are all zero, by native comparison (memcmp) against a block of zeros:
 * ~20x faster than a byte loop in JavaScript. Used where runs of zeros are common and
 * costly: FastCDC over zeros (chunker/fastcdc.ts), a zero chunk's ID (chunk-worker.ts),
 * a sparse file's holes on restore (restore-check.ts). Issue 13: an 8 GiB disk image
 * with 512 MiB of data.
 */
const ZERO_BLOCK = Buffer.alloc(64 * 1024);

/** True when `b[from, to)` holds only zero bytes (true when empty). */
export function allZero(b: Uint8Array, from = 0, to = b.length): boolean {
  // Most data is not zero: its first byte says so without a call.
  if (from < to && (b[from] !== 0 || b[to - 1] !== 0)) return false;
  for (let at = from; at < to; at += ZERO_BLOCK.length) {
    const end = Math.min(to, at + ZERO_BLOCK.length);
    if (ZERO_BLOCK.compare(b, at, end, 0, end - at) !== 0) return false;
  }
  return true;
}
