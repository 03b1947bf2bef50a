import { close, lstatSync, open, promises as fs, read, constants as fsc } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CofferError } from '../errors.js';
import { checkObjectName, type ByteRange, type ObjectInfo, type ObjectReader, type ObjectWriter, type StorageBackend } from './backend.js';

function describe(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  switch (code) {
    case 'ENOSPC':
      return 'no space left on device';
    case 'EDQUOT':
      return 'disk quota exceeded';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EROFS':
      return 'read-only file system';
    case 'EIO':
      return 'I/O error';
    default:
      return (e as Error)?.message ?? String(e);
  }
}

/**
 * `fs.mkdir(dir, { recursive: true })` failing with the real reason. Node 20's recursive
 * mkdir reports ENOENT for any failure to make a missing directory (EROFS, EACCES,
 * ENOSPC: it stats the path after the failure, and finds nothing), so a read-only
 * file system read "no such file or directory". On ENOENT the first missing directory
 * is made alone, which fails with the real reason (or succeeds: then the rest is made).
 * Returns the first directory made, as `fs.mkdir` does.
 */
export async function mkdirRecursive(dir: string): Promise<string | undefined> {
  try {
    return await fs.mkdir(dir, { recursive: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    let first = resolve(dir);
    const isDir = (p: string) => fs.stat(p).then((st) => st.isDirectory(), () => false);
    while (dirname(first) !== first && !(await isDir(dirname(first)))) first = dirname(first);
    await fs.mkdir(first);
    await fs.mkdir(dir, { recursive: true });
    return first;
  }
}

/** An object's ID in its name: 64 hex digits (spec §2); the layout's folders are shorter. */
const OBJECT_ID = /^[0-9a-f]{64}$/;

/** Directories synced at once by `sync()`. */
const SYNC_LANES = 4;

/**
 * The default backend: one file per object under a directory. A put writes a temporary
 * file, fsyncs it and hard-links it into place (link fails if the name exists, which is
 * what makes objects immutable), so a crash never leaves a half-written object under
 * its real name. `sync()` fsyncs the directories that gained entries.
 */
export class LocalBackend implements StorageBackend {
  readonly location: string;
  #dirtyDirs = new Set<string>();
  #madeDirs = new Set<string>();

  constructor(root: string) {
    this.location = root;
  }

  #path(name: string): string {
    checkObjectName(name);
    return join(this.location, name);
  }

  async #mkdir(dir: string): Promise<void> {
    if (this.#madeDirs.has(dir)) return;
    // A directory made here is itself a new entry in its parent: that parent needs an
    // fsync too before anything inside the new directory counts as durable.
    const first = await mkdirRecursive(dir);
    if (first !== undefined) {
      for (let d = dir; d.length >= first.length && d !== dirname(d); d = dirname(d)) this.#dirtyDirs.add(dirname(d));
    }
    this.#madeDirs.add(dir);
  }

  async put(name: string, parts: readonly Uint8Array[]): Promise<void> {
    const w = await this.create(name);
    try {
      await w.write(parts);
      await w.commit();
    } catch (e) {
      await w.abort();
      throw e;
    }
  }

  /**
   * Writes to a temporary file beside the object; commit fdatasyncs it and hard-links
   * it into place (link fails if the name exists, which is what makes objects
   * immutable), so a crash never leaves a half-written object under its real name.
   */
  async create(name: string): Promise<ObjectWriter> {
    const path = this.#path(name);
    const dir = dirname(path);
    const tmp = join(dir, `.tmp-${randomBytes(8).toString('hex')}`);
    const failed = (e: unknown) => {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        return new CofferError('storage', `object ${name} already exists in ${this.location}: objects are immutable`);
      }
      return new CofferError('storage', `writing ${name} to ${this.location} failed: ${describe(e)}`, { cause: e });
    };
    let fh: fs.FileHandle | undefined;
    try {
      await this.#mkdir(dir);
      fh = await fs.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    } catch (e) {
      throw failed(e);
    }
    const file = fh;
    let open = true;
    const cleanup = async () => {
      if (open) await file.close().catch(() => {});
      open = false;
      await fs.unlink(tmp).catch(() => {});
    };
    return {
      write: async (parts) => {
        try {
          let pending = parts.filter((p) => p.length > 0);
          while (pending.length > 0) {
            // writev takes at most IOV_MAX (1024) buffers at a time.
            const { bytesWritten } = await file.writev(pending.slice(0, 512) as Uint8Array[]);
            pending = skipWritten(pending, bytesWritten);
          }
        } catch (e) {
          throw failed(e);
        }
      },
      commit: async () => {
        try {
          await file.datasync();
          await file.close();
          open = false;
          await fs.link(tmp, path);
          this.#dirtyDirs.add(dir);
        } catch (e) {
          throw failed(e);
        } finally {
          await cleanup();
        }
      },
      abort: cleanup,
    };
  }

  async get(name: string, range?: ByteRange): Promise<Uint8Array> {
    const path = this.#path(name);
    try {
      if (!range) return await fs.readFile(path);
      // A descriptor, not a FileHandle: restore reads every pack in 1 MiB pieces, and the
      // FileHandle's object, promise machinery and close cost its main thread ~20 µs more
      // per piece (open, read, close: 35-40 against 50-65 µs of the calling thread).
      const fd = await openFd(path);
      try {
        return await readRange(fd, range);
      } finally {
        await closeFd(fd);
      }
    } catch (e) {
      throw this.#readFailed(name, e);
    }
  }

  /**
   * One descriptor for every range read (restore's pieces of a pack): the open and close
   * per piece of get() were two of its three round trips through the thread pool.
   */
  async openReader(name: string): Promise<ObjectReader> {
    const path = this.#path(name);
    let fd: number;
    try {
      fd = await openFd(path);
    } catch (e) {
      throw this.#readFailed(name, e);
    }
    let closed = false;
    return {
      read: async (range, into) => {
        if (closed) throw new Error(`reader of ${name} used after close`);
        if (into && into.length < range.length) throw new RangeError(`into: ${into.length} bytes, fewer than the ${range.length} asked for`);
        try {
          return await readRange(fd, range, into);
        } catch (e) {
          throw this.#readFailed(name, e);
        }
      },
      close: async () => {
        if (closed) return;
        closed = true;
        await closeFd(fd).catch(() => {});
      },
    };
  }

  #readFailed(name: string, e: unknown): CofferError {
    // ENOENT with the entry still there is a dangling symlink (the object on a disk not
    // mounted now): damage to report, not an object deleted meanwhile (missing-object).
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      if (!this.#entryExists(name)) return new CofferError('missing-object', `${name} is missing from the repository at ${this.location}`);
      return new CofferError('storage', `reading ${name} from ${this.location} failed: it is a symbolic link to something that does not exist (a disk not mounted?)`, { cause: e });
    }
    return new CofferError('storage', `reading ${name} from ${this.location} failed: ${describe(e)}`, { cause: e });
  }

  /** Whether `name`'s directory entry exists (lstat: a dangling symlink does). */
  #entryExists(name: string): boolean {
    try {
      lstatSync(this.#path(name));
      return true;
    } catch {
      return false;
    }
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    try {
      const st = await fs.stat(this.#path(name));
      return { name, size: st.size, mtime: st.mtimeMs };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        if (!this.#entryExists(name)) return null;
        throw this.#readFailed(name, e);
      }
      throw new CofferError('storage', `reading ${name} from ${this.location} failed: ${describe(e)}`, { cause: e });
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    const walk = async (rel: string): Promise<void> => {
      let entries;
      try {
        entries = await fs.readdir(join(this.location, rel), { withFileTypes: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw new CofferError('storage', `listing ${rel || '/'} in ${this.location} failed: ${describe(e)}`, { cause: e });
      }
      for (const ent of entries) {
        if (ent.name.startsWith('.')) continue; // temporary files of puts in progress
        const name = rel ? `${rel}/${ent.name}` : ent.name;
        // A directory named like an object ID (64 hex digits, spec §2) is damage where an
        // object was, not a folder: it is listed, so reading it fails and names it (prune
        // refuses on a snapshot it can't read). Walked, it vanished without a word, and
        // prune deleted the data of the snapshot it had been.
        if (ent.isDirectory() && !OBJECT_ID.test(ent.name)) {
          if (prefix.startsWith(name + '/') || (name + '/').startsWith(prefix)) await walk(name);
        } else if (name.startsWith(prefix)) {
          // Only an entry gone since the readdir drops a name. One that can't be stat'ed
          // (a symlink loop, a dangling symlink, an I/O error) is listed too, for the same
          // reason: its size is the entry's own (lstat), or 0.
          const path = join(this.location, name);
          const st = await fs.stat(path).catch(() => fs.lstat(path).catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? null : { size: 0, mtimeMs: undefined })));
          if (st) out.push({ name, size: st.size, ...(st.mtimeMs !== undefined ? { mtime: st.mtimeMs } : {}) });
        }
      }
    };
    await walk('');
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async delete(name: string): Promise<void> {
    const path = this.#path(name);
    try {
      await fs.unlink(path);
      this.#dirtyDirs.add(dirname(path));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new CofferError('storage', `deleting ${name} from ${this.location} failed: ${describe(e)}`, { cause: e });
    }
  }

  /** Unlinks `.tmp-*` files (puts interrupted by a crash) last modified before `olderThan`. */
  async removeStalePartials(olderThan: number): Promise<number> {
    let n = 0;
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await fs.readdir(dir, { withFileTypes: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw new CofferError('storage', `listing ${dir} failed: ${describe(e)}`, { cause: e });
      }
      for (const ent of entries) {
        const p = join(dir, ent.name);
        if (ent.isDirectory() && !ent.name.startsWith('.')) await walk(p);
        else if (ent.isFile() && ent.name.startsWith('.tmp-')) {
          const st = await fs.stat(p).catch(() => null);
          if (!st || st.mtimeMs >= olderThan) continue;
          await fs.unlink(p).catch(() => {});
          this.#dirtyDirs.add(dir);
          n++;
        }
      }
    };
    await walk(this.location);
    return n;
  }

  async sync(): Promise<void> {
    const dirs = [...this.#dirtyDirs];
    this.#dirtyDirs.clear();
    // SYNC_LANES at a time (libuv's pool runs four calls side by side), not one after
    // another: a first backup syncs four directories after its first pack (the repository,
    // locks/, data/, data/xx/), 1.9 ms one by one against 0.9 ms at once on this machine's
    // disk, more where an fsync waits for a platter or a network. Not all at once: a prune
    // can leave all 256 data/xx/ dirty, and a descriptor each would fail under a low limit
    // (ulimit -n). Nothing depends on their order; every one is durable before this
    // returns, or it throws; those that failed stay dirty, for the next sync to try again.
    const failed: Array<{ dir: string; error: unknown }> = [];
    let next = 0;
    const lane = async () => {
      while (next < dirs.length) {
        const dir = dirs[next++]!;
        try {
          const fh = await fs.open(dir, 'r');
          try {
            await fh.sync();
          } finally {
            await fh.close();
          }
        } catch (error) {
          failed.push({ dir, error });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(SYNC_LANES, dirs.length) }, lane));
    if (failed.length === 0) return;
    for (const f of failed) this.#dirtyDirs.add(f.dir);
    throw failed[0]!.error;
  }
}

function openFd(path: string): Promise<number> {
  return new Promise<number>((res, rej) => open(path, 'r', (e, d) => (e ? rej(e) : res(d))));
}

function closeFd(fd: number): Promise<void> {
  return new Promise<void>((res, rej) => close(fd, (e) => (e ? rej(e) : res())));
}

/** `range` of the open file `fd`: fewer bytes where the file ends first; in `into` when given (a view of it; at least range.length bytes). */
async function readRange(fd: number, range: ByteRange, into?: Buffer): Promise<Buffer> {
  const buf = into ?? Buffer.allocUnsafe(range.length);
  let got = 0;
  while (got < range.length) {
    const n = await new Promise<number>((res, rej) => read(fd, buf, got, range.length - got, range.offset + got, (e, b) => (e ? rej(e) : res(b))));
    if (n === 0) break;
    got += n;
  }
  return got === buf.length ? buf : buf.subarray(0, got);
}

function skipWritten(parts: Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const p of parts) {
    if (n >= p.length) {
      n -= p.length;
      continue;
    }
    out.push(n > 0 ? p.subarray(n) : p);
    n = 0;
  }
  return out;
}
