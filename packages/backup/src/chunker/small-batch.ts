/**
 * What a chunk worker sends back for a batch of small files (chunk-worker.ts), shared by
 * both sides. A module of its own: the pool must not load the worker's module, which
 * acts as a worker whenever it runs on a thread with a parent port.
 */

/**
 * A batch of small files' outcomes, in flat arrays (one message, no object per file):
 * file k's `status` ints are at SMALL_STATUS * k (SmallStatus offsets) and its lstat
 * after the read at 4 * k of `after` (size, mtimeNs, ctimeNs, ino; valid when HasAfter
 * is 1: the file was still a regular file). `size` is what was read: a file that grew
 * past its expected size reads as expected + 1 (the caller reads it again the ordinary
 * way). The stored bytes are `data[offset, offset + length)`. Errors and xattrs, rare,
 * come in `extras`.
 */
export const SMALL_STATUS = 6;
export const SmallStatus = { Ok: 0, Size: 1, Flags: 2, Offset: 3, Length: 4, HasAfter: 5 } as const;
export interface SmallFileExtra {
  /** The file's position in the batch. */
  k: number;
  /** The read failed (status Ok is 0). */
  error?: { code: string; message: string };
  /** Its extended attributes (read after the contents; absent when not asked for or none). */
  xattrs?: Array<{ name: string; value: Uint8Array }>;
  /** Why its xattrs could not be read (the contents were). */
  xattrError?: { code?: string; message: string };
}

/** The fields of a file's stat that show whether it changed while it was read. */
export interface SmallFileStat {
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: bigint;
}
