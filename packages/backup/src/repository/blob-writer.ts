/**
 * Stores new blobs: deduplicates against the index and against blobs in flight,
 * compresses where it pays, fills packs, uploads them, and writes index objects for
 * what it stored: at the end, and before that whenever the committed packs not yet
 * indexed describe INDEX_FLUSH_BYTES of records (when the caller allows it, `beforeIndex`).
 * Memory is bounded by the compression and upload windows and that index size, not by
 * the data size or the number of blobs.
 */
import { randomBytes } from 'node:crypto';
import { ObjectKind } from '../crypto/sealed-object.js';
import { BLOB_PADDED, type BlobType, indexName, packName } from './blob.js';
import { BLOB_PAD_TRAILER, PACK_BYTES_MAX, PadMode, blobPadMode, paddedLength } from './padding.js';
import { type CompressionMode, defaultCompression, maybeCompress, maybeCompressInto, zstdBound } from './compress.js';
import { IdSet, decodeIndex, encodeIndexRecords, encodePackRecord, type IndexedPack } from './index-file.js';
import { PackBuilder, packTrailerBytes } from './pack.js';
import type { Repository } from './repository.js';
import type { ObjectWriter } from '../storage/backend.js';
import { Semaphore } from './semaphore.js';

/** Target pack size: packs are sealed and uploaded once they hold this much. */
export const PACK_TARGET_BYTES = 8 * 1024 * 1024;
const COMPRESS_WINDOW = 4; // chunks being compressed at once (≤ 4 × max chunk size in memory)
const UPLOAD_WINDOW = 2; // finished packs being committed (synced) at once
/**
 * Packs alive at once (opened, not yet committed or aborted); a new pack is opened only
 * below this. On a backend that keeps a pack's bytes until its commit (`keepsUntilCommit`:
 * the relay's retry spool, S3's buffered upload) that is the one being filled and the
 * UPLOAD_WINDOW being committed, so it holds at most three packs: producers opened the next
 * pack while finished ones waited for an upload slot, up to 8–10 packs alive (~70 MiB)
 * in a backup of the chat set to the relay (issue 13). A pack streamed to a file costs an
 * open descriptor, not its bytes: there producers may run further ahead of the commits
 * (fdatasync), which bounding them to three cost a local backup of the chat set ~5%.
 */
const PACKS_ALIVE_KEPT = UPLOAD_WINDOW + 1;
const PACKS_ALIVE_STREAMED = 8;
const WRITE_GROUP_BYTES = 1024 * 1024; // small blobs' sealed pieces are written in groups of this size
/** Index records (46 bytes a blob) of committed packs that make an index object during a backup (~91,000 blobs). */
export const INDEX_FLUSH_BYTES = 4 * 1024 * 1024;

/** Tests only: blobs `add` compressed on the calling thread (its `here`). */
export const compressedHereForTesting = { count: 0 };

/** A pack being filled: its sealed pieces stream to storage as they are produced. */
interface OpenPack {
  builder: PackBuilder;
  writer: Promise<ObjectWriter>;
  /** Writes in order; awaited by producers for back-pressure. */
  chain: Promise<void>;
  /** Stored bytes added since the sealed pieces were last queued for writing. */
  unwritten: number;
}

export class BlobWriter {
  readonly #repo: Repository;
  readonly #known: (id: Uint8Array) => boolean;
  /** Every blob stored or being stored by this writer (packed: no string per blob). */
  readonly #inFlight = new IdSet();
  readonly #compress = new Semaphore(COMPRESS_WINDOW);
  readonly #upload = new Semaphore(UPLOAD_WINDOW);
  /** Packs opened and not yet committed or aborted (at most #aliveMax). */
  #alive = 0;
  readonly #aliveMax: number;
  /** Producers waiting for a pack to go so that they may open the next. */
  #roomWaiters: (() => void)[] = [];
  readonly #tasks = new Set<Promise<void>>();
  /**
   * Each finished pack's index record (encodePackRecord): 46 bytes per blob, no object
   * per blob. Kept for finishPacks (prune) only, not by a writer that writes its own
   * index objects (`beforeIndex` set).
   */
  readonly #packs: Buffer[] = [];
  /** Records of committed packs that no index object written yet describes, and their bytes. */
  #unindexed: Buffer[] = [];
  #unindexedBytes = 0;
  /** Index objects written before `finish` (one at a time). */
  #indexing: Promise<void> = Promise.resolve();
  #indexesWritten = 0;
  /**
   * Set by a caller that holds a lock: run just before each index object this writer
   * writes (the caller re-checks its lock there, spec §11). Without it, the one index is
   * written by `finish` alone.
   */
  beforeIndex: (() => Promise<void>) | undefined;
  /** INDEX_FLUSH_BYTES, unless a test says otherwise. */
  indexFlushBytes = INDEX_FLUSH_BYTES;
  #pack: OpenPack | undefined;
  #error: unknown;
  /** zstd's output for blobs compressed on this thread (`add`'s `here`), reused. */
  #scratch: Buffer | undefined;
  addedBytes = 0;
  newBlobs = 0;

  readonly #padding: PadMode;
  readonly #compression: CompressionMode;

  /**
   * `padding`: how blobs, packs and the index are padded (spec §7.3); `compression`:
   * auto|off|max (the repository's default: auto, or off when its config says none).
   */
  constructor(repo: Repository, known: (id: Uint8Array) => boolean, padding: PadMode = repo.config.padding, compression: CompressionMode = defaultCompression(repo.config)) {
    this.#repo = repo;
    this.#known = known;
    this.#padding = padding;
    this.#compression = compression;
    this.#aliveMax = repo.backend.keepsUntilCommit ? PACKS_ALIVE_KEPT : PACKS_ALIVE_STREAMED;
  }

  #track(p: Promise<void>): void {
    const t = p.catch((e) => {
      this.#error ??= e;
    });
    this.#tasks.add(t);
    void t.finally(() => this.#tasks.delete(t));
  }

  #check(): void {
    if (this.#error !== undefined) throw this.#error;
  }

  /**
   * Stores `raw` under `id` unless the repository already has it. Resolves once `raw`
   * has been consumed (deduplicated, or compressed and copied into a pack), so the
   * caller may reuse its buffer; waits while the compression window is full.
   *
   * `here`: compress on this thread, with its one reused zstd context and output buffer,
   * not on libuv's pool (for the backup's tree blobs). On the pool every call makes a
   * fresh context (~4 MB for a 2 MiB blob at level 3) on whichever of its four threads
   * runs it, and glibc keeps what each thread freed in that thread's own malloc arena:
   * after a backup of the 50,000-file tree, four arenas of ~4 MB each held ~3 KB in use
   * (malloc_stats, issue 13). Not with compression max: level 19 would hold this thread
   * for up to a second a blob, and keep its far larger context; those stay on the pool.
   */
  async add(type: BlobType, id: Buffer, raw: Buffer, here = false): Promise<void> {
    here &&= this.#compression !== 'max';
    this.#check();
    if (this.#inFlight.has(id) || this.#known(id)) return;
    this.#inFlight.add(id);
    await this.#compress.take();
    let consumed!: () => void;
    const done = new Promise<void>((r) => (consumed = r));
    this.#track(
      (async () => {
        try {
          if (here) compressedHereForTesting.count++;
          const c = here ? maybeCompressInto(raw, this.#compression, this.#scratchFor(raw.length)) : await maybeCompress(raw, this.#compression);
          // A view of the scratch buffer is sealed into the pack before anything else runs
          // here, unless #place may wait first (for a full pack to be written, padding max;
          // for a pack to be committed, no room for a new one): then a copy.
          const mayWait = this.#padding === PadMode.Max || this.#noRoomForPack();
          const stored = mayWait && c.stored.buffer === this.#scratch?.buffer ? Buffer.from(c.stored) : c.stored;
          const pack = await this.#place(type, id, raw.length, stored, c.flags);
          consumed();
          await pack.chain; // back-pressure: hold the compression slot until written
          if (pack.builder.plainBytes >= PACK_TARGET_BYTES && this.#pack === pack) await this.#flushPack();
        } finally {
          consumed();
          this.#compress.give();
        }
      })(),
    );
    await done;
  }

  #scratchFor(n: number): Buffer {
    const need = zstdBound(n);
    if (!this.#scratch || this.#scratch.length < need) this.#scratch = Buffer.allocUnsafe(need);
    return this.#scratch;
  }

  /**
   * Stores a blob already compressed (or not) by the caller, e.g. a small file's whole
   * content from a chunk worker, unless the repository has it. Pack writes are grouped
   * (WRITE_GROUP_BYTES), so many small blobs cost few write calls. No promise when
   * nothing must be waited for: `stored` has been consumed when it returns. A promise for
   * back-pressure (a pack being sealed, a write group queued behind the previous one),
   * which the caller awaits before adding more; when the blob itself must wait (padding
   * max: a full pack written first; no room for a new pack: one committed first), `stored`
   * is consumed once that promise resolves. Throws what an earlier write failed with.
   */
  addStoredNow(type: BlobType, id: Buffer, rawLength: number, stored: Buffer, flags: number): Promise<void> | undefined {
    this.#check();
    if (this.#inFlight.has(id) || this.#known(id)) return undefined;
    this.#inFlight.add(id);
    if (this.#padding === PadMode.Max || this.#noRoomForPack()) {
      return this.#place(type, id, rawLength, stored, flags, WRITE_GROUP_BYTES).then(
        (pack) => this.#afterStored(pack),
        (e: unknown) => {
          this.#error ??= e;
          throw e;
        },
      );
    }
    let pack: OpenPack;
    try {
      pack = this.#placeNow(type, id, rawLength, stored, flags, WRITE_GROUP_BYTES);
    } catch (e) {
      this.#error ??= e;
      throw e;
    }
    return this.#afterStored(pack);
  }

  #afterStored(pack: OpenPack): Promise<void> | undefined {
    if (pack.builder.plainBytes >= PACK_TARGET_BYTES && this.#pack === pack) return this.#flushPack();
    if (pack.unwritten === 0) return pack.chain; // back-pressure once per group written
    return undefined;
  }

  /**
   * Pads `stored` and appends it to the open pack; its sealed pieces are queued for
   * writing once at least `group` bytes are waiting (0: at once).
   */
  async #place(type: BlobType, id: Buffer, rawLength: number, stored: Buffer, flags: number, group = 0): Promise<OpenPack> {
    const length = this.#storedLength(stored.length);
    for (;;) {
      // Padding max: every pack is PACK_BYTES_MAX; close the open one rather than overflow it.
      if (this.#padding === PadMode.Max && this.#pack && this.#pack.builder.count > 0 && this.#pack.builder.plainBytes + length + packTrailerBytes(this.#pack.builder.count + 1) > PACK_BYTES_MAX) {
        await this.#flushPack();
      } else if (this.#noRoomForPack()) {
        await new Promise<void>((r) => this.#roomWaiters.push(r));
      } else {
        return this.#placeNow(type, id, rawLength, stored, flags, group);
      }
    }
  }

  /** No pack is open and as many as may be alive are being committed: the next blob waits for one to go. */
  #noRoomForPack(): boolean {
    return this.#pack === undefined && this.#alive >= this.#aliveMax;
  }

  /** A pack was committed or aborted: producers waiting may open the next. */
  #packGone(): void {
    this.#alive--;
    const waiters = this.#roomWaiters;
    this.#roomWaiters = [];
    for (const w of waiters) w();
  }

  /** The stored length of a blob of `n` bytes as this writer pads it (spec §7.1). */
  #storedLength(n: number): number {
    return this.#padding === PadMode.Off ? n : paddedLength(n + BLOB_PAD_TRAILER, blobPadMode(this.#padding));
  }

  #placeNow(type: BlobType, id: Buffer, rawLength: number, stored: Buffer, flags: number, group: number): OpenPack {
    const length = this.#storedLength(stored.length);
    if (this.#padding !== PadMode.Off) flags |= BLOB_PADDED;
    const pack = (this.#pack ??= this.#openPack());
    pack.builder.addPadded({ id, type, flags, storedLength: length, rawLength }, stored, length);
    pack.unwritten += length;
    this.addedBytes += length;
    this.newBlobs++;
    if (pack.unwritten >= group) {
      const parts = pack.builder.takeParts();
      pack.unwritten = 0;
      if (parts.length > 0) pack.chain = pack.chain.then(async () => (await pack.writer).write(parts));
    }
    return pack;
  }

  #openPack(): OpenPack {
    const builder = new PackBuilder(this.#repo.keys.objectMaster, randomBytes(32));
    const writer = this.#repo.backend.create(packName(builder.packId));
    writer.catch(() => {}); // surfaces through `chain`
    this.#alive++;
    return { builder, writer, chain: Promise.resolve(), unwritten: 0 };
  }

  async #flushPack(): Promise<void> {
    const pack = this.#pack;
    if (!pack) return;
    this.#pack = undefined;
    const done = pack.builder.finish(this.#padding);
    const record = encodePackRecord(done.packId, done.sealedLength, done.entries);
    if (!this.beforeIndex) this.#packs.push(record);
    await this.#upload.take();
    this.#track(
      (async () => {
        try {
          await pack.chain;
          const w = await pack.writer;
          await w.write(done.parts);
          await w.commit();
          this.#committed(record);
        } catch (e) {
          await (await pack.writer.catch(() => undefined))?.abort();
          throw e;
        } finally {
          this.#upload.give();
          this.#packGone();
        }
      })(),
    );
  }

  /**
   * A pack was committed: once the committed packs not yet indexed reach
   * INDEX_FLUSH_BYTES of records, they get an index object now (after a barrier, spec
   * §12), so the index this backup holds in memory and writes at the end stays bounded.
   */
  #committed(record: Buffer): void {
    this.#unindexed.push(record);
    this.#unindexedBytes += record.length;
    if (!this.beforeIndex || this.#unindexedBytes < this.indexFlushBytes) return;
    const records = this.#takeUnindexed();
    const write = this.#indexing.then(() => this.#writeIndex(records));
    this.#indexing = write.catch(() => {});
    this.#track(write);
  }

  #takeUnindexed(): Buffer[] {
    const records = this.#unindexed;
    this.#unindexed = [];
    this.#unindexedBytes = 0;
    return records;
  }

  /** An index object for committed packs: durable first (their names too), the lock re-checked. */
  async #writeIndex(records: Buffer[]): Promise<void> {
    await this.#repo.backend.sync();
    await this.beforeIndex?.();
    await this.#repo.writeObject(ObjectKind.Index, encodeIndexRecords(records, 2, this.#padding), indexName);
    this.#indexesWritten++;
  }

  async #finishPacks(): Promise<void> {
    while (this.#tasks.size > 0) await Promise.all([...this.#tasks]);
    this.#check();
    await this.#flushPack();
    while (this.#tasks.size > 0) await Promise.all([...this.#tasks]);
    this.#check();
  }

  /** Waits for every blob to be stored; returns the packs written, for an index. */
  async finishPacks(): Promise<IndexedPack[]> {
    if (this.beforeIndex) throw new Error('BlobWriter.finishPacks: this writer writes its own index objects');
    await this.#finishPacks();
    return decodeIndex(encodeIndexRecords(this.#packs, 2, PadMode.Off), 'the new packs');
  }

  /**
   * Waits for every blob to be stored, writes their index, and makes it all durable.
   * `beforeIndex` runs just before the index is written (the caller re-checks its lock).
   */
  async finish(beforeIndex?: () => Promise<void>): Promise<void> {
    await this.#finishPacks();
    await this.#indexing;
    this.#check();
    // Packs durable (their directory entries too) before an index names them: otherwise
    // a crash could leave an index that the next backup deduplicates against while its
    // packs are gone (spec §12).
    await this.#repo.backend.sync();
    const records = this.#takeUnindexed();
    if (records.length > 0) {
      await (beforeIndex ?? this.beforeIndex)?.();
      await this.#repo.writeObject(ObjectKind.Index, encodeIndexRecords(records, 2, this.#padding), indexName);
      this.#indexesWritten++;
    }
    if (this.#indexesWritten > 0) this.#repo.invalidateIndex();
    await this.#repo.backend.sync();
  }

  /** Stops after a failure: waits for work in flight, ignoring its errors. */
  async abort(): Promise<void> {
    while (this.#tasks.size > 0) await Promise.all([...this.#tasks]);
    const pack = this.#pack;
    this.#pack = undefined;
    if (pack) {
      await pack.chain.catch(() => {});
      await (await pack.writer.catch(() => undefined))?.abort();
      this.#packGone();
    }
  }
}
