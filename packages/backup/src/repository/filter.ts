/**
 * Which files a backup stores and a restore writes (spec/backup-format.md is not
 * involved: selection changes what is stored, not how). One module, used by `backup`
 * (`--exclude`, `--iexclude`, `--exclude-file`, `--exclude-caches`,
 * `--exclude-if-present`) and by `restore` (`--include`, `--exclude` and their
 * case-insensitive forms), so a pattern means the same thing in both.
 *
 * Patterns follow restic (gitignore-like), matched against the file's absolute path
 * (at backup time: its path on disk; at restore time: its path when it was backed up):
 * - a pattern without '/' matches any one path component (`*.o`, `node_modules`);
 * - a pattern starting with '/' is anchored to the absolute path (`/home/*\/.cache`);
 * - a pattern with a '/' elsewhere matches a run of trailing components at any depth
 *   (`build/*.o` matches `/src/app/build/x.o`);
 * - `*` and `?` stay within one component, `**` spans any number of them, `[a-z]` and
 *   `{a,b}` as in shells (picomatch's glob syntax);
 * - a trailing '/' restricts the pattern to directories;
 * - a leading '!' negates: the last pattern that matches a path decides, so
 *   `--exclude '/home/*' --exclude '!/home/me'` keeps /home/me. Case-sensitive and
 *   case-insensitive patterns are two lists, as in restic: a path is excluded when
 *   either list excludes it, and '!' re-includes only against its own list. As in
 *   gitignore, a path inside an excluded directory can't be re-included (the directory
 *   isn't read);
 * - a pattern matching a directory selects everything below it.
 *
 * Names need not be UTF-8. Each path component is matched as text: decoded as UTF-8
 * when it is valid UTF-8, else as Latin-1 (one character per byte), so the name
 * `caf\xe9` is matched by `café` or `caf?`. Case-insensitive patterns compare the
 * lowercased (Unicode) forms.
 *
 * The glob matcher is picomatch (zero dependencies, maintained, compiles a glob to one
 * regular expression); the restic semantics around it (components, anchoring,
 * negation, directories) are here.
 */
import { promises as fs } from 'node:fs';
import type { EntryStat } from './scan-ahead.js';
import picomatch from 'picomatch';
import { CofferError } from '../errors.js';
import { filesAt, isUtf8 } from './tree.js';
import type { HardlinkEntry, TreeEntry } from './tree.js';

/** One pattern as the user gave it. */
export interface PatternRule {
  pattern: string;
  /** `--iexclude`/`--iinclude`: compare case-insensitively. */
  ignoreCase?: boolean;
}

interface Compiled {
  negate: boolean;
  dirOnly: boolean;
  /** 'name': one component; 'anchored': the whole path; 'tail': trailing components. */
  kind: 'name' | 'anchored' | 'tail';
  /** Components in the pattern (for 'tail' without `**`: how many trailing components to test). */
  parts: number;
  hasGlobstar: boolean;
  ignoreCase: boolean;
  re: RegExp;
  text: string;
}

/** A path component as matchable text (see the module comment). */
function componentText(b: Buffer): string {
  return isUtf8(b) ? b.toString('utf8') : b.toString('latin1');
}

/** The absolute path as text, component by component. */
export function pathText(abs: Buffer): string {
  const parts: string[] = [];
  let start = 0;
  for (let i = 0; i <= abs.length; i++) {
    if (i === abs.length || abs[i] === 0x2f) {
      // Repeated slashes ('/' as a root gives '//name') count as one.
      if (i > start || parts.length === 0) parts.push(componentText(abs.subarray(start, i)));
      start = i + 1;
    }
  }
  return parts.join('/');
}

function compile(rule: PatternRule): Compiled {
  let p = rule.pattern;
  if (typeof p !== 'string') throw new TypeError('pattern: expected a string');
  const text = p;
  const negate = p.startsWith('!');
  if (negate) p = p.slice(1);
  // "\!x" is a pattern for names starting with '!' (gitignore); picomatch reads the
  // escape itself. Any other leading '!' left is literal too, never picomatch's negation.
  if (p.startsWith('!')) p = `\\${p}`;
  const dirOnly = p.length > 1 && p.endsWith('/');
  if (dirOnly) p = p.replace(/\/+$/, '');
  if (p === '' || p === '/') throw new CofferError('invalid-argument', `empty pattern '${text}'`);
  if (p.includes('\0')) throw new CofferError('invalid-argument', `pattern '${text.replace(/\0/g, '\\0')}' holds a NUL byte`);
  const ignoreCase = rule.ignoreCase === true;
  if (ignoreCase) p = p.toLowerCase();
  const kind = p.startsWith('/') ? 'anchored' : p.includes('/') ? 'tail' : 'name';
  // A tail pattern is a pattern at any depth: `**/` in front of it.
  const glob = kind === 'tail' ? `**/${p}` : p;
  let re: RegExp;
  try {
    // literalBrackets false: `[abc]` is only a class, as in restic (picomatch by default
    // also lets it match the name `[abc]` itself).
    re = picomatch.makeRe(glob, { dot: true, nobrace: false, noextglob: true, strictSlashes: true, literalBrackets: false });
  } catch (e) {
    throw new CofferError('invalid-argument', `bad pattern '${text}': ${(e as Error).message}`);
  }
  return { negate, dirOnly, kind, parts: p.split('/').length, hasGlobstar: p.includes('**'), ignoreCase, re, text };
}

/**
 * A list of patterns, last match wins. `test(abs, isDir)` tells whether the path's
 * own last matching pattern selects it (true), negates (false), or none matches
 * (undefined). Ancestors are the caller's business (a walk doesn't enter an excluded
 * directory; `inSubtree` handles flat lists).
 */
export class PatternList {
  readonly #exact: Compiled[];
  readonly #folded: Compiled[];
  /**
   * As restic does, case-sensitive and case-insensitive patterns are two lists, each
   * with its own "last match wins": `!` re-includes only against its own kind.
   */
  constructor(rules: readonly PatternRule[]) {
    const all = rules.map(compile);
    this.#exact = all.filter((r) => !r.ignoreCase);
    this.#folded = all.filter((r) => r.ignoreCase);
  }
  get size(): number {
    return this.#exact.length + this.#folded.length;
  }
  /** `abs`: an absolute path (bytes, '/'-separated). Selected by either list: true. */
  test(abs: Buffer, isDir: boolean): boolean | undefined {
    if (this.size === 0) return undefined;
    const full = pathText(abs);
    const a = PatternList.#last(this.#exact, full, isDir);
    const b = PatternList.#last(this.#folded, full, isDir);
    if (a === true || b === true) return true;
    return a ?? b;
  }
  static #last(rules: Compiled[], full: string, isDir: boolean): boolean | undefined {
    if (rules.length === 0) return undefined;
    let lower: string | undefined;
    const slash = full.lastIndexOf('/');
    let verdict: boolean | undefined;
    for (const r of rules) {
      if (r.dirOnly && !isDir) continue;
      const s = r.ignoreCase ? (lower ??= full.toLowerCase()) : full;
      let hit: boolean;
      if (r.kind === 'name') hit = r.re.test(s.slice(slash + 1));
      else if (r.kind === 'anchored') hit = r.re.test(s);
      else hit = r.re.test(s.slice(1));
      if (hit) verdict = !r.negate;
    }
    return verdict;
  }
}

/** CACHEDIR.TAG's required start (https://bford.info/cachedir/). */
const CACHEDIR_SIGNATURE = Buffer.from('Signature: 8a477f597d28d172789f06886806bc55', 'latin1');
const CACHEDIR_TAG = Buffer.from('CACHEDIR.TAG');

export interface BackupSelectionOptions {
  exclude?: readonly PatternRule[];
  /** Leave out the contents of directories holding a valid CACHEDIR.TAG (the tag file itself is kept). */
  excludeCaches?: boolean;
  /** Leave out directories holding a file of one of these names (`NAME:HEADER`: whose content starts with HEADER, as restic). */
  excludeIfPresent?: readonly string[];
  /**
   * Leave out regular files larger than this many bytes (`--exclude-larger-than`, as
   * restic's). Only regular files: a symlink's size is its target's length, and a
   * directory's says nothing about what it holds.
   */
  excludeLargerThan?: number;
}

/**
 * What `backup` leaves out: returns the function backup.ts calls for every entry it
 * meets (roots included). An excluded directory is not read at all.
 */
export function backupExcluder(opts: BackupSelectionOptions): ((abs: Buffer, st: EntryStat) => Promise<boolean>) | undefined {
  const patterns = new PatternList(opts.exclude ?? []);
  const present = (opts.excludeIfPresent ?? []).map((spec) => {
    // restic's NAME[:HEADER]: with a header, only a NAME whose content starts with it counts.
    const colon = spec.indexOf(':');
    const n = colon < 0 ? spec : spec.slice(0, colon);
    if (n === '' || n.includes('/') || n.includes('\0')) throw new CofferError('invalid-argument', `--exclude-if-present takes a file name (NAME or NAME:HEADER), not '${spec}'`);
    return { name: Buffer.from(n, 'utf8'), header: colon < 0 || colon === spec.length - 1 ? undefined : Buffer.from(spec.slice(colon + 1), 'utf8') };
  });
  const maxSize = opts.excludeLargerThan === undefined ? undefined : BigInt(opts.excludeLargerThan);
  if (patterns.size === 0 && !opts.excludeCaches && present.length === 0 && maxSize === undefined) return undefined;
  /** Parent directory → is it a tagged cache directory (bounded: the walk is depth-first). */
  const cacheDirs = new Map<string, Promise<boolean>>();
  const isCacheDir = (dir: Buffer): Promise<boolean> => {
    const k = dir.toString('latin1');
    let v = cacheDirs.get(k);
    if (!v) {
      if (cacheDirs.size > 4096) cacheDirs.clear();
      v = hasCacheTag(dir);
      cacheDirs.set(k, v);
    }
    return v;
  };
  return async (abs, st) => {
    const isDir = st.isDirectory();
    if (maxSize !== undefined && st.isFile() && st.size > maxSize) return true;
    if (patterns.test(abs, isDir) === true) return true;
    if (isDir && present.length > 0) {
      for (const { name, header } of present) {
        const tag = Buffer.concat([abs, SLASH, name]);
        if (header ? await startsWith(tag, header) : await exists(tag)) return true;
      }
    }
    if (opts.excludeCaches) {
      const i = abs.lastIndexOf(0x2f);
      if (i > 0 && !abs.subarray(i + 1).equals(CACHEDIR_TAG) && (await isCacheDir(abs.subarray(0, i)))) return true;
    }
    return false;
  };
}

const SLASH = Buffer.from('/');

async function exists(p: Buffer): Promise<boolean> {
  return fs.lstat(p).then(
    () => true,
    () => false,
  );
}

function hasCacheTag(dir: Buffer): Promise<boolean> {
  return startsWith(Buffer.concat([dir, SLASH, CACHEDIR_TAG]), CACHEDIR_SIGNATURE);
}

/** Whether `file` is a regular file whose content starts with `header`. */
async function startsWith(file: Buffer, header: Buffer): Promise<boolean> {
  let fh;
  try {
    fh = await fs.open(file, 'r');
    const st = await fh.stat();
    if (!st.isFile()) return false;
    const head = Buffer.alloc(header.length);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    return bytesRead === head.length && head.equals(header);
  } catch {
    return false;
  } finally {
    await fh?.close();
  }
}

/** `abs` without repeated or trailing slashes, as a map key. */
function normalKey(abs: Buffer): string {
  return abs.toString('latin1').replace(/\/{2,}/g, '/').replace(/(.)\/$/, '$1');
}

/**
 * `--files-from`: the listed paths (absolute or relative to `cwd`, as bytes) become one
 * backup root, their deepest common directory, and a selection that keeps only the
 * listed paths, everything below them, and the directories above them (so two listed
 * files with the same name don't clash, and names need not be UTF-8). One listed path
 * is its own root. Returns the root and the exclude hook for backup.ts.
 */
export function listedSelection(
  paths: readonly Buffer[],
  cwd = process.cwd(),
): { root: string; exclude?: (abs: Buffer, st: EntryStat) => boolean } {
  if (paths.length === 0) throw new CofferError('invalid-argument', 'the list of files is empty');
  const absKeys = paths.map((p) => {
    const k = p[0] === 0x2f ? p.toString('latin1') : `${Buffer.from(cwd, 'utf8').toString('latin1')}/${p.toString('latin1')}`;
    const segs: string[] = [];
    for (const s of k.split('/')) {
      if (s === '' || s === '.') continue;
      if (s === '..') segs.pop();
      else segs.push(s);
    }
    return segs;
  });
  let common = absKeys[0]!;
  for (const segs of absKeys.slice(1)) {
    let n = 0;
    while (n < common.length && n < segs.length && common[n] === segs[n]) n++;
    common = common.slice(0, n);
  }
  const rootBytes = Buffer.from('/' + common.join('/'), 'latin1');
  if (!isUtf8(rootBytes)) throw new CofferError('invalid-argument', `the listed files' common directory ${pathText(rootBytes)} is not UTF-8: list files below a UTF-8 directory`);
  const root = rootBytes.toString('utf8');
  const listed = new Set(absKeys.map((s) => '/' + s.join('/')));
  if (listed.has('/' + common.join('/'))) return { root };
  const above = new Set<string>();
  for (const segs of absKeys) for (let n = 1; n < segs.length; n++) above.add('/' + segs.slice(0, n).join('/'));
  return {
    root,
    exclude: (abs) => {
      const k = normalKey(abs);
      if (listed.has(k) || above.has(k)) return false;
      // Below a listed path?
      for (let i = k.lastIndexOf('/'); i > 0; i = k.lastIndexOf('/', i - 1)) if (listed.has(k.slice(0, i))) return false;
      return true;
    },
  };
}

/** Both hooks in one: excluded when either says so. */
export function eitherExcludes(
  a: ((abs: Buffer, st: EntryStat) => Promise<boolean> | boolean) | undefined,
  b: ((abs: Buffer, st: EntryStat) => Promise<boolean> | boolean) | undefined,
): ((abs: Buffer, st: EntryStat) => Promise<boolean>) | undefined {
  if (!a && !b) return undefined;
  return async (abs, st) => ((await a?.(abs, st)) ?? false) || ((await b?.(abs, st)) ?? false);
}

export interface RestoreSelectionOptions {
  include?: readonly PatternRule[];
  exclude?: readonly PatternRule[];
}

/**
 * What `restore --include/--exclude` writes, from a snapshot's entries in listing order
 * (parents before children). An entry is kept when it (or a directory above it) matches
 * an include pattern (or none is given) and neither it nor a directory above it is
 * excluded; the directories above a kept entry are kept too, so its parents are made.
 * A hard link whose file is left out becomes a copy of that file, so its data comes back.
 *
 * `absOf` turns an entry's path in the listing into its absolute path at backup time.
 */
export class RestoreSelection {
  readonly #include: PatternList;
  readonly #exclude: PatternList;
  constructor(opts: RestoreSelectionOptions) {
    this.#include = new PatternList(opts.include ?? []);
    this.#exclude = new PatternList(opts.exclude ?? []);
  }
  get active(): boolean {
    return this.#include.size + this.#exclude.size > 0;
  }
  /**
   * Streams the selection: `list(each)` hands over the snapshot's entries in listing
   * order, and `take` gets the chosen ones, parents first. Memory holds the chain of
   * directories above the current entry, the paths of the files taken (for their hard
   * links) and nothing per entry left out: a restore of a few files of a large snapshot
   * kept every entry of it before (issue 13). A hard link whose file was left out is
   * taken, as a copy of that file, after a second pass that finds the file's entry (only
   * when there is such a link).
   */
  async selectEach(list: (each: (e: TreeEntry) => void) => Promise<void>, absOf: (rawPath: Buffer) => Buffer, take: (e: TreeEntry) => void): Promise<void> {
    if (!this.active) return list(take);
    const key = (b: Buffer) => b.toString('latin1');
    const parentOf = (b: Buffer) => {
      const i = b.lastIndexOf(0x2f);
      return i < 0 ? undefined : b.subarray(0, i);
    };
    /** The directories above the current entry, outermost first: what a kept entry below makes kept too. */
    const chain: Array<{ key: string; entry: TreeEntry; excluded: boolean; included: boolean; taken: boolean }> = [];
    const takenFiles = new Set<string>();
    /** Hard links taken whose file was not: each becomes a copy of its file. */
    const orphans: HardlinkEntry[] = [];
    const noIncludes = this.#include.size === 0;
    await list((e) => {
      const parent = parentOf(e.rawPath);
      const parentKey = parent ? key(parent) : undefined;
      while (chain.length > 0 && chain[chain.length - 1]!.key !== parentKey) chain.pop();
      const up = chain.length > 0 ? chain[chain.length - 1]! : { excluded: false, included: false };
      const isDir = e.type === 'dir';
      const abs = absOf(e.rawPath);
      const excluded = up.excluded || this.#exclude.test(abs, isDir) === true;
      const included = up.included || this.#include.test(abs, isDir) === true;
      const chosen = !excluded && (noIncludes || included);
      if (chosen) {
        // Its parents are kept (and made) too, before it.
        for (const d of chain) {
          if (!d.taken) {
            d.taken = true;
            take(d.entry);
          }
        }
      }
      if (isDir) chain.push({ key: key(e.rawPath), entry: e, excluded, included, taken: chosen });
      if (!chosen) return;
      if (e.type === 'file') takenFiles.add(key(e.rawPath));
      if (e.type === 'hardlink' && !takenFiles.has(key(e.link))) orphans.push(e);
      else take(e);
    });
    if (orphans.length === 0) return;
    const files = await filesAt(list, orphans.map((h) => h.link));
    // The first taken name of a file left out is a copy of it; its other taken names are
    // hard links to that copy (they were one file, and stay one).
    const copies = new Map<string, Buffer>();
    for (const h of orphans) {
      const first = copies.get(key(h.link));
      if (first) {
        take({ ...h, link: first });
        continue;
      }
      const f = files.get(key(h.link));
      if (f) copies.set(key(h.link), h.rawPath);
      take(f ? { ...f, path: h.path, rawPath: h.rawPath } : h);
    }
  }

  /** `selectEach` over entries in memory. */
  async select(entries: readonly TreeEntry[], absOf: (rawPath: Buffer) => Buffer): Promise<TreeEntry[]> {
    const out: TreeEntry[] = [];
    await this.selectEach(async (each) => entries.forEach((e) => each(e)), absOf, (e) => out.push(e));
    return out;
  }
}

/**
 * Reads an exclude/include file (`--exclude-file`): one pattern per line; blank lines
 * and lines starting with '#' are ignored, trailing spaces and CR are dropped (restic
 * and gitignore do the same). The file must be UTF-8 text.
 */
export async function readPatternFile(path: string, ignoreCase = false): Promise<PatternRule[]> {
  let raw: Buffer;
  try {
    raw = await fs.readFile(path);
  } catch (e) {
    throw new CofferError('invalid-argument', `cannot read pattern file ${path}: ${fsReason(e)}`);
  }
  if (!isUtf8(raw) || raw.includes(0)) throw new CofferError('invalid-argument', `pattern file ${path} is not UTF-8 text`);
  const rules: PatternRule[] = [];
  const lines = raw.toString('utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '').replace(/(?<!\\)\s+$/, '');
    if (line === '' || line.startsWith('#')) continue;
    try {
      compile({ pattern: line, ignoreCase });
    } catch (e) {
      throw new CofferError('invalid-argument', `${path}:${i + 1}: ${(e as Error).message}`);
    }
    rules.push({ pattern: line, ignoreCase });
  }
  return rules;
}

/**
 * Reads `--files-from` (one path per line, text; blank lines and '#' comments ignored)
 * or `--files-from-raw` (NUL-separated, any bytes: for names that are not UTF-8).
 * Returns the paths as bytes.
 */
export async function readFilesFrom(path: string, raw: boolean): Promise<Buffer[]> {
  let data: Buffer;
  try {
    data = await fs.readFile(path);
  } catch (e) {
    throw new CofferError('invalid-argument', `cannot read the list of files ${path}: ${fsReason(e)}`);
  }
  const out: Buffer[] = [];
  if (raw) {
    let start = 0;
    for (let i = 0; i <= data.length; i++) {
      if (i === data.length || data[i] === 0) {
        if (i > start) out.push(Buffer.from(data.subarray(start, i)));
        start = i + 1;
      }
    }
  } else {
    if (data.includes(0)) throw new CofferError('invalid-argument', `${path} holds NUL bytes: for NUL-separated names use --files-from-raw`);
    if (!isUtf8(data)) throw new CofferError('invalid-argument', `${path} is not UTF-8 text: for names that are not UTF-8 use --files-from-raw (NUL-separated)`);
    for (const line of data.toString('utf8').split('\n')) {
      const l = line.replace(/\r$/, '');
      if (l.trim() === '' || l.startsWith('#')) continue;
      out.push(Buffer.from(l, 'utf8'));
    }
  }
  return out;
}

function fsReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'it is a directory';
  return (e as Error)?.message ?? String(e);
}

/**
 * Maps a listing path (its first segment the root's name) to the absolute path it had
 * when backed up, from the snapshot's `paths` (spec §9.3: a root is named after the
 * last segment of its path, 'root' for '/').
 */
export function snapshotPathOf(paths: readonly string[]): (rawPath: Buffer) => Buffer {
  const roots = new Map<string, Buffer>();
  for (const p of paths) {
    const trimmed = p.replace(/\/+$/, '');
    const name = trimmed.slice(trimmed.lastIndexOf('/') + 1) || 'root';
    roots.set(name, Buffer.from(trimmed, 'utf8'));
  }
  return (raw) => {
    const i = raw.indexOf(0x2f);
    const first = (i < 0 ? raw : raw.subarray(0, i)).toString('utf8');
    const base = roots.get(first);
    if (!base) return Buffer.concat([SLASH, raw]);
    return i < 0 ? base : Buffer.concat([base, raw.subarray(i)]);
  };
}
