/**
 * Compression where it pays (spec §7.2): zstd (level 3) on libuv's thread pool, so it
 * runs beside the main thread. Incompressible chunks (photos, video) are detected by
 * compressing a 64 KiB sample first, and stored raw when the whole would not shrink by
 * at least 1/32.
 */
import { compress as zstdCompress, decompress as zstdDecompress } from '@mongodb-js/zstd';
import { CofferError } from '../errors.js';
import { BLOB_COMPRESSED, BLOB_PADDED } from './blob.js';
import { unpadBlob } from './padding.js';

const LEVEL = 3;
const SAMPLE = 64 * 1024;

export async function maybeCompress(raw: Buffer): Promise<{ stored: Buffer; flags: number }> {
  if (raw.length >= 4 * SAMPLE) {
    const sample = await zstdCompress(raw.subarray(0, SAMPLE), 1);
    if (sample.length > SAMPLE - SAMPLE / 32) return { stored: raw, flags: 0 };
  }
  if (raw.length < 64) return { stored: raw, flags: 0 };
  const c = await zstdCompress(raw, LEVEL);
  if (c.length > raw.length - raw.length / 32) return { stored: raw, flags: 0 };
  return { stored: c, flags: BLOB_COMPRESSED };
}

export async function decompressBlob(stored: Buffer, flags: number, rawLength: number, where: string): Promise<Buffer> {
  if ((flags & BLOB_PADDED) !== 0) stored = unpadBlob(stored, where);
  if ((flags & BLOB_COMPRESSED) === 0) {
    if (stored.length !== rawLength) throw new CofferError('corrupt', `${where}: blob has the wrong length`);
    return stored;
  }
  let out: Buffer;
  try {
    out = await zstdDecompress(stored);
  } catch {
    throw new CofferError('corrupt', `${where}: blob does not decompress`);
  }
  if (out.length !== rawLength) throw new CofferError('corrupt', `${where}: blob has the wrong length after decompression`);
  return out;
}
