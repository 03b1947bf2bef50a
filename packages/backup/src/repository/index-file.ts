/**
 * Index objects (spec §8): which blob is where. Written after the packs they describe
 * and before the snapshot that uses them. Plaintext (inside a sealed Index object):
 *
 *   "CFIX" | version (1 or 2) | 3 zero bytes | pack count u32
 *   per pack: pack id 32 | sealed length u64 | entry count u32
 *     per entry (46): blob id 32 | type 1 | flags 1 | offset u32 | stored length u32 | raw length u32
 *   version 2 only: zero bytes up to the padded length (spec §8)
 */
import { CofferError } from '../errors.js';
import { BlobType, ID_BYTES, blobEntryProblem, idKey, type BlobLocation } from './blob.js';
import { PadMode, paddedLength } from './padding.js';

const MAGIC = 'CFIX';
const ENTRY_BYTES = 46;

export interface IndexedPack {
  packId: Buffer;
  sealedLength: number;
  blobs: Array<{ id: Buffer; type: BlobType; flags: number; offset: number; storedLength: number; rawLength: number }>;
}

/** Encodes an index; `version` 2 pads it with zero bytes to the padded length (spec §8). */
export function encodeIndex(packs: readonly IndexedPack[], version: 1 | 2 = 2, padding: PadMode = PadMode.Auto): Buffer {
  let size = 12;
  for (const p of packs) size += 44 + p.blobs.length * ENTRY_BYTES;
  const b = Buffer.alloc(version === 2 ? paddedLength(size, padding) : size);
  b.write(MAGIC, 0, 'ascii');
  b[4] = version;
  b.writeUInt32BE(packs.length, 8);
  let o = 12;
  for (const p of packs) {
    p.packId.copy(b, o);
    b.writeBigUInt64BE(BigInt(p.sealedLength), o + 32);
    b.writeUInt32BE(p.blobs.length, o + 40);
    o += 44;
    for (const e of p.blobs) {
      e.id.copy(b, o);
      b[o + 32] = e.type;
      b[o + 33] = e.flags;
      b.writeUInt32BE(e.offset, o + 34);
      b.writeUInt32BE(e.storedLength, o + 38);
      b.writeUInt32BE(e.rawLength, o + 42);
      o += ENTRY_BYTES;
    }
  }
  return b;
}

export function decodeIndex(plain: Uint8Array, where: string): IndexedPack[] {
  const b = Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  const bad = (why: string) => new CofferError('corrupt', `${where} is not a valid index (${why})`);
  // Spec §8: magic, then version, then reserved bytes, then the length; an index shorter
  // than 12 bytes is corrupt whatever its first bytes are.
  if (b.length < 4 || !b.subarray(0, 4).equals(Buffer.from(MAGIC, 'latin1'))) throw bad('bad magic');
  if (b.length < 12) throw bad('truncated');
  const version = b[4]!;
  if (version !== 1 && version !== 2) throw new CofferError('unsupported-version', `${where} has index version ${b[4]}, unknown to this coffer`);
  if (b[5] !== 0 || b[6] !== 0 || b[7] !== 0) throw bad('reserved bytes are set');
  const packs: IndexedPack[] = [];
  const count = b.readUInt32BE(8);
  let o = 12;
  for (let i = 0; i < count; i++) {
    if (o + 44 > b.length) throw bad('truncated');
    const packId = Buffer.from(b.subarray(o, o + ID_BYTES));
    const sealedLength64 = b.readBigUInt64BE(o + 32);
    // Beyond 2^53 a JS number would silently round the length (spec §8).
    if (sealedLength64 > BigInt(Number.MAX_SAFE_INTEGER)) throw bad('pack length out of range');
    const sealedLength = Number(sealedLength64);
    const n = b.readUInt32BE(o + 40);
    o += 44;
    if (o + n * ENTRY_BYTES > b.length) throw bad('truncated');
    const blobs: IndexedPack['blobs'] = [];
    for (let j = 0; j < n; j++) {
      const type = b[o + 32]!;
      if (type !== BlobType.Data && type !== BlobType.Tree) throw bad(`unknown blob type ${type}`);
      const flags = b[o + 33]!;
      const storedLength = b.readUInt32BE(o + 38);
      const rawLength = b.readUInt32BE(o + 42);
      // Spec §7.1: unknown flags are rejected, never ignored; a raw blob is stored as is.
      const problem = blobEntryProblem(flags, storedLength, rawLength, version === 2);
      if (problem) throw bad(problem);
      blobs.push({ id: Buffer.from(b.subarray(o, o + ID_BYTES)), type, flags, offset: b.readUInt32BE(o + 34), storedLength, rawLength });
      o += ENTRY_BYTES;
    }
    packs.push({ packId, sealedLength, blobs });
  }
  if (version === 1 && o !== b.length) throw bad('trailing bytes');
  for (; o < b.length; o++) if (b[o] !== 0) throw bad('padding is not zero');
  return packs;
}

/**
 * The in-memory union of all index objects: blob ID → location. A blob stored twice
 * (two backups racing) keeps every copy, so a reader can fall back to one whose pack
 * exists (`locations`).
 */
export class BlobIndex {
  readonly #blobs = new Map<string, BlobLocation>();
  readonly #copies = new Map<string, BlobLocation[]>();
  readonly #unstored = new Set<string>();
  readonly packs = new Map<string, { packId: Buffer; sealedLength: number }>();

  add(p: IndexedPack): void {
    this.packs.set(idKey(p.packId), { packId: p.packId, sealedLength: p.sealedLength });
    for (const e of p.blobs) {
      const loc: BlobLocation = {
        packId: p.packId,
        type: e.type,
        flags: e.flags,
        offset: e.offset,
        storedLength: e.storedLength,
        rawLength: e.rawLength,
      };
      const k = idKey(e.id);
      const first = this.#blobs.get(k);
      if (!first) this.#blobs.set(k, loc);
      else if (!first.packId.equals(p.packId)) {
        const more = this.#copies.get(k);
        if (!more) this.#copies.set(k, [loc]);
        else if (!more.some((m) => m.packId.equals(p.packId))) more.push(loc);
      }
    }
  }

  /** Every indexed copy of a blob (in different packs), the first one first. */
  locations(id: Uint8Array): BlobLocation[] {
    const k = idKey(id);
    const first = this.#blobs.get(k);
    return first ? [first, ...(this.#copies.get(k) ?? [])] : [];
  }

  /**
   * Checks the index's claims against the pack listing: a copy in a pack that `exists`
   * rejects is no copy. Blobs are then read from a copy that exists, and `has` is false
   * for a blob with none (so a backup stores it again instead of deduplicating against
   * data that is gone); `get` still returns the missing copy, so errors name its pack.
   */
  preferStored(exists: (packId: Buffer) => boolean): void {
    this.#unstored.clear();
    for (const [k, first] of this.#blobs) {
      if (exists(first.packId)) continue;
      const more = this.#copies.get(k) ?? [];
      const i = more.findIndex((l) => exists(l.packId));
      if (i < 0) {
        this.#unstored.add(k);
        continue;
      }
      const [found] = more.splice(i, 1);
      more.unshift(first);
      this.#blobs.set(k, found!);
      this.#copies.set(k, more);
    }
  }

  get(id: Uint8Array): BlobLocation | undefined {
    return this.#blobs.get(idKey(id));
  }
  /** True when the blob is indexed in a pack that exists (after `preferStored`). */
  has(id: Uint8Array): boolean {
    const k = idKey(id);
    return this.#blobs.has(k) && !this.#unstored.has(k);
  }
  get size(): number {
    return this.#blobs.size;
  }
  entries(): IterableIterator<[string, BlobLocation]> {
    return this.#blobs.entries();
  }
}
