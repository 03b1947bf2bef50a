/**
 * `coffer copy`: snapshots from one repository into another, whose key may differ
 * (spec §10, `original`). Chunk IDs are keyed per repository (§6.2), so every chunk a
 * copied snapshot needs is read from the source, and stored in the destination under
 * the destination's ID unless the destination has it already (deduplication against
 * everything there, earlier copies included). Each snapshot is finished (packs, index,
 * then the snapshot: §12) before the next starts, so an interrupted copy keeps what it
 * completed, and a second run skips what is already there.
 */
import { CofferError } from '../errors.js';
import { FastCdc } from '../chunker/fastcdc.js';
import { ObjectKind } from '../crypto/sealed-object.js';
import { BlobType, ID_BYTES, hex, snapshotName } from './blob.js';
import { BlobReader } from './blob-reader.js';
import { BlobWriter } from './blob-writer.js';
import { IdSet } from './index-file.js';
import { CHUNK_REGION_BYTES, TreeWriter } from './backup.js';
import { RepositoryLock } from './lock.js';
import type { Repository, SnapshotRecord } from './repository.js';
import { encodeSnapshot, type Snapshot } from './snapshot.js';

export interface CopyProgress {
  /** Snapshots finished (copied or skipped) and to do. */
  snapshots: number;
  totalSnapshots: number;
  /** Bytes of file data gone through (read from the source or found in the destination). */
  bytes: number;
  /** Of the snapshot being copied, when known from its stats. */
  totalBytes?: number;
}

export interface CopyOptions {
  /** Source snapshots to copy (unique hex prefixes, or "latest"); every readable one when absent. */
  snapshots?: string[];
  onProgress?: (p: CopyProgress) => void;
}

export interface CopiedSnapshot {
  /** The source snapshot's ID. */
  source: string;
  /** The new snapshot's ID in the destination. */
  id: string;
  addedBytes: number;
  newBlobs: number;
}

export interface CopyResult {
  copied: CopiedSnapshot[];
  /** Source snapshots the destination already has a copy of (or is the original of). */
  skipped: Array<{ source: string; existing: string }>;
}

/** What a snapshot is a copy of: its `original`, else itself (restic's rule). */
function originOf(r: SnapshotRecord): string {
  return r.snapshot.original ?? hex(r.id);
}

const READ_WINDOW = 4; // source blobs read at once

export async function copySnapshots(src: Repository, dst: Repository, opts: CopyOptions = {}): Promise<CopyResult> {
  if (Buffer.compare(Buffer.from(src.config.repositoryId), Buffer.from(dst.config.repositoryId)) === 0) {
    throw new CofferError('invalid-argument', `the source and the destination are the same repository (${dst.location})`);
  }
  if (dst.config.version < 2) {
    throw new CofferError('unsupported-version', `${dst.location} is a format version ${dst.config.version} repository: copy writes only version 2; copy into a new repository (\`coffer init\`)`);
  }
  const srcLock = await RepositoryLock.acquire(src, false);
  try {
    const dstLock = await RepositoryLock.acquire(dst, false);
    try {
      return await runCopy(src, dst, dstLock, opts);
    } finally {
      await dstLock.release().catch(() => {});
    }
  } finally {
    await srcLock.release().catch(() => {});
  }
}

async function runCopy(src: Repository, dst: Repository, lock: RepositoryLock, opts: CopyOptions): Promise<CopyResult> {
  let wanted: SnapshotRecord[];
  if (opts.snapshots && opts.snapshots.length > 0) {
    wanted = [];
    for (const ref of opts.snapshots) {
      const r = await src.findSnapshot(ref);
      if (!wanted.some((w) => w.id.equals(r.id))) wanted.push(r);
    }
  } else wanted = await src.snapshots();

  // The destination's snapshots by origin; one that can't be read is warned about
  // (repo.onWarning) and can't be matched, so its source may be copied again.
  const present = new Map<string, string>();
  for (const r of await dst.snapshots()) present.set(originOf(r), hex(r.id));

  const result: CopyResult = { copied: [], skipped: [] };
  const index = await dst.index();
  const stored = new IdSet(); // destination blobs written by this run (indexed, durable)
  const files = new Map<string, string>();
  const progress: CopyProgress = { snapshots: 0, totalSnapshots: wanted.length, bytes: 0 };
  for (const rec of wanted) {
    const origin = originOf(rec);
    const existing = present.get(origin);
    if (existing) {
      result.skipped.push({ source: hex(rec.id), existing });
    } else {
      progress.totalBytes = rec.snapshot.stats.bytes;
      opts.onProgress?.(progress);
      const reader = new BlobReader(src);
      let copied: CopiedSnapshot;
      try {
        copied = await copyOne(src, dst, lock, rec, origin, { known: (id) => index.has(id) || stored.has(id), stored, files, reader, progress, onProgress: opts.onProgress });
      } finally {
        await reader.close();
      }
      present.set(origin, copied.id);
      result.copied.push(copied);
    }
    progress.snapshots++;
    delete progress.totalBytes;
    opts.onProgress?.(progress);
  }
  if (result.copied.length > 0) dst.invalidateIndex();
  return result;
}

interface CopyState {
  known: (id: Uint8Array) => boolean;
  stored: IdSet;
  /**
   * A file's source chunk IDs → its destination chunk IDs, both as the IDs' bytes
   * concatenated in a latin1 string (a file is one short string each way, no array and no
   * hex): unchanged files of later snapshots are cut once. The one thing copy keeps per file.
   */
  files: Map<string, string>;
  /**
   * Reads the source's blobs: each pack's key derived once and each 64 KiB segment
   * decrypted once for the small blobs side by side in it. Repository.readBlob read and
   * decrypted one or two whole segments per blob: for the 200,000-file tree, ~20 GB of
   * short-lived buffers whose external memory started a full collection every 64 MiB,
   * each as long as the growing heap (copy time grew as files²).
   */
  reader: BlobReader;
  progress: CopyProgress;
  onProgress: ((p: CopyProgress) => void) | undefined;
}

async function copyOne(src: Repository, dst: Repository, lock: RepositoryLock, rec: SnapshotRecord, origin: string, st: CopyState): Promise<CopiedSnapshot> {
  const writer = new BlobWriter(dst, st.known);
  const written = new IdSet();
  const store = async (type: BlobType, raw: Buffer): Promise<Buffer> => {
    const id = dst.keys.chunkId(raw);
    if (!st.known(id)) written.add(id);
    await writer.add(type, id, raw);
    return id;
  };
  const tree = new TreeWriter(new FastCdc(dst.keys.gearTable, dst.config.chunker), async (raw) => (await store(BlobType.Tree, raw)).toString('hex'));
  const cdc = new FastCdc(dst.keys.gearTable, dst.config.chunker);
  let lastReport = 0;
  let treeIds: string[];
  try {
    for await (const e of src.tree(rec.snapshot)) {
      if (e.type !== 'file') {
        await tree.write(e);
        continue;
      }
      const key = Buffer.from(e.chunks.join(''), 'hex').toString('latin1');
      let ids = st.files.get(key);
      if (ids === undefined) {
        ids = Buffer.concat(await rechunk(st.reader, e.chunks, cdc, (raw) => store(BlobType.Data, raw), (n) => (st.progress.bytes += n))).toString('latin1');
        st.files.set(key, ids);
      }
      const chunks: string[] = [];
      for (let o = 0; o < ids.length; o += ID_BYTES) chunks.push(Buffer.from(ids.slice(o, o + ID_BYTES), 'latin1').toString('hex'));
      await tree.write({ ...e, chunks });
      if (st.onProgress && Date.now() - lastReport > 100) {
        lastReport = Date.now();
        st.onProgress(st.progress);
      }
    }
    treeIds = await tree.finish();
    await writer.finish(() => lock.ensureHeld());
  } catch (e) {
    await writer.abort();
    throw e;
  }
  for (const id of written.ids()) st.stored.add(id);
  const { repairedFrom: _dropped, ...rest } = rec.snapshot as Snapshot & { repairedFrom?: string };
  void _dropped; // an ID in the source repository: meaningless here
  const copy: Snapshot = { ...rest, version: 2, tree: treeIds, original: origin };
  await lock.ensureHeld();
  const id = await dst.writeObject(ObjectKind.Snapshot, encodeSnapshot(copy, dst.config.padding), snapshotName);
  await dst.backend.sync();
  return { source: hex(rec.id), id: hex(id), addedBytes: writer.addedBytes, newBlobs: writer.newBlobs };
}

/**
 * Reads a file's chunks from `src` in order (a few ahead) and cuts the bytes again with
 * the destination's chunker, region by region as backup does (CHUNK_REGION_BYTES,
 * spec §6.1); `store` gets each new chunk. Memory: the read-ahead plus two chunks.
 */
async function rechunk(src: BlobReader, ids: readonly string[], cdc: FastCdc, store: (raw: Buffer) => Promise<Buffer>, onBytes: (n: number) => void): Promise<Buffer[]> {
  const out: Buffer[] = [];
  const ahead: Array<Promise<Buffer>> = [];
  let next = 0;
  const fill = () => {
    while (ahead.length < READ_WINDOW && next < ids.length) {
      const p = src.read(Buffer.from(ids[next++]!, 'hex'));
      p.catch(() => {}); // awaited in order below
      ahead.push(p);
    }
  };
  let buf: Buffer = Buffer.alloc(0);
  let pos = 0; // offset in the file of buf[0]
  const drain = async (eof: boolean) => {
    for (;;) {
      const regionLeft = (Math.floor(pos / CHUNK_REGION_BYTES) + 1) * CHUNK_REGION_BYTES - pos;
      const atRegionEnd = buf.length >= regionLeft;
      const avail = Math.min(buf.length, regionLeft);
      const n = cdc.cut(buf, 0, avail, eof || atRegionEnd);
      if (n <= 0) return;
      out.push(await store(Buffer.from(buf.subarray(0, n))));
      buf = buf.subarray(n);
      pos += n;
    }
  };
  fill();
  while (ahead.length > 0) {
    const raw = await ahead.shift()!;
    fill();
    onBytes(raw.length);
    buf = buf.length === 0 ? raw : Buffer.concat([buf, raw]);
    await drain(false);
  }
  await drain(true);
  return out;
}
