/**
 * Scan-ahead for the backup walk (issue 13). A backup with a parent spends most of its
 * main thread on one lstat per entry: the walk compares every file's stat with the
 * parent's line, and on this kind of machine a system call costs 5–12 µs. Here a thread
 * (scan-worker.ts) lists the directories the walk will visit next and lstat's their
 * entries, ahead of the walk, in the walk's own order (depth first, names sorted); the
 * walk takes each directory's names and stats when it reaches it. One request is out at a
 * time (so requests follow the walk's order); a directory the thread has not reached yet
 * when the walk does (while the thread starts, or where it falls behind) the walk scans
 * itself, and the thread goes on with that directory's subdirectories.
 *
 * Bounded: at most SCAN_AHEAD_DIRS directories and about SCAN_AHEAD_ENTRIES entries are
 * scanned and not yet taken. A directory the walk leaves out (--exclude, another file
 * system) is `forget`-ten. If the thread fails, `take` answers null and the walk lists and
 * stats on its own thread, as without scan-ahead.
 */
import { lstatSync, type BigIntStats } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { NameList } from './name-list.js';

/** What the walk uses of an entry's stat: node's BigIntStats or a scanned one. */
export type EntryStat = Pick<
  BigIntStats,
  'dev' | 'ino' | 'mode' | 'nlink' | 'uid' | 'gid' | 'rdev' | 'size' | 'blocks' | 'mtimeNs' | 'ctimeNs' | 'isFile' | 'isDirectory' | 'isSymbolicLink' | 'isFIFO' | 'isSocket' | 'isCharacterDevice' | 'isBlockDevice'
>;

/** Stat fields per entry in a reply: dev, ino, mode, nlink, uid, gid, rdev, size, blocks, mtimeNs, ctimeNs. */
export const STAT_FIELDS = 11;
export const SCAN_AHEAD_DIRS = 32;
export const SCAN_AHEAD_ENTRIES = 65536;
/**
 * A directory with more entries comes back with its names only, and the walk stats its
 * entries one at a time as before: a scan's memory stays what the names take (issue 13:
 * memory must not grow ~100 bytes per entry of one huge directory).
 */
export const SCAN_STATS_MAX = 16384;
/** The thread starts once the walk has scanned this many entries itself: a backup of a few directories (large files) never starts it. */
export const SCAN_AHEAD_FROM_ENTRIES = 4096;

export interface ScanRequest {
  id: number;
  dir: Uint8Array;
  /** SCAN_STATS_MAX (tests set another). */
  statsMax: number;
}
export interface ScanReply {
  id: number;
  /** The directory could not be listed. */
  error?: { code?: string; message: string };
  bytes?: Uint8Array;
  offs?: Uint32Array;
  /** Absent for a directory of more than SCAN_STATS_MAX entries. */
  stats?: BigInt64Array;
  /** Entries whose lstat failed. */
  failed?: Array<{ k: number; code?: string; message: string }>;
  /**
   * Entries with a time `stats` cannot hold (before 1677 or after 2262: beyond ±2^63 ns):
   * their exact times, which `stats` holds wrapped.
   */
  wide?: Array<{ k: number; mtimeNs: bigint; ctimeNs: bigint }>;
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const fitsInt64 = (v: bigint) => v >= INT64_MIN && v <= INT64_MAX;

function errorOf(e: unknown): { code?: string; message: string } {
  const code = (e as NodeJS.ErrnoException)?.code;
  return { ...(typeof code === 'string' ? { code } : {}), message: String((e as Error)?.message ?? e) };
}

/** Lists `dir` (NameList: the walk's order) and lstat's each entry: a reply as the scan thread sends it. */
export function scanDir(dir: Buffer, id: number, statsMax = SCAN_STATS_MAX): ScanReply {
  let names: NameList;
  try {
    names = new NameList(dir);
  } catch (e) {
    return { id: id, error: errorOf(e) };
  }
  const n = names.length;
  let size = 0;
  for (let k = 0; k < n; k++) size += names.name(k).length;
  const bytes = new Uint8Array(size);
  const offs = new Uint32Array(n + 1);
  const withStats = n <= statsMax;
  const stats = new BigInt64Array(withStats ? n * STAT_FIELDS : 0);
  const failed: Array<{ k: number; code?: string; message: string }> = [];
  let wide: ScanReply['wide'];
  const path = Buffer.allocUnsafe(dir.length + 1 + 256);
  dir.copy(path, 0);
  path[dir.length] = 0x2f; // '/'
  let at = 0;
  for (let k = 0; k < n; k++) {
    const name = names.name(k);
    bytes.set(name, at);
    at += name.length;
    offs[k + 1] = at;
    if (!withStats) continue;
    const p = dir.length + 1 + name.length <= path.length ? path : Buffer.allocUnsafe(dir.length + 1 + name.length);
    if (p !== path) path.copy(p, 0, 0, dir.length + 1);
    name.copy(p, dir.length + 1);
    try {
      const st = lstatSync(p.subarray(0, dir.length + 1 + name.length), { bigint: true });
      const o = k * STAT_FIELDS;
      stats[o] = st.dev;
      stats[o + 1] = st.ino;
      stats[o + 2] = st.mode;
      stats[o + 3] = st.nlink;
      stats[o + 4] = st.uid;
      stats[o + 5] = st.gid;
      stats[o + 6] = st.rdev;
      stats[o + 7] = st.size;
      stats[o + 8] = st.blocks;
      stats[o + 9] = st.mtimeNs;
      stats[o + 10] = st.ctimeNs;
      if (!fitsInt64(st.mtimeNs) || !fitsInt64(st.ctimeNs)) (wide ??= []).push({ k, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs });
    } catch (e) {
      failed.push({ k, ...errorOf(e) });
    }
  }
  return { id: id, bytes, offs, ...(withStats ? { stats } : {}), ...(failed.length > 0 ? { failed } : {}), ...(wide ? { wide } : {}) };
}

const S_IFMT = 0o170000n;

/** A stat from a scan reply: the fields the walk uses, in the types node's BigIntStats has. */
class ScannedStat implements EntryStat {
  readonly dev: bigint;
  readonly ino: bigint;
  readonly mode: bigint;
  readonly nlink: bigint;
  readonly uid: bigint;
  readonly gid: bigint;
  readonly rdev: bigint;
  readonly size: bigint;
  readonly blocks: bigint;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
  constructor(dev: bigint, ino: bigint, mode: bigint, nlink: bigint, uid: bigint, gid: bigint, rdev: bigint, size: bigint, blocks: bigint, mtimeNs: bigint, ctimeNs: bigint) {
    this.dev = dev;
    this.ino = ino;
    this.mode = mode;
    this.nlink = nlink;
    this.uid = uid;
    this.gid = gid;
    this.rdev = rdev;
    this.size = size;
    this.blocks = blocks;
    this.mtimeNs = mtimeNs;
    this.ctimeNs = ctimeNs;
  }
  #type(): bigint {
    return this.mode & S_IFMT;
  }
  isFile(): boolean {
    return this.#type() === 0o100000n;
  }
  isDirectory(): boolean {
    return this.#type() === 0o040000n;
  }
  isSymbolicLink(): boolean {
    return this.#type() === 0o120000n;
  }
  isFIFO(): boolean {
    return this.#type() === 0o010000n;
  }
  isSocket(): boolean {
    return this.#type() === 0o140000n;
  }
  isCharacterDevice(): boolean {
    return this.#type() === 0o020000n;
  }
  isBlockDevice(): boolean {
    return this.#type() === 0o060000n;
  }
}

/**
 * lstat of `path` as the walk keeps it: the fields it uses only. Node's BigIntStats
 * carries four Dates and twice as many BigInts besides (~1.3 KiB a stat); the walk's
 * stats stay alive while their files wait in batches and the listing queue, long
 * enough to be promoted out of the young generation, and were a quarter of the main
 * thread's allocation on the 50,000-file tree (issue 13). Throws what lstat throws.
 */
export function lstatEntry(path: Buffer): EntryStat {
  const st = lstatSync(path, { bigint: true });
  return new ScannedStat(st.dev, st.ino, st.mode, st.nlink, st.uid, st.gid, st.rdev, st.size, st.blocks, st.mtimeNs, st.ctimeNs);
}

/** An error as node:fs would have thrown it (code and message), for the walk's warnings. */
function fsError(e: { code?: string; message: string }): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(e.message);
  if (e.code !== undefined) err.code = e.code;
  return err;
}

/** One directory as scanned: its names in the walk's order, each with its stat or the error lstat gave. */
export class ScannedDir {
  readonly #dir: Buffer;
  readonly #bytes: Buffer;
  readonly #offs: Uint32Array;
  /** Undefined: names only (a directory of more than SCAN_STATS_MAX entries): `stat` lstat's. */
  readonly #stats: BigInt64Array | undefined;
  readonly #failed: Map<number, { code?: string; message: string }> | undefined;
  readonly #wide: Map<number, { mtimeNs: bigint; ctimeNs: bigint }> | undefined;
  constructor(r: ScanReply, dir: Buffer) {
    this.#dir = dir;
    this.#bytes = Buffer.from(r.bytes!.buffer, r.bytes!.byteOffset, r.bytes!.byteLength);
    this.#offs = r.offs!;
    this.#stats = r.stats;
    this.#failed = r.failed ? new Map(r.failed.map((f) => [f.k, f])) : undefined;
    this.#wide = r.wide ? new Map(r.wide.map((w) => [w.k, w])) : undefined;
    if (this.#offs.length < 1 || (this.#stats !== undefined && this.#stats.length !== (this.#offs.length - 1) * STAT_FIELDS) || this.#offs[this.#offs.length - 1] !== this.#bytes.length) {
      throw new Error('scan-ahead: a malformed reply');
    }
  }
  /** Whether the stats came with the names (else `stat` lstat's each entry). */
  get hasStats(): boolean {
    return this.#stats !== undefined;
  }
  get length(): number {
    return this.#offs.length - 1;
  }
  /** The k-th name (a view: copy before keeping). */
  name(k: number): Buffer {
    return this.#bytes.subarray(this.#offs[k]!, this.#offs[k + 1]!);
  }
  /** The k-th entry's stat; throws what lstat threw for it. */
  stat(k: number): EntryStat {
    const f = this.#failed?.get(k);
    if (f) throw fsError(f);
    if (this.#stats === undefined) return lstatEntry(Buffer.concat([this.#dir, SLASH, this.name(k)]));
    const s = this.#stats;
    const o = k * STAT_FIELDS;
    const w = this.#wide?.get(k);
    return new ScannedStat(s[o]!, s[o + 1]!, s[o + 2]!, s[o + 3]!, s[o + 4]!, s[o + 5]!, s[o + 6]!, s[o + 7]!, s[o + 8]!, w ? w.mtimeNs : s[o + 9]!, w ? w.ctimeNs : s[o + 10]!);
  }
}

type Outcome = ScannedDir | NodeJS.ErrnoException;

interface Ahead {
  path: Buffer;
  /** Set once requested; null when the walk took or forgot it before it was requested. */
  result?: Promise<Outcome | null> | null;
  /** Its reply came while the walk still wanted it: counted in `held`. */
  held: boolean;
  entries: number;
}

export class ScanAhead {
  #worker: Worker | undefined;
  #broken = false;
  #nextId = 1;
  readonly #waiting = new Map<number, (r: ScanReply | null) => void>();
  /** Directories found and not yet taken, by path (latin1). */
  readonly #ahead = new Map<string, Ahead>();
  /** Directories not yet requested, the next to visit last (a stack: depth first). */
  readonly #stack: Ahead[] = [];
  /** Requests sent and not answered: one at a time, so that requests go in the walk's order (depth first). */
  #inFlight = 0;
  #heldDirs = 0;
  #heldEntries = 0;
  /** Entries the walk scanned itself. */
  #localEntries = 0;
  #startAfter: number;
  readonly #statsMax: number;
  readonly #wanted: (dir: Buffer, st: EntryStat) => boolean;

  /**
   * `wanted`: whether a subdirectory found by a scan should be scanned ahead
   * (--one-file-system says no to other devices); `startAfter`: SCAN_AHEAD_FROM_ENTRIES;
   * `statsMax`: SCAN_STATS_MAX.
   */
  constructor(wanted: (dir: Buffer, st: EntryStat) => boolean = () => true, startAfter = SCAN_AHEAD_FROM_ENTRIES, statsMax = SCAN_STATS_MAX) {
    this.#wanted = wanted;
    this.#startAfter = startAfter;
    this.#statsMax = statsMax;
  }

  #start(): Worker | undefined {
    if (this.#worker || this.#broken) return this.#worker;
    try {
      const w = new Worker(new URL('./scan-worker.js', import.meta.url), { resourceLimits: { maxYoungGenerationSizeMb: 1 } });
      w.on('message', (r: ScanReply) => {
        const done = this.#waiting.get(r?.id);
        if (done) {
          this.#waiting.delete(r.id);
          done(r);
        }
      });
      const fail = () => this.#fail();
      w.on('error', fail);
      w.on('exit', fail);
      this.#worker = w;
    } catch {
      this.#broken = true;
    }
    return this.#worker;
  }

  /**
   * Starts the thread now and scans ahead from the first directory on: for a walk known
   * to be large (its parent snapshot had many entries), so the thread comes up while the
   * backup loads its index instead of after the walk's first SCAN_AHEAD_FROM_ENTRIES.
   */
  prestart(): void {
    this.#startAfter = 0;
    this.#start();
  }

  #fail(): void {
    this.#broken = true;
    this.#worker = undefined;
    for (const done of this.#waiting.values()) done(null);
    this.#waiting.clear();
  }

  #request(a: Ahead): void {
    const w = this.#start();
    if (!w) {
      a.result = Promise.resolve(null);
      return;
    }
    const id = this.#nextId++;
    this.#inFlight++;
    a.result = new Promise<ScanReply | null>((resolve) => this.#waiting.set(id, resolve)).then((r): Outcome | null => {
      this.#inFlight--;
      let out: Outcome | null = null;
      if (r?.error) out = fsError(r.error);
      else if (r) {
        try {
          out = new ScannedDir(r, a.path);
        } catch {
          this.#fail();
        }
      }
      if (out instanceof ScannedDir && this.#ahead.get(a.path.toString('latin1')) === a) {
        a.held = true;
        a.entries = out.length;
        this.#heldDirs++;
        this.#heldEntries += out.length;
        this.#found(a.path, out);
      }
      this.#fill();
      return out;
    });
    // A copy with its own memory: a pooled Buffer's view would send the whole pool.
    const req: ScanRequest = { id, dir: new Uint8Array(a.path), statsMax: this.#statsMax };
    w.postMessage(req);
  }

  /** A scanned directory's subdirectories go on the stack, the first on top (visited first, depth first). */
  #found(dir: Buffer, d: ScannedDir): void {
    // Names only: which of them are directories is not known without a stat each; the
    // walk scans those subdirectories itself when it reaches them, and the thread goes on below.
    if (!d.hasStats) return;
    const subs: Ahead[] = [];
    for (let k = 0; k < d.length; k++) {
      let st: EntryStat;
      try {
        st = d.stat(k);
      } catch {
        continue;
      }
      if (!st.isDirectory()) continue;
      const path = Buffer.concat([dir, SLASH, d.name(k)]);
      if (!this.#wanted(path, st)) continue;
      const key = path.toString('latin1');
      if (this.#ahead.has(key)) continue;
      const a: Ahead = { path, held: false, entries: 0 };
      this.#ahead.set(key, a);
      subs.push(a);
    }
    for (let i = subs.length - 1; i >= 0; i--) this.#stack.push(subs[i]!);
  }

  #fill(): void {
    if (this.#localEntries < this.#startAfter) return;
    while (!this.#broken && this.#inFlight < 1 && this.#heldDirs < SCAN_AHEAD_DIRS && this.#heldEntries < SCAN_AHEAD_ENTRIES && this.#stack.length > 0) {
      const a = this.#stack.pop()!;
      if (a.result !== undefined) continue; // taken or forgotten meanwhile
      this.#request(a);
    }
  }

  /** The walk is done with `a` (took it or left it out). */
  #drop(key: string, a: Ahead): void {
    this.#ahead.delete(key);
    if (a.result === undefined) a.result = null; // never requested: the stack skips it
    if (a.held) {
      a.held = false;
      this.#heldDirs--;
      this.#heldEntries -= a.entries;
      this.#fill();
    }
  }

  /**
   * `dir`'s names and stats (scanned ahead, or here and now), an error as listing it
   * threw, or null when the scan thread failed (the walk then lists it itself).
   */
  async take(dir: Buffer): Promise<ScannedDir | NodeJS.ErrnoException | null> {
    if (this.#broken) return null;
    const key = dir.toString('latin1');
    const a = this.#ahead.get(key);
    if (a?.result) {
      const r = await a.result;
      if (this.#ahead.get(key) === a) this.#drop(key, a);
      return r;
    }
    // Not requested yet: the thread is behind the walk (or still starting). This thread
    // scans it, and its subdirectories go on top of the stack for the thread.
    if (a) this.#drop(key, a);
    const r = scanDir(dir, 0, this.#statsMax);
    if (r.error) return fsError(r.error);
    const d = new ScannedDir(r, dir);
    this.#localEntries += d.length;
    this.#found(dir, d);
    this.#fill();
    return d;
  }

  /** The walk will not visit `dir` (excluded, another file system, or done). */
  forget(dir: Buffer): void {
    const key = dir.toString('latin1');
    const a = this.#ahead.get(key);
    if (a) this.#drop(key, a);
  }

  /** Tests: whether the thread was started. */
  get started(): boolean {
    return this.#nextId > 1;
  }
  /** Tests: directories scanned and not yet taken or forgotten. */
  get held(): number {
    return this.#heldDirs;
  }
  /** Tests: their paths (latin1). */
  heldPaths(): string[] {
    return [...this.#ahead.entries()].filter(([, a]) => a.held).map(([k]) => k);
  }

  close(): void {
    const w = this.#worker;
    this.#fail();
    void w?.terminate();
  }
}

const SLASH = Buffer.from('/');
