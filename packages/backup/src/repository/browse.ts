/**
 * Browsing a snapshot without restoring it: paths as the user knows them, choosing a
 * part of a snapshot (`ls`, `dump`, `restore SNAPSHOT:PATH`), finding snapshots,
 * comparing two snapshots and counting sizes.
 *
 * Inside a snapshot, paths are relative and start with the backed-up root's name
 * (spec §9). People know them by their absolute source paths: `/home/me/notes.txt` in a
 * snapshot of `/home/me` is the listing's `me/notes.txt`. Every path shown here is the
 * absolute one, and every path given is read as one (a leading `/` is optional).
 * Names are bytes: they are shown with bytes that are not UTF-8 (and control
 * characters and `\`) escaped as `\xNN` / `\\`, and an escaped path given back names
 * the same bytes.
 */
import { createHash } from 'node:crypto';
import { ZipWriter } from './zip.js';
import { CofferError } from '../errors.js';
import { hex } from './blob.js';
import type { Repository, SnapshotRecord } from './repository.js';
import { matchesFilter, type Snapshot, type SnapshotFilter } from './snapshot.js';
import { filesAt, type FileEntry, type HardlinkEntry, type TreeEntry } from './tree.js';
import { IdSet, type BlobIndex } from './index-file.js';
import { BlobQueue, BlobReader, READ_AHEAD_BLOBS } from './blob-reader.js';
import { TAR_END, tarHeader, tarPadding } from './tar.js';

const SLASH = 0x2f;

/** A path for people: bytes that are not UTF-8, control characters and `\` escaped (`\xNN`, `\\`). */
export function escapePath(raw: Buffer): string {
  let out = '';
  let i = 0;
  while (i < raw.length) {
    const b = raw[i]!;
    const len = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (len === 1) {
      out += b === 0x5c ? '\\\\' : b < 0x20 || b === 0x7f ? `\\x${b.toString(16).padStart(2, '0')}` : String.fromCharCode(b);
      i++;
      continue;
    }
    if (len > 1 && i + len <= raw.length) {
      const seq = raw.subarray(i, i + len);
      try {
        const ch = new TextDecoder('utf-8', { fatal: true }).decode(seq);
        // C1 controls are escaped too: they can move a terminal's cursor.
        const cp = ch.codePointAt(0)!;
        out += cp >= 0x80 && cp < 0xa0 ? [...seq].map((x) => `\\x${x.toString(16)}`).join('') : ch;
        i += len;
        continue;
      } catch {
        // not a valid sequence: escape its first byte
      }
    }
    out += `\\x${b.toString(16).padStart(2, '0')}`;
    i++;
  }
  return out;
}

/** The bytes an escaped path names (`\xNN` a byte, `\\` a backslash; anything else as UTF-8). */
export function unescapePath(s: string): Buffer {
  const parts: Buffer[] = [];
  let text = '';
  const flush = () => {
    if (text) parts.push(Buffer.from(text, 'utf8'));
    text = '';
  };
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\' && s[i + 1] === '\\') {
      text += '\\';
      i++;
    } else if (c === '\\' && s[i + 1] === 'x' && /^[0-9a-fA-F]{2}$/.test(s.slice(i + 2, i + 4))) {
      flush();
      parts.push(Buffer.from([parseInt(s.slice(i + 2, i + 4), 16)]));
      i += 3;
    } else text += c;
  }
  flush();
  return Buffer.concat(parts);
}

/** Splits a path into its non-empty segments, dropping `.`; `..` is refused. */
function segments(p: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= p.length; i++) {
    if (i === p.length || p[i] === SLASH) {
      const seg = p.subarray(start, i);
      if (seg.length > 0 && !(seg.length === 1 && seg[0] === 0x2e)) {
        if (seg.length === 2 && seg[0] === 0x2e && seg[1] === 0x2e) throw new CofferError('invalid-argument', `'${escapePath(p)}': '..' is not allowed in a path inside a snapshot`);
        out.push(seg);
      }
      start = i + 1;
    }
  }
  return out;
}

const join = (segs: Buffer[]) => Buffer.concat(segs.flatMap((s, i) => (i === 0 ? [s] : [Buffer.from('/'), s])));

/** A snapshot's backed-up roots: each listing root name with its absolute source path. */
export class SnapshotPaths {
  readonly #roots: Array<{ name: Buffer; abs: Buffer; segs: Buffer[] }>;

  constructor(readonly snapshot: Snapshot) {
    this.#roots = snapshot.paths.map((p) => {
      const abs = Buffer.from(p, 'utf8');
      const segs = segments(abs);
      // The root's name in the listing is the source path's last segment (`root` for `/`), as backup names it.
      return { name: segs.length > 0 ? segs[segs.length - 1]! : Buffer.from('root'), abs: segs.length > 0 ? Buffer.concat([Buffer.from('/'), join(segs)]) : Buffer.from('/'), segs };
    });
  }

  /** The absolute path of a listing path (`me/notes.txt` → `/home/me/notes.txt`). */
  absolute(raw: Buffer): Buffer {
    const slash = raw.indexOf(SLASH);
    const name = slash < 0 ? raw : raw.subarray(0, slash);
    const root = this.#roots.find((r) => r.name.equals(name));
    if (!root) return Buffer.concat([Buffer.from('/'), raw]);
    if (slash < 0) return root.abs;
    const rest = raw.subarray(slash + 1);
    return root.segs.length === 0 ? Buffer.concat([Buffer.from('/'), rest]) : Buffer.concat([root.abs, Buffer.from('/'), rest]);
  }

  /**
   * What an absolute path names in this snapshot: a listing path (an entry that may or
   * may not exist), or, for `/` and the directories above the source paths, the roots
   * below it.
   * @throws CofferError('not-found') when the path is outside every source path.
   */
  select(path: Buffer): Selection {
    const segs = segments(path);
    // The most specific source path wins (`/a` and `/a/b` may both have been backed up).
    let best: { name: Buffer; segs: Buffer[] } | undefined;
    for (const r of this.#roots) {
      if (r.segs.length <= segs.length && r.segs.every((s, i) => s.equals(segs[i]!)) && (!best || r.segs.length > best.segs.length)) best = r;
    }
    if (best) return { shown: this.#shown(segs), entry: join([best.name, ...segs.slice(best.segs.length)]) };
    const below = this.#roots.filter((r) => r.segs.length > segs.length && segs.every((s, i) => s.equals(r.segs[i]!)));
    if (below.length === 0) {
      throw new CofferError('not-found', `${escapePath(this.#shown(segs))} is not in this snapshot (it holds ${this.snapshot.paths.join(', ')})`);
    }
    return { shown: this.#shown(segs), roots: below.map((r) => r.name) };
  }

  /**
   * True when the listing's order (roots by name, then inside each) is the order of the
   * absolute paths (compareListingOrder): the roots sorted by name are sorted by absolute
   * path too, no two share a name, and none is inside another.
   */
  rootsInOrder(): boolean {
    const byName = [...this.#roots].sort((x, y) => Buffer.compare(x.name, y.name));
    for (let i = 1; i < byName.length; i++) {
      const [p, q] = [byName[i - 1]!, byName[i]!];
      if (p.name.equals(q.name) || compareListingOrder(p.abs, q.abs) >= 0) return false;
      if (p.segs.length < q.segs.length && p.segs.every((s, j) => s.equals(q.segs[j]!))) return false;
    }
    return true;
  }

  #shown(segs: Buffer[]): Buffer {
    return Buffer.concat([Buffer.from('/'), join(segs)]);
  }
}

/**
 * A part of a snapshot: one listing path and what is under it (`entry`), or, for `/`
 * and directories above the source paths, whole roots (`roots`).
 */
export type Selection = { shown: Buffer; entry: Buffer; roots?: undefined } | { shown: Buffer; roots: Buffer[]; entry?: undefined };

/** Is `raw` the listing path `p` or below it? */
function within(raw: Buffer, p: Buffer): boolean {
  return raw.length >= p.length && raw.subarray(0, p.length).equals(p) && (raw.length === p.length || raw[p.length] === SLASH);
}

function rootName(raw: Buffer): Buffer {
  const slash = raw.indexOf(SLASH);
  return slash < 0 ? raw : raw.subarray(0, slash);
}

/**
 * Picks the entries of a selection out of a listing, entry by entry, renaming them
 * under a new base: with `keepName` (dump), the selected entry keeps its own name
 * (`docs/a.txt` for `/home/me/docs`); without (restore), a selected directory's contents
 * come out at the top (`a.txt`) and a selected file under its own name. A hard link to
 * a file outside the selection becomes a copy of that file, handed over by
 * `resolveOrphans` after the listing. `finish()` says whether the selected path was there.
 */
export class SubtreePicker {
  readonly #sel: Selection;
  readonly #keepName: boolean;
  /** Hard links in the selection to files outside it, and their new names (resolveOrphans). */
  readonly #orphans: Array<{ link: Buffer; raw: Buffer; entry: TreeEntry }> = [];
  #found = false;
  #base: Buffer | undefined;

  /**
   * Files outside the selection are not remembered (their number grows with the snapshot:
   * a restore or dump of one folder of a 200,000-file snapshot held all of them, ~140 MB);
   * a hard link into the selection to one of them is left for `resolveOrphans`.
   */
  constructor(sel: Selection, opts: { keepName: boolean }) {
    this.#sel = sel;
    this.#keepName = opts.keepName;
  }

  /**
   * After the listing: reads it again (`list`) only if a hard link in
   * the selection named a file outside it, and hands `take` the first such link to each
   * file as a copy of it, and the others to the same file as hard links to that copy.
   * @throws CofferError('corrupt') for a hard link to no file of the listing
   */
  async resolveOrphans(list: (each: (e: TreeEntry) => void) => Promise<void>, take: (e: TreeEntry) => void): Promise<void> {
    if (this.#orphans.length === 0) return;
    const files = await filesAt(list, this.#orphans.map((o) => o.link));
    // The first name in the part is a copy of the file; its other names in the part are
    // hard links to that copy (they were one file, and stay one).
    const copies = new Map<string, Buffer>();
    for (const o of this.#orphans) {
      const target = o.link.toString('latin1');
      const first = copies.get(target);
      if (first) {
        take({ ...o.entry, path: o.raw.toString('utf8'), rawPath: o.raw, link: first } as TreeEntry);
        continue;
      }
      const file = files.get(target);
      if (!file) throw new CofferError('corrupt', `${o.raw.toString('utf8')}: hard link to no earlier file`);
      copies.set(target, o.raw);
      take({ ...file, path: o.raw.toString('utf8'), rawPath: o.raw });
    }
  }

  #rename(raw: Buffer): Buffer | undefined {
    const sel = this.#sel;
    if (sel.roots) return sel.roots.some((r) => r.equals(rootName(raw))) ? raw : undefined;
    if (!within(raw, sel.entry)) return undefined;
    const slash = sel.entry.lastIndexOf(SLASH);
    const name = slash < 0 ? sel.entry : sel.entry.subarray(slash + 1);
    const rest = raw.subarray(sel.entry.length + 1);
    if (raw.length === sel.entry.length) return name;
    return this.#keepName || this.#base === undefined ? Buffer.concat([name, Buffer.from('/'), rest]) : rest;
  }

  /** The entry as it is to be written, or undefined when it is outside the selection. */
  pick(e: TreeEntry): TreeEntry | undefined {
    const raw = this.#rename(e.rawPath);
    if (!raw) return undefined;
    if (this.#sel.entry && e.rawPath.length === this.#sel.entry.length) {
      this.#found = true;
      // Restoring a directory's contents: the directory itself is the target.
      if (e.type === 'dir' && !this.#keepName) {
        this.#base = e.rawPath;
        return undefined;
      }
    }
    this.#found = true;
    if (e.type === 'hardlink') {
      const link = this.#rename(e.link);
      if (link) return { ...e, path: raw.toString('utf8'), rawPath: raw, link };
      this.#orphans.push({ link: e.link, raw, entry: e });
      return undefined;
    }
    return { ...e, path: raw.toString('utf8'), rawPath: raw };
  }

  /** @throws CofferError('not-found') when the selected path was not in the listing. */
  finish(snapshotId: Buffer): void {
    if (!this.#found) throw new CofferError('not-found', `${escapePath(this.#sel.shown)} is not in snapshot ${hex(snapshotId).slice(0, 8)}`);
  }
}

/** Finds a snapshot by `latest` (the newest one the filter lets through) or a unique ID prefix. */
export async function findSnapshotFiltered(repo: Repository, ref: string, filter: SnapshotFilter = {}): Promise<SnapshotRecord> {
  if (ref === 'latest') {
    const every = await repo.snapshots();
    if (every.length === 0) throw new CofferError('not-found', `the repository at ${repo.location} has no snapshots yet`);
    const all = every.filter((s) => matchesFilter(s.snapshot, filter));
    const last = all[all.length - 1];
    if (!last) throw new CofferError('not-found', `no snapshot in ${repo.location} matches${describeFilter(filter)}`);
    return last;
  }
  const rec = await repo.findSnapshot(ref);
  if (!matchesFilter(rec.snapshot, filter)) throw new CofferError('not-found', `snapshot ${ref} does not match${describeFilter(filter)}`);
  return rec;
}

function describeFilter(f: SnapshotFilter): string {
  const parts = [
    ...(f.hosts?.length ? [`host ${f.hosts.join(' or ')}`] : []),
    ...(f.tags?.length ? [`tags ${f.tags.map((t) => t.join(',') || "''").join(' or ')}`] : []),
    ...(f.paths?.length ? [`paths ${f.paths.join(' and ')}`] : []),
  ];
  return parts.length > 0 ? ` (${parts.join('; ')})` : '';
}

/**
 * `SNAPSHOT:PATH` (restic's syntax for part of a snapshot): the snapshot reference and
 * the path, or no path. A colon is only a separator after `latest` or a hex ID.
 */
export function splitSnapshotRef(arg: string): { ref: string; path?: string } {
  const m = /^(latest|[0-9a-fA-F]{4,64}):(.*)$/s.exec(arg);
  return m ? { ref: m[1]!, path: m[2]! } : { ref: arg };
}

/** One entry as `ls` and `find` show it. */
export interface ListedEntry {
  /** The absolute path's bytes. */
  path: Buffer;
  /** The entry (a hard link's `link`: its file's absolute path). */
  entry: TreeEntry;
}

/**
 * The entries of a selection in listing order, with absolute paths. Without
 * `recursive`, a selected directory's direct children only (as restic's `ls` with a path).
 */
export async function* listSnapshot(repo: Repository, rec: SnapshotRecord, path: Buffer | undefined, opts: { recursive: boolean }): AsyncGenerator<ListedEntry> {
  const map = new SnapshotPaths(rec.snapshot);
  const sel = path === undefined ? undefined : map.select(path);
  let found = sel === undefined || sel.roots !== undefined;
  for await (const e of repo.tree(rec.snapshot)) {
    if (sel?.entry) {
      if (!within(e.rawPath, sel.entry)) continue;
      if (e.rawPath.length === sel.entry.length) found = true;
      else if (!opts.recursive && e.rawPath.indexOf(SLASH, sel.entry.length + 1) >= 0) continue;
    } else if (sel?.roots) {
      const root = rootName(e.rawPath);
      if (!sel.roots.some((r) => r.equals(root))) continue;
      if (!opts.recursive && root.length !== e.rawPath.length) continue;
    }
    // A hard link names its file by its absolute path too, as every path shown is (the
    // tree's path would name nothing when given back to ls, dump or restore).
    yield { path: map.absolute(e.rawPath), entry: e.type === 'hardlink' ? { ...e, link: map.absolute(e.link) } : e };
  }
  if (!found && sel) throw new CofferError('not-found', `${escapePath(sel.shown)} is not in snapshot ${hex(rec.id).slice(0, 8)}`);
}

/** A compiled glob: `*` and `?` within a name, `**` across `/`, `[…]` classes. */
export function compileGlob(pattern: string, ignoreCase: boolean): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') {
      if (pattern[i + 1] === '*') {
        re += '.*';
        i++;
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) throw new CofferError('invalid-argument', `pattern '${pattern}': '[' without ']'`);
      let cls = pattern.slice(i + 1, end);
      const neg = cls.startsWith('!') || cls.startsWith('^');
      if (neg) cls = cls.slice(1);
      re += `[${neg ? '^' : ''}${cls.replace(/[\\\]]/g, '\\$&')}]`;
      i = end;
    } else if (c === '\\' && i + 1 < pattern.length) {
      re += pattern[++i]!.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    } else re += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, ignoreCase ? 'si' : 's');
}

export interface FindOptions {
  patterns: string[];
  ignoreCase?: boolean;
  /** Only entries modified at or after / at or before this instant (milliseconds). */
  oldest?: number;
  newest?: number;
}

export interface FindHit {
  snapshot: SnapshotRecord;
  /** The matches, in listing order (empty when they were handed to `onMatch` instead). */
  matches: ListedEntry[];
  count: number;
}

/**
 * Which snapshots hold paths matching any pattern. A pattern without `/` is matched
 * against each name, one with `/` against the whole absolute path (a leading `/`
 * optional), as restic's `find` does.
 */
export async function findInSnapshots(
  repo: Repository,
  snapshots: SnapshotRecord[],
  opts: FindOptions,
  onSnapshot?: (done: number) => void,
  /** Each match as it is found, none kept (issue 13: memory flat however many match; `*.txt` over 200,000 files held ~380 MB). */
  onMatch?: (snapshot: SnapshotRecord, match: ListedEntry) => void,
): Promise<FindHit[]> {
  const globs = opts.patterns.map((p) => ({ re: compileGlob(p.includes('/') ? p.replace(/^\/+/, '') : p, opts.ignoreCase === true), whole: p.includes('/') }));
  const oldestNs = opts.oldest !== undefined ? BigInt(opts.oldest) * 1_000_000n : undefined;
  const newestNs = opts.newest !== undefined ? BigInt(opts.newest) * 1_000_000n : undefined;
  const hits: FindHit[] = [];
  let done = 0;
  for (const rec of snapshots) {
    const matches: ListedEntry[] = [];
    let count = 0;
    for await (const l of listSnapshot(repo, rec, undefined, { recursive: true })) {
      // To the nanosecond, as restic: a file 0.5 ms after --newest T is after it.
      if (oldestNs !== undefined && l.entry.mtimeNs < oldestNs) continue;
      if (newestNs !== undefined && l.entry.mtimeNs > newestNs) continue;
      const abs = l.path.toString('utf8').slice(1);
      const slash = l.path.lastIndexOf(SLASH);
      const name = l.path.subarray(slash + 1).toString('utf8');
      if (!globs.some((g) => g.re.test(g.whole ? abs : name))) continue;
      count++;
      if (onMatch) onMatch(rec, l);
      else matches.push(l);
    }
    if (count > 0) hits.push({ snapshot: rec, matches, count });
    onSnapshot?.(++done);
  }
  return hits;
}

export type ChangeKind = '+' | '-' | 'M' | 'T' | 'U';

export interface Change {
  kind: ChangeKind;
  /** The absolute path's bytes. */
  path: Buffer;
  type: TreeEntry['type'];
}

export interface DiffCounts {
  files: number;
  dirs: number;
  others: number;
  /** Bytes of file contents (whole files, as restore would write them). */
  bytes: number;
}

export interface DiffResult {
  changes: Change[];
  added: DiffCounts;
  removed: DiffCounts;
  /** Files whose content changed; entries whose metadata alone changed; type changes. */
  modified: number;
  metadataOnly: number;
  typeChanged: number;
  /** Data blobs B needs and A does not (and the other way), and their bytes (uncompressed). */
  blobsAdded: number;
  blobsRemoved: number;
  bytesAdded: number;
  bytesRemoved: number;
}

function sameMeta(a: TreeEntry, b: TreeEntry): boolean {
  if (a.mode !== b.mode || a.mtimeNs !== b.mtimeNs) return false;
  if ((a.owner?.uid ?? -1) !== (b.owner?.uid ?? -1) || (a.owner?.gid ?? -1) !== (b.owner?.gid ?? -1)) return false;
  const xa = a.xattrs ?? [];
  const xb = b.xattrs ?? [];
  return xa.length === xb.length && xa.every((x, i) => x.name === xb[i]!.name && x.value.equals(xb[i]!.value));
}

function sameContent(a: TreeEntry, b: TreeEntry): boolean {
  switch (a.type) {
    case 'file':
      return b.type === 'file' && a.size === b.size && a.chunks.length === b.chunks.length && a.chunks.every((c, i) => c === b.chunks[i]);
    case 'symlink':
      return b.type === 'symlink' && a.target.equals(b.target);
    case 'hardlink':
      return b.type === 'hardlink' && a.link.equals(b.link);
    case 'chardev':
    case 'blockdev':
      return b.type === a.type && a.major === b.major && a.minor === b.minor;
    default:
      return true;
  }
}

/**
 * Compares absolute paths in listing order: parents before children, siblings by the
 * bytes of their names (`a`, `a/b`, `a.txt`): byte order with `/` below every byte.
 */
export function compareListingOrder(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x !== y) return (x === SLASH ? -1 : x) - (y === SLASH ? -1 : y);
  }
  return a.length - b.length;
}

/**
 * A snapshot's entries with their absolute paths, in listing order of those paths, one
 * at a time. A listing is ordered by its roots' names, then inside each root; that is
 * the order of the absolute paths when the roots sorted by name are sorted by absolute
 * path too and none is inside another (one backed-up path, or several such as
 * `/home/me /etc`). Otherwise (`/b/z` beside `/c/a`, or `/a` beside `/a/b`) the entries
 * are read into memory and sorted.
 */
async function* entriesInOrder(repo: Repository, rec: SnapshotRecord, map: SnapshotPaths): AsyncGenerator<TreeEntry & { abs: Buffer }> {
  if (map.rootsInOrder()) {
    for await (const e of repo.tree(rec.snapshot)) yield { ...e, abs: map.absolute(e.rawPath) };
    return;
  }
  // A path seen twice (nested roots) counts as first seen: that entry holds a file's
  // content, the second sighting is a hard link to it.
  const byPath = new Map<string, TreeEntry & { abs: Buffer }>();
  for await (const e of repo.tree(rec.snapshot)) {
    const abs = map.absolute(e.rawPath);
    const key = abs.toString('latin1');
    if (!byPath.has(key)) byPath.set(key, { ...e, abs });
  }
  yield* [...byPath.values()].sort((x, y) => compareListingOrder(x.abs, y.abs));
}

/** Counts per kind of entry, as diff reports them. */
function countEntry(c: DiffCounts, e: TreeEntry): void {
  if (e.type === 'file') {
    c.files++;
    c.bytes += e.size;
  } else if (e.type === 'dir') c.dirs++;
  else c.others++;
}

/**
 * Data blobs named by one snapshot's files: a bit per index record, and the IDs the
 * index lacks (a damaged repository) apart. Flat in the snapshot's size: one bit per
 * blob of the repository.
 */
class BlobMarks {
  readonly #bits: Uint8Array;
  readonly missing = new IdSet();

  constructor(private readonly index: BlobIndex) {
    this.#bits = new Uint8Array((index.recordCount + 7) >>> 3);
  }

  mark(e: TreeEntry): void {
    if (e.type === 'file') for (const c of e.chunks) this.markId(Buffer.from(c, 'hex'));
  }

  markId(id: Buffer): void {
    const r = this.index.recordOf(id);
    if (r < 0) this.missing.add(id);
    else this.#bits[r >>> 3]! |= 1 << (r & 7);
  }

  has(r: number): boolean {
    return (this.#bits[r >>> 3]! & (1 << (r & 7))) !== 0;
  }

  /** The index records marked, in order. */
  *records(): IterableIterator<number> {
    for (let i = 0; i < this.#bits.length; i++) {
      if (this.#bits[i] === 0) continue;
      for (let bit = 0; bit < 8; bit++) if (this.#bits[i]! & (1 << bit)) yield i * 8 + bit;
    }
  }
}

/**
 * What changed from snapshot A to snapshot B, by absolute path (restic's `diff`), in
 * listing order. With `onChange`, each change is handed over as it is found and none is
 * kept (`changes` stays empty): memory does not grow with the snapshots' sizes (issue
 * 13: the two listings were read into maps, ~3 KB per file, 933 MB at 300,000 files).
 * The two listings are walked side by side; what is kept is the set of files whose
 * content changed (for hard links to them, which come later) and a bit per blob of the
 * repository per snapshot.
 */
export async function diffSnapshots(repo: Repository, a: SnapshotRecord, b: SnapshotRecord, onChange?: (c: Change) => void): Promise<DiffResult> {
  const zero = (): DiffCounts => ({ files: 0, dirs: 0, others: 0, bytes: 0 });
  const r: DiffResult = { changes: [], added: zero(), removed: zero(), modified: 0, metadataOnly: 0, typeChanged: 0, blobsAdded: 0, blobsRemoved: 0, bytesAdded: 0, bytesRemoved: 0 };
  const index = await repo.index();
  const marksA = new BlobMarks(index);
  const marksB = new BlobMarks(index);
  /** Absolute paths (latin1) of files whose content differs between A and B: a hard link to one differs too. */
  const contentChanged = new Set<string>();
  const emit = (kind: ChangeKind, e: TreeEntry & { abs: Buffer }) => {
    if (kind !== 'U' && e.type === 'file') contentChanged.add(e.abs.toString('latin1'));
    const c: Change = { kind, path: e.abs, type: e.type };
    if (onChange) onChange(c);
    else r.changes.push(c);
  };
  const pathsA = new SnapshotPaths(a.snapshot);
  const linkChanged = (x: TreeEntry) => x.type === 'hardlink' && contentChanged.has(pathsA.absolute(x.link).toString('latin1'));

  const ia = entriesInOrder(repo, a, pathsA);
  const ib = entriesInOrder(repo, b, new SnapshotPaths(b.snapshot));
  let x = (await ia.next()).value;
  let y = (await ib.next()).value;
  while (x || y) {
    const order = !x ? 1 : !y ? -1 : compareListingOrder(x.abs, y.abs);
    if (order < 0) {
      marksA.mark(x!);
      emit('-', x!);
      countEntry(r.removed, x!);
      x = (await ia.next()).value;
      continue;
    }
    if (order > 0) {
      marksB.mark(y!);
      emit('+', y!);
      countEntry(r.added, y!);
      y = (await ib.next()).value;
      continue;
    }
    marksA.mark(x!);
    marksB.mark(y!);
    if (x!.type !== y!.type) {
      emit('T', y!);
      r.typeChanged++;
    } else if (!sameContent(x!, y!) || linkChanged(x!)) {
      emit('M', y!);
      r.modified++;
    } else if (!sameMeta(x!, y!)) {
      emit('U', y!);
      r.metadataOnly++;
    }
    x = (await ia.next()).value;
    y = (await ib.next()).value;
  }

  for (const rec of marksB.records()) {
    if (marksA.has(rec)) continue;
    r.blobsAdded++;
    r.bytesAdded += index.locationAt(rec).rawLength;
  }
  for (const rec of marksA.records()) {
    if (marksB.has(rec)) continue;
    r.blobsRemoved++;
    r.bytesRemoved += index.locationAt(rec).rawLength;
  }
  // Blobs no index holds count, with no size known (a damaged repository).
  for (const [from, to, n] of [[marksB.missing, marksA.missing, 'blobsAdded'], [marksA.missing, marksB.missing, 'blobsRemoved']] as const) {
    for (const id of from.ids()) if (!to.has(id)) r[n]++;
  }
  return r;
}

export type StatsMode = 'restore-size' | 'raw-data' | 'files-by-contents' | 'blobs-per-file';
export const STATS_MODES: readonly StatsMode[] = ['restore-size', 'files-by-contents', 'blobs-per-file', 'raw-data'];

export interface StatsResult {
  mode: StatsMode;
  snapshots: number;
  /** restore-size: what restoring every chosen snapshot would write (summed over them). */
  files?: number;
  dirs?: number;
  others?: number;
  bytes?: number;
  /** raw-data: the distinct blobs the snapshots need (contents and listings). */
  blobs?: number;
  /** Uncompressed bytes of those blobs, and what they take in the packs (compressed, padded). */
  rawBytes?: number;
  storedBytes?: number;
  /** Blobs the snapshots name that are in no index (`coffer check` says more). */
  missingBlobs?: number;
}

/**
 * Sizes and counts over snapshots, as restic's `stats`: `restore-size` (what restoring
 * them writes), `files-by-contents` (files counted once per distinct content, and their
 * sizes), `blobs-per-file` (those files, and the distinct content blobs they need with
 * their uncompressed sizes), `raw-data` (every distinct blob, listings too, uncompressed
 * and as stored). A file's content is its list of chunk IDs (keyed hashes): two files
 * with the same bytes have the same list.
 */
export async function snapshotStats(repo: Repository, snapshots: SnapshotRecord[], mode: StatsMode, onSnapshot?: (done: number) => void): Promise<StatsResult> {
  if (!STATS_MODES.includes(mode)) throw new CofferError('invalid-argument', `unknown stats mode '${String(mode)}' (use ${STATS_MODES.join(', ')})`);
  let done = 0;
  if (mode === 'files-by-contents' || mode === 'blobs-per-file') {
    // One 16-byte digest per distinct content (not its chunk list), and for
    // blobs-per-file a bit per index record (BlobMarks).
    const contents = new Set<string>();
    const index = mode === 'blobs-per-file' ? await repo.index() : undefined;
    const marks = index ? new BlobMarks(index) : undefined;
    let files = 0;
    let bytes = 0;
    for (const rec of snapshots) {
      for await (const e of repo.tree(rec.snapshot)) {
        if (e.type !== 'file') continue;
        const h = createHash('sha256');
        for (const c of e.chunks) h.update(c);
        const key = h.digest().subarray(0, 16).toString('latin1');
        if (contents.has(key)) continue;
        contents.add(key);
        files++;
        bytes += e.size;
        marks?.mark(e);
      }
      onSnapshot?.(++done);
    }
    if (!marks || !index) return { mode, snapshots: snapshots.length, files, bytes };
    let blobs = 0;
    let rawBytes = 0;
    for (const r of marks.records()) {
      blobs++;
      rawBytes += index.locationAt(r).rawLength;
    }
    return { mode, snapshots: snapshots.length, files, blobs: blobs + marks.missing.size, rawBytes, missingBlobs: marks.missing.size };
  }
  if (mode === 'restore-size') {
    const r = { mode, snapshots: snapshots.length, files: 0, dirs: 0, others: 0, bytes: 0 };
    for (const rec of snapshots) {
      for await (const e of repo.tree(rec.snapshot)) {
        if (e.type === 'file') {
          r.files++;
          r.bytes += e.size;
        } else if (e.type === 'dir') r.dirs++;
        else r.others++;
      }
      onSnapshot?.(++done);
    }
    return r;
  }
  // A bit per index record, and the IDs no index holds apart (BlobMarks, as diff): one
  // bit per blob of the repository, not a string per blob of the snapshots.
  const index = await repo.index();
  const marks = new BlobMarks(index);
  for (const rec of snapshots) {
    for (const t of rec.snapshot.tree) marks.markId(Buffer.from(t, 'hex'));
    for await (const e of repo.tree(rec.snapshot)) marks.mark(e);
    onSnapshot?.(++done);
  }
  let rawBytes = 0;
  let storedBytes = 0;
  let blobs = 0;
  for (const rec of marks.records()) {
    const loc = index.locationAt(rec);
    blobs++;
    rawBytes += loc.rawLength;
    storedBytes += loc.storedLength;
  }
  return { mode, snapshots: snapshots.length, blobs: blobs + marks.missing.size, rawBytes, storedBytes, missingBlobs: marks.missing.size };
}

/** Writes to a stream, waiting when it asks to (flat memory whatever the reader's speed). */
async function put(out: NodeJS.WritableStream, b: Buffer): Promise<void> {
  if (b.length === 0) return;
  if (!out.write(b)) {
    await new Promise<void>((resolve, reject) => {
      const done = (e?: Error) => {
        out.off('drain', ok);
        out.off('error', done);
        out.off('close', closed);
        if (e) reject(e);
        else resolve();
      };
      const ok = () => done();
      const closed = () => done(Object.assign(new Error('output closed'), { code: 'EPIPE' }));
      out.once('drain', ok);
      out.once('error', done);
      out.once('close', closed);
    });
  }
}

/** Pieces of output gathered into writes of up to this many bytes… */
const OUT_BATCH = 256 * 1024;
/** …while pieces at least this large are written as they are (after what was gathered). */
const OUT_DIRECT = 64 * 1024;

/**
 * A dump's output: tar headers, small files and padding gathered into one write per
 * OUT_BATCH bytes (issue 13: three write(2) calls per file were an eighth of a dump of
 * the 50,000-file tree). `flush` before the end.
 */
class Output {
  #buf = Buffer.allocUnsafe(OUT_BATCH);
  #fill = 0;

  constructor(private readonly out: NodeJS.WritableStream) {}

  async write(b: Buffer): Promise<void> {
    if (b.length >= OUT_DIRECT) {
      await this.flush();
      await put(this.out, b);
      return;
    }
    if (this.#fill + b.length > OUT_BATCH) await this.flush();
    b.copy(this.#buf, this.#fill);
    this.#fill += b.length;
  }

  async flush(): Promise<void> {
    if (this.#fill === 0) return;
    const b = this.#buf.subarray(0, this.#fill);
    // A new buffer: the stream may still hold the one written.
    this.#buf = Buffer.allocUnsafe(OUT_BATCH);
    this.#fill = 0;
    await put(this.out, b);
  }
}

/** Streams a file's contents, blob by blob (each checked against its ID), in order. */
export async function dumpFile(repo: Repository, file: FileEntry, out: NodeJS.WritableStream, onBytes?: (n: number) => void): Promise<void> {
  const queue = new BlobQueue(new BlobReader(repo));
  try {
    for (const c of file.chunks) await queue.push(Buffer.from(c, 'hex'));
    const o = new Output(out);
    await writeFileFrom(queue, file, o, onBytes);
    await o.flush();
  } finally {
    await queue.close();
  }
}

/** Writes `file`'s contents from `queue`, where its chunks are next. */
async function writeFileFrom(queue: BlobQueue, file: FileEntry, out: Output, onBytes?: (n: number) => void): Promise<void> {
  let written = 0;
  for (let i = 0; i < file.chunks.length; i++) {
    const raw = await queue.next();
    await out.write(raw);
    written += raw.length;
    onBytes?.(raw.length);
  }
  if (written !== file.size) throw new CofferError('corrupt', `${file.path}: its chunks add up to ${written} bytes, not its size ${file.size}`);
}

/**
 * A dump's read-ahead: each call reads the listing of `rec` on, through `picker`, until
 * enough entries (or blobs) are ahead of the output or `stop` says so; `add` takes each
 * picked entry (and queues its blobs). Hard links in the part to files outside it come
 * last, as copies of their files: a second pass over the listing finds those (files
 * outside the part are not remembered, so a dump of one folder does not grow with the
 * snapshot).
 */
function listingAhead(repo: Repository, rec: SnapshotRecord, picker: SubtreePicker, queue: BlobQueue, ahead: TreeEntry[], add: (p: TreeEntry) => Promise<void>, stop: () => boolean = () => false): () => Promise<void> {
  const listing = repo.tree(rec.snapshot)[Symbol.asyncIterator]();
  let listed = false;
  return async () => {
    while (!listed && !stop() && (ahead.length === 0 || (queue.length < READ_AHEAD_BLOBS && ahead.length < DUMP_ENTRIES_AHEAD))) {
      const n = await listing.next();
      if (n.done) {
        listed = true;
        const copies: TreeEntry[] = [];
        await picker.resolveOrphans((each) => repo.treeEach(rec.snapshot, each), (e) => copies.push(e));
        for (const p of copies) await add(p);
        break;
      }
      const p = picker.pick(n.value);
      if (p) await add(p);
    }
  };
}

/** Entries of a dump read from the listing ahead of the one being written (their blobs fetched ahead too). */
const DUMP_ENTRIES_AHEAD = 256;

export interface DumpResult {
  /** 'file': the file's bytes; 'tar': a tar stream of the selection. */
  format: 'file' | 'tar' | 'zip';
  /** zip: entries left out because zip has no type for them (FIFOs, devices, sockets). */
  skipped?: number;
  entries: number;
  bytes: number;
}

/**
 * `coffer dump`: a file's contents, or (a directory, or `archive: 'tar'`) a tar stream
 * of the selection, entries named from the selected directory's own name (`docs/…`),
 * or by their absolute path without the leading `/` for `/` and directories above the
 * backed-up paths. Sockets are left out (tar has no type for them).
 */
export async function dumpSnapshot(
  repo: Repository,
  rec: SnapshotRecord,
  path: Buffer,
  out: NodeJS.WritableStream,
  opts: {
    archive?: 'tar' | 'zip';
    onProgress?: (p: { entries: number; bytes: number }) => void;
    /** Called once before the first byte of a tar stream (the CLI refuses to write one to a terminal). */
    beforeTar?: () => void;
    /** Tests: zip entries from this size get zip64 fields (ZipWriter's `zip64From`). */
    zip64From?: number;
  } = {},
): Promise<DumpResult> {
  if (opts.archive === 'zip') return dumpZip(repo, rec, path, out, opts);
  const map = new SnapshotPaths(rec.snapshot);
  const sel = map.select(path);
  const picker = new SubtreePicker(sel, { keepName: true });
  const result: DumpResult = { format: 'tar', entries: 0, bytes: 0 };
  const report = () => opts.onProgress?.({ entries: result.entries, bytes: result.bytes });
  const archiveName = (raw: Buffer) => (sel.roots ? map.absolute(raw).subarray(1) : raw);
  // The listing is read ahead of the output, and the blobs of the files coming next are
  // fetched while earlier ones are written (BlobQueue): one file after another, each
  // small file waited for its reads (issue 13: ~8 MB/s on the 50,000-file tree).
  const queue = new BlobQueue(new BlobReader(repo));
  const o = new Output(out);
  try {
    const ahead: TreeEntry[] = [];
    let single = false;
    const add = async (p: TreeEntry) => {
      // One file asked for, not as an archive: its bytes, and nothing more is read.
      if (ahead.length === 0 && first && sel.entry && p.type === 'file' && opts.archive === undefined) single = true;
      ahead.push(p);
      if (p.type === 'file') for (const c of p.chunks) await queue.push(Buffer.from(c, 'hex'));
    };
    const readAhead = listingAhead(repo, rec, picker, queue, ahead, add, () => single);
    let first = true;
    for (;;) {
      await readAhead();
      const p = ahead.shift();
      if (!p) break;
      if (single && p.type === 'file') {
        result.format = 'file';
        result.entries = 1;
        await writeFileFrom(queue, p, o, (n) => {
          result.bytes += n;
          report();
        });
        await o.flush();
        return result;
      }
      if (first) opts.beforeTar?.();
      first = false;
      if (p.type === 'socket') continue;
      await o.write(
        tarHeader({
          name: archiveName(p.rawPath),
          type: p.type,
          mode: p.mode,
          mtimeNs: p.mtimeNs,
          ...(p.owner ? { uid: p.owner.uid, gid: p.owner.gid, ...(p.owner.user ? { uname: p.owner.user } : {}), ...(p.owner.group ? { gname: p.owner.group } : {}) } : {}),
          ...(p.type === 'file' ? { size: p.size } : {}),
          ...(p.type === 'symlink' ? { link: p.target } : {}),
          ...(p.type === 'hardlink' ? { link: archiveName(p.link) } : {}),
          ...(p.type === 'chardev' || p.type === 'blockdev' ? { major: p.major ?? 0, minor: p.minor ?? 0 } : {}),
          ...(p.xattrs?.length ? { xattrs: p.xattrs } : {}),
        }),
      );
      result.entries++;
      if (p.type === 'file') {
        await writeFileFrom(queue, p, o, (n) => {
          result.bytes += n;
          report();
        });
        await o.write(tarPadding(p.size));
      }
      report();
    }
    picker.finish(rec.id);
    if (first) opts.beforeTar?.();
    await o.write(TAR_END);
    await o.flush();
    return result;
  } finally {
    await queue.close();
  }
}

/**
 * `coffer dump --archive zip` (restic's): the selection as a zip stream (zip.ts), named as
 * in a tar dump. Zip has no hard links: a file's later names are written as copies of it,
 * at the end, found by reading the listing once more (only when there are any: as for a
 * part's hard links to files outside it, files are not remembered, so memory does not
 * grow with the snapshot). Zip has no type for FIFOs, devices and sockets: those are left
 * out and counted (`skipped`). Extended attributes are not kept (zip has no place for
 * them); tar keeps them.
 */
async function dumpZip(
  repo: Repository,
  rec: SnapshotRecord,
  path: Buffer,
  out: NodeJS.WritableStream,
  opts: { onProgress?: (p: { entries: number; bytes: number }) => void; beforeTar?: () => void; zip64From?: number },
): Promise<DumpResult> {
  const map = new SnapshotPaths(rec.snapshot);
  const sel = map.select(path);
  const picker = new SubtreePicker(sel, { keepName: true });
  const result: DumpResult = { format: 'zip', entries: 0, bytes: 0, skipped: 0 };
  const report = () => opts.onProgress?.({ entries: result.entries, bytes: result.bytes });
  const archiveName = (raw: Buffer) => (sel.roots ? map.absolute(raw).subarray(1) : raw);
  const queue = new BlobQueue(new BlobReader(repo));
  const o = new Output(out);
  const zip = new ZipWriter((b) => o.write(b), opts.zip64From);
  const writeFile = (p: FileEntry) =>
    zip.file({ name: archiveName(p.rawPath), kind: 'file', mode: p.mode, mtimeNs: p.mtimeNs, size: p.size, ...(p.owner ? { uid: p.owner.uid, gid: p.owner.gid } : {}) }, async (sink) => {
      let written = 0;
      for (let i = 0; i < p.chunks.length; i++) {
        const raw = await queue.next();
        await sink(raw);
        written += raw.length;
        result.bytes += raw.length;
        report();
      }
      if (written !== p.size) throw new CofferError('corrupt', `${p.path}: its chunks add up to ${written} bytes, not its size ${p.size}`);
    });
  /** Hard links (their names in the part and their files'), written as copies at the end. */
  const links: HardlinkEntry[] = [];
  try {
    const ahead: TreeEntry[] = [];
    const add = async (p: TreeEntry) => {
      if (p.type === 'hardlink') {
        links.push(p);
        return;
      }
      if (p.type === 'file') for (const c of p.chunks) await queue.push(Buffer.from(c, 'hex'));
      ahead.push(p);
    };
    const readAhead = listingAhead(repo, rec, picker, queue, ahead, add);
    opts.beforeTar?.();
    for (;;) {
      await readAhead();
      const p = ahead.shift();
      if (!p) break;
      if (p.type === 'dir' || p.type === 'symlink') {
        await zip.entry({ name: archiveName(p.rawPath), kind: p.type, mode: p.mode, mtimeNs: p.mtimeNs, ...(p.owner ? { uid: p.owner.uid, gid: p.owner.gid } : {}), ...(p.type === 'symlink' ? { target: p.target } : {}) });
      } else if (p.type === 'file') await writeFile(p);
      else {
        result.skipped!++;
        continue;
      }
      result.entries++;
      report();
    }
    picker.finish(rec.id);
    if (links.length > 0) {
      // The files the links name, by their names in the part: the listing through a new
      // picker, with the copies it makes of files outside the part.
      const again = new SubtreePicker(sel, { keepName: true });
      const files = await filesAt(async (each) => {
        await repo.treeEach(rec.snapshot, (e) => {
          const q = again.pick(e);
          if (q) each(q);
        });
        await again.resolveOrphans((all) => repo.treeEach(rec.snapshot, all), each);
      }, links.map((l) => l.link));
      for (const l of links) {
        const file = files.get(l.link.toString('latin1'));
        if (!file) throw new CofferError('corrupt', `${l.path}: a hard link to ${l.link.toString('utf8')}, which is no file of the listing`);
        for (const c of file.chunks) await queue.push(Buffer.from(c, 'hex'));
        await writeFile({ ...file, path: l.path, rawPath: l.rawPath });
        result.entries++;
        report();
      }
    }
    await zip.finish();
    await o.flush();
    return result;
  } finally {
    await queue.close();
  }
}
