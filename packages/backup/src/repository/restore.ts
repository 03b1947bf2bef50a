/**
 * `coffer restore`: recreates a snapshot under a target directory.
 *
 * A target that holds none of the restore's top-level names (a fresh one, nearly always)
 * is built in a staging directory inside it, `.coffer-restore-<random>` (mode 0700),
 * every file made under its own name, and each top-level entry is moved into place
 * (rename(2)) once everything is restored: the user's path holds each of them whole or
 * not at all, and per file there is no rename (on ext4 the renames were ~0.5 s of
 * kernel time on each of two threads on the 50,000-file tree, beside ~1.2 s of creates). On failure the staging directory is removed;
 * a crash leaves it, clearly named. Otherwise every file is written to a temporary name
 * beside its destination and renamed into place only once complete, so the user's path
 * holds either nothing (or the old file) or the whole restored file, never half of one;
 * on failure every temporary file is removed. Existing files are not overwritten unless
 * asked. Blobs are read pack by pack, each pack once, in the order the backup wrote them.
 *
 * Paths are bytes (names need not be UTF-8) and every directory is reached through a
 * handle that never follows a symlink (restore-target.ts). Metadata (owners when root,
 * xattrs, modes, nanosecond times, hard links, sparse files, FIFOs and devices) is set
 * as spec §9.4 says; what cannot be set is reported as a warning, not a failure.
 *
 * Open descriptors are bounded whatever the number of files: at most
 * RESTORE_OPEN_FILES restored files are open at once (a file is opened through its
 * directory handle for a write and closed after it, or kept open for its next piece,
 * at most KEPT_OPEN_FILES of them),
 * plus directory handles: at most 64 held and, idle, 32 under a limit below 512
 * descriptors, else a quarter of the limit, at most 4,096 (restore-target.ts). Every blob's ID (the keyed
 * hash of its plaintext) is checked before it is written.
 *
 * A file of one chunk (most files of an ordinary tree) is written whole the moment its
 * blob is ready, with synchronous calls in one go: create, write, owner, xattrs, mode,
 * times, close, rename. Each is a system call on a cached directory handle, far cheaper
 * than the thread-pool round trips of the general path, and no descriptor outlives it.
 * In a restore of many such files they go, in batches, to a writer thread
 * (restore-writer.ts), and the main thread writes one itself whenever the thread is
 * behind: the kernel's work of creating files (most of a small-file restore) then runs
 * on two threads, beside the main thread's reading and checking.
 */
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { close as closeCb, closeSync, constants as fsc, fchmod as fchmodCb, fchmodSync, fchown as fchownCb, fchownSync, ftruncate as ftruncateCb, ftruncateSync, futimes as futimesCb, futimesSync, fstatSync, lstatSync, open as openCb, promises as fs, openSync, readFileSync, readSync, renameSync, statfsSync, write as writeCb, writeSync } from 'node:fs';
import { resolve } from 'node:path';
import { ObjectKind, ObjectOpener } from '../crypto/sealed-object.js';
import { CofferError, DecryptionError } from '../errors.js';
import { decompressBlobHere } from './compress.js';
import type { BlobIndex } from './index-file.js';
import type { ObjectReader } from '../storage/backend.js';
import { hex, packName } from './blob.js';
import { RepositoryLock } from './lock.js';
import { mapLimit, type Repository, type SnapshotRecord } from './repository.js';
import { Semaphore } from './semaphore.js';
import { SubtreePicker, type Selection } from './browse.js';
import type { DirEntry, FileEntry, Owner, TreeEntry, Xattr } from './tree.js';
import { RestoreTarget, type HeldDir } from './restore-target.js';
import { BLOB_NOT_ITS_ID, CORRUPT_BLOB, rebuildError, RestoreWriter, type WholeFile } from './restore-writer.js';
import { BlobCheckThread, dataRuns } from './restore-check.js';
import { isRoot, makeNode, writeXattrs, writeXattrsSync, xattrs } from './fs-meta.js';
import { onInterrupt } from '../interrupt.js';
import { snapshotPathOf, type RestoreSelection } from './filter.js';

export interface RestoreProgress {
  files: number;
  bytes: number;
  totalFiles: number;
  totalBytes: number;
}

export interface RestoreOptions {
  target: string;
  overwrite?: boolean;
  /**
   * Read without taking a lock (e.g. the repository's disk is full); see spec §11.
   * Without it, restore still reads without a lock, with a warning, when storage
   * refuses the lock's write.
   */
  noLock?: boolean;
  onProgress?: (p: RestoreProgress) => void;
  onWarning?: (w: RestoreWarning) => void;
  /** Set owners from the snapshot: default when running as root (spec §9.4). */
  owners?: boolean;
  /** `--include`/`--exclude` (filter.ts): only these entries, and the directories above them. */
  select?: RestoreSelection;
  /** Only this part of the snapshot, its contents at the top of the target (`SNAPSHOT:PATH`, browse.ts). */
  subtree?: Selection;
  /**
   * restic's `restore --verify`: once restored, every file is read back from the target
   * and each of its chunks checked against its ID (the same keyed hash the backup made);
   * a file that differs fails the restore (CofferError 'storage'), named.
   */
  verify?: boolean;
}

export interface RestoreWarning {
  path: string;
  message: string;
  /**
   * Set on the one warning that says the repository was read without a lock (storage
   * refused the lock's write): about how it was read, not about a restored item.
   */
  noLock?: true;
}

export interface RestoreResult {
  files: number;
  dirs: number;
  symlinks: number;
  /** Hard links, FIFOs and device nodes made. */
  others: number;
  bytes: number;
  /** What could not be restored exactly (exit 3 in the CLI). */
  warnings: RestoreWarning[];
  /** With `verify`: the files (each inode once) and bytes read back and found as in the snapshot. */
  verified?: { files: number; bytes: number };
}

const PACK_READ_WINDOW = 2;
/** Directories made, or given their metadata, at once (their system calls run on libuv's pool). */
const DIR_PASS_LANES = 16;
/** Symlinks, hard links and special files made at once (each a few thread-pool round trips). */
const OTHERS_LANES = 16;

/** Directories grouped by depth (slashes in the path), deepest level first; each level in its given order. */
function byDepthDeepestFirst(dirs: readonly DirEntry[]): DirEntry[][] {
  const levels: DirEntry[][] = [];
  for (const d of dirs) {
    let depth = 0;
    for (const c of d.rawPath) if (c === 0x2f) depth++;
    (levels[depth] ??= []).push(d);
  }
  return levels.filter((l) => l !== undefined).reverse();
}
/** At most this many of the RESTORE_OPEN_FILES files stay open between their pieces (restoreInto's keptOpen). */
const KEPT_OPEN_FILES = 8;
/** Tests set kept to 0 to have every piece's file closed after it (the eviction path each time). */
export const restoreKeptForTesting = { kept: KEPT_OPEN_FILES };
/** At most this many restored files are open at once (a 256-descriptor limit is plenty). */
export const RESTORE_OPEN_FILES = 32;
/** Packs are read in pieces of this size. */
const PACK_READ_PIECE = 1024 * 1024;
/** Per pack being read: the next piece waits while blobs of more than this many bytes (stored + raw) are being decompressed and written. */
const RESTORE_IN_FLIGHT_BYTES = 4 * 1024 * 1024;
/**
 * Whole small files go to writer threads (restore-writer.ts) when a restore has at least
 * this many: a thread costs ~10 ms and 20-30 MiB of peak memory (its isolate and its
 * allocator arena), and saves ~12% of the time of writing the files (about 10 µs each on
 * ext4), so a restore of a few hundred files, or of large media files, is better off
 * without…
 */
const RESTORE_WRITER_MIN_FILES = 1000;
/**
 * …this many threads: the main thread has its own work (reading, decrypting, checking) and
 * writes files itself when they are behind, so one writer per core besides it, at most two.
 */
const RESTORE_WRITER_THREADS = Math.max(1, Math.min(2, availableParallelism() - 1));
/** Tests set minFiles to send every restore's small files to the threads; started: threads the last restore started; startedBeforeListing: of them, before its listing (runRestore). */
export const restoreWriterForTesting = { minFiles: RESTORE_WRITER_MIN_FILES, started: 0, startedBeforeListing: 0 };
/**
 * …and at most this many files are handed to them and not yet written. Each holds its
 * directory's handle open until written (at most MAX_HELD_DIRS distinct directories:
 * restore-target.ts), and its stored blob (a few KiB) until its batch is made. 256 kept
 * the thread's queue short of BATCHES_IN_FLIGHT whole batches (restore-writer.ts).
 */
const RESTORE_WRITER_IN_FLIGHT = 512;
/**
 * Blobs from this size on are decompressed and checked on the blob-check thread
 * (restore-check.ts), the main thread going on with the next; below it the round trip
 * costs more than the work, and small whole files go to the writer threads as they are
 * stored.
 */
const RESTORE_CHECK_OFF_THREAD_FROM = 128 * 1024;
/**
 * While the blob-check thread has this many requests queued (blobs to check, held blobs
 * to write), the main thread checks and writes the next large blob itself: on two cores
 * the thread alone was the restore's critical path (chat set: 1.24 s of CPU on the
 * thread against the main thread's 0.75 s; with 4, 0.93 against 0.95 s).
 */
const RESTORE_CHECK_QUEUE = 4;
/**
 * Tests set queue to 0 to have every large blob checked and written on the main thread,
 * or to a large number for none; sent: the blobs the last restore's thread was sent.
 */
export const restoreCheckForTesting = { queue: RESTORE_CHECK_QUEUE, sent: 0 };

/** What setMeta needs of an open file or directory: a DirHandle (restore-target.ts) or an FdFile. */
type MetaHandle = Pick<fs.FileHandle, 'chown' | 'chmod' | 'utimes'>;

/**
 * A file restore writes piece by piece, open as a plain descriptor with the callback
 * API: a FileHandle's object, promise machinery and close cost the main thread ~20 µs
 * more per open-write-close (the chat set opens its files once per piece, ~2,000 times).
 */
class FdFile implements MetaHandle {
  private constructor(readonly fd: number) {}

  static open(path: Buffer, flags: number, mode: number): Promise<FdFile> {
    return new Promise((res, rej) => openCb(path, flags, mode, (e, fd) => (e ? rej(e) : res(new FdFile(fd)))));
  }

  write(buf: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }> {
    return new Promise((res, rej) => writeCb(this.fd, buf, offset, length, position, (e, n) => (e ? rej(e) : res({ bytesWritten: n }))));
  }

  truncate(length: number): Promise<void> {
    return new Promise((res, rej) => ftruncateCb(this.fd, length, (e) => (e ? rej(e) : res())));
  }

  chown(uid: number, gid: number): Promise<void> {
    return new Promise((res, rej) => fchownCb(this.fd, uid, gid, (e) => (e ? rej(e) : res())));
  }

  chmod(mode: number): Promise<void> {
    return new Promise((res, rej) => fchmodCb(this.fd, mode, (e) => (e ? rej(e) : res())));
  }

  utimes(atime: string | number | Date, mtime: string | number | Date): Promise<void> {
    return new Promise((res, rej) => futimesCb(this.fd, atime, mtime, (e) => (e ? rej(e) : res())));
  }

  close(): Promise<void> {
    return new Promise((res, rej) => closeCb(this.fd, (e) => (e ? rej(e) : res())));
  }
}

/** Writes a piece into a file's open descriptor (and whether it is sparse) itself; resolves to its length. */
type WriteThere = (fd: number, sparse: boolean) => Promise<number>;

/** What setMeta needs of an entry (a file's is made from the FileTable when it is finished). */
type MetaEntry = Pick<TreeEntry, 'type' | 'path' | 'rawPath' | 'mode' | 'mtimeNs' | 'owner' | 'xattrs'>;

const NS = 1_000_000_000n;
/** The target's own directory, as a relative path. */
const NO_DIR = Buffer.alloc(0);
/** What a write done synchronously returns. */
const SETTLED = Promise.resolve();
const F_OWNER = 1;
const F_SPARSE = 2;
/** The temporary file exists (was created by us). */
const F_CREATED = 4;
/** …and was renamed into place (F_CREATED without it: removed on failure). */
const F_PLACED = 8;

/**
 * The files to restore, packed (issue 13): columns of typed arrays, one buffer of path
 * bytes and one array of chunks, each the index record (BlobIndex.recordOf) of its blob
 * (4 bytes, not its 32-byte ID), about 60 bytes per file besides its path, in place of
 * the decoded entries and a plan of objects pointing at them (about 2 KB per file: a
 * Buffer, strings, arrays, a bigint, a promise each). A file's entry is made again only
 * while it is finished (`meta`). Columns grow by doubling while the listing is read and
 * are cut to size after it (`trim`).
 */
class FileTable {
  count = 0;
  totalBytes = 0;
  #cap = 0;
  #paths: Buffer = Buffer.alloc(0);
  #pathEnd = 0;
  /** Every file's chunks, in file order: index record numbers. */
  recs = new Uint32Array(1024);
  #recEnd = 0;
  readonly #id = Buffer.alloc(32);
  readonly #expect: number;

  /**
   * @param expect how many files the listing probably holds (the snapshot's count): the
   *   columns are made that size at once, not grown by doubling (each step a copy, and
   *   freed arrays the allocator keeps: issue 13).
   */
  constructor(
    readonly index: BlobIndex,
    expect = 0,
  ) {
    this.#expect = Math.min(expect, 1 << 20);
    if (this.#expect > 0) this.#paths = Buffer.allocUnsafe(this.#expect * 48);
  }
  pathOff = new Float64Array(0);
  pathLen = new Uint32Array(0);
  size = new Float64Array(0);
  mode = new Uint16Array(0);
  /** mtimeNs as whole seconds (toward zero) and the nanoseconds left (same sign). */
  mtimeS = new Float64Array(0);
  mtimeRest = new Int32Array(0);
  uid = new Uint32Array(0);
  gid = new Uint32Array(0);
  flags = new Uint8Array(0);
  /** The file's first chunk: its place in `recs`. */
  chunkStart = new Float64Array(0);
  chunks = new Uint32Array(0);
  /** Chunks not yet written (a file is complete at 0). */
  remaining = new Uint32Array(0);
  readonly xattrs = new Map<number, Xattr[]>();
  /** Writes to one file run one after another (the first creates it): files being written only. */
  readonly chains = new Map<number, Promise<void>>();

  #grow(): void {
    this.#resize(Math.max(1024, this.#cap * 2, this.#expect));
  }

  /** Every column made `cap` long, keeping the files held. */
  #resize(cap: number): void {
    const keep = Math.min(this.count, cap);
    // A column of the same type, `cap` long, holding the files kept.
    const to = <T extends Float64Array | Uint32Array | Int32Array | Uint16Array | Uint8Array>(a: T): T => {
      const b = new (a.constructor as new (n: number) => T)(cap);
      b.set(a.subarray(0, keep) as ArrayLike<number>);
      return b;
    };
    this.pathOff = to(this.pathOff);
    this.pathLen = to(this.pathLen);
    this.size = to(this.size);
    this.mode = to(this.mode);
    this.mtimeS = to(this.mtimeS);
    this.mtimeRest = to(this.mtimeRest);
    this.uid = to(this.uid);
    this.gid = to(this.gid);
    this.flags = to(this.flags);
    this.chunkStart = to(this.chunkStart);
    this.chunks = to(this.chunks);
    this.remaining = to(this.remaining);
    this.#cap = cap;
  }

  static #append(buf: Buffer, end: number, add: number): Buffer {
    if (end + add <= buf.length) return buf;
    const b = Buffer.allocUnsafe(Math.max(end + add, buf.length * 2, 64 * 1024));
    buf.copy(b, 0, 0, end);
    return b;
  }

  add(e: FileEntry): void {
    if (this.count === this.#cap) this.#grow();
    const i = this.count++;
    this.#paths = FileTable.#append(this.#paths, this.#pathEnd, e.rawPath.length);
    e.rawPath.copy(this.#paths, this.#pathEnd);
    this.pathOff[i] = this.#pathEnd;
    this.pathLen[i] = e.rawPath.length;
    this.#pathEnd += e.rawPath.length;
    this.size[i] = e.size;
    this.totalBytes += e.size;
    this.mode[i] = e.mode;
    this.mtimeS[i] = Number(e.mtimeNs / NS);
    this.mtimeRest[i] = Number(e.mtimeNs % NS);
    let f = e.sparse ? F_SPARSE : 0;
    if (e.owner) {
      f |= F_OWNER;
      this.uid[i] = e.owner.uid;
      this.gid[i] = e.owner.gid;
    }
    this.flags[i] = f;
    if (e.xattrs) this.xattrs.set(i, e.xattrs);
    if (this.#recEnd + e.chunks.length > this.recs.length) {
      const more = new Uint32Array(Math.max(this.#recEnd + e.chunks.length, this.recs.length * 2));
      more.set(this.recs.subarray(0, this.#recEnd));
      this.recs = more;
    }
    this.chunkStart[i] = this.#recEnd;
    // Every blob must be indexed before anything is written: a missing one names its file.
    for (const c of e.chunks) {
      this.#id.write(c, 0, 32, 'hex');
      const r = this.index.recordOf(this.#id);
      if (r < 0) throw new CofferError('missing-object', `${e.path}: its data (blob ${c.slice(0, 16)}) is missing from the repository; \`coffer check\` tells which snapshots are affected`);
      this.recs[this.#recEnd++] = r;
    }
    this.chunks[i] = e.chunks.length;
    this.remaining[i] = e.chunks.length;
  }

  /** Chunks of all files held. */
  get chunkCount(): number {
    return this.#recEnd;
  }

  /** The columns cut to the files held (the listing is read: no more are added). */
  trim(): void {
    if (this.#cap > this.count) this.#resize(this.count);
    if (this.recs.length > this.#recEnd) this.recs = this.recs.slice(0, this.#recEnd);
    if (this.#paths.length > this.#pathEnd) this.#paths = Buffer.from(this.#paths.subarray(0, this.#pathEnd));
  }

  rawPath(i: number): Buffer {
    return this.#paths.subarray(this.pathOff[i]!, this.pathOff[i]! + this.pathLen[i]!);
  }
  path(i: number): string {
    return this.rawPath(i).toString('utf8');
  }
  sparse(i: number): boolean {
    return (this.flags[i]! & F_SPARSE) !== 0;
  }
  created(i: number): boolean {
    return (this.flags[i]! & F_CREATED) !== 0;
  }
  setCreated(i: number): void {
    this.flags[i] = this.flags[i]! | F_CREATED;
  }
  /** Whether file i's temporary name was made and not yet renamed into place (removed on failure). */
  tmpLeft(i: number): boolean {
    return (this.flags[i]! & (F_CREATED | F_PLACED)) === F_CREATED;
  }
  setPlaced(i: number): void {
    this.flags[i] = this.flags[i]! | F_PLACED;
  }
  /** File i's time as utimes takes it (timeArg of its mtimeNs, without the bigint). */
  time(i: number): string {
    return timeArgOf(this.mtimeS[i]!, this.mtimeRest[i]!);
  }
  owner(i: number): Owner | undefined {
    return (this.flags[i]! & F_OWNER) !== 0 ? { uid: this.uid[i]!, gid: this.gid[i]! } : undefined;
  }
  /** File i's entry as setMeta reads it. */
  meta(i: number): MetaEntry {
    const rawPath = this.rawPath(i);
    const owner = this.owner(i);
    const xattrs = this.xattrs.get(i);
    return {
      type: 'file',
      path: rawPath.toString('utf8'),
      rawPath,
      mode: this.mode[i]!,
      mtimeNs: BigInt(this.mtimeS[i]!) * NS + BigInt(this.mtimeRest[i]!),
      ...(owner ? { owner } : {}),
      ...(xattrs ? { xattrs } : {}),
    };
  }
}

export async function restore(repo: Repository, rec: SnapshotRecord, opts: RestoreOptions): Promise<RestoreResult> {
  if (opts.noLock) return runRestore(repo, rec, opts);
  let lock: RepositoryLock | undefined;
  let noLock: RestoreWarning | undefined;
  try {
    lock = await RepositoryLock.acquire(repo, false);
  } catch (e) {
    // Spec §11: a reader that cannot write (read-only storage, a full disk) reads
    // without a lock. A prune running meanwhile can then only make it fail with a
    // missing object, never restore wrong data (every blob is checked against its ID).
    if (!CofferError.is(e, 'storage')) throw e;
    noLock = { path: repo.location, message: `reading without a lock (the repository can't be written: ${(e as Error).message})`, noLock: true };
    opts.onWarning?.(noLock);
  }
  try {
    const r = await runRestore(repo, rec, opts);
    if (noLock) r.warnings.unshift(noLock);
    return r;
  } finally {
    await lock?.release().catch(() => {});
  }
}

async function runRestore(repo: Repository, rec: SnapshotRecord, opts: RestoreOptions): Promise<RestoreResult> {
  // A snapshot of many files (its recorded count) most likely has many whole small files
  // for the writer threads: the first one starts now, while the index loads and the tree
  // is listed on this thread (issue 13: on the 50,000-file tree that listing is ~0.3 s
  // during which the thread, started later, would come up ~50 ms after the first files
  // were ready). restoreInto takes it, or closes it when the restore turns out to have
  // too few.
  const early = !opts.select?.active && !opts.subtree && rec.snapshot.stats.files >= restoreWriterForTesting.minFiles ? new RestoreWriter(RESTORE_WRITER_THREADS, repo.keys.chunkIdSpec) : undefined;
  early?.prestart();
  try {
    return await listAndRestore(repo, rec, opts, early);
  } finally {
    // Closed by restoreInto (taken or not) on every path that reached it; here for the others. close() twice is harmless.
    await early?.close();
  }
}

async function listAndRestore(repo: Repository, rec: SnapshotRecord, opts: RestoreOptions, early: RestoreWriter | undefined): Promise<RestoreResult> {
  const target = resolve(opts.target);
  const dirs: DirEntry[] = [];
  // The index first: the files' chunks are kept as its record numbers.
  const index = await repo.index();
  const files = new FileTable(index, opts.select?.active || opts.subtree ? 0 : rec.snapshot.stats.files);
  const others: Array<Exclude<TreeEntry, DirEntry | FileEntry>> = [];
  // --include/--exclude match the snapshot's own paths, so they are applied before
  // SNAPSHOT:PATH moves the chosen part to the top of the target.
  const picker = opts.subtree ? new SubtreePicker(opts.subtree, { keepName: false }) : undefined;
  restoreWriterForTesting.startedBeforeListing = early?.started ?? 0;
  const put = (e: TreeEntry) => {
    if (e.type === 'dir') dirs.push(e);
    else if (e.type === 'file') files.add(e);
    else others.push(e);
  };
  const take = (listed: TreeEntry) => {
    const e = picker ? picker.pick(listed) : listed;
    if (e) put(e);
  };
  const list = (each: (e: TreeEntry) => void) => repo.treeEach(rec.snapshot, each);
  if (opts.select?.active) await opts.select.selectEach(list, snapshotPathOf(rec.snapshot.paths), take);
  else await list(take);
  picker?.finish(rec.id);
  // Hard links in the chosen part to files outside it: copies of those files.
  await picker?.resolveOrphans(list, put);
  files.trim();
  const warnings: RestoreWarning[] = [];
  const warn = (path: string, message: string) => {
    const w = { path, message };
    warnings.push(w);
    opts.onWarning?.(w);
  };
  const owners = opts.owners ?? isRoot();
  const uid = typeof process.getuid === 'function' ? process.getuid() : -1;
  const gids = new Set(typeof process.getgroups === 'function' ? [process.getgid!(), ...process.getgroups()] : []);
  /**
   * The mode to set (spec §9.4): setuid is kept only when the file gets its recorded
   * owner (restoring as root, or the recorded owner is the restoring user), setgid only
   * when it gets its recorded group; an entry without a recorded owner loses both.
   */
  const modeFor = (e: { mode: number; owner?: Owner | undefined }) => {
    let m = e.mode;
    const o = e.owner;
    if (!o || !(owners || o.uid === uid)) m &= ~0o4000;
    if (!o || !(owners || gids.has(o.gid))) m &= ~0o2000;
    return m;
  };
  const split = (raw: Buffer) => {
    const i = raw.lastIndexOf(0x2f);
    return i < 0 ? { dir: Buffer.alloc(0), name: raw } : { dir: raw.subarray(0, i), name: raw.subarray(i + 1) };
  };
  const shown = (raw: Buffer) => `${target}/${raw.toString('utf8')}`;
  const tgt = await RestoreTarget.open(target);
  let stage: { tgt: RestoreTarget; name: Buffer; tops: Buffer[] } | undefined;

  try {
    // None of the restore's top-level names in the target: it is built in a staging
    // directory inside the target and its top-level entries are moved into place at the
    // end (spec §9.4), each file made under its own name (no rename per file).
    const tops = restoreStagingForTesting.off ? undefined : topNames(dirs, files, others);
    if (tops && !(await tgt.withDir(NO_DIR, false, async (prefix) => tops.some((t) => lstatSync(Buffer.concat([prefix, t]), { throwIfNoEntry: false }) !== undefined)))) {
      const name = Buffer.from(`.coffer-restore-${randomBytes(6).toString('hex')}`);
      stage = { tgt: await tgt.staging(name), name, tops };
    }
    restoreStagingForTesting.staged = stage !== undefined;
    if (stage) {
      const st = stage;
      // Interrupted (Ctrl-C), the process removes the staging directory (everything not
      // yet moved into place) before it exits, as after a failure.
      const removeStage = () => tgt.withDir(NO_DIR, false, (prefix) => fs.rm(Buffer.concat([prefix, st.name]).toString('latin1'), { recursive: true, force: true, maxRetries: 3 }));
      const unregister = onInterrupt(removeStage);
      try {
        const made = await tgt.withDir(NO_DIR, false, async (prefix) => madeIn(Buffer.concat([prefix, st.name])));
        const r = await restoreInto(repo, st.tgt, { target, dirs, files, others, warn, warnings, owners, modeFor, split, shown, opts, direct: true, made: made ?? undefined, early });
        await restoreStagingForTesting.beforeMove?.();
        // Each top-level entry complete, moved into place (one call each), never over
        // something that appeared at its name meanwhile unless --overwrite.
        await st.tgt.withDir(NO_DIR, false, (from) =>
          tgt.withDir(NO_DIR, false, async (to) => {
            for (const t of st.tops) await moveStaged(Buffer.concat([from, t]), Buffer.concat([to, t]), opts.overwrite === true, shown(t));
          }),
        );
        await st.tgt.close();
        await tgt.withDir(NO_DIR, false, (prefix) => fs.rmdir(Buffer.concat([prefix, st.name])));
        if (opts.verify) r.verified = await verifyRestored(repo, target, files);
        return r;
      } catch (e) {
        await st.tgt.close();
        await removeStage().catch(() => {});
        throw e;
      } finally {
        unregister();
      }
    }
    // Refuse before writing anything: which files would be replaced?
    if (!opts.overwrite) {
      const clashes: string[] = [];
      // Directories found missing: nothing under them can clash (and isn't looked up again).
      const missing = new Set<string>();
      /** The directory last found missing: most files of a restore into an empty target are under it. */
      let lastMissing: Buffer | undefined;
      const underMissing = (dir: Buffer) => {
        const m = lastMissing;
        if (m && m.length > 0 && dir.length >= m.length && m.compare(dir, 0, m.length) === 0 && (dir.length === m.length || dir[m.length] === 0x2f)) return true;
        for (let i = dir.length; i > 0; i = dir.lastIndexOf(0x2f, i - 1)) {
          if (missing.has(dir.subarray(0, i).toString('latin1'))) return true;
          if (i === 0) break;
        }
        return false;
      };
      for (let i = 0; i < files.count + others.length && clashes.length < 5; i++) {
        const rawPath = i < files.count ? files.rawPath(i) : others[i - files.count]!.rawPath;
        const { dir, name } = split(rawPath);
        if (underMissing(dir)) continue;
        const there = await tgt.withDir(dir, false, async (prefix) => lstatSync(Buffer.concat([prefix, name]), { throwIfNoEntry: false }) !== undefined);
        if (there === null) {
          // The highest missing directory is noted, so that nothing under it is looked up
          // again (issue 13: noting only this one, a restore into an empty target tried to
          // open the snapshot's top directory again for each of its directories, ~1,000
          // failed opens one after another before the first file was written).
          for (let i = dir.indexOf(0x2f); ; i = dir.indexOf(0x2f, i + 1)) {
            const up = i < 0 ? dir : dir.subarray(0, i);
            if (i < 0 || (await tgt.withDir(up, false, async () => true)) === null) {
              missing.add(up.toString('latin1'));
              lastMissing = up;
              break;
            }
          }
        }
        if (there) clashes.push(shown(rawPath));
      }
      if (clashes.length > 0) {
        throw new CofferError('exists', `restore would overwrite existing files (e.g. ${clashes.join(', ')}); use --overwrite to replace them`);
      }
    }
    const r = await restoreInto(repo, tgt, { target, dirs, files, others, warn, warnings, owners, modeFor, split, shown, opts, direct: false, early });
    if (opts.verify) r.verified = await verifyRestored(repo, target, files);
    return r;
  } finally {
    await tgt.close();
  }
}

/** Tests: called before `verify` reads the restored files back (to change one meanwhile). */
export const verifyForTesting: { before?: () => Promise<void> } = {};

/**
 * `restore --verify`: reads every restored file back and checks each chunk against its
 * ID, and the file's size. The table holds each file once (a hard link is another name
 * of a file in it, made after it, not an entry of its own). The files are opened by
 * their path without following a symlink at the last step.
 * @throws CofferError('storage') naming the files that differ (up to three)
 */
async function verifyRestored(repo: Repository, target: string, files: FileTable): Promise<{ files: number; bytes: number }> {
  await verifyForTesting.before?.();
  const differ: string[] = [];
  let count = 0;
  let bytes = 0;
  let buf = Buffer.alloc(1 << 20);
  for (let f = 0; f < files.count; f++) {
    const path = Buffer.concat([Buffer.from(`${target}/`), files.rawPath(f)]);
    let fd: number;
    try {
      fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    } catch (e) {
      differ.push(`${files.path(f)} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      continue;
    }
    try {
      let ok = fstatSync(fd).size === files.size[f]!;
      let at = 0;
      const start = files.chunkStart[f]!;
      for (let k = 0; ok && k < files.chunks[f]!; k++) {
        const r = files.recs[start + k]!;
        const len = files.index.locationAt(r).rawLength;
        if (buf.length < len) buf = Buffer.alloc(len);
        let got = 0;
        while (got < len) {
          const n = readSync(fd, buf, got, len - got, at + got);
          if (n === 0) break;
          got += n;
        }
        ok = got === len && repo.keys.chunkId(buf.subarray(0, len)).equals(files.index.idAt(r));
        at += len;
      }
      // The chunks cover the size fstat gave: nothing past them (no read past the end needed).
      ok &&= at === files.size[f]!;
      if (!ok) differ.push(files.path(f));
      else {
        count++;
        bytes += at;
      }
    } finally {
      closeSync(fd);
    }
  }
  if (differ.length > 0) {
    const more = differ.length > 3 ? ` and ${differ.length - 3} more` : '';
    throw new CofferError('storage', `verify: ${differ.length} restored file(s) differ from the snapshot when read back (${differ.slice(0, 3).join(', ')}${more}): the target returned other bytes, or they were changed after the restore`);
  }
  return { files: count, bytes };
}

/** Tests: `off` restores every target the way of a target that holds some of the restore (no staging); `staged`: whether the last restore was staged. */
export const restoreStagingForTesting: { off: boolean; staged: boolean; beforeMove?: () => Promise<void> } = { off: false, staged: false };

/**
 * Moves a staged top-level entry to its place. The target held nothing at that name when
 * the restore began; something may have appeared there since. A directory is renamed
 * (rename(2) fails over anything but an empty directory); anything else is hard-linked
 * to its place, which fails if the name is taken, then unlinked from the staging
 * directory: rename(2) would replace a file silently. With `overwrite`, or on a file
 * system without hard links, it is renamed after one more look.
 */
async function moveStaged(from: Buffer, to: Buffer, overwrite: boolean, shownName: string): Promise<void> {
  const taken = () => new CofferError('exists', `${shownName} appeared in the target during the restore; it was left as it is (use --overwrite to replace it)`);
  const st = lstatSync(from);
  if (st.isDirectory()) {
    try {
      await fs.rename(from, to);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR' || code === 'EISDIR') throw taken();
      throw e;
    }
    return;
  }
  if (!overwrite) {
    try {
      await fs.link(from, to);
      await fs.unlink(from);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw taken();
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EMLINK') throw e;
    }
    if (lstatSync(to, { throwIfNoEntry: false }) !== undefined) throw taken();
  }
  await fs.rename(from, to);
}

/**
 * The restore's top-level names (each entry's first path component), each once; undefined
 * when an entry has no name (nothing to stage), or when there are more than `limit` of
 * them (a subtree of a flat directory: moving them one by one at the end would be the
 * renames staging saves, and more of the restore would show at once only at the end).
 */
function topNames(dirs: DirEntry[], files: FileTable, others: TreeEntry[], limit = 1000): Buffer[] | undefined {
  const tops: Buffer[] = [];
  const seen = new Set<string>();
  let last: Buffer | undefined;
  const add = (raw: Buffer): boolean => {
    const i = raw.indexOf(0x2f);
    const top = i < 0 ? raw : raw.subarray(0, i);
    if (top.length === 0) return false;
    if (last && last.equals(top)) return true;
    last = top;
    const key = top.toString('latin1');
    if (!seen.has(key)) {
      seen.add(key);
      tops.push(top);
    }
    return tops.length <= limit;
  };
  for (const d of dirs) if (!add(d.rawPath)) return undefined;
  for (let f = 0; f < files.count; f++) if (!add(files.rawPath(f))) return undefined;
  for (const e of others) if (!add(e.rawPath)) return undefined;
  return tops.length > 0 ? tops : undefined;
}

interface Plan {
  target: string;
  dirs: DirEntry[];
  files: FileTable;
  others: Array<Exclude<TreeEntry, DirEntry | FileEntry>>;
  warn: (path: string, message: string) => void;
  warnings: RestoreWarning[];
  owners: boolean;
  modeFor: (e: { mode: number; owner?: Owner | undefined }) => number;
  split: (raw: Buffer) => { dir: Buffer; name: Buffer };
  shown: (raw: Buffer) => string;
  opts: RestoreOptions;
  /**
   * Staged (runRestore): `tgt` is the staging directory, nothing in it is the user's, so
   * every entry is made under its own name (no temporary name, no rename), and on failure
   * the caller removes the whole directory.
   */
  direct: boolean;
  /** Staged: what a file created in the staging directory gets by itself (madeIn). */
  made?: Made | undefined;
  /** A writer started before the listing (runRestore), taken if the restore has enough whole files; else closed. */
  early?: RestoreWriter | undefined;
}

/**
 * What a file created in a staging directory gets without being told: owner `uid`:`gid`
 * (the restoring user; the group the directory passes down when setgid), and, when
 * `umask` is known, its create mode less the umask exactly (a local file system of
 * POSIX modes, no default ACL on the directory: every directory in it is made there).
 */
interface Made {
  uid: number;
  gid: number;
  umask: number | undefined;
}

/** File systems whose new files get their create mode less the umask (no default ACL): ext4/ext2/ext3, xfs, btrfs, tmpfs. */
const MODE_EXACT_FS = new Set([0xef53, 0x58465342, 0x9123683e, 0x01021994]);

/** Made (above) for the staging directory at `path` (through a directory handle); undefined when it cannot be told. */
function madeIn(path: Buffer): Made | undefined {
  if (typeof process.geteuid !== 'function' || typeof process.getegid !== 'function') return undefined;
  const st = lstatSync(path);
  const made: Made = { uid: process.geteuid(), gid: (st.mode & 0o2000) !== 0 ? st.gid : process.getegid(), umask: undefined };
  try {
    const umask = /^Umask:\s+([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'latin1'))?.[1];
    const api = xattrs();
    if (umask !== undefined && api && MODE_EXACT_FS.has(statfsSync(path).type) && !api.listAttributesSync(path.toString('latin1')).includes('system.posix_acl_default')) {
      made.umask = parseInt(umask, 8);
    }
  } catch {
    // Not told: every file is chmod'ed.
  }
  return made;
}

/**
 * A time for node's utimes, exact to the microsecond: the stored nanoseconds truncated
 * (toward zero) to microseconds. Node hands utimes a double of seconds, and libuv keeps
 * only whole microseconds of it (it truncates), so the decimal of the time itself comes
 * back a microsecond off about one time in twenty (a double of ~1.7e9 s is only good to
 * ~0.1 us either way). Half a microsecond past the wanted one (before it, for a time before 1970,
 * as libuv truncates toward zero) lands inside it whatever the double's rounding. A
 * decimal string, not a number: node turns a negative *number* into "now".
 */
function timeArg(ns: bigint): string {
  // Bigint division truncates toward zero: seconds and the rest have ns's sign.
  return timeArgOf(Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n));
}

/**
 * timeArg of `s` whole seconds and `rest` nanoseconds (of the same sign, |rest| < 1e9),
 * as FileTable keeps a time: the same string, made without a bigint per file.
 */
export function timeArgOf(s: number, rest: number): string {
  const us = Math.trunc(rest / 1000);
  const neg = s < 0 || us < 0;
  return `${neg ? '-' : ''}${Math.abs(s)}.${String(Math.abs(us)).padStart(6, '0')}5`;
}

async function restoreInto(repo: Repository, tgt: RestoreTarget, plan: Plan): Promise<RestoreResult> {
  const { target, dirs, files, others, warn, warnings, owners, modeFor, split, shown, opts, direct, made } = plan;
  /** Staged: owner `o` is what a new file gets anyway (its chown is skipped: a no-op, and the file is new, so nothing for it to clear). */
  const ownerMade = (o: Owner) => made !== undefined && o.uid === made.uid && o.gid === made.gid;
  /**
   * Staged: file f is created with mode `m` itself, not chmod'ed after (the staging
   * directory is 0700, so no one else sees it meanwhile): `m` has no setuid/setgid/sticky
   * bit and nothing the umask takes, and the file has no xattrs to write before its mode.
   */
  const createExact = (f: number, m: number) => made?.umask !== undefined && (m & ~0o777) === 0 && (m & made.umask) === 0 && !files.xattrs.has(f);
  const index = files.index;
  // The plan, packed like the files (issue 13): each distinct blob is a number, its
  // location the index record `blobRec` names; its uses (file, offset) a linked list.
  // Made at their final size: a file's every chunk is one use, and at most one blob.
  const blobOfRec = new Int32Array(index.recordCount).fill(-1);
  const most = Math.max(1, files.chunkCount);
  const blobRec = new Uint32Array(most);
  const blobFirstUse = new Int32Array(most);
  const blobLastUse = new Int32Array(most);
  let blobs = 0;
  const useFile = new Uint32Array(most);
  const useOffset = new Float64Array(most);
  const useNext = new Int32Array(most);
  let uses = 0;
  /** Blob numbers by pack (index pack number), packs in the order first needed. */
  const byPack = new Map<number, number[]>();
  const suffix = randomBytes(6).toString('hex');
  const tmpBase = Buffer.from(`.coffer-restore-${suffix}-`);
  /** prefix + tmpName(f), in one buffer (staged: the file's own name). */
  const tmpIn = (prefix: Buffer, f: number) => {
    if (direct) {
      const raw = files.rawPath(f);
      return Buffer.concat([prefix, raw.subarray(raw.lastIndexOf(0x2f) + 1)]);
    }
    const n = String(f);
    const b = Buffer.allocUnsafe(prefix.length + tmpBase.length + n.length);
    prefix.copy(b, 0);
    tmpBase.copy(b, prefix.length);
    b.write(n, prefix.length + tmpBase.length, 'latin1');
    return b;
  };
  const tmpName = (f: number) => tmpIn(NO_DIR, f);
  for (let f = 0; f < files.count; f++) {
    let offset = 0;
    const first = files.chunkStart[f]!;
    for (let k = 0; k < files.chunks[f]!; k++) {
      const r = files.recs[first + k]!;
      let blob = blobOfRec[r]!;
      if (blob < 0) {
        blob = blobOfRec[r] = blobs++;
        blobRec[blob] = r;
        blobFirstUse[blob] = -1;
        const pk = index.packNoAt(r);
        let group = byPack.get(pk);
        if (!group) byPack.set(pk, (group = []));
        group.push(blob);
      }
      const u = uses++;
      useFile[u] = f;
      useOffset[u] = offset;
      useNext[u] = -1;
      if (blobFirstUse[blob] === -1) blobFirstUse[blob] = u;
      else useNext[blobLastUse[blob]!] = u;
      blobLastUse[blob] = u;
      offset += index.locationAt(r).rawLength;
    }
    if (offset !== files.size[f]) throw new CofferError('corrupt', `${files.path(f)}: its chunk list does not add up to its size`);
  }

  const progress: RestoreProgress = { files: 0, bytes: 0, totalFiles: files.count, totalBytes: files.totalBytes };
  let lastReport = 0;
  const report = (force = false) => {
    const t = Date.now();
    if (opts.onProgress && (force || t - lastReport > 100)) {
      lastReport = t;
      opts.onProgress(progress);
    }
  };

  /** Temporary entries (not files: FileTable.tmpLeft) made and not yet renamed into place: removed on failure. */
  const createdTmp = new Map<string, { dir: Buffer; name: Buffer }>();
  const tmpKey = (dir: Buffer, name: Buffer) => `${dir.toString('latin1')}\0${name.toString('latin1')}`;
  const inDir = async <T>(dir: Buffer, fn: (prefix: Buffer) => Promise<T>): Promise<T> => (await tgt.withDir(dir, true, fn)) as T;
  /** Files an --overwrite restore has already replaced (named if it then fails). */
  const replaced: string[] = [];
  const fds = new Semaphore(RESTORE_OPEN_FILES);
  /**
   * Files written piece by piece whose descriptor stays open for their next piece (the
   * chat set: ~2,000 pieces of ~460 files, each opened through its directory and closed
   * again before), most recently written last; each holds its unit of `fds`.
   */
  const keptOpen = new Map<number, FdFile>();
  const closeKept = async (fh: FdFile) => {
    try {
      await fh.close();
    } finally {
      fds.give();
    }
  };
  /** Owner, xattrs, mode, times, in that order (chown clears setuid and capabilities). */
  const setMeta = async (e: MetaEntry, path: Buffer, fh?: MetaHandle) => {
    const where = shown(e.rawPath);
    if (owners && e.owner) {
      try {
        if (fh) await fh.chown(e.owner.uid, e.owner.gid);
        else await fs.lchown(path, e.owner.uid, e.owner.gid);
      } catch (err) {
        warn(where, `cannot set owner ${e.owner.uid}:${e.owner.gid}: ${errText(err)}`);
      }
    }
    if (e.xattrs && e.xattrs.length > 0) {
      try {
        for (const x of await writeXattrs(path.toString('utf8'), e.xattrs)) warn(where, `cannot set extended attribute ${x.name}: ${errText(x.error)}`);
      } catch (err) {
        warn(where, `cannot set extended attributes: ${errText(err)}`);
      }
    }
    if (e.type !== 'symlink') {
      const mode = modeFor(e);
      if (mode !== e.mode && e.owner) warn(where, `setuid/setgid bits dropped: the owner ${e.owner.uid}:${e.owner.gid} was not restored`);
      if (fh) await fh.chmod(mode);
      else await fs.chmod(path, mode);
    }
    const t = timeArg(e.mtimeNs);
    try {
      if (fh) await fh.utimes(t, t);
      else await fs.lutimes(path, t, t);
    } catch (err) {
      warn(where, `cannot set its modification time: ${errText(err)}`);
    }
  };
  /**
   * setMeta of file f with synchronous calls on its open descriptor (keep the two in
   * step), read from the file table as it goes (no entry made, its name only for a warning).
   */
  const setFileMetaSync = (f: number, path: Buffer, fd: number, exact: boolean) => {
    const where = () => shown(files.rawPath(f));
    const owner = files.owner(f);
    if (owners && owner && !ownerMade(owner)) {
      try {
        fchownSync(fd, owner.uid, owner.gid);
      } catch (err) {
        warn(where(), `cannot set owner ${owner.uid}:${owner.gid}: ${errText(err)}`);
      }
    }
    const xattrs = files.xattrs.get(f);
    if (xattrs && xattrs.length > 0) {
      try {
        for (const x of writeXattrsSync(path.toString('utf8'), xattrs)) warn(where(), `cannot set extended attribute ${x.name}: ${errText(x.error)}`);
      } catch (err) {
        warn(where(), `cannot set extended attributes: ${errText(err)}`);
      }
    }
    const mode = modeFor({ mode: files.mode[f]!, owner });
    if (mode !== files.mode[f] && owner) warn(where(), `setuid/setgid bits dropped: the owner ${owner.uid}:${owner.gid} was not restored`);
    if (!exact) fchmodSync(fd, mode);
    const t = files.time(f);
    try {
      futimesSync(fd, t, t);
    } catch (err) {
      warn(where(), `cannot set its modification time: ${errText(err)}`);
    }
  };
  /** Whether a whole file can go to a writer thread (a sparse file or one with xattrs is written here). */
  const threadable = (f: number) => !files.sparse(f) && !files.xattrs.has(f);
  let wholeFiles = 0;
  for (let f = 0; f < files.count; f++) if (files.chunks[f]! <= 1 && threadable(f)) wholeFiles++;
  const writer = wholeFiles >= restoreWriterForTesting.minFiles ? (plan.early ?? new RestoreWriter(RESTORE_WRITER_THREADS, repo.keys.chunkIdSpec)) : null;
  if (!writer) await plan.early?.close();
  let writerFiles = 0;
  /** Started with the first large blob. */
  let checker: BlobCheckThread | undefined;
  const closeWriter = async () => {
    restoreWriterForTesting.started = writer?.started ?? 0;
    restoreCheckForTesting.sent = checker?.sent ?? 0;
    await Promise.all([writer?.close(), checker?.close()]);
  };
  /** Stored blobs sent to a writer thread: where it is (for a failed check) and the ID the index gives. */
  interface SentBlob {
    flags: number;
    rawLength: number;
    id: Buffer;
    pack: string;
    offset: number;
  }
  /**
   * writeWhole on a writer thread: the same calls in the same order, the directory handle
   * held until the file is in place; warnings and bookkeeping stay here. `done` is told
   * once the file is in place (no argument) or why not (its error, named as naming()
   * names it); it must not throw. Without a promise where its directory is open (nearly
   * always): nothing per file but its paths and message (issue 13: the async functions
   * and closures per small file were a third of what the main thread allocated, and its
   * collections a fifth of its time, on the 50,000-file tree). The thread's answers are
   * taken as soon as the main thread looks (writerRoom), so its count of files in flight
   * is never stale: with a promise per file it fell only once the main thread yielded,
   * and it wrote three files in five itself meanwhile, the thread idle.
   */
  const toThread = (w: RestoreWriter, f: number, data: Buffer, blob: SentBlob | undefined, done: (err?: unknown) => void): void => {
    const rawPath = files.rawPath(f);
    const slash = rawPath.lastIndexOf(0x2f);
    const dir = slash < 0 ? NO_DIR : rawPath.subarray(0, slash);
    writerFiles++;
    const held = tgt.holdOpen(dir);
    if (held) return sendWhole(w, f, data, blob, held, true, rawPath, slash, done);
    // Its directory is not open: once it is (one wait for the files that came with it),
    // or, closed again meanwhile (the directories in use are many), opened and held as
    // for any other file.
    tgt.opened(dir).then(
      () => {
        const now = tgt.holdOpen(dir);
        if (now) return sendWhole(w, f, data, blob, now, true, rawPath, slash, done);
        let sent = false;
        naming(f, () =>
          inDir(dir, (prefix) => {
            sent = true;
            return new Promise<void>((res, rej) => sendWhole(w, f, data, blob, { prefix }, false, rawPath, slash, (e) => (e === undefined ? res() : rej(e))));
          }),
        ).then(
          () => done(),
          (e: unknown) => {
            if (!sent) writerFiles--;
            done(e);
          },
        );
      },
      (e: unknown) => {
        writerFiles--;
        done(fileError(f, e));
      },
    );
  };
  /** writeWhole on a writer thread as a promise. */
  const writeWholeThere = (w: RestoreWriter, f: number, data: Buffer): Promise<void> =>
    new Promise<void>((res, rej) => toThread(w, f, data, undefined, (e) => (e === undefined ? res() : rej(e))));
  /** Whether the writer threads may take one more file (their answers taken first). */
  const writerRoom = (w: RestoreWriter) => {
    if (writerFiles >= RESTORE_WRITER_IN_FLIGHT) w.poll();
    return writerFiles < RESTORE_WRITER_IN_FLIGHT && !w.backlogged;
  };
  /** toThread in `dir`, held open (released here once answered, when `release`). */
  const sendWhole = (w: RestoreWriter, f: number, data: Buffer, blob: SentBlob | undefined, dir: HeldDir, release: boolean, rawPath: Buffer, slash: number, done: (err?: unknown) => void): void => {
    files.setCreated(f);
    const recorded = files.owner(f);
    const owner = owners ? recorded : undefined;
    const mode = modeFor({ mode: files.mode[f]!, owner: recorded });
    let file: WholeFile;
    try {
      const dest = Buffer.concat([dir.prefix, rawPath.subarray(slash + 1)]);
      file = { tmp: direct ? NO_DIR : tmpIn(dir.prefix, f), dest, data, mode, time: files.time(f), overwrite: !direct && opts.overwrite === true };
    } catch (e) {
      if (release) tgt.release(dir);
      writerFiles--;
      return done(fileError(f, e));
    }
    if (blob) file.blob = blob;
    if (owner && !ownerMade(owner)) file.owner = owner;
    if (createExact(f, mode)) file.exactMode = true;
    w.send(file, (r, err) => {
      if (release) tgt.release(dir);
      writerFiles--;
      if (err) {
        // The blob failed its checks on the thread (nothing was written): the same error
        // as when they run here.
        const code = (err as NodeJS.ErrnoException).code;
        if (blob && code === CORRUPT_BLOB) {
          done(new CofferError('corrupt', err.message === BLOB_NOT_ITS_ID ? notItsId(blob.pack, blob.offset, blob.id) : `${blob.pack} (blob at ${blob.offset}): ${err.message}`));
        } else done(new FileWriteError(shown(rawPath), err));
        return;
      }
      try {
        if (r!.ownerError || r!.timeError || r!.existed || (mode !== files.mode[f] && recorded)) {
          const where = shown(rawPath);
          if (r!.ownerError) warn(where, `cannot set owner ${owner!.uid}:${owner!.gid}: ${errText(rebuildError(r!.ownerError))}`);
          if (mode !== files.mode[f] && recorded) warn(where, `setuid/setgid bits dropped: the owner ${recorded.uid}:${recorded.gid} was not restored`);
          if (r!.timeError) warn(where, `cannot set its modification time: ${errText(rebuildError(r!.timeError))}`);
          if (r!.existed) replaced.push(where);
        }
        files.setPlaced(f);
        files.remaining[f] = 0;
        progress.bytes += blob ? blob.rawLength : data.length;
        progress.files++;
        report();
      } catch (e) {
        done(e);
        return;
      }
      done();
    });
  };
  /**
   * A file with at most one chunk, written, finished and renamed into place in one go;
   * synchronously where its directory is open (nearly always; the promise is settled).
   */
  const writeWhole = (f: number, raw: Buffer): Promise<void> => {
    // The main thread writes the file itself when the threads are behind (it then works
    // as one more writer) or too many files wait for them.
    if (writer && threadable(f) && writerRoom(writer)) return writeWholeThere(writer, f, raw);
    const rawPath = files.rawPath(f);
    const slash = rawPath.lastIndexOf(0x2f);
    const dir = slash < 0 ? NO_DIR : rawPath.subarray(0, slash);
    return writeWholeHere(f, raw, rawPath, slash, dir, true);
  };
  const writeWholeHere = (f: number, raw: Buffer, rawPath: Buffer, slash: number, dir: Buffer, wait: boolean): Promise<void> => {
    const held = tgt.holdOpen(dir);
    if (!held) {
      // Its directory is not open: once it is (one wait for the files that came with it),
      // or, closed again meanwhile, opened and held as for any other file.
      if (wait) return tgt.opened(dir).then(() => writeWholeHere(f, raw, rawPath, slash, dir, false));
      return inDir(dir, async (prefix) => writeWholeIn(prefix, f, raw, rawPath, slash));
    }
    try {
      writeWholeIn(held.prefix, f, raw, rawPath, slash);
      return SETTLED;
    } catch (e) {
      return Promise.reject(e);
    } finally {
      tgt.release(held);
    }
  };
  const writeWholeIn = (prefix: Buffer, f: number, raw: Buffer, rawPath: Buffer, slash: number) => {
    const sparse = files.sparse(f);
    const tmpPath = tmpIn(prefix, f);
    const mode = modeFor({ mode: files.mode[f]!, owner: files.owner(f) });
    const exact = createExact(f, mode);
    const fd = openSync(tmpPath, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, exact ? mode : 0o600);
    files.setCreated(f);
    try {
      for (const [from, to] of dataRuns(raw, 0, sparse)) {
        for (let w = from; w < to; ) w += writeSync(fd, raw, w, to - w, w);
      }
      if (sparse) ftruncateSync(fd, files.size[f]!);
      setFileMetaSync(f, tmpPath, fd, exact);
    } finally {
      closeSync(fd);
    }
    if (!direct) {
      const dest = Buffer.concat([prefix, rawPath.subarray(slash + 1)]);
      const existed = opts.overwrite === true && lstatSync(dest, { throwIfNoEntry: false }) !== undefined;
      renameSync(tmpPath, dest);
      if (existed) replaced.push(shown(rawPath));
    }
    files.setPlaced(f);
    files.remaining[f] = 0;
    progress.bytes += raw.length;
    progress.files++;
    report();
  };
  const complete = async (f: number) => {
    if (direct) {
      // Already under its own name.
      files.setPlaced(f);
      progress.files++;
      report();
      return;
    }
    const rawPath = files.rawPath(f);
    const { dir, name } = split(rawPath);
    const tmp = tmpName(f);
    // Under the descriptor bound too: the directory handle it needs stays open meanwhile,
    // and many files of one pack may complete at once.
    await fds.with(() =>
      inDir(dir, async (prefix) => {
        const dest = Buffer.concat([prefix, name]);
        const existed = opts.overwrite === true && (await fs.lstat(dest).then(() => true, () => false));
        await fs.rename(Buffer.concat([prefix, tmp]), dest);
        if (existed) replaced.push(shown(rawPath));
      }),
    );
    files.setPlaced(f);
    progress.files++;
    report();
  };
  /** Writes `raw` at `pos`; in a sparse file, 4 KiB-aligned blocks of zeros are skipped (left as holes). */
  const writeAt = async (fh: FdFile, raw: Buffer, pos: number, sparse: boolean) => {
    for (const [from, to] of dataRuns(raw, pos, sparse)) {
      let written = from;
      while (written < to) {
        const { bytesWritten } = await fh.write(raw, written, to - written, pos + written);
        written += bytesWritten;
      }
    }
  };
  /**
   * Writes `raw` at `offset` of f's temporary file (creating it, O_EXCL, on the first
   * write), opened through its directory handle without following symlinks and closed
   * again; true when that was the file's last piece (its metadata is then set). `raw` may
   * be a function that writes the piece into the open descriptor itself (the blob-check
   * thread) and says how many bytes it was.
   */
  const writeTo = (f: number, raw: Buffer | WriteThere | null, offset: number): Promise<boolean> => {
    const run = async () => {
      const { dir } = split(files.rawPath(f));
      const tmp = tmpName(f);
      const sparse = files.sparse(f);
      // Open since its last piece (taken out while in use: never closed under a write)…
      let fh = keptOpen.get(f);
      if (fh) keptOpen.delete(f);
      else {
        // …or opened now, holding one of the RESTORE_OPEN_FILES units until closed.
        await fds.take();
        try {
          const created = files.created(f);
          const flags = created ? fsc.O_WRONLY | fsc.O_NOFOLLOW : fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW;
          fh = await inDir(dir, (prefix) => FdFile.open(Buffer.concat([prefix, tmp]), flags, 0o600));
        } catch (e) {
          fds.give();
          throw e;
        }
        files.setCreated(f);
      }
      let keep = false;
      try {
        if (typeof raw === 'function') progress.bytes += await raw(fh.fd, sparse);
        else if (raw) {
          await writeAt(fh, raw, offset, sparse);
          progress.bytes += raw.length;
        }
        const last = raw === null || --files.remaining[f]! === 0;
        if (last) {
          // A sparse file's zero blocks were skipped: the size makes them holes.
          if (sparse) await fh.truncate(files.size[f]!);
          await inDir(dir, (prefix) => setMeta(files.meta(f), Buffer.concat([prefix, tmp]), fh));
        } else keep = true;
        return last;
      } finally {
        if (keep) {
          keptOpen.set(f, fh);
          // The least recently written beyond KEPT_OPEN_FILES are closed.
          for (const [g, gh] of keptOpen) {
            if (keptOpen.size <= restoreKeptForTesting.kept) break;
            keptOpen.delete(g);
            await closeKept(gh);
          }
        } else await closeKept(fh);
      }
    };
    const p = (files.chains.get(f) ?? Promise.resolve()).then(run);
    const chain = p.then(
      () => {},
      () => {},
    );
    files.chains.set(f, chain);
    // The chain is dropped once its last write settles (the file's plan entry stays packed).
    void chain.then(() => {
      if (files.chains.get(f) === chain) files.chains.delete(f);
    });
    return p;
  };

  /** Runs fn, which writes file f: a system call's failure names the file (the paths it holds are /proc/self/fd ones). */
  const naming = async (f: number, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (e) {
      throw fileError(f, e);
    }
  };
  const fileError = (f: number, e: unknown) => (e instanceof CofferError || e instanceof FileWriteError ? e : new FileWriteError(shown(files.rawPath(f)), e));

  let madeOthers = 0;
  /** Removes the temporary files of files not complete (a staged restore's go with its staging directory). */
  const removeTemporaries = async () => {
    for (let f = 0; f < files.count && !direct; f++) {
      if (!files.tmpLeft(f)) continue;
      const { dir } = split(files.rawPath(f));
      await tgt.withDir(dir, false, (prefix) => fs.unlink(tmpIn(prefix, f))).catch(() => {});
    }
    if (!direct) for (const t of createdTmp.values()) await tgt.withDir(t.dir, false, (prefix) => fs.unlink(Buffer.concat([prefix, t.name]))).catch(() => {});
  };
  // Interrupted (Ctrl-C), the process removes them before it exits, as after a failure.
  const unregister = direct ? undefined : onInterrupt(removeTemporaries);
  try {
    // Every directory made first, DIR_PASS_LANES at a time (a child waits for its parent's
    // open: restore-target.ts): one after another, each was two or three thread-pool
    // round trips in a row, most of a restore of 20,000 directories of one file (issue 13).
    await mapLimit(dirs, DIR_PASS_LANES, (d) => inDir(d.rawPath, async () => undefined));
    const empty: number[] = [];
    for (let f = 0; f < files.count; f++) if (files.remaining[f] === 0) empty.push(f);
    await mapLimit(empty, writer ? RESTORE_WRITER_IN_FLIGHT : 1, (f) => naming(f, () => writeWhole(f, Buffer.alloc(0))));

    /** Piece buffers of packs read through a reader, for the next packs (at most PACK_READ_WINDOW). */
    const pieceBufs: Buffer[] = [];
    await mapLimit([...byPack.values()], PACK_READ_WINDOW, async (group) => {
      // Locations made for this pack's blobs only, while it is read.
      const blobs = group.map((b) => ({ b, loc: index.locationAt(blobRec[b]!) })).sort((x, y) => x.loc.offset - y.loc.offset);
      const packId = blobs[0]!.loc.packId;
      const name = packName(packId);
      const sealedLength = index.packs.get(packId.toString('latin1'))?.sealedLength ?? 0;
      const writes = new PackWrites();
      /** Hands a blob on to be written everywhere it is used, its bytes (`bytes`: stored + raw) counted in `writes` until then. */
      const deliver = (bl: (typeof blobs)[number], stored: Buffer, bytes: number): void => {
        const { b, loc } = bl;
        // A small blob that is one whole file goes to a writer thread as it is stored: the
        // thread decompresses and checks it (restore-writer.ts), not this one.
        const u0 = blobFirstUse[b]!;
        const f0 = useFile[u0]!;
        if (writer && useNext[u0] === -1 && files.chunks[f0] === 1 && loc.rawLength < RESTORE_CHECK_OFF_THREAD_FROM && threadable(f0) && writerRoom(writer)) {
          const n = writes.begin(bytes);
          let told = false;
          const done = (e?: unknown) => {
            told = true;
            writes.end(n, bytes, e);
          };
          try {
            toThread(writer, f0, stored, { flags: loc.flags, rawLength: loc.rawLength, id: index.idAt(blobRec[b]!), pack: name, offset: loc.offset }, done);
          } catch (e) {
            // Failed before the file was handed over (its done never comes): counted as settled.
            if (!told) done(fileError(f0, e));
          }
          return;
        }
        writes.add(
          (async () => {
            // Spec §6.2: a blob is what its ID says, or it is not restored. The pack
            // authenticated, but an index pointing at the wrong blob would otherwise
            // restore the wrong bytes. A large blob is unpadded, decompressed and checked
            // on the blob-check thread (restore-check.ts), its stored bytes handed over; a
            // small one here, where the round trip would cost more than the work (its
            // decompression here since most small blobs go to the writer thread above: the
            // rest, on the thread pool, cost this thread more in dispatch than zstd does).
            const id = index.idAt(blobRec[b]!);
            const where = `${name} (blob at ${loc.offset})`;
            let raw: Buffer;
            if (loc.rawLength >= RESTORE_CHECK_OFF_THREAD_FROM && (checker?.pending ?? 0) < restoreCheckForTesting.queue) {
              const thread = (checker ??= new BlobCheckThread(repo.keys.chunkIdSpec));
              const refused = (err: NodeJS.ErrnoException): never => {
                if (err.code !== CORRUPT_BLOB) throw err;
                throw new CofferError('corrupt', err.message === BLOB_NOT_ITS_ID ? notItsId(name, loc.offset, id) : `${where}: ${err.message}`);
              };
              if (useNext[u0] === -1) {
                // Used once (nearly every large blob): checked on the thread as soon as it
                // is read, while its file may still wait for its earlier pieces, then
                // written there into the file.
                const held = await thread.hold(stored, loc.flags, loc.rawLength, id).catch(refused);
                const pos = useOffset[u0]!;
                let written = false;
                const there: WriteThere = async (fd, sparse) => {
                  written = true;
                  await thread.writeHeld(held, fd, pos, sparse);
                  return loc.rawLength;
                };
                try {
                  await naming(f0, async () => {
                    if (await writeTo(f0, there, pos)) await complete(f0);
                  });
                } finally {
                  if (!written) thread.drop(held);
                }
                report();
                return;
              }
              raw = await thread.check(stored, loc.flags, loc.rawLength, id).catch(refused);
            } else {
              raw = decompressBlobHere(stored, loc.flags, loc.rawLength, where);
              if (!repo.keys.chunkId(raw).equals(id)) throw new CofferError('corrupt', notItsId(name, loc.offset, id));
            }
            for (let u = blobFirstUse[b]!; u >= 0; u = useNext[u]!) {
              const f = useFile[u]!;
              try {
                if (files.chunks[f] === 1) await writeWhole(f, raw);
                else if (await writeTo(f, raw, useOffset[u]!)) await complete(f);
              } catch (e) {
                throw fileError(f, e);
              }
            }
            // Written everywhere it is used: its buffer, if the blob-check thread's, serves a later blob.
            checker?.recycle(stored);
            report();
          })(),
          bytes,
        );
      };

      // The pack streams through in pieces: each segment's plaintext is released only
      // once it authenticated, copied into the blobs it holds, and each complete blob
      // is decompressed and written while the next piece is read. Memory per pack: one
      // piece and the blobs in progress, not the whole pack twice over.
      const opener = new ObjectOpener(repo.keys.objectMaster, { kind: ObjectKind.Pack, id: packId });
      let next = 0; // first blob not yet complete
      let plainPos = 0;
      let current: Buffer | undefined;
      const feed = (seg: Buffer) => {
        const segEnd = plainPos + seg.length;
        while (next < blobs.length) {
          const b = blobs[next]!;
          const bEnd = b.loc.offset + b.loc.storedLength;
          if (b.loc.offset >= segEnd) break;
          // A large blob's stored bytes go to the blob-check thread, in a buffer it hands back.
          current ??= b.loc.rawLength >= RESTORE_CHECK_OFF_THREAD_FROM ? (checker ??= new BlobCheckThread(repo.keys.chunkIdSpec)).buffer(b.loc.storedLength) : Buffer.allocUnsafe(b.loc.storedLength);
          const from = Math.max(b.loc.offset, plainPos);
          const to = Math.min(bEnd, segEnd);
          seg.copy(current, from - b.loc.offset, from - plainPos, to - plainPos);
          if (to < bEnd) break;
          deliver(b, current, b.loc.storedLength + b.loc.rawLength);
          current = undefined;
          next++;
        }
        plainPos = segEnd;
      };
      // The pack opened once for all its pieces where storage can (a local repository).
      let reader: ObjectReader | undefined;
      // …each piece read into the same buffer (the opener copies what it keeps): a new
      // 1 MiB buffer per piece, ~900 on the 1 GiB chat set, drove most of the main
      // thread's young collections.
      let pieceBuf: Buffer | undefined;
      try {
        if (repo.backend.openReader && sealedLength > PACK_READ_PIECE) {
          reader = await repo.backend.openReader(name);
          pieceBuf = pieceBufs.pop() ?? Buffer.allocUnsafeSlow(PACK_READ_PIECE + 1);
        }
        for (let off = 0; off < sealedLength; off += PACK_READ_PIECE) {
          const want = Math.min(PACK_READ_PIECE, sealedLength - off);
          const last = off + want === sealedLength;
          // The last read asks for one byte more: a pack longer than indexed is damaged
          // (extended), even if the indexed part authenticates.
          const range = { offset: off, length: last ? want + 1 : want };
          const piece = reader ? await reader.read(range, pieceBuf) : await repo.backend.get(name, range);
          if (piece.length > want) throw new CofferError('corrupt', 'it is longer than the index says (extended)');
          for (const seg of opener.update(piece)) feed(seg);
          // Blobs being decompressed and written hold their bytes (stored, raw and zstd's
          // buffers): the next piece is read once few are left (issue 13: otherwise a
          // pack's blobs all wait for the disk at once, 100 MiB and more on media files).
          if (writes.bytes > RESTORE_IN_FLIGHT_BYTES) await writes.until(RESTORE_IN_FLIGHT_BYTES);
          if (piece.length < want) break; // shorter than indexed: final() says so
        }
        void reader?.close();
        reader = undefined;
        if (pieceBuf) pieceBufs.push(pieceBuf);
        pieceBuf = undefined;
        for (const seg of opener.final()) feed(seg);
        if (next < blobs.length) throw new CofferError('corrupt', 'index points outside the pack');
      } catch (e) {
        void reader?.close();
        await writes.until(-1);
        /** The files that need the given blobs of this pack, three by name. */
        const filesOf = (bs: readonly number[]): string => {
          const needs: string[] = [];
          for (const b of bs) for (let u = blobFirstUse[b]!; u >= 0; u = useNext[u]!) needs.push(files.path(useFile[u]!));
          // A hard link to such a file is lost with it: named here too, not first on the
          // retry without the file (when the link's target is then missing).
          const raw = new Set<string>();
          for (const b of bs) for (let u = blobFirstUse[b]!; u >= 0; u = useNext[u]!) raw.add(files.rawPath(useFile[u]!).toString('latin1'));
          for (const o of others) if (o.type === 'hardlink' && raw.has(o.link.toString('latin1'))) needs.push(o.rawPath.toString('utf8'));
          needs.splice(0, needs.length, ...new Set(needs));
          const more = needs.length > 3 ? ` and ${needs.length - 3} more` : '';
          return `${needs.slice(0, 3).join(', ')}${more}`;
        };
        if (CofferError.is(e, 'missing-object')) {
          throw new CofferError('missing-object', `${filesOf(group)}: data is missing from the repository (${e.message}); \`coffer check\` tells which snapshots are affected`);
        }
        if (e instanceof DecryptionError) {
          // A damaged segment: the blobs not yet delivered are read one by one (as dump
          // does), so that the files whose data is intact are restored as restic does,
          // and the restore fails naming only the files whose data is damaged.
          if (current) checker?.recycle(current);
          current = undefined;
          const bad: number[] = [];
          for (; next < blobs.length; next++) {
            const bl = blobs[next]!;
            let stored: Buffer;
            try {
              stored = await repo.readStored(bl.loc, sealedLength);
            } catch (err) {
              if (!(err instanceof DecryptionError) && !CofferError.is(err, 'corrupt')) {
                await writes.until(-1);
                throw err;
              }
              bad.push(bl.b);
              continue;
            }
            const buf = bl.loc.rawLength >= RESTORE_CHECK_OFF_THREAD_FROM ? (checker ??= new BlobCheckThread(repo.keys.chunkIdSpec)).buffer(bl.loc.storedLength) : Buffer.allocUnsafe(bl.loc.storedLength);
            stored.copy(buf);
            deliver(bl, buf, bl.loc.storedLength + bl.loc.rawLength);
            if (writes.bytes > RESTORE_IN_FLIGHT_BYTES) await writes.until(RESTORE_IN_FLIGHT_BYTES);
          }
          await writes.until(-1);
          if (bad.length > 0) throw new CofferError('corrupt', `${name} is corrupt: it failed authentication (damaged data in ${filesOf(bad)}; the other files can be restored with --exclude)`);
          if (writes.failure) throw writes.failure.reason;
          warn(name, 'failed authentication when read whole, but every piece of it this restore needed read intact on its own (the storage returned wrong bytes once, or the pack is damaged elsewhere): run `coffer check --read-data`');
          return;
        }
        if (e instanceof CofferError && e.code === 'corrupt') throw new CofferError('corrupt', `${name}: ${e.message} (needed by ${filesOf(group)})`);
        throw e;
      }
      // Every write settles before the pack is done, failed or not: none may still be
      // creating a temporary file when a failure's clean-up runs.
      await writes.until(-1);
      if (writes.failure) throw writes.failure.reason;
    });

    // Symlinks, hard links and special files, each made under a temporary name and
    // renamed into place; hard links come after every file, so their targets exist.
    // Made OTHERS_LANES at a time (one after another, a tree of 10,000 symlinks and 20,000
    // hard links spent ~1.5 s waiting on thread-pool round trips, issue 13); what could not
    // be made is reported afterwards in the snapshot's order.
    let n = 0;
    const jobs: Array<{ e: (typeof others)[number]; dir: Buffer; name: Buffer; tmp: Buffer; failed?: string }> = [];
    for (const e of others) {
      const where = shown(e.rawPath);
      if (e.type === 'socket') {
        warn(where, 'socket not restored (a socket is made by the program that listens on it)');
        continue;
      }
      if ((e.type === 'chardev' || e.type === 'blockdev') && !isRoot()) {
        warn(where, `device node ${e.major}:${e.minor} not restored: making device nodes needs root`);
        continue;
      }
      const { dir, name } = split(e.rawPath);
      jobs.push({ e, dir, name, tmp: direct ? name : Buffer.from(`.coffer-restore-${suffix}-o${n++}`) });
    }
    await mapLimit(jobs, OTHERS_LANES, async (job) => {
      const { e, dir, name, tmp } = job;
      try {
        await inDir(dir, async (prefix) => {
          const tmpPath = Buffer.concat([prefix, tmp]);
          if (e.type === 'symlink') await fs.symlink(e.target, tmpPath);
          else if (e.type === 'hardlink') {
            const to = split(e.link);
            await inDir(to.dir, (p2) => fs.link(Buffer.concat([p2, to.name]), tmpPath));
          } else await makeNode(tmpPath.toString('latin1'), e.type as 'fifo' | 'chardev' | 'blockdev', e.major, e.minor);
          createdTmp.set(tmpKey(dir, tmp), { dir, name: tmp });
          // A hard link shares its inode (and metadata) with the file already restored.
          if (e.type !== 'hardlink') await setMeta(e, tmpPath);
          if (!direct) await fs.rename(tmpPath, Buffer.concat([prefix, name]));
          createdTmp.delete(tmpKey(dir, tmp));
        });
        madeOthers++;
      } catch (err) {
        if (err instanceof CofferError) throw err;
        await inDir(dir, (prefix) => fs.unlink(Buffer.concat([prefix, tmp]))).catch(() => {});
        createdTmp.delete(tmpKey(dir, tmp));
        job.failed = `cannot restore this ${e.type}: ${errText(err)}`;
      }
    });
    for (const job of jobs) if (job.failed !== undefined) warn(shown(job.e.rawPath), job.failed);
    // Directory metadata last, deepest first, since writing into a directory changes its
    // times: a level's directories DIR_PASS_LANES at a time, each level after the deeper ones.
    for (const level of byDepthDeepestFirst(dirs)) {
      await mapLimit(level, DIR_PASS_LANES, async (d) => {
        const { dir, name } = split(d.rawPath);
        await inDir(dir, (prefix) => tgt.withDir(d.rawPath, false, (_p, fh) => setMeta(d, Buffer.concat([prefix, name]), fh)));
      });
    }
    // Every file is complete, so none is still kept open; whatever is, is closed.
    for (const fh of keptOpen.values()) await closeKept(fh);
    keptOpen.clear();
    report(true);
  } catch (e) {
    await Promise.allSettled([...files.chains.values()]);
    for (const fh of keptOpen.values()) await closeKept(fh).catch(() => {});
    keptOpen.clear();
    await closeWriter();
    // Staged: the caller removes the staging directory, everything in it.
    await removeTemporaries();
    unregister?.();
    // Say truthfully what already happened: with --overwrite, completed files replaced
    // the user's files before the failure.
    const already =
      replaced.length === 0
        ? ''
        : `; ${replaced.length} existing file(s) had already been replaced by their restored version (e.g. ${replaced.slice(0, 3).join(', ')})`;
    if (e instanceof CofferError) throw already ? new CofferError(e.code, `${e.message}${already}`, { cause: e }) : e;
    const file = e instanceof FileWriteError ? e.file : undefined;
    const err = (file ? (e as FileWriteError).cause : e) as NodeJS.ErrnoException;
    const code = err?.code;
    const why = `${file ? `${file}: ` : ''}${code === 'ENOSPC' ? 'no space left on device' : code === 'EACCES' ? 'permission denied' : code === 'EMFILE' ? 'too many open files' : code === 'EISDIR' ? 'a directory is in the way' : code && err.syscall ? `${code} in ${err.syscall}` : errText(err)}`;
    throw new CofferError('storage', `restore to ${target} failed: ${why}; no partially written file was left in place${already}`, { cause: e });
  }
  unregister?.();
  await closeWriter();
  const symlinks = others.filter((e) => e.type === 'symlink').length;
  return { files: files.count, dirs: dirs.length, symlinks, others: madeOthers - symlinks, bytes: progress.totalBytes, warnings };
}

/**
 * The writes of one pack's blobs (one promise each, in the pack's order): how many bytes
 * (stored + raw) they hold while not settled, and the failure of the first (in that
 * order) that failed. One handler per write, not a list of them settled all at once at
 * the end (issue 13: a pack of small files has thousands).
 */
class PackWrites {
  bytes = 0;
  #pending = 0;
  #added = 0;
  failure: { n: number; reason: unknown } | undefined;
  #limit = 0;
  #wake: (() => void) | undefined;

  add(p: Promise<void>, bytes: number): void {
    const n = this.begin(bytes);
    p.then(
      () => this.end(n, bytes),
      (reason: unknown) => this.end(n, bytes, reason ?? new Error("a write failed")),
    );
  }

  /** A write without a promise: its number, for end(). */
  begin(bytes: number): number {
    this.bytes += bytes;
    this.#pending++;
    return this.#added++;
  }

  /** Write n of `bytes` settled: done, or failed with `reason` (an error: never undefined). */
  end(n: number, bytes: number, reason?: unknown): void {
    if (reason !== undefined && (!this.failure || n < this.failure.n)) this.failure = { n, reason };
    this.bytes -= bytes;
    this.#pending--;
    if (this.#wake && (this.#pending === 0 || this.bytes <= this.#limit)) {
      const wake = this.#wake;
      this.#wake = undefined;
      wake();
    }
  }

  /** Resolves once the writes not settled hold at most `limit` bytes; with -1, once every write settled. */
  until(limit: number): Promise<void> {
    if (this.#pending === 0 || this.bytes <= limit) return Promise.resolve();
    this.#limit = limit;
    return new Promise((resolve) => (this.#wake = resolve));
  }
}

/** A blob whose bytes do not hash to the ID the index gives it (spec §6.2). */
function notItsId(pack: string, offset: number, id: Uint8Array): string {
  return `${pack}: the blob at ${offset} does not match its ID: it is not ${hex(id).slice(0, 16)}, which the index places there`;
}

/** A restored file's write failed: `file` names it as the user sees it (its system call named a /proc/self/fd path). */
class FileWriteError extends Error {
  constructor(
    readonly file: string,
    cause: unknown,
  ) {
    super(`${file}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
  }
}

function errText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'EPERM' || code === 'EACCES') return 'permission denied';
  if (code === 'ENOTSUP' || code === 'EOPNOTSUPP') return 'not supported by the target file system';
  return (e as Error)?.message ?? String(e);
}
