/**
 * Reading many blobs in a known order (issue 13: `coffer dump` of the 50,000-file tree
 * ran at ~8 MB/s). `Repository.readBlob` reads one blob on its own: two ranged reads of
 * its pack (the header, then the segments holding the blob) and a 64 KiB segment
 * decrypted for each 4 KiB file, one file after another. Here:
 *
 *   - a pack's header is read, checked and its key derived once (the last PACKS_KEPT packs);
 *   - each segment is decrypted once and kept (the last SEGMENTS_KEPT), so the small
 *     blobs a backup stored side by side cost one read and one decryption per segment;
 *   - `BlobQueue` fetches the blobs of what comes next ahead of the one being written, a
 *     bounded number of blobs and bytes, so reads overlap the output.
 *
 * Every blob is still checked against its ID (spec §8.1) and every segment authenticated
 * before any of its bytes is used; what fails is named as readBlob names it.
 */
import { CofferError, DecryptionError } from '../errors.js';
import { decodeHeader, HEADER_BYTES, ObjectKind, plainLength, SEGMENT_BYTES, SegmentOpener, TAG_BYTES } from '../crypto/sealed-object.js';
import { hex, packName, type BlobLocation } from './blob.js';
import { decompressBlob, decompressBlobHere } from './compress.js';
import type { BlobIndex } from './index-file.js';
import type { Repository } from './repository.js';
import type { ObjectReader } from '../storage/backend.js';

/** Packs whose header and key are kept (held open, where storage can), and decrypted segments kept (64 KiB each: 4 MiB). */
export const blobReaderLimits = { packs: 16, segments: 64 };
/**
 * Blobs smaller than this are decompressed on the calling thread (a reused context): a
 * small file's trip through the thread pool cost more than zstd's work (~27 µs of the
 * calling thread's time per blob, a fifth of a dump of the 50,000-file tree).
 */
export const DECOMPRESS_HERE_BELOW = 128 * 1024;
/** Blobs fetched ahead of the one being written, and at most about this many of their bytes. */
export const READ_AHEAD_BLOBS = 32;
export const READ_AHEAD_BYTES = 8 * 1024 * 1024;

const SEALED_SEGMENT = SEGMENT_BYTES + TAG_BYTES;

/** A small map that forgets its oldest entry beyond `max` (insertion order; a hit moves to the end). */
class Recent<V> {
  readonly #m = new Map<string, V>();
  constructor(
    private readonly max: number,
    private readonly forgotten?: (v: V) => void,
  ) {}
  get(k: string): V | undefined {
    const v = this.#m.get(k);
    if (v !== undefined) {
      this.#m.delete(k);
      this.#m.set(k, v);
    }
    return v;
  }
  set(k: string, v: V): void {
    this.#m.delete(k);
    this.#m.set(k, v);
    if (this.#m.size > this.max) {
      const [oldest, v0] = this.#m.entries().next().value!;
      this.#m.delete(oldest);
      this.forgotten?.(v0);
    }
  }
  delete(k: string): void {
    this.#m.delete(k);
  }
  values(): IterableIterator<V> {
    return this.#m.values();
  }
}

interface OpenPack {
  name: string;
  sealedLength: number;
  opener: SegmentOpener;
  /** The pack held open for its segments' reads where storage can (a local repository). */
  reader?: ObjectReader;
  /** Reads under way through `reader`; a pack forgotten closes its reader once none is left. */
  users: number;
  forgotten: boolean;
}

function release(pack: OpenPack): void {
  if (!pack.forgotten || pack.users > 0 || !pack.reader) return;
  const r = pack.reader;
  pack.reader = undefined; // closed once: a descriptor number closed twice may be another file's by then
  void r.close();
}

export class BlobReader {
  readonly #packs = new Recent<Promise<OpenPack>>(blobReaderLimits.packs, (p) =>
    p.then(
      (pack) => {
        pack.forgotten = true;
        release(pack);
      },
      () => {},
    ),
  );
  readonly #segments = new Recent<Promise<Buffer>>(blobReaderLimits.segments);
  #index: BlobIndex | undefined;

  constructor(private readonly repo: Repository) {}

  /** Closes the packs held open (reads still under way close theirs when done). Never throws. */
  async close(): Promise<void> {
    for (const p of [...this.#packs.values()]) {
      await p.then(
        (pack) => {
          pack.forgotten = true;
          release(pack);
        },
        () => {},
      );
    }
  }

  /** Where a blob is, as `readBlob` finds it. */
  async locate(id: Uint8Array): Promise<BlobLocation> {
    this.#index ??= await this.repo.index();
    const loc = this.#index.get(id);
    if (!loc) throw new CofferError('missing-object', `blob ${hex(id)} is not in the index`);
    return loc;
  }

  /** One blob's plaintext, checked against its ID. */
  async read(id: Uint8Array, loc?: BlobLocation): Promise<Buffer> {
    const where = loc ?? (await this.locate(id));
    const name = packName(where.packId);
    const label = `${name} (blob ${hex(id).slice(0, 16)})`;
    let stored: Buffer;
    try {
      const pack = await this.#pack(where.packId, name);
      pack.users++;
      try {
        stored = await this.#stored(pack, where);
      } finally {
        pack.users--;
        release(pack);
      }
    } catch (e) {
      if (e instanceof DecryptionError) throw new CofferError('corrupt', `${label} is corrupt: it failed authentication`);
      if (e instanceof CofferError && e.code !== 'missing-object') throw new CofferError(e.code, `${label}: ${e.message}`);
      throw e;
    }
    const raw = where.rawLength < DECOMPRESS_HERE_BELOW ? decompressBlobHere(stored, where.flags, where.rawLength, label) : await decompressBlob(stored, where.flags, where.rawLength, label);
    if (!this.repo.keys.chunkId(raw).equals(Buffer.from(id))) throw new CofferError('corrupt', `${label}: the blob does not match its ID`);
    return raw;
  }

  /** A blob's stored bytes out of its pack's segments (the pack kept open meanwhile: `users`). */
  async #stored(pack: OpenPack, where: BlobLocation): Promise<Buffer> {
    if (where.offset < 0 || where.storedLength < 0 || where.offset + where.storedLength > plainLength(pack.sealedLength)) {
      throw new CofferError('corrupt', `range ${where.offset}+${where.storedLength} lies outside the object`);
    }
    const first = Math.floor(where.offset / SEGMENT_BYTES);
    const last = Math.floor(Math.max(where.offset, where.offset + where.storedLength - 1) / SEGMENT_BYTES);
    const segs: Buffer[] = [];
    for (let i = first; i <= last; i++) segs.push(await this.#segment(pack, where.packId, i));
    const all = segs.length === 1 ? segs[0]! : Buffer.concat(segs);
    const skip = where.offset - first * SEGMENT_BYTES;
    if (skip + where.storedLength > all.length) throw new CofferError('corrupt', 'index points outside the pack');
    return all.subarray(skip, skip + where.storedLength);
  }

  #pack(packId: Buffer, name: string): Promise<OpenPack> {
    const key = packId.toString('latin1');
    let p = this.#packs.get(key);
    if (!p) {
      p = (async () => {
        this.#index ??= await this.repo.index();
        const sealedLength = this.#index.packs.get(key)?.sealedLength ?? (await this.repo.backend.stat(name))?.size;
        if (sealedLength === undefined) throw new CofferError('missing-object', `pack ${name} is missing from the repository at ${this.repo.location}`);
        const header = await this.repo.backend.get(name, { offset: 0, length: HEADER_BYTES });
        const h = decodeHeader(header);
        if (h.kind !== ObjectKind.Pack || Buffer.compare(h.id, packId) !== 0) throw new CofferError('corrupt', 'object holds a different object than its name says');
        const pack: OpenPack = { name, sealedLength, opener: new SegmentOpener(this.repo.keys.objectMaster, header), users: 0, forgotten: false };
        if (this.repo.backend.openReader) pack.reader = await this.repo.backend.openReader(name);
        return pack;
      })();
      this.#packs.set(key, p);
      // A failure is not remembered: the next read tries again. Only this entry is
      // dropped: once evicted, a newer one for the same pack may hold an open reader.
      const mine = p;
      p.catch(() => {
        if (this.#packs.get(key) === mine) this.#packs.delete(key);
      });
    }
    return p;
  }

  #segment(pack: OpenPack, packId: Buffer, i: number): Promise<Buffer> {
    const key = `${packId.toString('latin1')}:${i}`;
    let p = this.#segments.get(key);
    if (!p) {
      p = (async () => {
        const offset = HEADER_BYTES + i * SEALED_SEGMENT;
        const length = Math.min(SEALED_SEGMENT, pack.sealedLength - offset);
        if (length <= TAG_BYTES) throw new CofferError('corrupt', 'index points outside the pack');
        const sealed = pack.reader ? await pack.reader.read({ offset, length }) : await this.repo.backend.get(pack.name, { offset, length });
        if (sealed.length !== length) throw new CofferError('corrupt', 'ranged read returned the wrong size');
        return pack.opener.open(i, offset + length === pack.sealedLength, sealed);
      })();
      this.#segments.set(key, p);
      const mine = p;
      p.catch(() => {
        if (this.#segments.get(key) === mine) this.#segments.delete(key);
      });
    }
    return p;
  }
}

/**
 * Blobs wanted in order (`push`), fetched up to READ_AHEAD_BLOBS / READ_AHEAD_BYTES ahead
 * of the one taken (`next`). Reads that fail are reported when their blob is taken.
 */
export class BlobQueue {
  readonly #waiting: Array<{ id: Buffer; loc: BlobLocation }> = [];
  readonly #started: Array<{ raw: Promise<Buffer>; bytes: number }> = [];
  #startedBytes = 0;

  constructor(private readonly reader: BlobReader) {}

  /** Lets go of the packs held open (BlobReader.close). */
  close(): Promise<void> {
    return this.reader.close();
  }

  /** Blobs queued or in flight, not yet taken. */
  get length(): number {
    return this.#waiting.length + this.#started.length;
  }

  async push(id: Buffer): Promise<void> {
    this.#waiting.push({ id, loc: await this.reader.locate(id) });
    this.#fill();
  }

  /** The next blob's plaintext, in the order pushed. */
  async next(): Promise<Buffer> {
    this.#fill();
    const head = this.#started.shift();
    if (!head) throw new Error('BlobQueue: next() with nothing pushed');
    this.#startedBytes -= head.bytes;
    this.#fill();
    return head.raw;
  }

  #fill(): void {
    while (this.#waiting.length > 0 && this.#started.length < READ_AHEAD_BLOBS && (this.#started.length === 0 || this.#startedBytes < READ_AHEAD_BYTES)) {
      const { id, loc } = this.#waiting.shift()!;
      const raw = this.reader.read(id, loc);
      raw.catch(() => {}); // reported by next()
      this.#started.push({ raw, bytes: loc.rawLength });
      this.#startedBytes += loc.rawLength;
    }
  }
}
