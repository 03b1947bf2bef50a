/**
 * Blobs decompressed synchronously, for restore (spec §7.2): zstd-napi's decompression
 * context writes straight into a buffer of the blob's raw length (known from the index)
 * on the calling thread. @mongodb-js/zstd, which backups compress with, only has an
 * asynchronous `decompress`: every blob cost a libuv thread-pool hop, a promise and a
 * buffer of its own choosing. Measured on this machine (issue 13, loaded): 20,000 blobs
 * of 5 KB took 2,862 ms through @mongodb-js/zstd (all at once; 4,565 ms one by one) and
 * 492 ms here; 200 blobs of 1 MiB, 1,085 ms and 448 ms. Both are libzstd: the frames
 * are the same, and restore-decompress.test.ts checks that what @mongodb-js/zstd wrote
 * at every level compression uses comes back here byte for byte.
 *
 * The checks are decompressBlob's (compress.ts), in the same order, with the same errors:
 * padding, exactly one zstd frame, and the raw length the index states.
 */
import { createRequire } from 'node:module';
import type { DCtx as ZstdDCtx } from 'zstd-napi/binding.js';
import { CofferError } from '../errors.js';
import { BLOB_COMPRESSED, BLOB_PADDED } from './blob.js';
import { zstdFrameEnd } from './compress.js';
import { unpadBlob } from './padding.js';

// The binding is CommonJS whose exports ESM cannot name statically.
const binding = createRequire(import.meta.url)('zstd-napi/binding.js') as { DCtx: new () => ZstdDCtx };
let dctx: ZstdDCtx | undefined;

/**
 * The raw bytes of a stored blob, decompressed on this thread.
 * @throws CofferError('corrupt') when the padding is malformed, the blob is not exactly
 *   one zstd frame, does not decompress, or does not have `rawLength` bytes.
 */
export function decompressBlobSync(stored: Buffer, flags: number, rawLength: number, where: string): Buffer {
  if ((flags & BLOB_PADDED) !== 0) stored = unpadBlob(stored, where);
  if ((flags & BLOB_COMPRESSED) === 0) {
    if (stored.length !== rawLength) throw new CofferError('corrupt', `${where}: blob has the wrong length`);
    return stored;
  }
  if (zstdFrameEnd(stored) !== stored.length) {
    throw new CofferError('corrupt', `${where}: compressed blob is not exactly one zstd frame`);
  }
  // One byte of room more than stated: a frame that holds more than rawLength is then
  // told apart (wrong length) from one that does not decompress.
  const out = Buffer.allocUnsafe(rawLength + 1);
  let n: number;
  try {
    dctx ??= new binding.DCtx();
    n = dctx.decompress(out, stored);
  } catch {
    // A failed call leaves the context mid-frame: the next blob gets a fresh one.
    dctx = undefined;
    throw new CofferError('corrupt', `${where}: blob does not decompress`);
  }
  if (n !== rawLength) throw new CofferError('corrupt', `${where}: blob has the wrong length after decompression`);
  return out.subarray(0, rawLength);
}
