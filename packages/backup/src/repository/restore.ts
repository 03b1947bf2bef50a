/**
 * `coffer restore`: recreates a snapshot under a target directory.
 *
 * Every file is written to a temporary name beside its destination and renamed into
 * place only once complete, so the user's path holds either nothing (or the old file)
 * or the whole restored file, never half of one. Existing files are not overwritten
 * unless asked. Blobs are read pack by pack, each pack once, in the order the backup
 * wrote them. On failure every temporary file is removed.
 *
 * Open descriptors are bounded whatever the number of files (RESTORE_OPEN_FILES): a
 * file is opened for each write and closed after it, never held open between packs.
 * Every blob's ID (the keyed hash of its plaintext) is checked before it is written.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { ObjectKind, ObjectOpener } from '../crypto/sealed-object.js';
import { CofferError, DecryptionError } from '../errors.js';
import { decompressBlob } from './compress.js';
import { hex, packName, type BlobLocation } from './blob.js';
import { RepositoryLock } from './lock.js';
import { mapLimit, type Repository, type SnapshotRecord } from './repository.js';
import { Semaphore } from './semaphore.js';
import type { DirEntry, FileEntry, SymlinkEntry } from './tree.js';

export interface RestoreProgress {
  files: number;
  bytes: number;
  totalFiles: number;
  totalBytes: number;
}

export interface RestoreOptions {
  target: string;
  overwrite?: boolean;
  /** Read without taking a lock (e.g. the repository's disk is full); see spec §11. */
  noLock?: boolean;
  onProgress?: (p: RestoreProgress) => void;
}

export interface RestoreResult {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
}

const PACK_READ_WINDOW = 2;
/** At most this many restored files are open at once (a 256-descriptor limit is plenty). */
export const RESTORE_OPEN_FILES = 32;
/** Packs are read in pieces of this size. */
const PACK_READ_PIECE = 1024 * 1024;

interface PendingFile {
  entry: FileEntry;
  dest: string;
  tmp: string;
  remaining: number;
  /** The temporary file exists (was created by us). */
  created: boolean;
  /** Writes to one file run one after another (the first creates it). */
  chain: Promise<void>;
}

export async function restore(repo: Repository, rec: SnapshotRecord, opts: RestoreOptions): Promise<RestoreResult> {
  if (opts.noLock) return runRestore(repo, rec, opts);
  const lock = await RepositoryLock.acquire(repo, false);
  try {
    return await runRestore(repo, rec, opts);
  } finally {
    await lock.release().catch(() => {});
  }
}

async function runRestore(repo: Repository, rec: SnapshotRecord, opts: RestoreOptions): Promise<RestoreResult> {
  const target = resolve(opts.target);
  const dirs: DirEntry[] = [];
  const files: FileEntry[] = [];
  const links: SymlinkEntry[] = [];
  for await (const e of repo.tree(rec.snapshot)) {
    if (e.type === 'dir') dirs.push(e);
    else if (e.type === 'file') files.push(e);
    else links.push(e);
  }
  const dest = (p: string) => {
    const d = join(target, ...p.split('/'));
    if (d !== target && !d.startsWith(target + sep)) throw new CofferError('corrupt', `tree entry ${p} escapes the target`);
    return d;
  };

  // Refuse before writing anything: which files would be replaced?
  if (!opts.overwrite) {
    const clashes: string[] = [];
    for (const e of [...files, ...links]) {
      if (await fs.lstat(dest(e.path)).then(() => true, () => false)) clashes.push(dest(e.path));
      if (clashes.length >= 5) break;
    }
    if (clashes.length > 0) {
      throw new CofferError('exists', `restore would overwrite existing files (e.g. ${clashes.join(', ')}); use --overwrite to replace them`);
    }
  }

  // Every blob must be indexed before we start: a missing one names its file.
  const index = await repo.index();
  type BlobUse = { id: Buffer; loc: BlobLocation; uses: Array<{ file: PendingFile; offset: number }> };
  const byPack = new Map<string, { packId: Buffer; blobs: BlobUse[] }>();
  const blobUses = new Map<string, BlobUse>();
  const pending: PendingFile[] = [];
  const suffix = randomBytes(6).toString('hex');
  for (const entry of files) {
    const d = dest(entry.path);
    const file: PendingFile = {
      entry,
      dest: d,
      tmp: join(dirname(d), `.coffer-restore-${suffix}-${pending.length}`),
      remaining: entry.chunks.length,
      created: false,
      chain: Promise.resolve(),
    };
    pending.push(file);
    let offset = 0;
    for (const c of entry.chunks) {
      let use = blobUses.get(c);
      if (!use) {
        const id = Buffer.from(c, 'hex');
        const loc = index.get(id);
        if (!loc) {
          throw new CofferError('missing-object', `${entry.path}: its data (blob ${c.slice(0, 16)}) is missing from the repository; \`coffer check\` tells which snapshots are affected`);
        }
        use = { id, loc, uses: [] };
        blobUses.set(c, use);
        const pk = loc.packId.toString('latin1');
        let group = byPack.get(pk);
        if (!group) byPack.set(pk, (group = { packId: loc.packId, blobs: [] }));
        group.blobs.push(use);
      }
      use.uses.push({ file, offset });
      offset += use.loc.rawLength;
    }
    if (offset !== entry.size) throw new CofferError('corrupt', `${entry.path}: its chunk list does not add up to its size`);
  }

  const progress: RestoreProgress = { files: 0, bytes: 0, totalFiles: files.length, totalBytes: files.reduce((a, f) => a + f.size, 0) };
  let lastReport = 0;
  const report = (force = false) => {
    const t = Date.now();
    if (opts.onProgress && (force || t - lastReport > 100)) {
      lastReport = t;
      opts.onProgress(progress);
    }
  };

  const createdTmp = new Set<string>();
  const replaced: string[] = [];
  const fds = new Semaphore(RESTORE_OPEN_FILES);
  /**
   * Writes `data` at `offset` of f's temporary file (creating it on the first write);
   * true when that was the file's last piece (its mode and times are then set).
   */
  const writeTo = (f: PendingFile, data: Buffer | null, offset: number): Promise<boolean> => {
    const run = () =>
      fds.with(async () => {
        const fh = await fs.open(f.tmp, f.created ? 'r+' : 'wx', 0o600);
        if (!f.created) createdTmp.add(f.tmp);
        f.created = true;
        try {
          let written = 0;
          while (data && written < data.length) {
            const { bytesWritten } = await fh.write(data, written, data.length - written, offset + written);
            written += bytesWritten;
          }
          if (data) progress.bytes += data.length;
          const last = data === null || --f.remaining === 0;
          if (last) {
            await fh.chmod(f.entry.mode);
            // Seconds as a float keep the sub-millisecond part a Date would drop.
            await fh.utimes(f.entry.mtime / 1000, f.entry.mtime / 1000);
          }
          return last;
        } finally {
          await fh.close();
        }
      });
    const p = f.chain.then(run);
    f.chain = p.then(() => {}, () => {});
    return p;
  };
  const complete = async (f: PendingFile) => {
    if (opts.overwrite && (await fs.lstat(f.dest).then(() => true, () => false))) replaced.push(f.dest);
    await fs.rename(f.tmp, f.dest);
    createdTmp.delete(f.tmp);
    progress.files++;
    report();
  };

  try {
    await fs.mkdir(target, { recursive: true });
    for (const d of dirs) await fs.mkdir(dest(d.path), { recursive: true, mode: 0o700 });
    for (const f of pending) {
      if (f.remaining !== 0) continue;
      await writeTo(f, null, 0);
      await complete(f);
    }

    await mapLimit([...byPack.values()], PACK_READ_WINDOW, async (group) => {
      const name = packName(group.packId);
      const sealedLength = index.packs.get(group.packId.toString('latin1'))?.sealedLength ?? 0;
      const blobs = [...group.blobs].sort((a, b) => a.loc.offset - b.loc.offset);
      const writes: Array<Promise<void>> = [];
      const deliver = (b: (typeof blobs)[number], stored: Buffer) =>
        (async () => {
          const raw = await decompressBlob(stored, b.loc.flags, b.loc.rawLength, `${name} (blob at ${b.loc.offset})`);
          // The pack authenticated, but is this the blob the file list names? (An index
          // pointing at the wrong blob would otherwise restore the wrong bytes.)
          if (!repo.keys.chunkId(raw).equals(b.id)) {
            throw new CofferError('corrupt', `blob at ${b.loc.offset} is not ${hex(b.id).slice(0, 16)}, which the index places there`);
          }
          for (const u of b.uses) {
            if (await writeTo(u.file, raw, u.offset)) await complete(u.file);
          }
          report();
        })();

      // The pack streams through in pieces: each segment's plaintext is released only
      // once it authenticated, copied into the blobs it holds, and each complete blob
      // is decompressed and written while the next piece is read. Memory per pack: one
      // piece and the blobs in progress, not the whole pack twice over.
      const opener = new ObjectOpener(repo.keys.objectMaster, { kind: ObjectKind.Pack, id: group.packId });
      let next = 0; // first blob not yet complete
      let plainPos = 0;
      let current: Buffer | undefined;
      const feed = (seg: Buffer) => {
        const segEnd = plainPos + seg.length;
        while (next < blobs.length) {
          const b = blobs[next]!;
          const bEnd = b.loc.offset + b.loc.storedLength;
          if (b.loc.offset >= segEnd) break;
          current ??= Buffer.allocUnsafe(b.loc.storedLength);
          const from = Math.max(b.loc.offset, plainPos);
          const to = Math.min(bEnd, segEnd);
          seg.copy(current, from - b.loc.offset, from - plainPos, to - plainPos);
          if (to < bEnd) break;
          const p = deliver(b, current);
          p.catch(() => {}); // awaited below
          writes.push(p);
          current = undefined;
          next++;
        }
        plainPos = segEnd;
      };
      try {
        for (let off = 0; off < sealedLength; off += PACK_READ_PIECE) {
          const want = Math.min(PACK_READ_PIECE, sealedLength - off);
          const last = off + want === sealedLength;
          // The last read asks for one byte more: a pack longer than indexed is damaged
          // (extended), even if the indexed part authenticates.
          const piece = await repo.backend.get(name, { offset: off, length: last ? want + 1 : want });
          if (piece.length > want) throw new CofferError('corrupt', 'it is longer than the index says (extended)');
          for (const seg of opener.update(piece)) feed(seg);
          if (piece.length < want) break; // shorter than indexed: final() says so
        }
        for (const seg of opener.final()) feed(seg);
        if (next < blobs.length) throw new CofferError('corrupt', 'index points outside the pack');
      } catch (e) {
        await Promise.allSettled(writes);
        if (CofferError.is(e, 'missing-object')) {
          const needs = [...new Set(group.blobs.flatMap((b) => b.uses.map((u) => u.file.entry.path)))];
          const more = needs.length > 3 ? ` and ${needs.length - 3} more` : '';
          throw new CofferError('missing-object', `${needs.slice(0, 3).join(', ')}${more}: data is missing from the repository (${e.message}); \`coffer check\` tells which snapshots are affected`);
        }
        if (e instanceof DecryptionError) throw new CofferError('corrupt', `${name} is corrupt: it failed authentication`);
        if (e instanceof CofferError && e.code === 'corrupt') throw new CofferError('corrupt', `${name}: ${e.message}`);
        throw e;
      }
      await Promise.all(writes);
    });

    for (const l of links) {
      const tmp = join(dirname(dest(l.path)), `.coffer-restore-${suffix}-l${createdTmp.size}`);
      await fs.symlink(l.target, tmp);
      createdTmp.add(tmp);
      await fs.rename(tmp, dest(l.path));
      createdTmp.delete(tmp);
    }
    // Directory times last, deepest first, since writing into a directory changes them.
    for (const d of [...dirs].reverse()) {
      await fs.chmod(dest(d.path), d.mode);
      await fs.utimes(dest(d.path), d.mtime / 1000, d.mtime / 1000);
    }
    report(true);
  } catch (e) {
    await Promise.allSettled(pending.map((f) => f.chain));
    for (const t of createdTmp) await fs.unlink(t).catch(() => {});
    // Say truthfully what already happened: with --overwrite, completed files replaced
    // the user's files before the failure.
    const already =
      replaced.length === 0
        ? ''
        : `; ${replaced.length} existing file(s) had already been replaced by their restored version (e.g. ${replaced.slice(0, 3).join(', ')})`;
    if (e instanceof CofferError) throw already ? new CofferError(e.code, `${e.message}${already}`, { cause: e }) : e;
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOSPC' ? 'no space left on device' : code === 'EACCES' ? 'permission denied' : code === 'EMFILE' ? 'too many open files' : (e as Error).message;
    throw new CofferError('storage', `restore to ${target} failed: ${why}; no partially written file was left in place${already}`, { cause: e });
  }
  return { files: files.length, dirs: dirs.length, symlinks: links.length, bytes: progress.totalBytes };
}

