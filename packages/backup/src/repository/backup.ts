/**
 * `coffer backup`: walks the sources, chunks changed files, stores new blobs, writes
 * the tree listing, the index, and last of all the snapshot (spec §12).
 *
 * Unchanged files (same size, mtime, inode and ctime as in the parent snapshot, with
 * all their blobs still indexed) are not read at all. An unreadable file does not stop
 * the backup: it is reported and left out, and the snapshot says so (`warnings`).
 */
import { promises as fs, type Stats } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { ChunkPool, FileReadError, type ChunkedFile } from '../chunker/chunk-pool.js';
import { FastCdc } from '../chunker/fastcdc.js';
import { ObjectKind } from '../crypto/sealed-object.js';
import { CofferError } from '../errors.js';
import { BlobType, snapshotName } from './blob.js';
import { BlobWriter } from './blob-writer.js';
import { RepositoryLock } from './lock.js';
import type { Repository, SnapshotRecord } from './repository.js';
import { encodeSnapshot, type Snapshot } from './snapshot.js';
import { encodeEntry, type FileEntry, type TreeEntry } from './tree.js';

/**
 * Files are chunked in independent regions of this size: FastCDC restarts at every
 * multiple of it (spec §6.1). The region boundaries are fixed, so unchanged data still
 * chunks the same way in every backup, and the regions of one large file (a message
 * database) are cut on both cores at once. Costs about one extra chunk per region when
 * data shifts across a boundary.
 */
export const CHUNK_REGION_BYTES = 64 * 1024 * 1024;

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
  /** 'auto' (default): the latest snapshot of the same paths from this host. */
  parent?: 'auto' | 'none';
  onProgress?: (p: BackupProgress) => void;
  onWarning?: (w: BackupWarning) => void;
  now?: () => Date;
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
}


function errnoMessage(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'ENOENT') return 'vanished during the backup';
  if (code === 'EIO') return 'I/O error';
  return (e as Error)?.message ?? String(e);
}

/** Splits a growing text stream into content-defined Tree blobs. */
export class TreeWriter {
  #buf = Buffer.alloc(0);
  /** Entries not yet joined to #buf: joining once per drain, not once per entry (that was quadratic). */
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  readonly ids: string[] = [];
  constructor(
    private readonly cdc: FastCdc,
    private readonly store: (raw: Buffer) => Promise<string>,
  ) {}
  async write(e: TreeEntry): Promise<void> {
    const line = Buffer.from(encodeEntry(e), 'utf8');
    this.#pending.push(line);
    this.#pendingBytes += line.length;
    if (this.#buf.length + this.#pendingBytes >= 2 * this.cdc.maxSize) await this.#drain(false);
  }
  async #drain(eof: boolean): Promise<void> {
    this.#buf = Buffer.concat([this.#buf, ...this.#pending]);
    this.#pending = [];
    this.#pendingBytes = 0;
    let start = 0;
    while (start < this.#buf.length) {
      const n = this.cdc.cut(this.#buf, start, this.#buf.length, eof);
      if (n <= 0) break;
      this.ids.push(await this.store(Buffer.from(this.#buf.subarray(start, start + n))));
      start += n;
    }
    this.#buf = Buffer.from(this.#buf.subarray(start));
  }
  async finish(): Promise<string[]> {
    await this.#drain(true);
    return this.ids;
  }
}

export async function backup(repo: Repository, opts: BackupOptions): Promise<BackupResult> {
  if (opts.paths.length === 0) throw new CofferError('invalid-argument', 'nothing to back up: give at least one path');
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
  roots.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  const lock = await RepositoryLock.acquire(repo, false);
  try {
    return await runBackup(repo, lock, opts, roots);
  } finally {
    await lock.release().catch(() => {});
  }
}

async function runBackup(
  repo: Repository,
  lock: RepositoryLock,
  opts: BackupOptions,
  roots: Array<{ abs: string; name: string; st: Stats }>,
): Promise<BackupResult> {
  const index = await repo.index();
  const absPaths = roots.map((r) => r.abs);
  const host = hostname();
  let parentFiles = new Map<string, FileEntry>();
  if (opts.parent !== 'none') {
    const parent = await findParent(repo, host, absPaths);
    if (parent) {
      try {
        for await (const e of repo.tree(parent.snapshot)) if (e.type === 'file') parentFiles.set(e.path, e);
      } catch (e) {
        // A damaged parent must not stop new backups: read every file instead.
        if (!(e instanceof CofferError) || e.code === 'storage') throw e;
        parentFiles = new Map();
        repo.onWarning(`the previous snapshot's file list can't be read (${e.message}); every file is read again`);
      }
    }
  }

  const writer = new BlobWriter(repo, (id) => index.has(id));
  const cdc = new FastCdc(repo.keys.gearTable, repo.config.chunker);
  const tree = new TreeWriter(cdc, async (raw) => {
    const id = repo.keys.chunkId(raw);
    await writer.add(BlobType.Tree, id, raw);
    return id.toString('hex');
  });
  const warnings: BackupWarning[] = [];
  const warn = (path: string, message: string) => {
    const w = { path, message };
    warnings.push(w);
    opts.onWarning?.(w);
  };
  const progress: BackupProgress = { files: 0, bytes: 0, addedBytes: 0, path: '' };
  const stats = { files: 0, dirs: 0, bytes: 0 };
  const read = { files: 0, bytes: 0 };
  let lastReport = 0;
  const report = (force = false) => {
    if (!opts.onProgress) return;
    const t = Date.now();
    if (!force && t - lastReport < 100) return;
    lastReport = t;
    progress.addedBytes = writer.addedBytes;
    opts.onProgress(progress);
  };
  if (opts.onProgress) {
    void prescan(roots.map((r) => r.abs)).then((t) => {
      progress.totalFiles = t.files;
      progress.totalBytes = t.bytes;
    });
  }

  const pool = new ChunkPool(ChunkPool.setupFor(repo.keys.gearTable, repo.keys.chunkIdKey, repo.config.chunker));
  const onChunk = async (id: Buffer, data: Buffer) => {
    progress.bytes += data.length;
    await writer.add(BlobType.Data, id, data);
    report();
  };
  const chunkFile = async (abs: string, size: number): Promise<{ chunks: string[]; size: number } | null> => {
    try {
      // Large files are cut in independent regions so both workers share them (spec §6.1).
      const regions: Array<Promise<ChunkedFile>> = [];
      for (let start = 0; start === 0 || start < size; start += CHUNK_REGION_BYTES) {
        const last = start + CHUNK_REGION_BYTES >= size;
        regions.push(pool.chunkFile(abs, onChunk, start, last ? Number.MAX_SAFE_INTEGER : start + CHUNK_REGION_BYTES));
      }
      const parts = await Promise.all(regions);
      read.files++;
      for (const r of parts) read.bytes += r.size;
      return { chunks: parts.flatMap((r) => r.ids.map((id) => id.toString('hex'))), size: parts.reduce((a, r) => a + r.size, 0) };
    } catch (e) {
      if (!(e instanceof FileReadError)) throw e;
      warn(abs, `cannot read: ${errnoMessage(e)}`);
      return null;
    }
  };

  // Files are chunked by the workers a few at a time; their tree entries are written
  // in walk order, so the listing is the same whatever finishes first.
  const LOOKAHEAD = 8;
  const queue: Array<Promise<TreeEntry | null>> = [];
  const emit = async (e: Promise<TreeEntry | null>) => {
    queue.push(e);
    while (queue.length > LOOKAHEAD) await writeHead();
  };
  const writeHead = async () => {
    const e = await queue.shift()!;
    if (!e) return;
    if (e.type === 'file') {
      stats.files++;
      stats.bytes += e.size;
      progress.files++;
      report();
    }
    await tree.write(e);
  };

  const visit = async (abs: string, rel: string, st: Stats): Promise<void> => {
    progress.path = rel;
    const mode = st.mode & 0o7777;
    if (st.isDirectory()) {
      let names: string[];
      try {
        names = await fs.readdir(abs);
      } catch (e) {
        warn(abs, `cannot list directory: ${errnoMessage(e)}`);
        return;
      }
      stats.dirs++;
      await emit(Promise.resolve({ path: rel, type: 'dir', mode, mtime: st.mtimeMs }));
      names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      for (const name of names) {
        const childAbs = join(abs, name);
        let cst: Stats;
        try {
          cst = await fs.lstat(childAbs);
        } catch (e) {
          warn(childAbs, `cannot stat: ${errnoMessage(e)}`);
          continue;
        }
        await visit(childAbs, `${rel}/${name}`, cst);
      }
    } else if (st.isSymbolicLink()) {
      try {
        const target = await fs.readlink(abs);
        await emit(Promise.resolve({ path: rel, type: 'symlink', mode, mtime: st.mtimeMs, target }));
      } catch (e) {
        warn(abs, `cannot read link: ${errnoMessage(e)}`);
      }
    } else if (st.isFile()) {
      const prev = parentFiles.get(rel);
      if (
        prev &&
        prev.size === st.size &&
        prev.mtime === st.mtimeMs &&
        prev.inode === st.ino &&
        prev.ctime === st.ctimeMs &&
        prev.chunks.every((c) => index.has(Buffer.from(c, 'hex')))
      ) {
        progress.bytes += st.size;
        await emit(Promise.resolve({ ...prev, mode }));
      } else {
        const done = chunkFile(abs, st.size).then((got): FileEntry | null =>
          got ? { path: rel, type: 'file', mode, mtime: st.mtimeMs, size: got.size, chunks: got.chunks, inode: st.ino, ctime: st.ctimeMs } : null,
        );
        done.catch(() => {}); // awaited in order by writeHead; don't report it unhandled meanwhile
        await emit(done);
      }
    } else {
      warn(abs, 'skipped: not a regular file, directory or symlink');
    }
  };

  try {
    for (const r of roots) await visit(r.abs, r.name, r.st);
    while (queue.length > 0) await writeHead();
    parentFiles = new Map(); // let the parent's listing go before the final flush
    const treeIds = await tree.finish();
    // The lock is re-checked before the index and the snapshot: if it was removed (a
    // prune that took this process for dead), packs written here may be gone.
    await writer.finish(() => lock.ensureHeld());
    const snapshot: Snapshot = {
      version: 1,
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
    const id = await repo.writeObject(ObjectKind.Snapshot, encodeSnapshot(snapshot), snapshotName);
    await repo.backend.sync();
    report(true);
    return { id, snapshot, warnings, read };
  } catch (e) {
    await Promise.allSettled(queue);
    await writer.abort();
    throw e;
  } finally {
    await pool.close();
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
  const all = await repo.snapshots();
  for (let i = all.length - 1; i >= 0; i--) {
    const s = all[i]!;
    if (s.snapshot.hostname === host && [...s.snapshot.paths].sort().join('\0') === key) return s;
  }
  return undefined;
}

async function prescan(paths: string[]): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  const walk = async (p: string): Promise<void> => {
    const st = await fs.lstat(p).catch(() => null);
    if (!st) return;
    if (st.isFile()) {
      files++;
      bytes += st.size;
    } else if (st.isDirectory()) {
      const names = await fs.readdir(p).catch(() => [] as string[]);
      for (const n of names) await walk(join(p, n));
    }
  };
  for (const p of paths) await walk(p);
  return { files, bytes };
}
