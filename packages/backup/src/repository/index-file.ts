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

/** Bytes of one pack's record in an index: pack id 32 | sealed length u64 | entry count u32, then its entries. */
const PACK_HEAD_BYTES = 44;

/**
 * One pack's record as it appears in an index object (without the 12-byte header): what
 * the blob writer keeps per finished pack, 46 bytes per blob, until it writes the index.
 */
export function encodePackRecord(packId: Uint8Array, sealedLength: number, blobs: IndexedPack['blobs']): Buffer {
  const b = Buffer.alloc(PACK_HEAD_BYTES + blobs.length * ENTRY_BYTES);
  b.set(packId, 0);
  b.writeBigUInt64BE(BigInt(sealedLength), 32);
  b.writeUInt32BE(blobs.length, 40);
  let o = PACK_HEAD_BYTES;
  for (const e of blobs) {
    b.set(e.id, o);
    b[o + 32] = e.type;
    b[o + 33] = e.flags;
    b.writeUInt32BE(e.offset, o + 34);
    b.writeUInt32BE(e.storedLength, o + 38);
    b.writeUInt32BE(e.rawLength, o + 42);
    o += ENTRY_BYTES;
  }
  return b;
}

/** An index of pack records made by `encodePackRecord`; `version` 2 pads it (spec §8). */
export function encodeIndexRecords(records: readonly Uint8Array[], version: 1 | 2 = 2, padding: PadMode = PadMode.Auto): Buffer {
  let size = 12;
  for (const r of records) size += r.length;
  const b = Buffer.alloc(version === 2 ? paddedLength(size, padding) : size);
  b.write(MAGIC, 0, 'ascii');
  b[4] = version;
  b.writeUInt32BE(records.length, 8);
  let o = 12;
  for (const r of records) {
    b.set(r, o);
    o += r.length;
  }
  return b;
}

/** Encodes an index; `version` 2 pads it with zero bytes to the padded length (spec §8). */
export function encodeIndex(packs: readonly IndexedPack[], version: 1 | 2 = 2, padding: PadMode = PadMode.Auto): Buffer {
  return encodeIndexRecords(
    packs.map((p) => encodePackRecord(p.packId, p.sealedLength, p.blobs)),
    version,
    padding,
  );
}

/** One pack of a checked index: its entries are `count` records of 46 bytes from `start`. */
export interface ScannedPack {
  packId: Buffer;
  sealedLength: number;
  start: number;
  count: number;
}

/**
 * Checks an index's plaintext (spec §8) without making an object per blob; `decodeIndex`
 * and `BlobIndex.addScanned` read the entries from the buffer where this found them.
 */
export function scanIndex(plain: Uint8Array, where: string): ScannedPack[] {
  const b = Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  const bad = (why: string) => new CofferError('corrupt', `${where} is not a valid index (${why})`);
  // Spec §8: magic, then version, then reserved bytes, then the length; an index shorter
  // than 12 bytes is corrupt whatever its first bytes are.
  if (b.length < 4 || !b.subarray(0, 4).equals(Buffer.from(MAGIC, 'latin1'))) throw bad('bad magic');
  if (b.length < 12) throw bad('truncated');
  const version = b[4]!;
  if (version !== 1 && version !== 2) throw new CofferError('unsupported-version', `${where} has index version ${b[4]}, unknown to this coffer`);
  if (b[5] !== 0 || b[6] !== 0 || b[7] !== 0) throw bad('reserved bytes are set');
  const packs: ScannedPack[] = [];
  const count = b.readUInt32BE(8);
  let o = 12;
  for (let i = 0; i < count; i++) {
    if (o + PACK_HEAD_BYTES > b.length) throw bad('truncated');
    const packId = Buffer.from(b.subarray(o, o + ID_BYTES));
    const sealedLength64 = b.readBigUInt64BE(o + 32);
    // Beyond 2^53 a JS number would silently round the length (spec §8).
    if (sealedLength64 > BigInt(Number.MAX_SAFE_INTEGER)) throw bad('pack length out of range');
    const sealedLength = Number(sealedLength64);
    const n = b.readUInt32BE(o + 40);
    o += PACK_HEAD_BYTES;
    if (o + n * ENTRY_BYTES > b.length) throw bad('truncated');
    const start = o;
    for (let j = 0; j < n; j++) {
      const type = b[o + 32]!;
      if (type !== BlobType.Data && type !== BlobType.Tree) throw bad(`unknown blob type ${type}`);
      const flags = b[o + 33]!;
      const storedLength = b.readUInt32BE(o + 38);
      const rawLength = b.readUInt32BE(o + 42);
      // Spec §7.1: unknown flags are rejected, never ignored; a raw blob is stored as is.
      const problem = blobEntryProblem(flags, storedLength, rawLength, version === 2);
      if (problem) throw bad(problem);
      o += ENTRY_BYTES;
    }
    packs.push({ packId, sealedLength, start, count: n });
  }
  if (version === 1 && o !== b.length) throw bad('trailing bytes');
  for (; o < b.length; o++) if (b[o] !== 0) throw bad('padding is not zero');
  return packs;
}

export function decodeIndex(plain: Uint8Array, where: string): IndexedPack[] {
  const b = Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  return scanIndex(plain, where).map(({ packId, sealedLength, start, count }) => {
    const blobs: IndexedPack['blobs'] = [];
    for (let j = 0, o = start; j < count; j++, o += ENTRY_BYTES) {
      blobs.push({ id: Buffer.from(b.subarray(o, o + ID_BYTES)), type: b[o + 32]!, flags: b[o + 33]!, offset: b.readUInt32BE(o + 34), storedLength: b.readUInt32BE(o + 38), rawLength: b.readUInt32BE(o + 42) });
    }
    return { packId, sealedLength, blobs };
  });
}

/** A slot of an open-addressing table for a 32-byte ID (IDs are keyed hashes: their bytes are uniform). */
function idHash(id: Uint8Array, o: number): number {
  // Two words mixed, so IDs that share a prefix (tests, a damaged repository) still spread.
  const a = id[o]! | (id[o + 1]! << 8) | (id[o + 2]! << 16) | (id[o + 3]! << 24);
  const b = id[o + 28]! | (id[o + 29]! << 8) | (id[o + 30]! << 16) | (id[o + 31]! << 24);
  return Math.imul(a ^ Math.imul(b, 0x9e3779b1), 0x85ebca6b) ^ (a >>> 15);
}

function idEquals(a: Uint8Array, ao: number, b: Uint8Array, bo: number): boolean {
  for (let i = 0; i < ID_BYTES; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}

/**
 * A set of 32-byte IDs in two typed arrays: the IDs back to back, and an open-addressing
 * table (linear probing, at most half full) of their positions + 1. About 40 bytes per
 * ID, no object or string per ID.
 */
export class IdSet {
  #ids = Buffer.alloc(ID_BYTES * 256);
  #slots = new Uint32Array(512);
  #count = 0;

  get size(): number {
    return this.#count;
  }

  #find(id: Uint8Array, o: number): number {
    const mask = this.#slots.length - 1;
    for (let s = idHash(id, o) & mask; ; s = (s + 1) & mask) {
      const v = this.#slots[s]!;
      if (v === 0 || idEquals(this.#ids, (v - 1) * ID_BYTES, id, o)) return s;
    }
  }

  has(id: Uint8Array): boolean {
    return this.#slots[this.#find(id, 0)] !== 0;
  }

  /** Adds `id`; false when it was there already. */
  add(id: Uint8Array): boolean {
    const s = this.#find(id, 0);
    if (this.#slots[s] !== 0) return false;
    if ((this.#count + 1) * ID_BYTES > this.#ids.length) {
      const ids = Buffer.alloc(this.#ids.length * 2);
      this.#ids.copy(ids);
      this.#ids = ids;
    }
    this.#ids.set(id.subarray(0, ID_BYTES), this.#count * ID_BYTES);
    this.#count++;
    this.#slots[s] = this.#count;
    if (this.#count * 2 > this.#slots.length) this.#rehash();
    return true;
  }

  /** Every ID, in the order added (views of the set's buffer: valid until the next add). */
  *ids(): IterableIterator<Buffer> {
    for (let i = 0; i < this.#count; i++) yield this.#ids.subarray(i * ID_BYTES, (i + 1) * ID_BYTES);
  }

  #rehash(): void {
    const slots = new Uint32Array(this.#slots.length * 2);
    const mask = slots.length - 1;
    for (let i = 0; i < this.#count; i++) {
      let s = idHash(this.#ids, i * ID_BYTES) & mask;
      while (slots[s] !== 0) s = (s + 1) & mask;
      slots[s] = i + 1;
    }
    this.#slots = slots;
  }
}

/*
 * BlobIndex record layout (REC bytes each, in one growing buffer):
 *   id 32 | pack number u32 | type u8 | flags u8 | state u8 | 1 spare | offset u32 |
 *   stored length u32 | raw length u32 | next copy u32 (record number + 1, 0: none)
 */
const REC = 56;
const R_PACK = 32;
const R_TYPE = 36;
const R_FLAGS = 37;
const R_STATE = 38;
const R_OFFSET = 40;
const R_STORED = 44;
const R_RAW = 48;
const R_NEXT = 52;
/** R_STATE bits: a further copy (not the one the table points at); the first copy with no copy stored. */
const S_COPY = 1;
const S_UNSTORED = 2;

/**
 * The in-memory union of all index objects: blob ID → location. A blob stored twice
 * (two backups racing) keeps every copy, so a reader can fall back to one whose pack
 * exists (`locations`).
 *
 * Kept packed (issue 13): one buffer of fixed-size records and an open-addressing table
 * of record numbers, about 70 bytes per blob and no object or string per blob, so a
 * repository of millions of blobs costs tens of MiB, not hundreds. Objects are made
 * only for what a caller asks for (`get`, `locations`, `entries`).
 */
export class BlobIndex {
  #rec = Buffer.alloc(REC * 256);
  #records = 0;
  #slots = new Uint32Array(512);
  #heads = 0;
  readonly #packIds: Buffer[] = [];
  readonly #packNo = new Map<string, number>();
  readonly packs = new Map<string, { packId: Buffer; sealedLength: number }>();

  #pack(packId: Buffer, sealedLength: number): number {
    const k = idKey(packId);
    let n = this.#packNo.get(k);
    if (n === undefined) {
      n = this.#packIds.length;
      this.#packIds.push(packId);
      this.#packNo.set(k, n);
    }
    // As before: the last index naming a pack gives its length.
    this.packs.set(k, { packId: this.#packIds[n]!, sealedLength });
    return n;
  }

  /** The table slot for the ID at `id[o…o+32)`: the one holding its first copy, or an empty one. */
  #slot(id: Uint8Array, o: number): number {
    const mask = this.#slots.length - 1;
    for (let s = idHash(id, o) & mask; ; s = (s + 1) & mask) {
      const v = this.#slots[s]!;
      if (v === 0 || idEquals(this.#rec, (v - 1) * REC, id, o)) return s;
    }
  }

  /**
   * Room for `more` records (and their first copies in the table) at once: an index's
   * entries are counted before they are added (issue 13: growing by doubling, the 50,000
   * blobs of the small-file tree made 8 copies of the records and 8 rehashes).
   */
  #reserve(more: number): void {
    const records = this.#records + more;
    if (records * REC > this.#rec.length) {
      // The first index's exact size; after it, at least doubled (many indexes: no copy of all records each).
      const b = Buffer.alloc(Math.max(records * REC, this.#records > 0 ? this.#rec.length * 2 : 0));
      this.#rec.copy(b, 0, 0, this.#records * REC);
      this.#rec = b;
    }
    if ((this.#heads + more) * 2 > this.#slots.length) {
      let n = this.#slots.length;
      while ((this.#heads + more) * 2 > n) n *= 2;
      this.#rehash(n);
    }
  }

  #append(src: Uint8Array, o: number, pack: number, type: number, flags: number, offset: number, stored: number, raw: number, state: number): number {
    if ((this.#records + 1) * REC > this.#rec.length) {
      const b = Buffer.alloc(this.#rec.length * 2);
      this.#rec.copy(b);
      this.#rec = b;
    }
    const r = this.#records++;
    const at = r * REC;
    const b = this.#rec;
    // Byte by byte: no view of `src` made per blob.
    for (let i = 0; i < ID_BYTES; i++) b[at + i] = src[o + i]!;
    b.writeUInt32LE(pack, at + R_PACK);
    b[at + R_TYPE] = type;
    b[at + R_FLAGS] = flags;
    b[at + R_STATE] = state;
    b.writeUInt32LE(offset, at + R_OFFSET);
    b.writeUInt32LE(stored, at + R_STORED);
    b.writeUInt32LE(raw, at + R_RAW);
    b.writeUInt32LE(0, at + R_NEXT);
    return r;
  }

  #addEntry(src: Uint8Array, o: number, pack: number, type: number, flags: number, offset: number, stored: number, raw: number): void {
    const s = this.#slot(src, o);
    const v = this.#slots[s]!;
    if (v === 0) {
      this.#slots[s] = this.#append(src, o, pack, type, flags, offset, stored, raw, 0) + 1;
      this.#heads++;
      if (this.#heads * 2 > this.#slots.length) this.#rehash(this.#slots.length * 2);
      return;
    }
    // Another copy: kept once per pack, after the ones known already.
    let r = v - 1;
    for (;;) {
      if (this.#rec.readUInt32LE(r * REC + R_PACK) === pack) return;
      const next = this.#rec.readUInt32LE(r * REC + R_NEXT);
      if (next === 0) break;
      r = next - 1;
    }
    const c = this.#append(src, o, pack, type, flags, offset, stored, raw, S_COPY);
    this.#rec.writeUInt32LE(c + 1, r * REC + R_NEXT);
  }

  #rehash(size: number): void {
    const slots = new Uint32Array(size);
    const mask = slots.length - 1;
    const b = this.#rec;
    for (let r = 0; r < this.#records; r++) {
      if ((b[r * REC + R_STATE]! & S_COPY) !== 0) continue;
      let s = idHash(b, r * REC) & mask;
      while (slots[s] !== 0) s = (s + 1) & mask;
      slots[s] = r + 1;
    }
    this.#slots = slots;
  }

  add(p: IndexedPack): void {
    const pack = this.#pack(p.packId, p.sealedLength);
    for (const e of p.blobs) this.#addEntry(e.id, 0, pack, e.type, e.flags, e.offset, e.storedLength, e.rawLength);
  }

  /** Adds an index's packs as `scanIndex` found them in `plain`, without an object per blob. */
  addScanned(plain: Uint8Array, packs: readonly ScannedPack[]): void {
    const b = Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
    let more = 0;
    for (const p of packs) more += p.count;
    this.#reserve(more);
    for (const p of packs) {
      const pack = this.#pack(p.packId, p.sealedLength);
      for (let j = 0, o = p.start; j < p.count; j++, o += ENTRY_BYTES) {
        this.#addEntry(b, o, pack, b[o + 32]!, b[o + 33]!, b.readUInt32BE(o + 34), b.readUInt32BE(o + 38), b.readUInt32BE(o + 42));
      }
    }
  }

  #location(r: number): BlobLocation {
    const at = r * REC;
    const b = this.#rec;
    return {
      packId: this.#packIds[b.readUInt32LE(at + R_PACK)]!,
      type: b[at + R_TYPE]! as BlobType,
      flags: b[at + R_FLAGS]!,
      offset: b.readUInt32LE(at + R_OFFSET),
      storedLength: b.readUInt32LE(at + R_STORED),
      rawLength: b.readUInt32LE(at + R_RAW),
    };
  }

  /** The record of the blob's first copy, or -1. */
  #first(id: Uint8Array): number {
    if (id.length !== ID_BYTES) return -1;
    return this.#slots[this.#slot(id, 0)]! - 1;
  }

  /** Every indexed copy of a blob (in different packs), the first one first. */
  locations(id: Uint8Array): BlobLocation[] {
    const out: BlobLocation[] = [];
    for (let r = this.#first(id); r >= 0; r = this.#rec.readUInt32LE(r * REC + R_NEXT) - 1) out.push(this.#location(r));
    return out;
  }

  /**
   * Checks the index's claims against the pack listing: a copy in a pack that `exists`
   * rejects is no copy. Blobs are then read from a copy that exists, and `has` is false
   * for a blob with none (so a backup stores it again instead of deduplicating against
   * data that is gone); `get` still returns the missing copy, so errors name its pack.
   */
  preferStored(exists: (packId: Buffer) => boolean): void {
    const there = this.#packIds.map((p) => exists(p));
    const b = this.#rec;
    const slots = this.#slots;
    for (let s = 0; s < slots.length; s++) {
      const v = slots[s]!;
      if (v === 0) continue;
      const first = v - 1;
      b[first * REC + R_STATE] = b[first * REC + R_STATE]! & ~S_UNSTORED;
      if (there[b.readUInt32LE(first * REC + R_PACK)]) continue;
      // The first copy that exists becomes the first; the others keep their order after it.
      let prev = first;
      let r = b.readUInt32LE(first * REC + R_NEXT) - 1;
      while (r >= 0 && !there[b.readUInt32LE(r * REC + R_PACK)]) {
        prev = r;
        r = b.readUInt32LE(r * REC + R_NEXT) - 1;
      }
      if (r < 0) {
        b[first * REC + R_STATE] = b[first * REC + R_STATE]! | S_UNSTORED;
        continue;
      }
      b.writeUInt32LE(b.readUInt32LE(r * REC + R_NEXT), prev * REC + R_NEXT);
      b.writeUInt32LE(first + 1, r * REC + R_NEXT);
      b[first * REC + R_STATE] = S_COPY;
      b[r * REC + R_STATE] = 0;
      slots[s] = r + 1;
    }
  }

  get(id: Uint8Array): BlobLocation | undefined {
    const r = this.#first(id);
    return r < 0 ? undefined : this.#location(r);
  }

  /**
   * The record number of the copy `get` returns for the ID at `id[o…o+32)`, or -1: a
   * number in [0, recordCount) that stands for the blob without an object per blob
   * (restore plans with it, issue 13). Valid until the next add.
   */
  recordOf(id: Uint8Array, o = 0): number {
    if (id.length < o + ID_BYTES) return -1;
    return this.#slots[this.#slot(id, o)]! - 1;
  }
  /** Records held (every copy counted): the bound of `recordOf`. */
  get recordCount(): number {
    return this.#records;
  }
  /** The location of record `r` (from `recordOf`). */
  locationAt(r: number): BlobLocation {
    return this.#location(r);
  }
  /** A copy of record `r`'s blob ID. */
  idAt(r: number): Buffer {
    return Buffer.from(this.#rec.subarray(r * REC, r * REC + ID_BYTES));
  }
  /** Record `r`'s pack as a small number (the same for every record of that pack), without making its location. */
  packNoAt(r: number): number {
    return this.#rec.readUInt32LE(r * REC + R_PACK);
  }
  /** True when the blob is indexed in a pack that exists (after `preferStored`). */
  has(id: Uint8Array): boolean {
    const r = this.#first(id);
    return r >= 0 && (this.#rec[r * REC + R_STATE]! & S_UNSTORED) === 0;
  }
  get size(): number {
    return this.#heads;
  }
  /** Every blob's first copy, as [idKey, location] (an object per blob: for checks and tests, not for backups). */
  *entries(): IterableIterator<[string, BlobLocation]> {
    for (let r = 0; r < this.#records; r++) {
      if ((this.#rec[r * REC + R_STATE]! & S_COPY) !== 0) continue;
      yield [idKey(this.#rec.subarray(r * REC, r * REC + ID_BYTES)), this.#location(r)];
    }
  }
}
