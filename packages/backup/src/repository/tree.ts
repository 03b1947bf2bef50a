/**
 * Tree listings (spec §9): a snapshot's files as a stream of JSON lines, one entry per
 * file, directory or symlink, parents before children, siblings sorted by name. The
 * stream is chunked and stored as Tree blobs like file contents, so an unchanged part
 * of a large listing deduplicates between snapshots.
 */
import { CofferError } from '../errors.js';

interface Common {
  /** Relative path with '/' separators; the first segment is the backed-up root's name. */
  path: string;
  mode: number; // permission bits (mode & 0o7777)
  mtime: number; // milliseconds since the epoch, fractional
}
export interface DirEntry extends Common {
  type: 'dir';
}
export interface FileEntry extends Common {
  type: 'file';
  size: number;
  chunks: string[]; // hex blob IDs, in order
  /** Change-detection hints for the next backup; never restored. */
  inode: number;
  ctime: number;
}
export interface SymlinkEntry extends Common {
  type: 'symlink';
  target: string;
}
export type TreeEntry = DirEntry | FileEntry | SymlinkEntry;

export function encodeEntry(e: TreeEntry): string {
  return JSON.stringify(e) + '\n';
}

const HEX64 = /^[0-9a-f]{64}$/;

function validPath(p: unknown): p is string {
  if (typeof p !== 'string' || p.length === 0 || p.length > 4096 || p.includes('\0')) return false;
  return p.split('/').every((s) => s !== '' && s !== '.' && s !== '..');
}

/** Validates one decoded line: a tree from a repository is input like any other. */
export function decodeEntry(line: string, where: string): TreeEntry {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new CofferError('corrupt', `${where}: tree entry is not JSON`);
  }
  const e = v as Record<string, unknown>;
  const bad = (why: string) => new CofferError('corrupt', `${where}: invalid tree entry (${why})`);
  if (typeof e !== 'object' || e === null) throw bad('not an object');
  if (!validPath(e.path)) throw bad('bad path');
  if (typeof e.mode !== 'number' || !Number.isInteger(e.mode) || e.mode < 0 || e.mode > 0o7777) throw bad('bad mode');
  if (typeof e.mtime !== 'number' || !Number.isFinite(e.mtime)) throw bad('bad mtime');
  switch (e.type) {
    case 'dir':
      return { path: e.path, type: 'dir', mode: e.mode, mtime: e.mtime };
    case 'symlink':
      if (typeof e.target !== 'string' || e.target.length === 0 || e.target.includes('\0')) throw bad('bad symlink target');
      return { path: e.path, type: 'symlink', mode: e.mode, mtime: e.mtime, target: e.target };
    case 'file': {
      if (typeof e.size !== 'number' || !Number.isSafeInteger(e.size) || e.size < 0) throw bad('bad size');
      if (!Array.isArray(e.chunks) || !e.chunks.every((c) => typeof c === 'string' && HEX64.test(c))) throw bad('bad chunk list');
      return {
        path: e.path,
        type: 'file',
        mode: e.mode,
        mtime: e.mtime,
        size: e.size,
        chunks: e.chunks as string[],
        inode: typeof e.inode === 'number' ? e.inode : 0,
        ctime: typeof e.ctime === 'number' ? e.ctime : 0,
      };
    }
    default:
      throw bad('unknown type');
  }
}
