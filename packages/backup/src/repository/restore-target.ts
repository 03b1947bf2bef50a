/**
 * The restore target, addressed through directory handles (spec §9.4 "restore safety").
 *
 * Every directory restore writes into is opened component by component with
 * O_DIRECTORY | O_NOFOLLOW, starting from the target itself, so a symlink planted in the
 * target (or a file where a directory belongs) is refused rather than followed, and
 * nothing lands outside the target. Entries inside a directory are then named as
 * `/proc/self/fd/<dir fd>/<name>`: the kernel resolves that to the open directory, so
 * the path handed to each system call is short however deep the tree is (no
 * ENAMETOOLONG near PATH_MAX), and the final component is created with calls that never
 * follow it (open with O_CREAT|O_EXCL|O_NOFOLLOW, mkdir, symlink, link, rename, lchown,
 * lutimes, l*xattr).
 *
 * Directory handles are cached (open and idle: MAX_OPEN_DIRS under a small descriptor
 * limit, more under a larger one, openDirsFor; least recently used closed first), and at
 * most MAX_HELD_DIRS distinct directories are held (in use) at once:
 * a caller that needs another waits until one is let go. So the number of open descriptors
 * stays bounded on any tree, a wide one too (20,000 directories of one file each once ran
 * out of descriptors under `ulimit -n 1024`: every small file in flight held its own). Where
 * /proc is not mounted (not Linux), paths are built from the target's absolute path
 * instead: each directory is still opened with O_NOFOLLOW once when it is first reached,
 * but a symlink swapped in later could be followed, and deep trees can hit PATH_MAX.
 */
import { closeSync, constants as fsc, existsSync, fchmodSync, fchownSync, futimesSync, mkdirSync, openSync, readFileSync, readlinkSync, type Mode, type TimeLike } from 'node:fs';
import { CofferError } from '../errors.js';
import { mkdirRecursive } from '../storage/local.js';

export const MAX_OPEN_DIRS = 32;

/**
 * How many idle directory handles a target keeps, from the process's soft limit on open
 * descriptors (`softLimit`; undefined: unknown). Under 512 descriptors, MAX_OPEN_DIRS as
 * ever (proven under `ulimit -n 256`, bench:tree-fds); above, a quarter of the limit, at
 * most 4,096. Issue 13: a restore creates every directory first, then writes files in the
 * backup's order, which jumps between directories; with 32 handles the 2,113 directories
 * of a node_modules tree were opened 18,194 times (each reopened with its parents), a
 * third of the restore's CPU; kept open, 4,242 times.
 */
export function openDirsFor(softLimit: number | undefined): number {
  if (softLimit === undefined || Number.isNaN(softLimit) || softLimit < 512) return MAX_OPEN_DIRS;
  return Math.min(4096, Math.floor(softLimit / 4));
}

/** This process's soft limit on open descriptors (/proc/self/limits), or undefined where it cannot be read. */
export function softDescriptorLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'latin1')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    if (soft === 'unlimited') return Infinity;
    const n = Number(soft);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** Tests: directories opened (each open(2) of one, made or not). */
export const dirOpensForTesting = { count: 0 };
/** Distinct directories held at once by callers (opening a directory's parents aside). */
export const MAX_HELD_DIRS = 64;

/**
 * Where this process's descriptors are named: `/proc/<pid>/fd` when /proc/self is this
 * process (checked once: /proc may be another PID namespace's), else `/proc/self/fd`;
 * undefined without /proc. A literal PID spares the kernel the /proc/self symlink on
 * every path (three per restored file: create, and rename's two names): ~1 µs each,
 * measured 295 vs 320 ms of CPU for 20,000 create+close+rename on tmpfs.
 */
export function procFdDir(): string | undefined {
  if (!existsSync('/proc/self/fd')) return undefined;
  try {
    if (readlinkSync('/proc/self') === String(process.pid) && existsSync(`/proc/${process.pid}/fd`)) return `/proc/${process.pid}/fd`;
  } catch {
    // Not readable as a link: the generic name below.
  }
  return '/proc/self/fd';
}
const PROC_FD = procFdDir();

const DONE = Promise.resolve();

/** A synchronous call's outcome as a promise: settled, or rejected with what it threw. */
function settled(call: () => void): Promise<void> {
  try {
    call();
    return DONE;
  } catch (e) {
    return Promise.reject(e);
  }
}

/**
 * An open directory: a plain descriptor, opened and closed with synchronous calls. Each
 * is one quick system call on the calling thread; through FileHandles every open and
 * close was a thread-pool round trip and a promise, ~50 µs of the main thread's time a
 * pair, three pairs per directory on a tree of 20,000 directories (issue 13). The
 * metadata calls are synchronous too, and settle as promises (setMeta's interface).
 */
export class DirHandle {
  constructor(readonly fd: number) {}

  chown(uid: number, gid: number): Promise<void> {
    return settled(() => fchownSync(this.fd, uid, gid));
  }

  chmod(mode: Mode): Promise<void> {
    return settled(() => fchmodSync(this.fd, mode));
  }

  utimes(atime: TimeLike, mtime: TimeLike): Promise<void> {
    return settled(() => futimesSync(this.fd, atime, mtime));
  }

  /** Closes the descriptor; a failure is ignored (nothing was written through it). */
  close(): void {
    try {
      closeSync(this.fd);
    } catch {
      // EBADF/EIO on a directory: nothing to undo.
    }
  }
}

/** Opens directory `path` without following a final symlink. */
function openDirSync(path: Buffer | string, follow = false): DirHandle {
  dirOpensForTesting.count++;
  return new DirHandle(openSync(path, fsc.O_RDONLY | fsc.O_DIRECTORY | (follow ? 0 : fsc.O_NOFOLLOW)));
}

/** A directory held open: the prefix naming entries inside it. */
export interface HeldDir {
  readonly prefix: Buffer;
}

interface OpenDir extends HeldDir {
  fh: DirHandle;
  refs: number;
  prefix: Buffer;
  closed: boolean;
  /** Its relative path, and that as the key of #open. */
  rel: Buffer;
  key: string;
}

export class RestoreTarget {
  readonly #root: string;
  readonly #open = new Map<string, OpenDir>(); // key: relative path bytes as latin1; '' = the target
  readonly #opening = new Map<string, Promise<OpenDir | null>>();
  readonly #ready = new Map<string, Promise<unknown>>();
  /** The directory holdOpen gave last. */
  #last: OpenDir | undefined;
  /** Directories with refs > 0, and holds being acquired for others (MAX_HELD_DIRS). */
  #busy = 0;
  #reserved = 0;
  /** Callers waiting for a held slot, first come first served: a queue (a head index, not Array.shift, which copies). */
  #wake: (() => void)[] = [];
  #wakeHead = 0;

  /** The target's own handle, when made open (staging): used for rel '' in place of opening #root. */
  #rootFh: DirHandle | undefined;
  /** Made by staging(): its own name is never followed as a symlink when opened again. */
  readonly #staged: boolean;

  /** In a staging target, the directories this restore has made (latin1 keys of their relative paths). */
  readonly #made = new Set<string>();
  /** Idle handles kept (openDirsFor): read once per target. */
  readonly #maxOpen = openDirsFor(softDescriptorLimit());

  private constructor(root: string, rootFh?: DirHandle) {
    this.#root = root;
    this.#rootFh = rootFh;
    this.#staged = rootFh !== undefined;
  }

  /** Creates the target directory if needed (the user's own path: followed as given). */
  static async open(target: string): Promise<RestoreTarget> {
    try {
      await mkdirRecursive(target);
    } catch (e) {
      throw targetError(target, e);
    }
    return new RestoreTarget(target);
  }

  /**
   * Makes directory `name` (mode 0700, failing if anything is there) inside this target's
   * own directory and returns it as a target of its own: restore's staging directory
   * (restore.ts), where a restore into a target holding none of its top-level names is
   * built before those names are moved into place. Opened without following a symlink.
   */
  async staging(name: Buffer): Promise<RestoreTarget> {
    const r = await this.#with(Buffer.alloc(0), false, false, async (prefix) => {
      const path = Buffer.concat([prefix, name]);
      try {
        mkdirSync(path, 0o700);
      } catch (e) {
        throw targetError(this.#root, e);
      }
      return openDirSync(path);
    });
    return new RestoreTarget(`${this.#root}/${name.toString('utf8')}`, r!);
  }

  /**
   * Runs `fn` with a prefix naming entries inside directory `rel` (relative path bytes,
   * empty for the target itself). With `create`, missing directories are made (mode 0700
   * until their metadata is set). Without it, a missing directory resolves to null.
   */
  async withDir<T>(rel: Buffer, create: boolean, fn: (prefix: Buffer, dir: DirHandle) => Promise<T>): Promise<T | null> {
    return this.#with(rel, create, true, fn);
  }

  async #with<T>(rel: Buffer, create: boolean, gated: boolean, fn: (prefix: Buffer, dir: DirHandle) => Promise<T>): Promise<T | null> {
    const d = gated ? await this.#acquireGated(rel, create) : await this.#acquire(rel, create);
    if (!d) return null;
    try {
      return await fn(d.prefix, d.fh);
    } finally {
      this.#unref(d);
      this.#evict();
    }
  }

  #ref(d: OpenDir): void {
    if (d.refs++ === 0) this.#busy++;
  }

  #unref(d: OpenDir): void {
    if (--d.refs === 0) {
      this.#busy--;
      this.#wakeOne();
    }
  }

  /** #acquire, waiting first while MAX_HELD_DIRS other directories are held (none of this one's holders). */
  async #acquireGated(rel: Buffer, create: boolean): Promise<OpenDir | null> {
    const open = this.#open.get(rel.toString('latin1'));
    if (open && !open.closed && open.refs > 0) return this.#acquire(rel, create);
    while (this.#busy + this.#reserved >= MAX_HELD_DIRS) await new Promise<void>((r) => this.#wake.push(r));
    this.#reserved++;
    try {
      return await this.#acquire(rel, create);
    } finally {
      this.#reserved--;
      this.#wakeOne();
    }
  }

  #wakeOne(): void {
    if (this.#wakeHead >= this.#wake.length) return;
    const w = this.#wake[this.#wakeHead++]!;
    if (this.#wakeHead === this.#wake.length) {
      this.#wake = [];
      this.#wakeHead = 0;
    } else if (this.#wakeHead > 1024 && this.#wakeHead * 2 > this.#wake.length) {
      this.#wake = this.#wake.slice(this.#wakeHead);
      this.#wakeHead = 0;
    }
    w();
  }

  /**
   * Directory `rel` if its handle is open now, held (as by withDir) until `release`;
   * else undefined (use withDir). No promise and, for the directory asked last, no key
   * string: restore asks once per small file (issue 13: withDir's promises were a tenth
   * of what the main thread allocated on the 50,000-file tree).
   */
  holdOpen(rel: Buffer): HeldDir | undefined {
    let d = this.#last;
    if (!d || d.closed || !d.rel.equals(rel)) {
      d = this.#open.get(rel.toString('latin1'));
      if (!d || d.closed) return undefined;
    }
    // Not held yet and no room: the caller takes the waiting path (withDir).
    if (d.refs === 0 && this.#busy + this.#reserved >= MAX_HELD_DIRS) return undefined;
    this.#ref(d);
    // Map order is recency order: move to the end.
    this.#open.delete(d.key);
    this.#open.set(d.key, d);
    this.#last = d;
    return d;
  }

  /**
   * Resolves once directory `rel` is open (made if missing), then holdOpen finds it
   * unless it was closed again meanwhile: one promise for every caller while it opens
   * (restore's small files come a few hundred at a time, many in one directory).
   */
  opened(rel: Buffer): Promise<unknown> {
    const key = rel.toString('latin1');
    let p = this.#ready.get(key);
    if (!p) {
      p = this.withDir(rel, true, async () => undefined).finally(() => this.#ready.delete(key));
      this.#ready.set(key, p);
    }
    return p;
  }

  /** Lets go of a directory holdOpen gave. */
  release(d: HeldDir): void {
    this.#unref(d as OpenDir);
    this.#evict();
  }

  async #acquire(rel: Buffer, create: boolean): Promise<OpenDir | null> {
    const key = rel.toString('latin1');
    const hit = this.#open.get(key);
    if (hit) {
      this.#ref(hit);
      // Map order is recency order: move to the end.
      this.#open.delete(key);
      this.#open.set(key, hit);
      return hit;
    }
    let pending = this.#opening.get(key);
    if (!pending) {
      pending = this.#openDir(rel, create);
      this.#opening.set(key, pending);
      const forget = () => this.#opening.delete(key);
      pending.then(forget, forget);
    }
    const d = await pending;
    if (!d) return null;
    // Closed by eviction between being opened and this waiter resuming: open it again.
    if (d.closed) return this.#acquire(rel, create);
    if (!this.#open.has(key)) this.#open.set(key, d);
    this.#ref(d);
    return d;
  }

  async #openDir(rel: Buffer, create: boolean): Promise<OpenDir | null> {
    if (rel.length === 0) {
      // The target itself: the user's path, followed as given. A staging target's handle
      // is the one it was made with (closed by close()): taken once, so an evicted handle
      // is never reopened through the path (and if it were, not through a symlink).
      const fh = this.#rootFh ?? openDirSync(this.#root, !this.#staged);
      this.#rootFh = undefined;
      return { fh, refs: 0, closed: false, rel, key: '', prefix: this.#prefixFor(fh, Buffer.from(this.#root, 'utf8')) };
    }
    const slash = rel.lastIndexOf(0x2f);
    const parent = slash < 0 ? Buffer.alloc(0) : rel.subarray(0, slash);
    const name = slash < 0 ? rel : rel.subarray(slash + 1);
    // The parent ungated: a directory being opened must not wait for a slot its own
    // children hold (they are waiting for it).
    const r = await this.#with(parent, create, false, async (prefix) => {
      const path = Buffer.concat([prefix, name]);
      const key = rel.toString('latin1');
      const mkdirHere = () => {
        try {
          mkdirSync(path, 0o700);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        }
      };
      let fh: DirHandle;
      try {
        if (create && this.#staged && !this.#made.has(key)) {
          // A staging directory is this restore's own and starts empty: a directory not
          // made yet is not there, so it is made first (mkdir never follows a symlink)
          // rather than looked for: one failed lookup fewer per directory.
          mkdirHere();
          this.#made.add(key);
        }
        fh = openDirSync(path);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' && create) {
          mkdirHere();
          if (this.#staged) this.#made.add(key);
          try {
            fh = openDirSync(path);
          } catch (err) {
            throw this.#inTheWay(rel, err);
          }
        } else if (code === 'ENOENT') {
          return null;
        } else {
          throw this.#inTheWay(rel, e);
        }
      }
      return { fh, refs: 0, closed: false, rel: Buffer.from(rel), key: rel.toString('latin1'), prefix: this.#prefixFor(fh, Buffer.concat([prefix, name])) };
    });
    return r ?? null;
  }

  #inTheWay(rel: Buffer, e: unknown): Error {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'ENOTDIR') {
      return new CofferError(
        'exists',
        `${rel.toString('utf8')}: the restore target holds a ${code === 'ELOOP' ? 'symlink' : 'non-directory'} where the snapshot has a directory; restore never follows symlinks in the target (move it away and restore again)`,
      );
    }
    return e as Error;
  }

  #prefixFor(fh: DirHandle, absPath: Buffer): Buffer {
    return PROC_FD !== undefined ? Buffer.from(`${PROC_FD}/${fh.fd}/`) : Buffer.concat([absPath, Buffer.from('/')]);
  }

  #evict(): void {
    if (this.#open.size <= this.#maxOpen) return;
    for (const [key, d] of this.#open) {
      if (this.#open.size <= this.#maxOpen) break;
      if (d.refs > 0) continue;
      this.#open.delete(key);
      d.closed = true;
      d.fh.close();
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.#opening.values()]);
    this.#last = undefined;
    this.#rootFh?.close();
    this.#rootFh = undefined;
    for (const d of this.#open.values()) {
      d.closed = true;
      d.fh.close();
    }
    this.#open.clear();
  }
}

/**
 * The restore target can't be made or written (`--target` names a file, a path under a
 * file, a read-only or full file system, a directory without write permission): one
 * clear line naming the target, not the system call's error on an internal path.
 */
function targetError(target: string, e: unknown): Error {
  const err = e as NodeJS.ErrnoException;
  switch (err?.code) {
    case 'EEXIST':
    case 'ENOTDIR':
      return new CofferError('invalid-argument', `restore target ${target}: ${err.code === 'EEXIST' ? 'a file is there, not a directory' : 'a file is in its path, not a directory'}`);
    case 'EROFS':
      return new CofferError('storage', `restore target ${target}: read-only file system`);
    case 'EACCES':
    case 'EPERM':
      return new CofferError('storage', `restore target ${target}: permission denied`);
    case 'ENOSPC':
      return new CofferError('storage', `restore target ${target}: no space left on device`);
    default:
      return err instanceof Error ? err : new Error(String(e));
  }
}
