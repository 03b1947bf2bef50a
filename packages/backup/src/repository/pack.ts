/**
 * Packs (spec §7): many blobs in one sealed object, so a repository holds a few large
 * objects rather than one per chunk. The plaintext is the blobs back to back, then a
 * trailer describing them, so an index can be rebuilt from the packs alone:
 *
 *   version 1: blob* | entry* | count u32 | "CFPK"
 *   version 2: blob* | zero padding | entry* | padding length u32 | count u32 | "CFP2"
 *   entry (42 bytes): id 32 | type 1 | flags 1 | stored length u32 | raw length u32
 *
 * Version 2 pads the plaintext (spec §7.3) so that the sealed pack's size is bucketed.
 */
import { ObjectKind, ObjectSealer, sealedLength } from '../crypto/sealed-object.js';
import { CofferError } from '../errors.js';
import { BlobType, ID_BYTES, blobEntryProblem } from './blob.js';
import { BLOB_PAD_TRAILER, type PadMode, paddedPackLength } from './padding.js';

/** Zeros for padding (never written to). */
const ZEROS = Buffer.alloc(64 * 1024);
/** Zeros but where a blob's padding trailer is written for a moment (addPadded). */
const PAD_TAIL = Buffer.alloc(64 * 1024);

export const PACK_TRAILER_MAGIC = 'CFPK';
export const PACK_TRAILER_MAGIC_V2 = 'CFP2';
const ENTRY_BYTES = 42;

/** Plaintext bytes of a version 2 pack trailer with `count` entries. */
export function packTrailerBytes(count: number): number {
  return count * ENTRY_BYTES + 12;
}

export interface PackEntry {
  id: Buffer;
  type: BlobType;
  flags: number;
  storedLength: number;
  rawLength: number;
}

export interface FinishedPack {
  packId: Buffer;
  /** The sealed pieces not taken with `takeParts()` yet. */
  parts: Buffer[];
  sealedLength: number;
  entries: Array<PackEntry & { offset: number }>;
}

/**
 * Accumulates blobs and seals them as they come. The sealed pieces can be taken as they
 * are produced (`takeParts`) and streamed out; `finish()` returns the rest.
 */
export class PackBuilder {
  readonly packId: Buffer;
  readonly #sealer: ObjectSealer;
  readonly #parts: Buffer[] = [];
  readonly #entries: Array<PackEntry & { offset: number }> = [];
  #plainBytes = 0;

  constructor(objectMaster: Uint8Array, packId: Buffer) {
    this.packId = packId;
    this.#sealer = new ObjectSealer(objectMaster, { kind: ObjectKind.Pack, id: packId });
    this.#parts.push(Buffer.from(this.#sealer.header));
  }

  /** The sealed pieces produced so far and not yet taken, in order. */
  takeParts(): Buffer[] {
    return this.#parts.splice(0, this.#parts.length);
  }

  get plainBytes(): number {
    return this.#plainBytes;
  }
  get count(): number {
    return this.#entries.length;
  }

  add(entry: PackEntry, stored: Uint8Array): number {
    return this.addPadded(entry, stored, stored.length);
  }

  /**
   * Adds a blob of `storedLength` bytes given as its payload only: the rest is zeros and,
   * when longer than the payload, the padding trailer (spec §7.1, as padBlob makes it),
   * sealed straight from a shared zero buffer, not copied into a padded one first.
   */
  addPadded(entry: PackEntry, payload: Uint8Array, storedLength: number): number {
    const offset = this.#plainBytes;
    this.#entries.push({ id: entry.id, type: entry.type, flags: entry.flags, storedLength, rawLength: entry.rawLength, offset });
    this.#seal(payload);
    const pad = storedLength - payload.length;
    if (pad > 0) {
      let left = Math.max(0, pad - BLOB_PAD_TRAILER);
      while (left > PAD_TAIL.length - BLOB_PAD_TRAILER) {
        const n = Math.min(left, ZEROS.length);
        this.#seal(ZEROS.subarray(0, n));
        left -= n;
      }
      // The last zeros and the trailer in one piece, from a shared buffer (the sealer
      // copies what it keeps before update returns): no buffer per blob.
      PAD_TAIL.writeUInt32BE(pad, left);
      this.#seal(PAD_TAIL.subarray(0, left + BLOB_PAD_TRAILER));
      PAD_TAIL.fill(0, left, left + BLOB_PAD_TRAILER);
    }
    this.#plainBytes += storedLength;
    return offset;
  }

  #seal(data: Uint8Array): void {
    for (const p of this.#sealer.update(data)) this.#parts.push(p);
  }

  /**
   * Seals the trailer. Version 2 (`padding` given) writes a "CFP2" trailer with zero
   * padding before the entries so that the whole plaintext has a padded length.
   */
  finish(padding?: PadMode): FinishedPack {
    const v2 = padding !== undefined;
    const bare = this.#plainBytes + this.#entries.length * ENTRY_BYTES + (v2 ? 12 : 8);
    const padLen = v2 ? paddedPackLength(bare, padding) - bare : 0;
    if (padLen > 0) {
      for (const p of this.#sealer.update(Buffer.alloc(padLen))) this.#parts.push(p);
    }
    const trailer = Buffer.alloc(this.#entries.length * ENTRY_BYTES + (v2 ? 12 : 8));
    let o = 0;
    for (const e of this.#entries) {
      e.id.copy(trailer, o);
      trailer[o + 32] = e.type;
      trailer[o + 33] = e.flags;
      trailer.writeUInt32BE(e.storedLength, o + 34);
      trailer.writeUInt32BE(e.rawLength, o + 38);
      o += ENTRY_BYTES;
    }
    if (v2) {
      trailer.writeUInt32BE(padLen, o);
      o += 4;
    }
    trailer.writeUInt32BE(this.#entries.length, o);
    trailer.write(v2 ? PACK_TRAILER_MAGIC_V2 : PACK_TRAILER_MAGIC, o + 4, 'ascii');
    for (const p of this.#sealer.update(trailer)) this.#parts.push(p);
    for (const p of this.#sealer.final()) this.#parts.push(p);
    const total = this.#plainBytes + padLen + trailer.length;
    return { packId: this.packId, parts: this.#parts, sealedLength: sealedLength(total), entries: this.#entries };
  }
}

/** Parses a pack's plaintext trailer; used by `check --read-data` and index rebuilds. */
export function decodePackTrailer(plain: Uint8Array, where: string): Array<PackEntry & { offset: number }> {
  const b = Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  const bad = (why: string) => new CofferError('corrupt', `${where}: pack trailer is invalid (${why})`);
  if (b.length < 8) throw bad('no trailer');
  const magic = b.subarray(b.length - 4);
  const v2 = magic.equals(Buffer.from(PACK_TRAILER_MAGIC_V2, 'latin1'));
  if (!v2 && !magic.equals(Buffer.from(PACK_TRAILER_MAGIC, 'latin1'))) throw bad('no trailer');
  if (v2 && b.length < 12) throw bad('no trailer');
  const count = b.readUInt32BE(b.length - 8);
  const start = b.length - (v2 ? 12 : 8) - count * ENTRY_BYTES;
  if (start < 0) throw bad('entry count too large');
  const padLen = v2 ? b.readUInt32BE(b.length - 12) : 0;
  const out: Array<PackEntry & { offset: number }> = [];
  let offset = 0;
  for (let i = 0; i < count; i++) {
    const o = start + i * ENTRY_BYTES;
    const type = b[o + 32]!;
    if (type !== BlobType.Data && type !== BlobType.Tree) throw bad(`unknown blob type ${type}`);
    const flags = b[o + 33]!;
    const storedLength = b.readUInt32BE(o + 34);
    const rawLength = b.readUInt32BE(o + 38);
    // Spec §7.1: unknown flags are rejected, never ignored; a raw blob is stored as is.
    const problem = blobEntryProblem(flags, storedLength, rawLength, v2);
    if (problem) throw bad(problem);
    out.push({ id: Buffer.from(b.subarray(o, o + ID_BYTES)), type, flags, offset, storedLength, rawLength });
    offset += storedLength;
  }
  if (offset + padLen !== start) throw bad('blob lengths do not add up');
  for (let i = offset; i < start; i++) if (b[i] !== 0) throw bad('padding is not zero');
  return out;
}
