/**
 * `coffer backup`: walks the sources, chunks changed files, stores new blobs, writes
 * the tree listing, the index, and last of all the snapshot (spec §12).
 *
 * Unchanged files (same size, mtime, inode and ctime as in the parent snapshot, with
 * all their blobs still indexed) are not read at all. An unreadable file does not stop
 * the backup: it is reported and left out, and the snapshot says so (`warnings`).
 *
 * Names are handled as bytes throughout (spec §9.2): directories are listed with
 * `encoding: 'buffer'` and every path passed to the file system is a Buffer, so names
 * that are not UTF-8 are backed up exactly. Owners, xattrs, hard links, sparseness,
 * nanosecond times and special files are recorded (format version 2).
 */
import { promises as fs, lstatSync, readdirSync, readlinkSync, type BigIntStats, type Stats } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { basename, resolve } from 'node:path';
import { ChunkPool, FileReadError, SMALL_STATUS, SmallStatus, type ChunkedFile, type OnChunk, type SmallFileBatch, type SmallFileExtra, type SmallFileStat } from '../chunker/chunk-pool.js';
import { FastCdc } from '../chunker/fastcdc.js';
import { ObjectKind } from '../crypto/sealed-object.js';
import { CofferError } from '../errors.js';
import { BlobType, snapshotName } from './blob.js';
import { BlobWriter } from './blob-writer.js';
import { RepositoryLock } from './lock.js';
import type { Repository, SnapshotRecord } from './repository.js';
import { encodeSnapshot, type Snapshot } from './snapshot.js';
import { LineBuffer, decodeEntry, decodeEntryV1, encodeEntryInto, encodeFileLineParts, isUtf8, matchFileLine, type FileEntry, type Owner, type TreeEntry, type Xattr } from './tree.js';
import { OwnerNames, devMajor, devMinor, readXattrsSync, xattrs } from './fs-meta.js';
import { NameList } from './name-list.js';
import { SCAN_AHEAD_FROM_ENTRIES, ScanAhead, ScannedDir, lstatEntry, type EntryStat } from './scan-ahead.js';
import { Semaphore } from './semaphore.js';
import type { PadMode } from './padding.js';

/** Tests: chunks of changed files that came back as IDs alone (onKnown in backup). */
export const knownChunksForTesting = { count: 0 };
import { defaultCompression, type CompressionMode } from './compress.js';

/**
 * Files are chunked in independent regions of this size: FastCDC restarts at every
 * multiple of it (spec §6.1). The region boundaries are fixed, so unchanged data still
 * chunks the same way in every backup, and the regions of one large file (a message
 * database) are cut on both cores at once. Costs about one extra chunk per region when
 * data shifts across a boundary.
 */
export const CHUNK_REGION_BYTES = 64 * 1024 * 1024;
/** A parent snapshot whose files are this large on average holds large files (see walkAndStore's prestart). */
const LARGE_FILES_AVERAGE = 1024 * 1024;

/**
 * Files up to this size (and up to the chunker's minimum chunk size, so always exactly
 * one chunk: no cutting needed) take the small-file path: the workers read, hash and
 * compress them in batches of up to SMALL_BATCH_FILES files or SMALL_BATCH_BYTES bytes,
 * one message each way per batch, at most SMALL_BATCHES_IN_FLIGHT batches at once (two
 * per worker: one being read while the other's answer is taken here).
 * Larger files are chunked one by one, in regions, on both workers.
 */
export const SMALL_FILE_BYTES = 256 * 1024;
const SMALL_BATCH_FILES = 256;
/**
 * Batches of 512 KiB, not 1 MiB: each batch's bytes are held twice (read and stored) by
 * up to SMALL_BATCHES_IN_FLIGHT batches; measured on the 50,000-file tree in one session,
 * peak RSS of a first backup 150–160 → 142–148 MiB, wall and CPU the same within noise.
 */
const SMALL_BATCH_BYTES = 512 * 1024;
const SMALL_BATCHES_IN_FLIGHT = 4;
/** Tree entries waiting for their files to be read before they are written in order. */
const LOOKAHEAD = 1024;
/**
 * A batch that is not full goes to a worker once its first file is this many entries
 * behind the walk: a day's changes are a few files in every directory, and a batch that
 * waited until the listing needed its first file made the walk wait for its read (issue
 * 13: 53 waits, ~250 ms of a 0.85 s second backup of the 50,000-file tree). Sent a
 * quarter of the lookahead early, it is read while the walk goes on.
 */
const SMALL_BATCH_AGE = LOOKAHEAD / 4;

/**
 * The parent's chunk IDs of a file (hex), as `regions` lists of 32-byte IDs, one per
 * region (CHUNK_REGION_BYTES): a region's chunk job carries only those of its own region
 * (issue 13: the whole list with every region of a 100 GB file would be 1,600 copies of
 * 6 MiB). Regions restart the chunking (spec §6.1), so a parent chunk's region is where
 * its offset falls, from the raw lengths `rawLengthOf` gives (the index); content moved
 * across a boundary is only read as a new chunk. A chunk without a length: no lists at
 * all (the workers then compress every chunk, as for a new file). The lists hold only
 * chunks the index has (a chunk's length comes from it; with one region, those without
 * are left out): a worker sends a listed chunk as its ID alone, nothing to store.
 */
export function knownByRegion(chunks: readonly string[], regions: number, rawLengthOf: (id: Buffer) => number | undefined): Array<KnownChunks | undefined> {
  const lists: Array<{ ids: string[]; lengths: number[] }> = Array.from({ length: Math.max(1, regions) }, () => ({ ids: [], lengths: [] }));
  let offset = 0;
  for (const c of chunks) {
    const n = rawLengthOf(Buffer.from(c, 'hex'));
    if (n === undefined) {
      if (regions <= 1) continue;
      return new Array<undefined>(regions).fill(undefined);
    }
    const r = regions <= 1 ? 0 : Math.floor(offset / CHUNK_REGION_BYTES);
    if (r < lists.length) {
      lists[r]!.ids.push(c);
      lists[r]!.lengths.push(n);
    }
    offset += n;
  }
  return lists.map((x) => ({ ids: Buffer.from(x.ids.join(''), 'hex'), lengths: Uint32Array.from(x.lengths) }));
}

/** A region's parent chunks, in file order: their IDs (32 bytes each) and raw lengths. */
export interface KnownChunks {
  ids: Buffer;
  lengths: Uint32Array;
}

export interface BackupProgress {
  files: number;
  bytes: number;
  /** Totals from a quick pre-scan; absent until it finishes. */
  totalFiles?: number;
  totalBytes?: number;
  addedBytes: number;
  path: string;
}

export interface BackupWarning {
  path: string;
  message: string;
}

export interface BackupOptions {
  paths: string[];
  tags?: string[];
  /**
   * The snapshot whose unchanged files are not read again: 'auto' (default) the latest
   * snapshot of the same paths from this host; 'none' none (every file is read, restic's
   * `--force`); or the snapshot given (restic's `--parent`), whatever its paths or host.
   */
  parent?: 'auto' | 'none' | SnapshotRecord;
  onProgress?: (p: BackupProgress) => void;
  onWarning?: (w: BackupWarning) => void;
  now?: () => Date;
  /** The snapshot's host name (restic's `backup --host`), also the one whose latest snapshot is the parent; default this machine's. */
  host?: string;
  /** Padding of this backup's objects (spec §7.3); the repository's default if absent. */
  padding?: PadMode;
  /** Compression of this backup's blobs: auto|off|max; the repository's default if absent. */
  compression?: CompressionMode;
  /**
   * Called after a file was read and before it is checked for changes (tests use it
   * to change a file while it is being backed up).
   */
  afterFileRead?: (path: Buffer) => Promise<void> | void;
  /** Tests: index records of committed packs that make an index object before the end (BlobWriter's INDEX_FLUSH_BYTES). */
  indexFlushBytes?: number;
  /** Tests: false stats every entry on the walk's thread even with a parent (scan-ahead.ts). */
  scanAhead?: boolean;
  /** Tests: entries the walk scans itself before the scan-ahead thread starts (SCAN_AHEAD_FROM_ENTRIES). */
  scanAheadFrom?: number;
  /**
   * File selection (filter.ts `backupExcluder`): true leaves the entry out; an excluded
   * directory is not read. Called for the roots and for every entry below them.
   */
  exclude?: (abs: Buffer, st: EntryStat) => Promise<boolean> | boolean;
  /** Don't descend into directories on other file systems than the roots' (st_dev); the mount point itself is kept, empty. */
  oneFileSystem?: boolean;
  /**
   * restic's `--ignore-inode` / `--ignore-ctime`: a file is unchanged from the parent's
   * when its size and mtime are, whatever its inode number (file systems that don't keep
   * them: FUSE, some network mounts) or its ctime. Without the ctime, a changed xattr is
   * not seen in the ctime either: a file taken as unchanged has its xattrs read again.
   */
  ignoreInode?: boolean;
  ignoreCtime?: boolean;
}

export interface BackupResult {
  id: Buffer;
  snapshot: Snapshot;
  warnings: BackupWarning[];
  /**
   * What this backup read of file contents (not stored in the snapshot): files whose
   * content the chunk workers read, and the bytes they read. An unchanged file taken
   * from the parent snapshot is not read.
   */
  read: { files: number; bytes: number };
  /** Limitations worth knowing that need not mean anything is missing (no exit 3). */
  notes: string[];
}


const SLASH = Buffer.from('/');
/** No xattrs (shared: never added to). */
const NO_XATTRS: Xattr[] = Object.freeze([]) as unknown as Xattr[];
/** How a version 2 line whose path is a JSON string starts. */
const PATH_OPEN = Buffer.from('{"path":"');

/** Whether `b` holds `prefix` at `at` (a byte loop: a native compare per line cost more than the bytes, issue 13). */
function startsWith(b: Uint8Array, at: number, prefix: Uint8Array): boolean {
  if (at + prefix.length > b.length) return false;
  for (let i = 0; i < prefix.length; i++) if (b[at + i] !== prefix[i]) return false;
  return true;
}

/** A file as read: its chunk IDs, the bytes read, and its stat when it was read. */
interface ReadFile {
  chunks: string[];
  size: number;
  st: SmallFileStat;
  /** Its xattrs when a chunk worker read them (the small-file path). */
  xattrs?: Xattr[];
}

/** What every entry of the walk has (spec §9.2), in one shape. */
interface Meta {
  path: string;
  rawPath: Buffer;
  mode: number;
  mtimeNs: bigint;
  owner: Owner;
  xattrs: Xattr[] | undefined;
}

/** An unchanged file: its size and its line from the parent listing (written as it is). */
class SameLine {
  constructor(
    readonly size: number,
    readonly line: Buffer,
  ) {}
}

/** Small files gathered for one worker message; `finished` once its answer was taken. */
class SmallBatch {
  readonly items: FileSlot[] = [];
  readonly done: Promise<void>;
  finished!: () => void;
  constructor() {
    this.done = new Promise((r) => (this.finished = r));
  }
}

/**
 * A changed file's place in the listing queue. A small file's entry arrives with its
 * batch's answer (or later, when the file changed and is read again); `ready()` gives it
 * without a promise once it is there. A large file's slot only carries what its entry
 * is made from (it is queued as the promise of its read).
 */
class FileSlot {
  /** undefined: not yet; null: left out (it could not be read). */
  entry: FileEntry | null | undefined = undefined;
  /** Set instead of `entry` when the file is being read again. */
  later: Promise<FileEntry | null> | undefined = undefined;
  error: unknown = undefined;
  constructor(
    readonly abs: Buffer,
    /** What the read is checked against and the entry takes, not the walk's whole stat (see fileWithParent). */
    readonly st: SmallFileStat,
    readonly meta: Meta,
    readonly sparse: boolean,
    readonly workerXattrs: boolean,
    readonly batch: SmallBatch,
  ) {}
  ready(): FileEntry | null | Promise<FileEntry | null> {
    if (this.error !== undefined) throw this.error;
    if (this.later) return this.later;
    if (this.entry !== undefined) return this.entry;
    return this.settled();
  }
  /** The entry as a promise, once the batch's answer has been taken. */
  async settled(): Promise<FileEntry | null> {
    await this.batch.done;
    if (this.error !== undefined) throw this.error;
    if (this.later) return this.later;
    return this.entry ?? null;
  }
}

/** A path for messages (bytes that are not UTF-8 shown as U+FFFD). */
function show(p: Buffer): string {
  return p.toString('utf8');
}

/**
 * Listing order (spec §9.3): depth first, a directory before its contents, siblings
 * ordered by the bytes of their names. Paths are compared component by component,
 * which is one pass over the bytes: up to the first byte where the two differ they
 * share whole components and a prefix of the next. There, the path whose component ends
 * (at its end or at a '/') sorts first; a path's end sorts before a '/' (a directory
 * before its contents); otherwise the two bytes decide. A byte loop: a native indexOf
 * and compare per component (~0.6 µs a path here) was the largest item of a second
 * backup's walk, which matches each file's path against the parent's (issue 13).
 */
export function compareTreePaths(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  // -2: the path ended; -1: its component ended ('/'); else the byte.
  const x = i < a.length ? a[i]! : -2;
  const y = i < b.length ? b[i]! : -2;
  return x === y ? 0 : (x === 0x2f ? -1 : x) - (y === 0x2f ? -1 : y);
}

/**
 * The parent snapshot's files, read along with the walk: its listing is in the order
 * the walk visits paths, so one pass over it finds every file's previous entry and the
 * listing is never held in memory (a snapshot of any size costs one tree blob at a time).
 *
 * Read blob by blob and kept as bytes: `find` answers without waiting unless it has to
 * load the next blob, and reads only a line's path (no JSON decoding) when the path is
 * a plain JSON string. An unchanged file's line is then recognised by its bytes
 * (`line`, matchFileLine); any other line is decoded (`entry`) as strictly as
 * `Repository.tree` does. The listing's structure rules (§9.3) are not checked here:
 * the parent only gives hints, each checked against the file system and the index, and
 * checking them would keep a set of every path.
 */
/** Tests only: parent tree blobs read and decompressed on the backup's thread (ParentFiles). */
export const parentBlobsReadHereForTesting = { count: 0 };

class ParentFiles {
  readonly #blobs: string[];
  /** A version 2 listing: lines in the form written now (version 1's are only decoded). */
  readonly strict: boolean;
  readonly #decode: (line: string, where: string) => TreeEntry;
  #next = 0;
  /** The read of blob `#next`, started while the one before is used. */
  #ahead: Promise<Buffer> | undefined;
  /** The bytes after the last line end read so far (an entry split between two blobs). */
  #carry: Buffer = Buffer.alloc(0);
  /** Whole lines of the blob being read; the current line starts at `#pos`. */
  #buf: Buffer = Buffer.alloc(0);
  #pos = 0;
  /** The current line's end ('\n'; -1: not looked for yet), path and decoded entry, once known. */
  #end = -1;
  #path: Buffer | undefined;
  #entry: TreeEntry | null | undefined;
  #done = false;
  constructor(
    private readonly repo: Repository,
    snapshot: Snapshot,
    private readonly onDamage: (e: CofferError) => void,
  ) {
    this.#blobs = snapshot.tree;
    this.strict = snapshot.version === 2;
    this.#decode = snapshot.version === 2 ? decodeEntry : decodeEntryV1;
  }
  /**
   * Whether the parent listed `rel` (of any type): then `line` and `entry` give its
   * line and entry until the next call. Call in walk order.
   */
  find(rel: Buffer): boolean | Promise<boolean> {
    for (;;) {
      if (this.#pos >= this.#buf.length) {
        if (this.#done) return false;
        return this.#load().then(() => this.find(rel));
      }
      const p = this.#path ?? this.#pathOfLine();
      if (p === undefined) return false; // damaged: the parent is no longer used
      const c = compareTreePaths(p, rel);
      if (c > 0) return false;
      if (c === 0) return true;
      this.#pos = this.#end + 1;
      this.#end = -1;
      this.#path = undefined;
      this.#entry = undefined;
    }
  }
  /** The line `find` found, its '\n' included. */
  line(): Buffer {
    return this.#buf.subarray(this.#pos, this.#end + 1);
  }
  /** The entry `find` found, if it is a file and decodes. */
  entry(): FileEntry | undefined {
    const e = this.#entry === undefined ? this.#decodeLine() : this.#entry;
    return e && e.type === 'file' ? e : undefined;
  }
  #pathOfLine(): Buffer | undefined {
    const b = this.#buf;
    const s = this.#pos;
    this.#end = b.indexOf(0x0a, s);
    // {"path":" then bytes up to the closing quote, when no escape comes first: the path's bytes.
    if (this.strict && startsWith(b, s, PATH_OPEN)) {
      for (let i = s + PATH_OPEN.length; i < this.#end; i++) {
        const c = b[i];
        if (c === 0x22) return (this.#path = b.subarray(s + PATH_OPEN.length, i));
        if (c === 0x5c) break;
      }
    }
    const e = this.#decodeLine();
    return e ? (this.#path = e.rawPath) : undefined;
  }
  #decodeLine(): TreeEntry | null {
    try {
      this.#entry = this.#decode(this.#buf.toString('utf8', this.#pos, this.#end), 'tree of the parent snapshot');
    } catch (e) {
      this.#damaged(e);
      this.#entry = null;
    }
    return this.#entry;
  }
  async #load(): Promise<void> {
    this.#buf = Buffer.alloc(0);
    this.#pos = 0;
    this.#end = -1;
    this.#path = undefined;
    this.#entry = undefined;
    if (this.#next >= this.#blobs.length) {
      this.#done = true;
      return;
    }
    try {
      const blob = await (this.#ahead ?? this.#read(this.#next));
      this.#next++;
      // The next blob is read and decrypted while this one is used: waiting for each
      // blob when the walk reached its first path held the walk ~3–7 ms a blob (issue 13).
      this.#ahead = this.#next < this.#blobs.length ? this.#read(this.#next) : undefined;
      // Split at the last line end (0x0A is never inside a UTF-8 sequence); one
      // validation per blob, no streaming decoder.
      const bytes = this.#carry.length > 0 ? Buffer.concat([this.#carry, blob]) : blob;
      const end = bytes.lastIndexOf(0x0a) + 1;
      this.#carry = Buffer.from(bytes.subarray(end));
      const whole = bytes.subarray(0, end);
      if (this.strict && !isUtf8(whole)) throw new CofferError('corrupt', 'tree listing is not valid UTF-8');
      this.#buf = whole;
    } catch (e) {
      this.#damaged(e);
    }
  }
  #read(k: number): Promise<Buffer> {
    // Decompressed on this thread: on libuv's pool each blob's fresh context and output
    // (~4 MB) stayed in the malloc arena of whichever pool thread ran it (issue 13).
    parentBlobsReadHereForTesting.count++;
    const p = this.repo.readBlob(Buffer.from(this.#blobs[k]!, 'hex'), undefined, true);
    p.catch(() => {}); // its failure is taken when it is used (#load), or never if the walk ends first
    return p;
  }
  #damaged(e: unknown): void {
    // A damaged parent must not stop new backups: the rest is read again.
    if (!(e instanceof CofferError) || e.code === 'storage') throw e;
    this.#done = true;
    this.#buf = Buffer.alloc(0);
    this.#pos = 0;
    this.#path = undefined;
    this.onDamage(e);
  }
  close(): void {
    this.#done = true;
    this.#ahead = undefined;
    this.#buf = Buffer.alloc(0);
    this.#pos = 0;
  }
}

function errnoMessage(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'ENOENT') return 'vanished during the backup';
  if (code === 'EIO') return 'I/O error';
  return (e as Error)?.message ?? String(e);
}

/** The walk continues from a fresh stack every this many directory levels (visitDir). */
const DEPTH_YIELD = 256;

/** Listing text gathered beyond a maximal blob before tree blobs are cut. */
const TREE_DRAIN_BYTES = 1024 * 1024;

/**
 * Listing bytes handed to `store` and not yet stored (compressed and placed in a pack):
 * the walk goes on while they compress on libuv's pool. Awaiting each blob's store held
 * the walk for ~75 ms of a 0.85 s second backup of the 50,000-file tree (22 blobs, 14 MB;
 * issue 13). Copies, so bounded: at most this much plus one blob.
 */
const TREE_STORE_AHEAD_BYTES = 4 * 1024 * 1024;

/** Splits a growing text stream into content-defined Tree blobs. */
export class TreeWriter {
  /** Listing bytes not yet cut into blobs: entries are encoded straight into it. */
  readonly #out = new LineBuffer();
  /** Each blob's ID once stored, in listing order. */
  readonly #ids: Array<Promise<string>> = [];
  /** Blobs being stored, oldest first, with their sizes. */
  readonly #storing: Array<{ id: Promise<string>; bytes: number }> = [];
  #storingBytes = 0;
  /** Entries written so far. */
  entries = 0;
  constructor(
    private readonly cdc: FastCdc,
    private readonly store: (raw: Buffer) => Promise<string>,
  ) {}
  /** Adds an entry; returns a promise only when tree blobs were cut and are being stored. */
  write(e: TreeEntry): Promise<void> | undefined {
    this.entries++;
    encodeEntryInto(this.#out, e);
    return this.#written();
  }
  /** Adds an entry's line as bytes (an unchanged file's, from the parent listing). */
  writeLine(line: Buffer): Promise<void> | undefined {
    this.entries++;
    this.#out.raw(line);
    return this.#written();
  }
  #written(): Promise<void> | undefined {
    // Cut as soon as a whole maximal blob could be: the cut points depend on the bytes
    // only (cut waits for more when it must), and less text waits in memory.
    if (this.#out.used >= this.cdc.maxSize + TREE_DRAIN_BYTES) return this.#drain(false);
    return undefined;
  }
  async #drain(eof: boolean): Promise<void> {
    const out = this.#out;
    let start = 0;
    while (start < out.used) {
      const n = this.cdc.cut(out.buf, start, out.used, eof);
      if (n <= 0) break;
      // Copied: the buffer is reused for the entries that follow.
      const id = this.store(Buffer.from(out.buf.subarray(start, start + n)));
      // A failure surfaces from `finish`, or from the drain that waits for it below.
      id.catch(() => {});
      this.#ids.push(id);
      this.#storing.push({ id, bytes: n });
      this.#storingBytes += n;
      start += n;
      while (this.#storingBytes > TREE_STORE_AHEAD_BYTES) {
        const first = this.#storing.shift()!;
        this.#storingBytes -= first.bytes;
        await first.id;
      }
    }
    out.buf.copy(out.buf, 0, start, out.used);
    out.used -= start;
  }
  async finish(): Promise<string[]> {
    await this.#drain(true);
    return Promise.all(this.#ids);
  }
}

export async function backup(repo: Repository, opts: BackupOptions): Promise<BackupResult> {
  if (opts.paths.length === 0) throw new CofferError('invalid-argument', 'nothing to back up: give at least one path');
  if (repo.config.version < 2) {
    throw new CofferError(
      'unsupported-version',
      `${repo.location} is a format version ${repo.config.version} repository: this coffer restores from it, checks and prunes it, but writes only version 2; back up into a new repository (\`coffer init\`)`,
    );
  }
  const roots: Array<{ abs: string; name: string; st: Stats }> = [];
  for (const p of opts.paths) {
    const abs = resolve(p);
    let st: Stats;
    try {
      st = await fs.lstat(abs);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new CofferError('not-found', code === 'ENOENT' ? `${p}: no such file or directory` : `${p}: ${errnoMessage(e)}`);
    }
    const name = basename(abs) || 'root';
    if (roots.some((r) => r.name === name)) {
      throw new CofferError('invalid-argument', `two of the paths are named '${name}': back them up in separate snapshots`);
    }
    roots.push({ abs, name, st });
  }
  // Siblings, roots included, are ordered by the bytes of their names (spec §9.3).
  roots.sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));

  // A worker thread takes 50–70 ms to start. Started when the walk met its first file to
  // read, the first chunk worker made the walk wait for it (issue 13: ~65 ms of a 0.75 s
  // second backup of the 50,000-file tree); started here, it comes up while the lock is
  // taken (several round trips to a relay) and the index and the parent load. A backup
  // where nothing changed pays it on the other core; one that finds the repository
  // locked closes it again.
  const pool = new ChunkPool(ChunkPool.setupFor(repo.keys.gearTable, repo.keys.chunkIdSpec, repo.config.chunker, opts.compression ?? defaultCompression(repo.config)));
  pool.prestart();
  const threads: BackupThreads = { pool };
  try {
    const lock = await RepositoryLock.acquire(repo, false);
    try {
      return await walkAndStore(repo, lock, opts, roots, threads);
    } finally {
      await lock.release().catch(() => {});
    }
  } finally {
    threads.scanner?.close();
    await pool.close();
  }
}

/**
 * A backup allocates fast and keeps little (a window of entries, packed indexes): with
 * V8's defaults the young generation grows to 3 × 16 MiB and the old generation to
 * several times what survives, so peak RSS was mostly garbage (issue 13: 100 MiB of
 * heap for 15 MiB live at 50,000 files). A young generation that stays at its initial
 * size and an old generation that grows by 20% per collection cost no measurable CPU on
 * the 50,000-file tree and cut its peak RSS by about a third. Process-wide V8 settings,
 * set once; only the growth policy changes, never a limit.
 */
let heapTuned = false;
/** For a process that runs backups (the CLI calls it): the library itself never changes process-wide settings. */
export function tuneHeapForBackup(): void {
  if (heapTuned || process.env.COFFER_V8_DEFAULT_HEAP === '1') return;
  heapTuned = true;
  setFlagsFromString('--semi-space-growth-factor=1');
  setFlagsFromString('--heap-growing-percent=20');
}

/** The backup's worker threads, closed when it ends however it ends. */
interface BackupThreads {
  pool: ChunkPool;
  scanner?: ScanAhead;
}

async function walkAndStore(
  repo: Repository,
  lock: RepositoryLock,
  opts: BackupOptions,
  roots: Array<{ abs: string; name: string; st: Stats }>,
  threads: BackupThreads,
): Promise<BackupResult> {
  const absPaths = roots.map((r) => r.abs);
  const host = opts.host ?? hostname();
  let parentFiles: ParentFiles | undefined;
  let parentTotals: { files: number; bytes: number } | undefined;
  if (opts.parent !== 'none') {
    const parent = opts.parent === undefined || opts.parent === 'auto' ? await findParent(repo, host, absPaths) : opts.parent;
    if (parent) {
      parentTotals = { files: parent.snapshot.stats.files, bytes: parent.snapshot.stats.bytes };
      // Large files (a message database, media): a changed one is chunked in regions on
      // both workers, and the second worker, started on demand, came up after the walk
      // had reached it. Started with the first, it comes up while the parent and the index load.
      if (parentTotals.bytes >= 2 * CHUNK_REGION_BYTES && parentTotals.bytes >= LARGE_FILES_AVERAGE * Math.max(1, parentTotals.files)) threads.pool.prestart(2);
      parentFiles = new ParentFiles(repo, parent.snapshot, (e) =>
        repo.onWarning(`the previous snapshot's file list can't be read (${e.message}); the files after that point are read again`),
      );
    }
  }

  const rootDevs = new Set<bigint>();
  /**
   * With a parent, most files are unchanged and the walk's lstat per entry is most of
   * this thread's work: a thread scans directories ahead of the walk. A first backup's
   * both cores are busy reading files, so it stats here. When the parent had many
   * entries, the thread starts now, while the index and owners load (it takes 50–70 ms).
   */
  const scanner = (threads.scanner = parentFiles && opts.scanAhead !== false ? new ScanAhead((_dir, st) => opts.oneFileSystem !== true || rootDevs.has(st.dev), opts.scanAheadFrom) : undefined);
  if (scanner && opts.scanAheadFrom === undefined && parentTotals && parentTotals.files >= SCAN_AHEAD_FROM_ENTRIES) scanner.prestart();
  // Loaded after the parent is chosen (which does not need it), so the thread starts first.
  const index = await repo.index();

  const padding = opts.padding ?? repo.config.padding;
  const writer = new BlobWriter(repo, (id) => index.has(id), padding, opts.compression);
  // Index objects go out as the backup goes once there are many new blobs, each after the lock is checked.
  writer.beforeIndex = () => lock.ensureHeld();
  if (opts.indexFlushBytes !== undefined) writer.indexFlushBytes = opts.indexFlushBytes;
  const cdc = new FastCdc(repo.keys.gearTable, repo.config.chunker);
  const tree = new TreeWriter(cdc, async (raw) => {
    const id = repo.keys.chunkId(raw);
    await writer.add(BlobType.Tree, id, raw, true);
    return id.toString('hex');
  });
  const warnings: BackupWarning[] = [];
  const warn = (path: string, message: string) => {
    const w = { path, message };
    warnings.push(w);
    opts.onWarning?.(w);
  };
  const progress: BackupProgress = { files: 0, bytes: 0, addedBytes: 0, path: '' };
  /** The current path, turned into text only when progress is reported. */
  let current: Buffer = Buffer.alloc(0);
  const stats = { files: 0, dirs: 0, bytes: 0 };
  const read = { files: 0, bytes: 0 };
  let lastReport = 0;
  const report = (force = false) => {
    if (!opts.onProgress) return;
    const t = Date.now();
    if (!force && t - lastReport < 100) return;
    lastReport = t;
    progress.path = current.toString('utf8');
    progress.addedBytes = writer.addedBytes;
    // The parent's totals are an estimate: never show more done than the total.
    if (progress.totalBytes !== undefined && progress.bytes > progress.totalBytes) progress.totalBytes = progress.bytes;
    if (progress.totalFiles !== undefined && progress.files > progress.totalFiles) progress.totalFiles = progress.files;
    opts.onProgress(progress);
  };
  // Totals for the progress display: the parent snapshot's (a good guess that costs
  // nothing), or else counted beside the backup, not at all when it is over within a second.
  if (parentTotals) {
    progress.totalFiles = parentTotals.files;
    progress.totalBytes = parentTotals.bytes;
  }
  const stopPrescan = opts.onProgress && !parentTotals
    ? prescan(roots.map((r) => Buffer.from(r.abs, 'utf8')), opts.exclude, opts.oneFileSystem === true, (t) => {
        progress.totalFiles = t.files;
        progress.totalBytes = t.bytes;
      })
    : () => {};

  const workers = (): ChunkPool => threads.pool;
  const smallLimit = Math.min(SMALL_FILE_BYTES, repo.config.chunker.minSize);
  const smallLimitBig = BigInt(smallLimit);
  const onChunk: OnChunk = async (id, data, stored) => {
    if (stored) {
      progress.bytes += stored.rawLength;
      await writer.addStoredNow(BlobType.Data, id, stored.rawLength, data, stored.flags);
    } else {
      progress.bytes += data.length;
      await writer.add(BlobType.Data, id, data);
    }
    report();
  };
  /**
   * A chunk of a changed file found again among its parent chunks: the worker sent its ID
   * alone, for the repository has it (knownByRegion lists indexed chunks only, and a
   * backup's index only grows). Checked all the same: a blob missing here would be a
   * snapshot naming data that is not stored.
   */
  const onKnown = (id: Buffer, rawLength: number) => {
    if (!index.has(id)) throw new Error(`chunk ${id.toString('hex').slice(0, 16)} was listed as stored but is not in the index`);
    knownChunksForTesting.count++;
    progress.bytes += rawLength;
    report();
  };
  /**
   * The workers compress the chunks, but those among `known` (the chunk IDs of the file
   * in the parent that the index has), which come as their IDs alone (onKnown).
   */
  const chunkFile = async (abs: Buffer, size: number, known: readonly string[] | undefined): Promise<{ chunks: string[]; size: number } | null> => {
    try {
      // Large files are cut in independent regions so both workers share them (spec §6.1).
      const count = Math.max(1, Math.ceil(size / CHUNK_REGION_BYTES));
      const knownIn = known ? knownByRegion(known, count, (id) => index.get(id)?.rawLength) : [];
      const regions: Array<Promise<ChunkedFile>> = [];
      for (let start = 0, r = 0; start === 0 || start < size; start += CHUNK_REGION_BYTES, r++) {
        const last = start + CHUNK_REGION_BYTES >= size;
        const end = last ? Number.MAX_SAFE_INTEGER : start + CHUNK_REGION_BYTES;
        const k = knownIn[Math.min(r, count - 1)];
        regions.push(workers().chunkFile(abs, onChunk, { start, end, compress: true, ...(k ? { known: k.ids, knownLengths: k.lengths, onKnown } : {}), bytes: Math.min(size, end) - start }));
      }
      const parts = await Promise.all(regions);
      read.files++;
      for (const r of parts) read.bytes += r.size;
      return { chunks: parts.flatMap((r) => r.ids.map((id) => id.toString('hex'))), size: parts.reduce((a, r) => a + r.size, 0) };
    } catch (e) {
      if (!(e instanceof FileReadError)) throw e;
      warn(show(abs), `cannot read: ${errnoMessage(e)}`);
      return null;
    }
  };
  /**
   * Reads a file, then stats it again: if its size, mtime or ctime moved, or the bytes
   * read differ from its size, it changed while being read. It is read once more; if it
   * changes again, what was read is kept and a warning says it may be inconsistent.
   */
  const readStable = async (abs: Buffer, st: SmallFileStat, first = 1, known?: readonly string[]): Promise<ReadFile | null> => {
    for (let attempt = first; ; attempt++) {
      const got = await chunkFile(abs, Number(st.size), known);
      if (!got) return null;
      await opts.afterFileRead?.(abs);
      const after = await fs.lstat(abs, { bigint: true }).catch(() => null);
      const same = after !== null && after.size === st.size && after.mtimeNs === st.mtimeNs && after.ctimeNs === st.ctimeNs && BigInt(got.size) === st.size;
      if (same) return { ...got, st };
      if (attempt === 2 || after === null || !after.isFile()) {
        warn(show(abs), 'changed while it was being read (twice): stored as read, which may mix old and new contents');
        return { ...got, st: after && after.isFile() ? after : st };
      }
      st = after;
    }
  };

  /**
   * The small-file path: files wait in `batch` until it is full, then go to a worker
   * together. The worker reads each, stats it again and reads its xattrs. The batch's
   * answer is then taken in one synchronous pass: each file is checked as readStable
   * does (a file that moved is read again the ordinary way), its blob stored and its
   * entry put in its slot in the listing queue. No promise per file.
   */
  let batch: SmallBatch = new SmallBatch();
  let batchBytes = 0;
  /** Entries emitted and written so far, and the first entry that waits in `batch`. */
  let emitted = 0;
  let written = 0;
  let batchFirst = Infinity;
  const batchSlots = new Semaphore(SMALL_BATCHES_IN_FLIGHT);
  const batchesOut = new Set<Promise<void>>();
  /** A file's entry once read (null: it could not be read). */
  const entryOfRead = (slot: FileSlot, got: ReadFile | null): FileEntry | null => {
    if (!got) return null;
    // A small file read again the ordinary way (it changed meanwhile) has no xattrs from a worker.
    const list = slot.workerXattrs ? (got.xattrs ?? readXattrs(slot.abs)) : slot.meta.xattrs;
    return fileEntry(slot.meta, list, got.st.mtimeNs, got.size, got.chunks, slot.sparse, String(got.st.ino), String(got.st.ctimeNs));
  };
  /** Back-pressure from the blob writer, awaited before the next file of a batch is stored. */
  let pressure: Promise<void> | undefined;
  /** One file of a batch's answer: its entry, or a promise when it must be read again. */
  const finishSmall = (it: FileSlot, b: SmallFileBatch, k: number): FileEntry | null | Promise<FileEntry | null> => {
    const s = SMALL_STATUS * k;
    const extra = b.extras.get(k);
    if (b.status[s + SmallStatus.Ok] !== 1) {
      warn(show(it.abs), `cannot read: ${errnoMessage(extra?.error ?? { message: 'no answer for it' })}`);
      return null;
    }
    const size = b.status[s + SmallStatus.Size]!;
    if (opts.afterFileRead) return finishHooked(it, b, k, size);
    const st = it.st;
    // Compared in place: a stat object per file only for a file that changed.
    const hasAfter = b.status[s + SmallStatus.HasAfter] === 1;
    const a = 4 * k;
    // Times compared as the worker packed them (their low 64 bits): a time after 2262
    // (beyond 2^63 ns) did not survive the signed reading and looked changed.
    const same = hasAfter && b.after[a]! === st.size && b.after[a + 1]! === BigInt.asUintN(64, st.mtimeNs) && b.after[a + 2]! === BigInt.asUintN(64, st.ctimeNs) && size === Number(st.size);
    if (!same) {
      // Changed while read: a second, ordinary read (it may have grown past the small size).
      if (hasAfter) {
        const after: SmallFileStat = { size: b.after[a]!, mtimeNs: BigInt.asIntN(64, b.after[a + 1]!), ctimeNs: BigInt.asIntN(64, b.after[a + 2]!), ino: b.after[a + 3]! };
        return readStable(it.abs, after, 2).then((got) => entryOfRead(it, got));
      }
      warn(show(it.abs), 'changed while it was being read (twice): stored as read, which may mix old and new contents');
    }
    return entryOfRead(it, stored(it, b, k, size, extra));
  };
  /** Counts a small file read as it was and stores its blob (sets `pressure`). */
  const stored = (it: FileSlot, b: SmallFileBatch, k: number, size: number, extra: SmallFileExtra | undefined): ReadFile => {
    if (extra?.xattrError) warn(show(it.abs), `cannot read extended attributes: ${errnoMessage(extra.xattrError)}`);
    const xattrs = extra?.xattrs?.map((x) => ({ name: x.name, value: Buffer.from(x.value.buffer, x.value.byteOffset, x.value.byteLength) })) ?? NO_XATTRS;
    read.files++;
    read.bytes += size;
    progress.bytes += size;
    if (size === 0) return { chunks: [], size: 0, st: it.st, xattrs };
    const s = SMALL_STATUS * k;
    const id = Buffer.from(b.ids.subarray(32 * k, 32 * k + 32));
    const off = b.status[s + SmallStatus.Offset]!;
    pressure = writer.addStoredNow(BlobType.Data, id, size, b.data.subarray(off, off + b.status[s + SmallStatus.Length]!), b.status[s + SmallStatus.Flags]!);
    report();
    return { chunks: [id.toString('hex')], size, st: it.st, xattrs };
  };
  /** With the test hook, which runs between the read and the second stat: that stat is taken here. */
  const finishHooked = async (it: FileSlot, b: SmallFileBatch, k: number, size: number): Promise<FileEntry | null> => {
    await opts.afterFileRead!(it.abs);
    let after: BigIntStats | null;
    try {
      after = lstatSync(it.abs, { bigint: true });
      if (!after.isFile()) after = null;
    } catch {
      after = null;
    }
    const st = it.st;
    const same = after !== null && after.size === st.size && after.mtimeNs === st.mtimeNs && after.ctimeNs === st.ctimeNs && BigInt(size) === st.size;
    if (!same) {
      if (after !== null) return entryOfRead(it, await readStable(it.abs, after, 2));
      warn(show(it.abs), 'changed while it was being read (twice): stored as read, which may mix old and new contents');
    }
    const got = stored(it, b, k, size, b.extras.get(k));
    if (pressure) await pressure;
    pressure = undefined;
    return entryOfRead(it, got);
  };
  /** Whether the workers read small files' xattrs (else `meta` does, on this thread). */
  const xattrsInWorkers = xattrs() !== null;
  const submitBatch = async () => {
    if (batch.items.length === 0) return;
    const sent = batch;
    batch = new SmallBatch();
    batchBytes = 0;
    batchFirst = Infinity;
    await batchSlots.take();
    const out = (async () => {
      try {
        const items = sent.items;
        const b = await workers().chunkBatch(
          items.map((i) => i.abs),
          items.map((i) => Number(i.st.size)),
          xattrsInWorkers,
        );
        for (let k = 0; k < items.length; k++) {
          const it = items[k]!;
          try {
            const e = finishSmall(it, b, k);
            if (e instanceof Promise) it.later = e;
            else it.entry = e;
            if (pressure) {
              const p = pressure;
              pressure = undefined;
              await p;
            }
          } catch (e) {
            it.error = e;
          }
        }
        // b.data goes back to its worker once no blob refers to it. The blob writer copies
        // what it is given (sealed into the pack's pieces) by the time addStoredNow returns,
        // or by the time its promise does (padding max; no room for a new pack until one is
        // committed), and that promise (`pressure`) was awaited above for every file stored
        // by this loop. A file read again (readStable) does not use b; one under the test
        // hook (finishHooked) stores from b later, so the buffer waits for those.
        if (opts.afterFileRead) void Promise.allSettled(items.map((it) => it.later)).then(b.release);
        else b.release();
      } catch (e) {
        for (const it of sent.items) it.error ??= e;
      } finally {
        batchSlots.give();
        sent.finished();
      }
    })();
    batchesOut.add(out);
    void out.finally(() => batchesOut.delete(out));
  };

  // Files are read by the workers ahead of the listing; their tree entries are written
  // in walk order, so the listing is the same whatever finishes first. An entry known at
  // once (a directory, an unchanged file) is queued as itself, not as a promise, and the
  // queue is drained without waiting unless something in it is not ready: no promise
  // and no await per unchanged file.
  type Pending = TreeEntry | null | Promise<TreeEntry | null> | FileSlot | SameLine;
  let queue: Pending[] = [];
  let qHead = 0;
  const queued = () => queue.length - qHead;
  const countFile = (size: number) => {
    stats.files++;
    stats.bytes += size;
    progress.files++;
    report();
  };
  const writeEntry = (e: TreeEntry | null): Promise<void> | undefined => {
    if (!e) return undefined;
    if (e.type === 'file') countFile(e.size);
    return tree.write(e);
  };
  const writeHead = (): Promise<void> | undefined => {
    written++;
    const q = queue[qHead];
    queue[qHead++] = null;
    if (qHead >= 4096 && qHead * 2 >= queue.length) {
      queue = queue.slice(qHead);
      qHead = 0;
    }
    if (q instanceof SameLine) {
      countFile(q.size);
      return tree.writeLine(q.line);
    }
    if (q instanceof FileSlot) {
      const e = q.ready();
      return e instanceof Promise ? e.then(writeEntry) : writeEntry(e);
    }
    return q instanceof Promise ? q.then(writeEntry) : writeEntry(q!);
  };
  /** Writes entries until at most LOOKAHEAD wait; a promise only when it had to wait. */
  const drainQueue = (): Promise<void> | undefined => {
    while (queued() > LOOKAHEAD) {
      if (written >= batchFirst) return submitBatch().then(drainQueueAsync); // the head waits in the batch being filled
      const w = writeHead();
      if (w) return w.then(drainQueueAsync);
    }
    return undefined;
  };
  const drainQueueAsync = async (): Promise<void> => {
    for (let w = drainQueue(); w; w = drainQueue()) await w;
  };
  const emit = (e: Pending): Promise<void> | undefined => {
    queue.push(e);
    emitted++;
    if (batch.items.length >= SMALL_BATCH_FILES || batchBytes >= SMALL_BATCH_BYTES || emitted - batchFirst >= SMALL_BATCH_AGE) return submitBatch().then(drainQueueAsync);
    return drainQueue();
  };

  const owners = new OwnerNames();
  await owners.load();
  /** The owner of the last entry `meta` made (uid -1: none yet). */
  let lastOwner: Owner = { uid: -1, gid: -1 };
  /** "dev:ino" → the first name's path and its (future) entry: null if it could not be read. */
  const hardlinks = new Map<string, { path: Buffer; entry: Promise<TreeEntry | null> }>();
  let xattrNameWarnings = 0;
  const readXattrs = (abs: Buffer): Xattr[] => {
    try {
      return readXattrsSync(abs.toString('utf8'));
    } catch (e) {
      warn(show(abs), `cannot read extended attributes: ${errnoMessage(e)}`);
      return [];
    }
  };
  /**
   * The metadata of an entry. `known`: its xattrs when they are known already (an
   * unchanged file's, from the parent) or will be read elsewhere (by a chunk worker).
   */
  const meta = (abs: Buffer, rel: Buffer, st: EntryStat, type: TreeEntry['type'], known?: Xattr[]) => {
    const uid = Number(st.uid);
    const gid = Number(st.gid);
    // Most entries have the owner of the one before: its object is shared (never changed once made).
    let owner = lastOwner;
    if (owner.uid !== uid || owner.gid !== gid) {
      owner = { uid, gid };
      const user = owners.userOf(uid);
      const group = owners.groupOf(gid);
      if (user !== undefined) owner.user = user;
      if (group !== undefined) owner.group = group;
      lastOwner = owner;
    }
    let list: Xattr[] = known ?? NO_XATTRS;
    // Sockets, FIFOs and devices: their xattrs would be those of the node, rarely set; skipped.
    if (!known && (type === 'file' || type === 'dir' || type === 'symlink')) {
      if (!isUtf8(abs)) {
        if (xattrs()) xattrNameWarnings++;
      } else {
        list = readXattrs(abs);
      }
    }
    const m: Meta = { path: rel.toString('utf8'), rawPath: rel, mode: Number(st.mode) & 0o7777, mtimeNs: st.mtimeNs, owner, xattrs: list.length > 0 ? list : undefined };
    return m;
  };
  /**
   * A file's entry, built in one literal of one shape: spreading `meta`'s object with
   * optional members made objects of many shapes (a hidden class each), the costliest
   * line of a small-file backup's main thread (issue 13).
   */
  const fileEntry = (m: Meta, xattrs: Xattr[] | undefined, mtimeNs: bigint, size: number, chunks: string[], sparse: boolean, inode: string, ctime: string): FileEntry => ({
    path: m.path,
    rawPath: m.rawPath,
    type: 'file',
    mode: m.mode,
    mtimeNs,
    owner: m.owner,
    xattrs: xattrs !== undefined && xattrs.length > 0 ? xattrs : undefined,
    size,
    chunks,
    sparse: sparse || undefined,
    inode,
    ctime,
  });

  /** Visits one entry: a promise only when something had to be waited for. */
  const visit = (abs: Buffer, rel: Buffer, st: EntryStat): Promise<void> | undefined => {
    current = rel;
    if (opts.exclude) {
      const x = opts.exclude(abs, st);
      if (x instanceof Promise) return x.then((out) => (out ? undefined : visitIncluded(abs, rel, st)));
      if (x) return undefined;
    }
    return visitIncluded(abs, rel, st);
  };
  /** Directories the walk is inside (visitDir calls not yet returned). */
  let depth = 0;
  const visitDir = async (abs: Buffer, rel: Buffer, st: EntryStat): Promise<void> => {
    depth++;
    try {
      // Every DEPTH_YIELD levels the walk goes on from a fresh stack: a directory whose
      // visit completes synchronously recurses three calls deeper per level, and a tree
      // ~3,000 levels deep overflowed the stack (RangeError, no snapshot).
      if (depth % DEPTH_YIELD === 0) await undefined;
      await visitDirHere(abs, rel, st);
    } finally {
      depth--;
    }
  };
  const visitDirHere = async (abs: Buffer, rel: Buffer, st: EntryStat): Promise<void> => {
    // --one-file-system: a mount point is kept as an empty directory (as restic does).
    const mountPoint = opts.oneFileSystem === true && !rootDevs.has(st.dev);
    const scanned = scanner && !mountPoint ? await scanner.take(abs) : null;
    let names: NameList | ScannedDir;
    try {
      if (scanned instanceof Error) throw scanned;
      names = scanned ?? new NameList(mountPoint ? null : abs);
    } catch (e) {
      warn(show(abs), `cannot list directory: ${errnoMessage(e)}`);
      return;
    }
    stats.dirs++;
    const m = meta(abs, rel, st, 'dir');
    const w = emit({ path: m.path, rawPath: m.rawPath, type: 'dir', mode: m.mode, mtimeNs: m.mtimeNs, owner: m.owner, xattrs: m.xattrs });
    if (w) await w;
    for (let k = 0; k < names.length; k++) {
      const name = names.name(k);
      const childAbs = Buffer.concat([abs, SLASH, name]);
      let cst: EntryStat;
      try {
        // Synchronous: a stat from the page cache costs less than a round trip to libuv's pool.
        cst = names instanceof ScannedDir ? names.stat(k) : lstatEntry(childAbs);
      } catch (e) {
        warn(show(childAbs), `cannot stat: ${errnoMessage(e)}`);
        continue;
      }
      // Whether a path is included (--exclude, --one-file-system) is decided here,
      // with its name and stat, before anything of it is read.
      const v = visit(childAbs, Buffer.concat([rel, SLASH, name]), cst);
      if (v) await v;
      // Scanned ahead but left out (excluded): dropped.
      if (scanner && cst.isDirectory()) scanner.forget(childAbs);
    }
  };
  const visitIncluded = (abs: Buffer, rel: Buffer, st: EntryStat): Promise<void> | undefined => {
    if (st.isDirectory()) return visitDir(abs, rel, st);
    if (st.isFile()) return visitFile(abs, rel, st);
    if (st.isSymbolicLink()) {
      let target: Buffer;
      try {
        target = readlinkSync(abs, { encoding: 'buffer' });
      } catch (e) {
        warn(show(abs), `cannot read link: ${errnoMessage(e)}`);
        return undefined;
      }
      return emit({ ...meta(abs, rel, st, 'symlink'), type: 'symlink' as const, target });
    }
    if (st.isFIFO() || st.isSocket()) return emit({ ...meta(abs, rel, st, 'fifo'), type: st.isFIFO() ? ('fifo' as const) : ('socket' as const) });
    if (st.isCharacterDevice() || st.isBlockDevice()) {
      const type = st.isCharacterDevice() ? ('chardev' as const) : ('blockdev' as const);
      return emit({ ...meta(abs, rel, st, type), type, major: devMajor(st.rdev), minor: devMinor(st.rdev) });
    }
    warn(show(abs), 'skipped: unknown kind of file');
    return undefined;
  };
  const visitFile = (abs: Buffer, rel: Buffer, st: EntryStat): Promise<void> | undefined => {
    const key = st.nlink > 1n ? `${st.dev}:${st.ino}` : '';
    const first = key ? hardlinks.get(key) : undefined;
    if (first) {
      const m = meta(abs, rel, st, 'hardlink');
      // A link only to a file entry that made it into the listing (spec §9.3).
      const link = first.entry.then((f): TreeEntry | null => {
        if (f) return { ...m, type: 'hardlink', link: first.path };
        warn(show(abs), 'skipped: a hard link to a file that could not be read');
        return null;
      });
      link.catch(() => {});
      return emit(link);
    }
    let settle: ((e: Promise<TreeEntry | null>) => void) | undefined;
    if (key) hardlinks.set(key, { path: rel, entry: new Promise((r) => (settle = r)) });
    const listed = parentFiles?.find(rel) ?? false;
    if (listed instanceof Promise) return listed.then((p) => fileWithParent(abs, rel, st, p, settle));
    return fileWithParent(abs, rel, st, listed, settle);
  };
  /** Scratch for sameAsParent: the expected line around its chunk list, and a chunk ID. */
  const head = new LineBuffer(512);
  const tail = new LineBuffer(128);
  const chunkId = Buffer.alloc(32);
  const inIndex = (id: Buffer) => index.has(id);
  const ignoreInode = opts.ignoreInode === true;
  const ignoreCtime = opts.ignoreCtime === true;
  const ownerOf: { uid: number; gid: number; user: string | undefined; group: string | undefined } = { uid: 0, gid: 0, user: undefined, group: undefined };
  /**
   * Whether the parent's line for this file is, byte for byte, the line this backup
   * would write for it with the parent's chunks, all of them in the index: the file is
   * unchanged (size, mtime, inode and ctime; setting an xattr changes the ctime, so a
   * line without xattrs still holds) and nothing else of its entry differs. No entry
   * is decoded or made. Files with xattrs, hard links and names that are not UTF-8 take
   * the decoding path.
   */
  const sameAsParent = (abs: Buffer, rel: Buffer, st: EntryStat, sparse: boolean): Buffer | undefined => {
    if (!parentFiles!.strict || !isUtf8(abs)) return undefined;
    ownerOf.uid = Number(st.uid);
    ownerOf.gid = Number(st.gid);
    ownerOf.user = owners.userOf(ownerOf.uid);
    ownerOf.group = owners.groupOf(ownerOf.gid);
    encodeFileLineParts(head, tail, rel, Number(st.mode) & 0o7777, st.mtimeNs, ownerOf, Number(st.size), sparse, String(st.ino), String(st.ctimeNs));
    const line = parentFiles!.line();
    return matchFileLine(line, head, tail, chunkId, inIndex) ? line : undefined;
  };
  const fileWithParent = (
    abs: Buffer,
    rel: Buffer,
    st: EntryStat,
    listed: boolean,
    settle: ((e: Promise<TreeEntry | null>) => void) | undefined,
  ): Promise<void> | undefined => {
    const sparse = st.blocks * 512n < st.size;
    // The byte-for-byte match takes the inode and ctime as they are now: with either
    // ignored, every line is decoded and compared without it.
    if (listed && !settle && !ignoreInode && !ignoreCtime) {
      const line = sameAsParent(abs, rel, st, sparse);
      if (line) {
        progress.bytes += Number(st.size);
        return emit(new SameLine(Number(st.size), line));
      }
    }
    const prev = listed ? parentFiles!.entry() : undefined;
    if (
      prev &&
      prev.size === Number(st.size) &&
      prev.mtimeNs === st.mtimeNs &&
      (ignoreInode || prev.inode === String(st.ino)) &&
      (ignoreCtime || prev.ctime === String(st.ctimeNs)) &&
      prev.chunks.every((c) => index.has(Buffer.from(c, 'hex')))
    ) {
      // Unchanged, ctime included: setting an xattr changes the ctime, so the parent's
      // xattrs still hold and are not listed again (one system call less per file).
      // With the ctime ignored they are read again.
      const m = isUtf8(abs) && !ignoreCtime ? meta(abs, rel, st, 'file', prev.xattrs ?? []) : meta(abs, rel, st, 'file');
      progress.bytes += Number(st.size);
      // Today's inode and ctime (the same as the parent's unless ignored), so the next
      // backup without the flags compares with what the file has now.
      const same = fileEntry(m, m.xattrs, st.mtimeNs, prev.size, prev.chunks, sparse, String(st.ino), String(st.ctimeNs));
      settle?.(Promise.resolve(same));
      return emit(same);
    }
    const small = st.size <= smallLimitBig;
    // Small files with UTF-8 names have their xattrs read by the worker that reads them.
    const workerXattrs = small && xattrsInWorkers && isUtf8(abs);
    const m = meta(abs, rel, st, 'file', workerXattrs ? [] : undefined);
    // The slot waits in the listing queue for its batch across young-generation GCs: it
    // keeps only the four stat fields it needs, so the walk's stat object and its other
    // BigInts die young instead of being copied and promoted with every queued file.
    const slot = new FileSlot(abs, { size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino }, m, sparse, workerXattrs, batch);
    if (small) {
      if (batch.items.length === 0) batchFirst = emitted;
      batch.items.push(slot);
      batchBytes += Number(st.size);
      if (settle) {
        const done = slot.settled();
        done.catch(() => {}); // awaited through the link entries; don't report it unhandled meanwhile
        settle(done);
      }
      return emit(slot);
    }
    // The workers compress a file's chunks, but those it had in the parent: most of a
    // changed large file's are stored already, and dedup comes first (in the blob writer).
    const done = readStable(abs, st, 1, prev?.chunks).then((got) => entryOfRead(slot, got));
    done.catch(() => {}); // awaited in order by writeHead; don't report it unhandled meanwhile
    settle?.(done);
    return emit(done);
  };

  try {
    for (const r of roots) {
      const abs = Buffer.from(r.abs, 'utf8');
      rootDevs.add((await fs.lstat(abs, { bigint: true })).dev);
    }
    for (const r of roots) {
      const abs = Buffer.from(r.abs, 'utf8');
      await visit(abs, Buffer.from(r.name, 'utf8'), await fs.lstat(abs, { bigint: true }));
    }
    const notes: string[] = [];
    if (xattrNameWarnings > 0) {
      // Not a warning: most files have no xattrs, and we cannot tell whether these do.
      notes.push(`${xattrNameWarnings} item(s) whose names are not UTF-8 were backed up without extended attributes, if they had any (the xattr binding takes text paths)`);
    }
    await submitBatch();
    // Every job given: an idle chunk worker may help the other from here.
    workers().lastJobs();
    while (queued() > 0) await writeHead();
    // Nothing to store (not one path could be read, as another user, or every path was
    // excluded): no snapshot, as restic refuses an empty one. Saved, it would say the
    // backup ran, and could push good snapshots out of a `forget --keep-last N`.
    if (tree.entries === 0) {
      const why = warnings.length > 0 ? warnings.map((w) => `${w.path}: ${w.message}`).slice(0, 3).join('; ') : 'every path given is excluded';
      throw new CofferError('nothing-read', `nothing was backed up: ${why}; no snapshot was saved`);
    }
    stopPrescan();
    parentFiles?.close();
    const treeIds = await tree.finish();
    // The lock is re-checked before the index and the snapshot: if it was removed (a
    // prune that took this process for dead), packs written here may be gone.
    await writer.finish(() => lock.ensureHeld());
    const snapshot: Snapshot = {
      version: 2,
      time: (opts.now?.() ?? new Date()).toISOString(),
      hostname: host,
      username: safeUser(),
      paths: absPaths,
      tags: opts.tags ?? [],
      tree: treeIds,
      stats: { ...stats, addedBytes: writer.addedBytes, newChunks: writer.newBlobs },
    };
    if (warnings.length > 0) snapshot.stats.warnings = warnings.length;
    // Written last: only now does the snapshot exist (spec §12).
    await lock.ensureHeld();
    const id = await repo.writeObject(ObjectKind.Snapshot, encodeSnapshot(snapshot, padding), snapshotName);
    await repo.backend.sync();
    report(true);
    return { id, snapshot, warnings, read, notes };
  } catch (e) {
    stopPrescan();
    await submitBatch().catch(() => {});
    while (batchesOut.size > 0) await Promise.allSettled([...batchesOut]);
    await Promise.allSettled(queue.map((q) => (q instanceof FileSlot ? q.later : q)));
    await writer.abort();
    parentFiles?.close();
    throw e;
  }
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    return '';
  }
}

async function findParent(repo: Repository, host: string, paths: string[]): Promise<SnapshotRecord | undefined> {
  const key = [...paths].sort().join('\0');
  // A damaged snapshot only means it can't be the parent (spec §10).
  const all = (await repo.readableSnapshots()).good;
  for (let i = all.length - 1; i >= 0; i--) {
    const s = all[i]!;
    if (s.snapshot.hostname === host && [...s.snapshot.paths].sort().join('\0') === key) return s;
  }
  return undefined;
}

/**
 * Counts files and bytes for the progress display (with the backup's own selection, so the
 * totals are what it will store), starting after a second, in slices of a few
 * milliseconds of synchronous stats between the backup's own work. Returns a function
 * that stops it.
 */
function prescan(paths: Buffer[], exclude: BackupOptions['exclude'], oneFileSystem: boolean, done: (t: { files: number; bytes: number }) => void): () => void {
  let stopped = false;
  const run = async (): Promise<void> => {
    // Counting needs no nanoseconds: plain stats (no BigInts) unless an exclude hook wants them.
    const stat = (p: Buffer): Stats | BigIntStats => (exclude ? lstatSync(p, { bigint: true }) : lstatSync(p));
    const devs = new Set<string>();
    for (const p of paths) {
      try {
        devs.add(String(stat(p).dev));
      } catch {
        // missing: the backup itself reports it
      }
    }
    const stack = [...paths];
    let files = 0;
    let bytes = 0;
    let slice = Date.now();
    while (stack.length > 0 && !stopped) {
      const p = stack.pop()!;
      let st: Stats | BigIntStats;
      try {
        st = stat(p);
      } catch {
        continue;
      }
      if (exclude && (await Promise.resolve(exclude(p, st as BigIntStats)).catch(() => false))) continue;
      if (st.isFile()) {
        files++;
        bytes += Number(st.size);
      } else if (st.isDirectory() && !(oneFileSystem && !devs.has(String(st.dev)))) {
        let names: Buffer[] = [];
        try {
          names = readdirSync(p, { encoding: 'buffer' });
        } catch {
          // unlistable: the backup itself reports it
        }
        for (const n of names) stack.push(Buffer.concat([p, SLASH, n]));
      }
      if (Date.now() - slice >= 4) {
        await new Promise((res) => setImmediate(res));
        slice = Date.now();
      }
    }
    if (!stopped) done({ files, bytes });
  };
  const start = setTimeout(() => void run(), 1000);
  start.unref();
  return () => {
    stopped = true;
    clearTimeout(start);
  };
}
