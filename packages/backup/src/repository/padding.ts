/**
 * Length padding (spec §7.3): what the storage server sees of a blob, pack, index,
 * snapshot or lock is its length rounded up, so sizes fall into buckets instead of
 * telling exact (compressed) lengths.
 *
 * - `off`: no padding.
 * - `auto` (default): Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted
 *   Files and Communication with PURBs", PETS 2019): a length L is rounded up so that
 *   only its top ~log2(log2 L) + 1 significant bits remain; at most 12 % more for tiny
 *   lengths, ≈ 1/(2·log2 L) for large ones (≤ 3.1 % at 512 KiB, ≤ 2.8 % at 8 MiB). A
 *   Padmé length leaks O(log log L) bits.
 * - `max`: blobs as with auto (packs hide them); every pack exactly PACK_BYTES_MAX of
 *   plaintext (the writer closes a pack before a blob would overflow it; a pack of one
 *   larger blob: the next power of two), so the storage server sees only how many packs
 *   there are; indexes, snapshots and locks the next power of two.
 */
import { CofferError } from '../errors.js';

export enum PadMode {
  Off = 0,
  Auto = 1,
  Max = 2,
}

export const PAD_MODE_NAMES: Record<string, PadMode> = { off: PadMode.Off, auto: PadMode.Auto, max: PadMode.Max };

export function parsePadMode(s: string): PadMode {
  const m = PAD_MODE_NAMES[s];
  if (m === undefined) throw new CofferError('invalid-argument', `--pad must be off, auto or max (not '${s}')`);
  return m;
}

/** Padmé(L) for 0 ≤ L ≤ 2^53 − 1. */
export function padme(L: number): number {
  if (!Number.isSafeInteger(L) || L < 0) throw new RangeError(`padme: bad length ${L}`);
  if (L < 2) return L;
  const e = Math.floor(Math.log2(L));
  const s = Math.floor(Math.log2(e)) + 1;
  const lastBits = e - s;
  const unit = 2 ** lastBits;
  return Math.ceil(L / unit) * unit;
}

/** The fixed plaintext size of packs with padding `max` (spec §7.3). */
export const PACK_BYTES_MAX = 8 * 1024 * 1024;

/** A pack's padded plaintext length (spec §7.3). */
export function paddedPackLength(L: number, mode: PadMode): number {
  if (mode === PadMode.Max) return L <= PACK_BYTES_MAX ? PACK_BYTES_MAX : paddedLength(L, PadMode.Max);
  return paddedLength(L, mode);
}

/** Blob padding: Padmé in both auto and max (spec §7.3); none when off. */
export function blobPadMode(mode: PadMode): PadMode {
  return mode === PadMode.Off ? PadMode.Off : PadMode.Auto;
}

export function paddedLength(L: number, mode: PadMode): number {
  switch (mode) {
    case PadMode.Off:
      return L;
    case PadMode.Auto:
      return padme(L);
    case PadMode.Max:
      return L <= 1 ? L : 2 ** Math.ceil(Math.log2(L));
  }
}

/** Bytes of the padding trailer of a padded blob: uint32be(padding length, these 4 bytes included). */
export const BLOB_PAD_TRAILER = 4;

/**
 * A padded blob (flag bit 1, spec §7.1): payload || zero bytes || uint32be(p), where p
 * counts the zero bytes and the 4-byte trailer. Returns the payload unchanged with mode off.
 */
export function padBlob(payload: Buffer, mode: PadMode): Buffer {
  if (mode === PadMode.Off) return payload;
  const total = paddedLength(payload.length + BLOB_PAD_TRAILER, mode);
  const out = Buffer.alloc(total);
  payload.copy(out, 0);
  out.writeUInt32BE(total - payload.length, total - BLOB_PAD_TRAILER);
  return out;
}

/** The payload of a padded blob; *corrupt* when its padding is malformed. */
export function unpadBlob(stored: Buffer, where: string): Buffer {
  const bad = () => new CofferError('corrupt', `${where}: blob padding is malformed`);
  if (stored.length < BLOB_PAD_TRAILER) throw bad();
  const p = stored.readUInt32BE(stored.length - BLOB_PAD_TRAILER);
  if (p < BLOB_PAD_TRAILER || p > stored.length) throw bad();
  for (let i = stored.length - p; i < stored.length - BLOB_PAD_TRAILER; i++) if (stored[i] !== 0) throw bad();
  return stored.subarray(0, stored.length - p);
}
