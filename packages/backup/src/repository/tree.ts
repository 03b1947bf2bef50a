/**
 * Tree listings (spec §9): a snapshot's files as a stream of JSON lines, one entry per
 * file system object, parents before children, siblings sorted by the bytes of their
 * names. The stream is chunked and stored as Tree blobs like file contents, so an
 * unchanged part of a large listing deduplicates between snapshots.
 *
 * Two encodings exist. Version 1 (snapshot version 1) kept names as JSON strings,
 * millisecond mtimes, and only dirs, files and symlinks. Version 2 (snapshot version 2,
 * spec §9.2) keeps names as bytes (`path` when they are UTF-8, else `path64`), times to
 * the nanosecond, owners, xattrs, hard links, sparse files and special files. Both
 * decode to the same in-memory entries.
 */
import { isUtf8 as nodeIsUtf8 } from 'node:buffer';
import { CofferError } from '../errors.js';

/** An extended attribute: its name and value bytes. */
export interface Xattr {
  name: string;
  value: Buffer;
}

export interface Owner {
  uid: number;
  gid: number;
  /** Names at backup time, for information: restore sets the numeric IDs. */
  user?: string;
  group?: string;
}

interface Common {
  /** The path for messages: `rawPath` decoded as UTF-8 (invalid bytes shown as U+FFFD). */
  path: string;
  /** The exact path bytes; '/'-separated, the first segment the backed-up root's name. */
  rawPath: Buffer;
  mode: number; // permission bits (mode & 0o7777)
  /** Nanoseconds since the epoch (version 1 entries: from fractional milliseconds). */
  mtimeNs: bigint;
  /** Absent in version 1 entries: the owner was not recorded. */
  owner?: Owner;
  xattrs?: Xattr[];
}
export interface DirEntry extends Common {
  type: 'dir';
}
export interface FileEntry extends Common {
  type: 'file';
  size: number;
  chunks: string[]; // hex blob IDs, in order
  /** The file had holes when backed up: restore leaves zero blocks unwritten. */
  sparse?: boolean;
  /** Change-detection hints for the next backup; never restored ('' when unknown). */
  inode: string;
  ctime: string;
}
export interface SymlinkEntry extends Common {
  type: 'symlink';
  target: Buffer;
}
/** Another name of an earlier `file` entry of the same listing (a hard link). */
export interface HardlinkEntry extends Common {
  type: 'hardlink';
  link: Buffer;
}
export interface SpecialEntry extends Common {
  type: 'fifo' | 'socket' | 'chardev' | 'blockdev';
  /** Device numbers of chardev/blockdev entries. */
  major?: number;
  minor?: number;
}
export type TreeEntry = DirEntry | FileEntry | SymlinkEntry | HardlinkEntry | SpecialEntry;

export const MAX_PATH_BYTES = 4096;
const NS = 1_000_000_000n;

/** Is `b` well-formed UTF-8 (so that a JSON string carries it exactly)? */
export function isUtf8(b: Buffer): boolean {
  // node:buffer's validator (simdutf): no decoder object per call, which the walk paid
  // for several times per file.
  return nodeIsUtf8(b);
}

/**
 * The version 2 JSON line of an entry (spec §9.2), as text. Member order is fixed, so
 * equal entries encode equally. The bytes are encodeEntryInto's (what a backup writes).
 */
export function encodeEntry(e: TreeEntry): string {
  const out = new LineBuffer(256);
  encodeEntryInto(out, e);
  return out.buf.toString('utf8', 0, out.used);
}

/**
 * A growing byte buffer that entries are encoded into (TreeWriter): the bytes of
 * encodeEntry's line, without making the line as a string first.
 */
export class LineBuffer {
  buf: Buffer;
  used = 0;
  constructor(initial = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(initial);
  }
  reserve(n: number): void {
    if (this.used + n <= this.buf.length) return;
    const b = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.used + n));
    this.buf.copy(b, 0, 0, this.used);
    this.buf = b;
  }
  /** Bytes as they are (a constant piece of the line). */
  raw(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.used);
    this.used += b.length;
  }
  /** A safe integer as JSON writes it (digits, '-' when negative), without making a string. */
  int(n: number): void {
    if (!Number.isSafeInteger(n)) return this.ascii(JSON.stringify(n));
    this.reserve(17);
    const out = this.buf;
    if (n < 0) {
      out[this.used++] = 0x2d;
      n = -n;
    }
    let digits = 1;
    for (let m = n; m >= 10; m = Math.floor(m / 10)) digits++;
    let o = this.used + digits;
    this.used = o;
    do {
      out[--o] = 0x30 + (n % 10);
      n = Math.floor(n / 10);
    } while (n > 0);
  }
  /** Text of code points below U+0080 only. */
  ascii(t: string): void {
    this.reserve(t.length);
    this.used += this.buf.write(t, this.used, 'latin1');
  }
  text(t: string): void {
    this.reserve(3 * t.length);
    this.used += this.buf.write(t, this.used, 'utf8');
  }
  /** Bytes that are well-formed UTF-8 as a JSON string, quotes included, as JSON.stringify writes it. */
  jsonUtf8(b: Buffer): void {
    this.reserve(2 + 6 * b.length);
    const out = this.buf;
    let o = this.used;
    out[o++] = 0x22;
    for (let i = 0; i < b.length; i++) {
      const c = b[i]!;
      if (c >= 0x20 && c !== 0x22 && c !== 0x5c) {
        out[o++] = c;
        continue;
      }
      out[o++] = 0x5c;
      const short = c === 0x22 ? 0x22 : c === 0x5c ? 0x5c : c === 0x08 ? 0x62 : c === 0x0c ? 0x66 : c === 0x0a ? 0x6e : c === 0x0d ? 0x72 : c === 0x09 ? 0x74 : 0;
      if (short !== 0) out[o++] = short;
      else o += out.write(`u00${c < 0x10 ? '0' : ''}${c.toString(16)}`, o, 'latin1');
    }
    out[o++] = 0x22;
    this.used = o;
  }
  /**
   * A list of chunk IDs as JSON writes it when every one is a string of 64 lowercase hex
   * digits, checked and copied in one pass (no regex, no string per ID); false, with
   * nothing written, when one is not (the caller then writes JSON.stringify's form).
   */
  hexList(ids: readonly unknown[]): boolean {
    const start = this.used;
    this.reserve(2 + 67 * ids.length);
    const out = this.buf;
    let o = start;
    out[o++] = 0x5b;
    for (let i = 0; i < ids.length; i++) {
      const c = ids[i];
      if (typeof c !== 'string' || c.length !== 64) return false;
      if (i > 0) out[o++] = 0x2c;
      out[o++] = 0x22;
      for (let k = 0; k < 64; k++) {
        const x = c.charCodeAt(k);
        if (!((x >= 0x30 && x <= 0x39) || (x >= 0x61 && x <= 0x66))) return false;
        out[o++] = x;
      }
      out[o++] = 0x22;
    }
    out[o++] = 0x5d;
    this.used = o;
    return true;
  }
  /**
   * `piece` (the member's name and opening quote) then `t` and a closing quote, when `t`
   * is decimal digits only (what JSON.stringify writes for it then); false, with nothing
   * written, otherwise.
   */
  digitsMember(piece: Buffer, t: string): boolean {
    this.reserve(piece.length + t.length + 1);
    const out = this.buf;
    let o = this.used + piece.length;
    for (let k = 0; k < t.length; k++) {
      const x = t.charCodeAt(k);
      if (x < 0x30 || x > 0x39) return false;
      out[o++] = x;
    }
    out.set(piece, this.used);
    out[o++] = 0x22;
    this.used = o;
    return true;
  }
  bytesMember(key: string, b: Buffer): void {
    if (isUtf8(b)) {
      this.ascii(`,"${key}":`);
      this.jsonUtf8(b);
    } else this.ascii(`,"${key}64":"${b.toString('base64')}"`);
  }
}

const K = (t: string): Buffer => Buffer.from(t, 'latin1');
const PIECES = {
  path: K('{"path":'),
  type: Object.fromEntries(['dir', 'file', 'symlink', 'hardlink', 'fifo', 'socket', 'chardev', 'blockdev'].map((t) => [t, K(`,"type":"${t}","mode":`)])) as Record<string, Buffer>,
  mtime: K(',"mtime":'),
  mtimeNs: K(',"mtimeNs":'),
  uid: K(',"uid":'),
  gid: K(',"gid":'),
  size: K(',"size":'),
  chunks: K(',"chunks":'),
  inode: K(',"inode":"'),
  ctime: K(',"ctime":"'),
  close: K('}\n'),
};

/**
 * An entry's version 2 line (spec §9.2), appended to `out` as bytes: exactly what
 * JSON.stringify writes for the entry as an object with its members in this order (a
 * test checks it against that form), without making the line as a string first.
 */
export function encodeEntryInto(out: LineBuffer, e: TreeEntry): void {
  encodeCommonInto(out, e.rawPath, e.type, e.mode, e.mtimeNs, e.owner);
  if (e.xattrs && e.xattrs.length > 0) out.text(`,"xattrs":${JSON.stringify(e.xattrs.map((x) => [x.name, x.value.toString('base64')]))}`);
  switch (e.type) {
    case 'file': {
      out.raw(PIECES.size);
      out.int(e.size);
      out.raw(PIECES.chunks);
      if (!out.hexList(e.chunks)) out.text(JSON.stringify(e.chunks));
      encodeFileTailInto(out, e.sparse === true, e.inode, e.ctime);
      return;
    }
    case 'symlink':
      out.bytesMember('target', e.target);
      break;
    case 'hardlink':
      out.bytesMember('link', e.link);
      break;
    case 'chardev':
    case 'blockdev':
      if (e.major !== undefined) out.ascii(`,"major":${JSON.stringify(e.major)}`);
      if (e.minor !== undefined) out.ascii(`,"minor":${JSON.stringify(e.minor)}`);
      break;
    default:
      break;
  }
  out.raw(PIECES.close);
}

/** The members every entry has: path, type, mode, mtime, mtimeNs and the owner's. */
function encodeCommonInto(out: LineBuffer, rawPath: Buffer, type: TreeEntry['type'], mode: number, mtimeNs: bigint, owner: Owner | undefined): void {
  if (isUtf8(rawPath)) {
    out.raw(PIECES.path);
    out.jsonUtf8(rawPath);
  } else out.ascii(`{"path64":"${rawPath.toString('base64')}"`);
  const typed = PIECES.type[type];
  if (typed) out.raw(typed);
  else out.ascii(`,"type":${JSON.stringify(type)},"mode":`);
  out.int(mode);
  // Whole seconds (floored) and the nanoseconds past them.
  let sec = Number(mtimeNs / NS);
  let frac = Number(mtimeNs % NS);
  if (frac < 0) {
    sec -= 1;
    frac += 1e9;
  }
  out.raw(PIECES.mtime);
  out.int(sec);
  out.raw(PIECES.mtimeNs);
  out.int(frac);
  if (owner) out.raw(ownerPiece(owner.uid, owner.gid, owner.user, owner.group));
}

/** The owner's members as bytes; the last one made is kept (a tree's files mostly share one owner). */
let lastOwner: { uid: number; gid: number; user: string | undefined; group: string | undefined; bytes: Buffer } | undefined;
function ownerPiece(uid: number, gid: number, user: string | undefined, group: string | undefined): Buffer {
  const o = lastOwner;
  if (o && o.uid === uid && o.gid === gid && o.user === user && o.group === group) return o.bytes;
  let t = `,"uid":${JSON.stringify(uid)},"gid":${JSON.stringify(gid)}`;
  if (user !== undefined) t += `,"user":${JSON.stringify(user)}`;
  if (group !== undefined) t += `,"group":${JSON.stringify(group)}`;
  const bytes = Buffer.from(t, 'utf8');
  lastOwner = { uid, gid, user, group, bytes };
  return bytes;
}

/** A file entry's members after its chunk list, and the line's end. */
function encodeFileTailInto(out: LineBuffer, sparse: boolean, inode: string | undefined, ctime: string | undefined): void {
  if (sparse) out.ascii(',"sparse":true');
  if (inode !== undefined && !out.digitsMember(PIECES.inode, inode)) out.text(`,"inode":${JSON.stringify(inode)}`);
  if (ctime !== undefined && !out.digitsMember(PIECES.ctime, ctime)) out.text(`,"ctime":${JSON.stringify(ctime)}`);
  out.raw(PIECES.close);
}

/**
 * What an unchanged file's line must be, around its chunk list: `head` gets the bytes
 * up to the list (path to size, no xattrs), `tail` those after it, line end included.
 * The same code encodeEntryInto runs, so a line that is `head`, a list and `tail` is
 * exactly the line of that file with those chunks.
 */
export function encodeFileLineParts(
  head: LineBuffer,
  tail: LineBuffer,
  rawPath: Buffer,
  mode: number,
  mtimeNs: bigint,
  owner: { uid: number; gid: number; user: string | undefined; group: string | undefined },
  size: number,
  sparse: boolean,
  inode: string,
  ctime: string,
): void {
  head.used = 0;
  encodeCommonInto(head, rawPath, 'file', mode, mtimeNs, undefined);
  head.raw(ownerPiece(owner.uid, owner.gid, owner.user, owner.group));
  head.raw(PIECES.size);
  head.int(size);
  head.raw(PIECES.chunks);
  tail.used = 0;
  encodeFileTailInto(tail, sparse, inode, ctime);
}

const hexValue = (c: number): number => (c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1);

/**
 * Whether `line` (one listing line, its '\n' included) is `head`, then a chunk list in
 * the form encodeEntryInto writes (`[`, `"64 lowercase hex"` joined by `,`, `]`), then
 * `tail`, with `has` true for every chunk ID (given in `id`, 32 bytes, reused). Nothing
 * is allocated: this is how an unchanged file's line from the parent is recognised
 * without decoding it.
 */
export function matchFileLine(line: Buffer, head: LineBuffer, tail: LineBuffer, id: Buffer, has: (id: Buffer) => boolean): boolean {
  const h = head.used;
  const t = tail.used;
  if (line.length < h + 2 + t || line.compare(head.buf, 0, h, 0, h) !== 0) return false;
  const end = line.length - t;
  if (line.compare(tail.buf, 0, t, end, line.length) !== 0) return false;
  let i = h;
  if (line[i++] !== 0x5b) return false;
  if (line[i] === 0x5d) return i + 1 === end;
  for (;;) {
    if (i + 66 > end || line[i] !== 0x22 || line[i + 65] !== 0x22) return false;
    for (let k = 0; k < 32; k++) {
      const hi = hexValue(line[i + 1 + 2 * k]!);
      const lo = hexValue(line[i + 2 + 2 * k]!);
      if (hi < 0 || lo < 0) return false;
      id[k] = (hi << 4) | lo;
    }
    if (!has(id)) return false;
    i += 66;
    const c = line[i++];
    if (c === 0x5d) return i === end;
    if (c !== 0x2c) return false;
  }
}

const HEX64 = /^[0-9a-f]{64}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** A relative path: non-empty, no NUL, no empty, `.` or `..` segment (spec §9). */
export function validPathBytes(p: Buffer, max = MAX_PATH_BYTES): boolean {
  const n = p.length;
  if (n === 0 || n > max) return false;
  // One pass over the bytes (no string, no array of segments): `start` is where the
  // current segment began.
  let start = 0;
  for (let i = 0; i <= n; i++) {
    const c = i < n ? p[i]! : 0x2f;
    if (c === 0) return false;
    if (c !== 0x2f) continue;
    const len = i - start;
    if (len === 0 || (p[start] === 0x2e && (len === 1 || (len === 2 && p[start + 1] === 0x2e)))) return false;
    start = i + 1;
  }
  return true;
}

/** A list of chunk IDs: every one a string of 64 lowercase hex digits (HEX64), checked without a regex. */
function hexIdList(v: unknown): v is string[] {
  if (!Array.isArray(v)) return false;
  for (let i = 0; i < v.length; i++) {
    const c: unknown = v[i];
    if (typeof c !== 'string' || c.length !== 64) return false;
    for (let k = 0; k < 64; k++) {
      const x = c.charCodeAt(k);
      if (!((x >= 0x30 && x <= 0x39) || (x >= 0x61 && x <= 0x66))) return false;
    }
  }
  return true;
}

function parseLine(line: string, where: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new CofferError('corrupt', `${where}: tree entry is not JSON`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new CofferError('corrupt', `${where}: invalid tree entry (not an object)`);
  return v as Record<string, unknown>;
}

const isUint = (x: unknown, max: number): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= max;

/** Decodes one line of a version 1 listing (snapshot version 1, spec §9.1). */
export function decodeEntryV1(line: string, where: string): TreeEntry {
  const e = parseLine(line, where);
  const bad = (why: string) => new CofferError('corrupt', `${where}: invalid tree entry (${why})`);
  // Version 1 limited paths to 4096 UTF-16 code units and stored them as strings.
  if (typeof e.path !== 'string' || e.path.length > MAX_PATH_BYTES) throw bad('bad path');
  const rawPath = Buffer.from(e.path, 'utf8');
  if (!validPathBytes(rawPath, Infinity)) throw bad('bad path');
  if (!isUint(e.mode, 0o7777)) throw bad('bad mode');
  if (typeof e.mtime !== 'number' || !Number.isFinite(e.mtime)) throw bad('bad mtime');
  // Fractional milliseconds to nanoseconds (spec §9.1): the whole milliseconds exactly,
  // the fraction (exact in a double) rounded to the nearest nanosecond.
  const whole = Math.floor(e.mtime);
  const mtimeNs = BigInt(whole) * 1_000_000n + BigInt(Math.round((e.mtime - whole) * 1e6));
  const common = { path: e.path, rawPath, mode: e.mode, mtimeNs };
  switch (e.type) {
    case 'dir':
      return entryOf<DirEntry>(common, { type: 'dir' });
    case 'symlink':
      if (typeof e.target !== 'string' || e.target.length === 0 || e.target.includes('\0')) throw bad('bad symlink target');
      return entryOf<SymlinkEntry>(common, { type: 'symlink', target: Buffer.from(e.target, 'utf8') });
    case 'file': {
      if (typeof e.size !== 'number' || !Number.isSafeInteger(e.size) || e.size < 0) throw bad('bad size');
      if (!Array.isArray(e.chunks) || !e.chunks.every((c) => typeof c === 'string' && HEX64.test(c))) throw bad('bad chunk list');
      return entryOf<FileEntry>(common, { type: 'file', size: e.size, chunks: e.chunks as string[], inode: '', ctime: '' });
    }
    default:
      throw bad('unknown type');
  }
}

type Rest<T extends TreeEntry> = Omit<T, keyof Common>;

/**
 * An entry: `common`'s fields, then `rest`'s, added in the same order every time. Not
 * `{ ...common, ...rest }`: V8 gives every object made by that spread its own hidden
 * class (measured: 50,100 maps and descriptor arrays, ~17 MiB, in the heap of a 50,000-
 * file restore), and code reading entries then sees them all as different shapes.
 */
function entryOf<T extends TreeEntry>(common: Common, rest: Rest<T>): T {
  const o: Common = { path: common.path, rawPath: common.rawPath, mode: common.mode, mtimeNs: common.mtimeNs };
  if (common.owner) o.owner = common.owner;
  if (common.xattrs) o.xattrs = common.xattrs;
  const r = rest as unknown as Record<string, unknown>;
  for (const k in r) (o as unknown as Record<string, unknown>)[k] = r[k];
  return o as T;
}

/** A version 2 entry's refusal. */
function badEntry(where: string, why: string): CofferError {
  return new CofferError('corrupt', `${where}: invalid tree entry (${why})`);
}

const BYTES_KEY64 = { path: 'path64', target: 'target64', link: 'link64' } as const;

/** A version 2 entry's bytes member: `key` as text or `key64` as base64 (spec §9.2). */
function entryBytes(e: Record<string, unknown>, key: 'path' | 'target' | 'link', required: boolean, where: string): Buffer | undefined {
  const s = e[key];
  const b = e[BYTES_KEY64[key]];
  if (s !== undefined && b !== undefined) throw badEntry(where, `both ${key} and ${key}64`);
  if (typeof s === 'string') return Buffer.from(s, 'utf8');
  if (typeof b === 'string') {
    if (!BASE64.test(b)) throw badEntry(where, `${key}64 is not base64`);
    const out = Buffer.from(b, 'base64');
    // Canonical: bytes that are UTF-8 are written as text, never as base64.
    if (isUtf8(out)) throw badEntry(where, `${key}64 holds UTF-8 (must be ${key})`);
    return out;
  }
  if (s !== undefined || b !== undefined || required) throw badEntry(where, `bad ${key}`);
  return undefined;
}

/** Decodes one line of a version 2 listing (snapshot version 2, spec §9.2). */
export function decodeEntry(line: string, where: string): TreeEntry {
  const e = parseLine(line, where);
  const rawPath = entryBytes(e, 'path', true, where)!;
  if (!validPathBytes(rawPath)) throw badEntry(where, 'bad path');
  if (!isUint(e.mode, 0o7777)) throw badEntry(where, 'bad mode');
  if (typeof e.mtime !== 'number' || !Number.isSafeInteger(e.mtime)) throw badEntry(where, 'bad mtime');
  if (!isUint(e.mtimeNs, 999_999_999)) throw badEntry(where, 'bad mtimeNs');
  // `path` as text is the string the line held when that is well-formed (its UTF-8 bytes
  // decode back to it), without decoding rawPath again.
  const text = e.path;
  const path = typeof text === 'string' && (text as unknown as { isWellFormed(): boolean }).isWellFormed() ? text : rawPath.toString('utf8');
  const common: Common = { path, rawPath, mode: e.mode, mtimeNs: BigInt(e.mtime) * NS + BigInt(e.mtimeNs) };
  if (e.uid !== undefined || e.gid !== undefined) {
    if (!isUint(e.uid, 0xffffffff) || !isUint(e.gid, 0xffffffff)) throw badEntry(where, 'bad owner');
    if ((e.user !== undefined && typeof e.user !== 'string') || (e.group !== undefined && typeof e.group !== 'string')) throw badEntry(where, 'bad owner name');
    const owner: Owner = { uid: e.uid, gid: e.gid };
    if (e.user !== undefined) owner.user = e.user as string;
    if (e.group !== undefined) owner.group = e.group as string;
    common.owner = owner;
  }
  if (e.xattrs !== undefined) {
    if (!Array.isArray(e.xattrs)) throw badEntry(where, 'bad xattrs');
    common.xattrs = e.xattrs.map((x: unknown) => {
      if (!Array.isArray(x) || x.length !== 2 || typeof x[0] !== 'string' || x[0] === '' || x[0].includes('\0') || typeof x[1] !== 'string' || !BASE64.test(x[1])) {
        throw badEntry(where, 'bad xattr');
      }
      return { name: x[0], value: Buffer.from(x[1], 'base64') };
    });
    // Sorted by the bytes of their names, each name once (spec §9.2).
    for (let i = 1; i < common.xattrs.length; i++) {
      if (Buffer.compare(Buffer.from(common.xattrs[i - 1]!.name), Buffer.from(common.xattrs[i]!.name)) >= 0) throw badEntry(where, 'xattrs not sorted by name, or a name twice');
    }
  }
  switch (e.type) {
    case 'dir':
    case 'fifo':
    case 'socket':
      return entryOf<DirEntry | SpecialEntry>(common, { type: e.type } as Rest<DirEntry | SpecialEntry>);
    case 'chardev':
    case 'blockdev':
      if (!isUint(e.major, 0xffffffff) || !isUint(e.minor, 0xffffffff)) throw badEntry(where, 'bad device numbers');
      return entryOf<SpecialEntry>(common, { type: e.type, major: e.major as number, minor: e.minor as number } as Rest<SpecialEntry>);
    case 'symlink': {
      const target = entryBytes(e, 'target', true, where)!;
      if (target.length === 0 || target.includes(0)) throw badEntry(where, 'bad symlink target');
      return entryOf<SymlinkEntry>(common, { type: 'symlink', target });
    }
    case 'hardlink': {
      const link = entryBytes(e, 'link', true, where)!;
      if (!validPathBytes(link)) throw badEntry(where, 'bad hard link');
      return entryOf<HardlinkEntry>(common, { type: 'hardlink', link });
    }
    case 'file': {
      if (typeof e.size !== 'number' || !Number.isSafeInteger(e.size) || e.size < 0) throw badEntry(where, 'bad size');
      if (!hexIdList(e.chunks)) throw badEntry(where, 'bad chunk list');
      if (e.sparse !== undefined && typeof e.sparse !== 'boolean') throw badEntry(where, 'bad sparse flag');
      // entryOf's fields in its order, made at once (no object for the rest to copy).
      const f = { path: common.path, rawPath: common.rawPath, mode: common.mode, mtimeNs: common.mtimeNs } as FileEntry;
      if (common.owner) f.owner = common.owner;
      if (common.xattrs) f.xattrs = common.xattrs;
      f.type = 'file';
      f.size = e.size;
      f.chunks = e.chunks;
      f.inode = typeof e.inode === 'string' ? e.inode : '';
      f.ctime = typeof e.ctime === 'string' ? e.ctime : '';
      if (e.sparse === true) f.sparse = true;
      return f;
    }
    default:
      throw badEntry(where, 'unknown type');
  }
}

/** A 52-bit hash of a path's bytes (two 32-bit FNV-1a lanes), exact as a JS number. */
function pathHash(b: Uint8Array): number {
  let h1 = 0x811c9dc5;
  let h2 = 0x050c5d1f;
  for (let i = 0; i < b.length; i++) {
    h1 = Math.imul(h1 ^ b[i]!, 0x01000193);
    h2 = Math.imul(h2 ^ b[i]!, 0x01000193) ^ (h2 >>> 15);
  }
  return (h1 >>> 12) * 0x100000000 + (h2 >>> 0);
}

/**
 * Checks the structure rules of a whole listing, entry by entry (spec §9.3): every
 * non-root entry's parent is an earlier `dir` entry; no path appears twice; siblings
 * appear in strictly increasing byte order of their names; a hard link names an earlier
 * `file` entry.
 */
export class TreeValidator {
  readonly #dirs = new Set<string>();
  /**
   * File entries seen, by a 52-bit hash of the path (pathHash): a listing is read as a
   * restore goes (issue 13), and a set of every file's path would grow with the number
   * of files (~100 bytes each). A hard link naming no earlier file passes only when its
   * path's hash equals an earlier file's (about n / 2^52 for n files); restoring it then
   * fails to find its target, which is a warning, not a wrong file.
   */
  readonly #files = new Set<number>();
  readonly #seen = new Set<string>();
  /** Last child name seen under each directory (by path), as latin1 text: a copy, which keeps no entry's buffer alive. */
  readonly #lastChild = new Map<string, string>();
  readonly #strictOrder: boolean;
  /** The parent (as #lastChild's key) of the last entry checked, and its last child's name: #lastChild's entry for it while it is current. */
  #curParent: string | undefined;
  #curPrev: string | undefined;

  /** `strictOrder` false for version 1 listings, which sorted by UTF-16 code units. */
  constructor(strictOrder = true) {
    this.#strictOrder = strictOrder;
  }

  check(e: TreeEntry, where: string): void {
    const key = e.rawPath.toString('latin1');
    // In version 2 strict sibling order already rules out duplicates.
    if (!this.#strictOrder) {
      if (this.#seen.has(key)) throw treeError(where, e, 'path appears twice');
      this.#seen.add(key);
    }
    const slash = e.rawPath.lastIndexOf(0x2f);
    const parent = slash < 0 ? '' : key.slice(0, slash);
    // Latin1 text compares as its bytes do (one code unit per byte).
    const name = slash < 0 ? key : key.slice(slash + 1);
    // Siblings mostly come one after another: the current parent's last child is held
    // here, and goes to #lastChild only when another parent's entry comes (a parent
    // found a dir entry once stays one).
    let prev: string | undefined;
    if (this.#curParent !== undefined && parent === this.#curParent) prev = this.#curPrev;
    else {
      if (slash >= 0 && !this.#dirs.has(parent)) throw treeError(where, e, 'its parent is not an earlier dir entry');
      if (this.#curParent !== undefined && this.#curPrev !== undefined) this.#lastChild.set(this.#curParent, this.#curPrev);
      prev = this.#lastChild.get(parent);
      this.#curParent = parent;
      this.#curPrev = prev;
    }
    if (this.#strictOrder && prev !== undefined && prev >= name) throw treeError(where, e, prev === name ? 'path appears twice' : 'siblings out of order');
    this.#curPrev = name;
    if (e.type === 'dir') this.#dirs.add(key);
    if (e.type === 'file') this.#files.add(pathHash(e.rawPath));
    if (e.type === 'hardlink' && !this.#files.has(pathHash(e.link))) throw treeError(where, e, 'hard link to no earlier file entry');
  }
}

/** A listing's refusal for a structure rule (TreeValidator). */
function treeError(where: string, e: TreeEntry, why: string): CofferError {
  return new CofferError('corrupt', `${where}: invalid tree (${e.path}: ${why})`);
}

/**
 * Decodes a whole listing (the concatenation of a snapshot's tree blobs) and checks
 * its structure: what `Repository.tree` does blob by blob, for whole byte strings.
 */
export function decodeListing(bytes: Uint8Array, version: 1 | 2, where = 'tree listing'): TreeEntry[] {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: version === 2 }).decode(bytes);
  } catch {
    throw new CofferError('corrupt', `${where}: tree listing is not valid UTF-8`);
  }
  if (text !== '' && !text.endsWith('\n')) throw new CofferError('corrupt', `${where}: tree listing ends in the middle of an entry`);
  const rules = new TreeValidator(version === 2);
  const decode = version === 2 ? decodeEntry : decodeEntryV1;
  return text
    .split('\n')
    .slice(0, -1)
    .map((line) => {
      const e = decode(line, where);
      rules.check(e, where);
      return e;
    });
}

/**
 * A second pass over a listing (`list`) for the file entries at `paths` (the first
 * sighting of each): how a hard link to a file left out of a restore or dump becomes a
 * copy of that file without the first pass remembering every file (issue 13).
 * Keys: the paths' bytes as latin1.
 */
export async function filesAt(list: (each: (e: TreeEntry) => void) => Promise<void>, paths: Iterable<Buffer>): Promise<Map<string, FileEntry>> {
  const wanted = new Set<string>();
  for (const p of paths) wanted.add(p.toString('latin1'));
  const found = new Map<string, FileEntry>();
  await list((e) => {
    if (e.type !== 'file') return;
    const k = e.rawPath.toString('latin1');
    if (wanted.has(k) && !found.has(k)) found.set(k, e);
  });
  return found;
}
