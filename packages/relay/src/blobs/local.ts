/**
 * Blob store in a local directory: <root>/<namespace>/<name>. A put writes a temporary
 * file, fsyncs it and hard-links it into place: link fails if the name exists (which is
 * what makes objects immutable) and a crash never leaves a half-written object under its
 * real name (as packages/backup/src/storage/local.ts). A 201 means durable (the rule in
 * docs/relay.md): the file is fdatasynced before the link, the link's directory is fsynced
 * after it, and every directory on the object's path has had its entry synced into its
 * parent after it was made — by this put (the directories it created, before the body), or
 * by an earlier one this store saw finish (#durable); any other (made by a put still
 * streaming, or left by an earlier process) has its parent synced by this put too.
 */
import { constants as fsc, promises as fs, type Dirent } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { finished, type Readable } from 'node:stream';
import { BlobStoreError, type BlobBody, type BlobInfo, type BlobStore, type ByteRange } from './store.js';

const FULL = new Set(['ENOSPC', 'EDQUOT']);
/** A put's temporary file's name starts so (listings skip names starting with `.`; sweepTemporaries removes stale ones). */
const TMP_PREFIX = '.tmp-';

/**
 * Writes go to the temporary file in batches of up to this many bytes: four of the
 * socket's 64 KiB reads, written while they are still in the CPU's cache (issue 13).
 * Against 1 MiB, a backup of 1 GiB to coffer: cost the relay less CPU in 14 of 22
 * interleaved pairs, and client plus relay less in 17 of 22 (medians 1.47-2.16 s
 * against 2.06-2.68 s of relay CPU); 4 MiB cost more (2.48 against 1.94 s).
 */
const WRITE_BATCH = 256 * 1024;

/**
 * A failure of the body being stored (the client went away, a limit cut it off), not
 * of the file system: passed on as it is, never as a store failure.
 */
class BodyFailure extends Error {
  constructor(readonly original: unknown) {
    super('the body failed');
  }
}

function wrap(err: unknown, what: string): BlobStoreError {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  return new BlobStoreError(`${what}: ${code || (err as Error).message}`, FULL.has(code), { cause: err });
}

/**
 * fsyncs a directory. Resolves once the sync is done: the handle's close (which cannot
 * undo the sync) is not waited for, so the put's answer is one thread-pool round trip
 * sooner (issue 13).
 */
async function fsyncDir(path: string): Promise<void> {
  const fh = await fs.open(path, fsc.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    void fh.close().catch(() => {});
  }
}

/**
 * Directories this store remembers as durable at most: past it the memory is dropped
 * (forgetting costs a sync of a parent, never durability).
 */
const DURABLE_DIRS_MAX = 65_536;

export class LocalBlobStore implements BlobStore {
  readonly name: string;
  readonly #syncDir: (path: string) => Promise<void>;
  /**
   * Directories below root whose entry in their parent this store synced
   * after they were made. A directory is forgotten before it is removed.
   */
  readonly #durable = new Set<string>();
  /** Counts directories forgotten: a sync during which one was adds nothing to #durable. */
  #forgotten = 0;

  /** `syncDir` (tests): how a directory is fsynced. */
  constructor(
    readonly root: string,
    options: { syncDir?: (path: string) => Promise<void> } = {},
  ) {
    this.name = `local:${root}`;
    this.#syncDir = options.syncDir ?? fsyncDir;
  }

  #path(ns: string, name: string): string {
    return join(this.root, ns, ...name.split('/'));
  }

  async put(ns: string, name: string, data: BlobBody): Promise<'created' | 'exists'> {
    try {
      return await this.#put(ns, name, data);
    } catch (err) {
      if (err instanceof BodyFailure) throw err.original;
      // A delete pruned the directory between our mkdir and open: once more (a stream
      // only if nothing of it was read yet).
      const retry = Buffer.isBuffer(data) || (data.readableDidRead === false && !data.destroyed);
      if (retry && err instanceof BlobStoreError && (err.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
        try {
          return await this.#put(ns, name, data);
        } catch (again) {
          if (again instanceof BodyFailure) throw again.original;
          throw again;
        }
      }
      throw err;
    }
  }

  /**
   * The body streams into `.tmp-<random>` next to the object (one batch in memory at a
   * time), is fdatasynced, then linked into place. Whatever fails on the way, the
   * temporary file is removed, and so are the directories this put created.
   */
  async #put(ns: string, name: string, data: BlobBody): Promise<'created' | 'exists'> {
    const path = this.#path(ns, name);
    const dir = dirname(path);
    const tmp = join(dir, `${TMP_PREFIX}${randomBytes(8).toString('hex')}`);
    let fh: fs.FileHandle | undefined;
    let created: string | undefined;
    let linked = false;
    /** The temporary file is gone (unlinked once linked): nothing to clean up. */
    let tmpGone = false;
    try {
      // Taken already: say so before reading a byte of the body (the link below still
      // decides, atomically, when two puts race). The directory is made meanwhile: one
      // thread-pool round trip for both (a name that exists has its directory already).
      const [taken, made] = await Promise.all([
        fs.lstat(path).then((st) => st.isFile(), () => false),
        fs.mkdir(dir, { recursive: true, mode: 0o700 }).then(
          (c) => ({ created: c }),
          (err: unknown) => ({ err }),
        ),
      ]);
      if ('created' in made) created = made.created;
      if (taken) return 'exists';
      if ('err' in made) {
        // A prefix of the name is an object ("a" when writing "a/b"): on disk the two
        // cannot both exist, so the name is taken (409 blob-exists), not a store failure.
        const code = (made.err as NodeJS.ErrnoException).code;
        if (code === 'ENOTDIR' || code === 'EEXIST') return 'exists';
        throw made.err;
      }
      if (created !== undefined) {
        // New directories exist durably only once their parents are synced: from the
        // parent of the first one created down to the parent of `dir`.
        const chain: string[] = [];
        for (let d = dir; d !== created && dirname(d) !== d; d = dirname(d)) chain.push(dirname(d));
        chain.push(dirname(created));
        const forgotten = this.#forgotten;
        for (const d of chain.reverse()) await this.#syncDir(d);
        if (forgotten === this.#forgotten) {
          for (let d = dir; d.length >= created.length; d = dirname(d)) this.#remember(d);
        }
      }
      fh = await fs.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
      if (Buffer.isBuffer(data)) await fh.writeFile(data);
      else await writeStream(fh, data);
      await fh.datasync();
      // The data is synced: the file is closed while it is linked (link names the path,
      // not the handle), one round trip fewer before the answer. A failure to close
      // after the sync loses nothing and is not one of the put's.
      const closing = fh.close().catch(() => {});
      fh = undefined;
      try {
        await Promise.all([closing, fs.link(tmp, path)]);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        // An empty directory left by objects below this name (now deleted) does not
        // take the name: remove it and link again. A non-empty one does (409).
        const st = await fs.lstat(path).catch(() => null);
        if (!st?.isDirectory()) return 'exists';
        try {
          this.#forget(path);
          await fs.rmdir(path);
        } catch {
          return 'exists';
        }
        try {
          await fs.link(tmp, path);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'EEXIST') return 'exists';
          throw e;
        }
      }
      linked = true;
      // The link is durable once its directory is, and the directories on its path once
      // their entries are: only then may the client hear 201. The temporary name goes
      // meanwhile (whether its removal is in that sync or not, a leftover `.tmp-` file
      // is never an object).
      const unlinking = fs.unlink(tmp).then(() => void (tmpGone = true));
      await Promise.all([unlinking, this.#syncPath(dir)]);
      return 'created';
    } catch (err) {
      if (err instanceof BodyFailure) throw err;
      throw wrap(err, 'writing an object');
    } finally {
      await fh?.close().catch(() => {});
      if (!tmpGone) await fs.unlink(tmp).catch(() => {});
      if (!linked && created !== undefined) {
        // Directories made for an object that never came: gone again (empty ones only).
        for (let d = dir; d.length >= created.length && d.startsWith(created); d = dirname(d)) {
          this.#forget(d);
          if (!(await fs.rmdir(d).then(() => true, () => false))) break;
        }
      }
    }
  }

  /**
   * Makes a new link in `dir` durable: `dir` is fsynced, and so is the parent of every
   * directory below root down to `dir` not known to be durable (one another put made and
   * has not finished syncing, one left by an earlier process), all at once. In a backup's
   * steady state that is `dir` alone, as before (issue 13). Root's own entry is synced
   * only by the put that made root: a root given by the operator may sit in a directory
   * the relay cannot open.
   */
  async #syncPath(dir: string): Promise<void> {
    const fresh: string[] = [];
    const targets = new Set<string>([dir]);
    for (let d = dir; d.length > this.root.length && d.startsWith(this.root); d = dirname(d)) {
      if (this.#durable.has(d)) continue;
      fresh.push(d);
      targets.add(dirname(d));
    }
    const forgotten = this.#forgotten;
    await Promise.all([...targets].map((d) => this.#syncDir(d)));
    // A directory removed (and perhaps made again) meanwhile: this sync may predate it.
    if (forgotten === this.#forgotten) for (const d of fresh) this.#remember(d);
  }

  #remember(dir: string): void {
    if (this.#durable.size >= DURABLE_DIRS_MAX) this.#durable.clear();
    this.#durable.add(dir);
  }

  /** Before `dir` is removed (it may be made again, by another put). */
  #forget(dir: string): void {
    this.#durable.delete(dir);
    this.#forgotten++;
  }

  async size(ns: string, name: string): Promise<number | null> {
    try {
      const st = await fs.stat(this.#path(ns, name));
      return st.isFile() ? st.size : null;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
      throw wrap(err, 'reading an object');
    }
  }

  async read(ns: string, name: string, range?: ByteRange): Promise<Readable | null> {
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(this.#path(ns, name), 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return null;
      throw wrap(err, 'reading an object');
    }
    // 1 MiB reads: a pack goes out in a few large writes rather than many 64 KiB ones.
    return fh.createReadStream({ highWaterMark: 1024 * 1024, ...(range ? { start: range.start, end: range.end } : {}) });
  }

  async list(ns: string, prefix: string): Promise<BlobInfo[]> {
    const base = join(this.root, ns);
    const out: BlobInfo[] = [];
    const walk = async (dir: string, rel: string): Promise<void> => {
      let entries: Dirent[];
      try {
        entries = await fs.readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw wrap(err, 'listing objects');
      }
      for (const e of entries) {
        if (e.name.startsWith('.')) continue;
        const name = rel ? `${rel}/${e.name}` : e.name;
        // Only descend where the prefix can still match.
        if (!(name.startsWith(prefix) || prefix.startsWith(name))) continue;
        if (e.isDirectory()) await walk(join(dir, e.name), name);
        else if (e.isFile() && name.startsWith(prefix)) {
          const st = await fs.stat(join(dir, e.name)).catch(() => null);
          if (st) out.push({ name, size: st.size });
        }
      }
    };
    await walk(base, '');
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * unlink is atomic: of concurrent deletes exactly one sees the file. A name that is
   * only a directory (objects exist below it) is no object: false. Directories the
   * delete leaves empty are removed, so the names stay free.
   */
  async delete(ns: string, name: string): Promise<boolean> {
    const path = this.#path(ns, name);
    try {
      await fs.unlink(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR' || code === 'EPERM') return false;
      throw wrap(err, 'deleting an object');
    }
    const base = join(this.root, ns);
    for (let d = dirname(path); d.length > base.length && d.startsWith(base); d = dirname(d)) {
      // Forgotten before it goes: made again, it is synced again.
      this.#forget(d);
      try {
        await fs.rmdir(d);
      } catch {
        break; // not empty (or already gone): the rest above is in use
      }
    }
    return true;
  }

  /**
   * Removes what uploads cut off by a crash left (a `kill -9` mid-upload): `.tmp-` files
   * not written for `staleAfterMs`, and the directories that then hold nothing. Run at
   * start (start.ts). Without it they stayed for ever, outside every quota, and a
   * directory that held only one kept its name taken: a put of that name was 409
   * blob-exists though no object was at or below it. A live upload writes its temporary
   * file at least every batch and is ended by the request and idle timeouts, so one not
   * written for longer than those (start.ts: at least 15 minutes) belongs to nobody, also
   * where several relays share the directory. Never throws: what cannot be removed stays.
   */
  async sweepTemporaries(staleAfterMs: number, now = Date.now()): Promise<{ files: number; dirs: number }> {
    const removed = { files: 0, dirs: 0 };
    /** Sweeps below `dir`; true when `dir` is left empty. */
    const walk = async (dir: string): Promise<boolean> => {
      let entries: Dirent[];
      try {
        entries = await fs.readdir(dir, { withFileTypes: true });
      } catch {
        return false;
      }
      let left = entries.length;
      for (const e of entries) {
        const path = join(dir, e.name);
        if (e.isDirectory()) {
          if (!(await walk(path))) continue;
          this.#forget(path);
          if (await fs.rmdir(path).then(() => true, () => false)) {
            removed.dirs++;
            left--;
          }
        } else if (e.isFile() && e.name.startsWith(TMP_PREFIX)) {
          const st = await fs.stat(path).catch(() => null);
          if (st && now - st.mtimeMs > staleAfterMs && (await fs.unlink(path).then(() => true, () => false))) {
            removed.files++;
            left--;
          }
        }
      }
      return left === 0;
    };
    // Each namespace (account) directory and what is below; the namespaces themselves stay.
    let spaces: Dirent[];
    try {
      spaces = await fs.readdir(this.root, { withFileTypes: true });
    } catch {
      return removed;
    }
    for (const ns of spaces) if (ns.isDirectory()) await walk(join(this.root, ns.name));
    return removed;
  }

  async close(): Promise<void> {}
}

/**
 * Bytes of the body that may wait while a batch is being written before reading pauses.
 * Reading goes on while a batch is written (on the pool), so the connection is not held
 * to the file's pace batch by batch: paused for every write, a 256 KiB writev taking
 * ~1.6 ms on a loaded machine held each upload's body ~55 ms per 8 MiB pack, and the
 * client waited on its socket (issue 13). Against pausing for every write (1 GiB backups,
 * 16 interleaved pairs): relay CPU lower in 13 (medians 0.95-0.99 against 1.12-1.13 s,
 * mostly system time), wall time not resolved (lower in 10); relay peak RSS +2 MiB.
 */
const WRITE_AHEAD = 1024 * 1024;

/**
 * The stream into the file, in batches (writev); a failure of the stream is a BodyFailure.
 *
 * Read in flowing mode, buffer by buffer: an async iterator (or `read()`) would hand over
 * everything buffered as one new buffer, a copy of every byte of the body (measured: a
 * third of the relay's CPU on a backup). While a batch is written the next one gathers;
 * reading pauses only when WRITE_AHEAD bytes wait behind the write (back-pressure), and
 * at most one write is in progress (the file's bytes stay in order).
 */
function writeStream(fh: fs.FileHandle, body: Readable): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let batch: Buffer[] = [];
    let bytes = 0;
    let writing: Promise<void> | undefined;
    let ended = false;
    let settled = false;
    const flush = async (): Promise<void> => {
      const b = batch;
      const total = bytes;
      batch = [];
      bytes = 0;
      let done = 0;
      // writev may write less than asked (large batches, signals): go on from there.
      while (done < total) {
        const { bytesWritten } = await fh.writev(done === 0 ? b : sliceFrom(b, done));
        done += bytesWritten;
      }
    };
    const settle = (err?: unknown): void => {
      if (settled) return;
      settled = true;
      body.off('data', onData);
      stopWatching();
      // A write in progress finishes before the caller closes the file.
      void (writing ?? Promise.resolve()).catch(() => {}).then(() => (err === undefined ? resolve() : reject(err)));
    };
    const write = (): void => {
      writing = flush();
      writing.then(
        () => {
          writing = undefined;
          if (settled) return;
          if (ended) return end();
          // What gathered meanwhile: written now if it is a batch, then reading goes on.
          if (bytes >= WRITE_BATCH) write();
          if (body.isPaused() && bytes < WRITE_AHEAD) body.resume();
        },
        (err: unknown) => {
          writing = undefined;
          // Stops reading a body we no longer want: the route answers the error.
          body.destroy();
          settle(err);
        },
      );
    };
    const end = (): void => {
      if (bytes === 0) return settle();
      writing = flush();
      writing.then(
        () => {
          writing = undefined;
          settle();
        },
        (err: unknown) => {
          writing = undefined;
          settle(err);
        },
      );
    };
    const onData = (c: Buffer | Uint8Array): void => {
      const buf = Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
      batch.push(buf);
      bytes += buf.length;
      if (!writing) {
        if (bytes >= WRITE_BATCH) write();
      } else if (bytes >= WRITE_AHEAD) body.pause();
    };
    const stopWatching = finished(body, { writable: false }, (err) => {
      if (err) return settle(new BodyFailure(err));
      ended = true;
      if (!writing && !settled) end();
    });
    body.on('data', onData);
  });
}

function sliceFrom(parts: Buffer[], from: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = from;
  for (const p of parts) {
    if (skip >= p.length) {
      skip -= p.length;
      continue;
    }
    out.push(skip > 0 ? p.subarray(skip) : p);
    skip = 0;
  }
  return out;
}
