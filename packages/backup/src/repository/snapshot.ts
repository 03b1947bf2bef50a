/**
 * Snapshot manifests (spec §10): written last, so a snapshot exists only once every
 * pack and index it needs is durable. Plaintext is UTF-8 JSON inside a sealed Snapshot
 * object whose ID is random. Version 2 (spec §10) may be followed by 0x20 bytes that pad
 * its length, and its tree listing uses the version 2 entries (§9.2).
 */
import { CofferError } from '../errors.js';
import { PadMode, paddedLength } from './padding.js';

export interface SnapshotStats {
  files: number;
  dirs: number;
  bytes: number;
  /** Bytes of new blobs (after compression) this snapshot added to the repository. */
  addedBytes: number;
  newChunks: number;
  /** Items that could not be read and are missing from this snapshot (absent: none). */
  warnings?: number;
}

export interface Snapshot {
  /** 1: tree listing version 1 (§9.1); 2: version 2 (§9.2). */
  version: 1 | 2;
  time: string; // ISO 8601
  hostname: string;
  username: string;
  /** The absolute source paths given to `coffer backup`. */
  paths: string[];
  tags: string[];
  /** Tree blob IDs (hex), in order: concatenated they are the tree listing. */
  tree: string[];
  stats: SnapshotStats;
  /**
   * Set by `coffer copy`: the hex ID of the snapshot this one is a copy of (the first
   * one's, when that was itself a copy), so a second copy run skips it (spec §10).
   */
  original?: string;
}

/** JSON text; padded with 0x20 bytes to the padded length (JSON allows trailing white space). */
export function encodeSnapshot(s: Snapshot, padding: PadMode = PadMode.Off): Buffer {
  return padJson(Buffer.from(JSON.stringify(s), 'utf8'), padding);
}

export function padJson(json: Buffer, padding: PadMode): Buffer {
  const n = paddedLength(json.length, padding);
  return n === json.length ? json : Buffer.concat([json, Buffer.alloc(n - json.length, 0x20)]);
}

export function decodeSnapshot(bytes: Uint8Array, where: string): Snapshot {
  const bad = (why: string) => new CofferError('corrupt', `${where} is not a valid snapshot (${why})`);
  let v: Record<string, unknown>;
  try {
    // Strict UTF-8 (spec §10): invalid sequences are corrupt, not replaced.
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw bad('not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad('not an object');
  // Only a numeric version other than 1 is "another version"; anything else is damage.
  if (typeof v.version !== 'number') throw bad('no version');
  if (v.version !== 1 && v.version !== 2) throw new CofferError('unsupported-version', `${where} has snapshot version ${String(v.version)}`);
  const strings = (x: unknown) => Array.isArray(x) && x.every((s) => typeof s === 'string');
  if (typeof v.time !== 'string' || Number.isNaN(Date.parse(v.time))) throw bad('bad time');
  if (typeof v.hostname !== 'string' || typeof v.username !== 'string') throw bad('bad host');
  if (!strings(v.paths) || !strings(v.tags) || !strings(v.tree)) throw bad('bad lists');
  if (!(v.tree as string[]).every((t) => /^[0-9a-f]{64}$/.test(t))) throw bad('bad tree IDs');
  if (v.original !== undefined && (typeof v.original !== 'string' || !/^[0-9a-f]{64}$/.test(v.original))) throw bad('bad original');
  const st = v.stats as Record<string, unknown> | undefined;
  if (typeof st !== 'object' || st === null) throw bad('no stats');
  for (const k of ['files', 'dirs', 'bytes', 'addedBytes', 'newChunks']) {
    if (typeof st[k] !== 'number') throw bad(`bad stats.${k}`);
  }
  return v as unknown as Snapshot;
}

/**
 * Which snapshots a command considers (`--tag`, `--host`, `--path`), with restic's
 * semantics: `tags` is a list of tag sets, and a snapshot matches when it has every tag
 * of at least one set (`--tag a,b` is one set: both; `--tag a --tag b` two: either);
 * `hosts` matches when the snapshot's host is any of them; `paths` when every given
 * path is one of the snapshot's source paths. An empty or absent list matches all.
 */
export interface SnapshotFilter {
  tags?: string[][];
  hosts?: string[];
  paths?: string[];
}

/** `--tag a,b` → ['a','b']: the tags of one set; empty parts dropped ('' matches a snapshot without tags). */
export function parseTagList(s: string): string[] {
  return s
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');
}

export function isEmptyFilter(f: SnapshotFilter): boolean {
  return !f.tags?.length && !f.hosts?.length && !f.paths?.length;
}

/** Removes trailing slashes (not the root's), so `/home/me/` names `/home/me`. */
function normalizeSourcePath(p: string): string {
  const t = p.replace(/\/+$/, '');
  return t === '' && p.startsWith('/') ? '/' : t;
}

export function matchesFilter(s: Snapshot, f: SnapshotFilter): boolean {
  if (f.hosts?.length && !f.hosts.includes(s.hostname)) return false;
  if (f.tags?.length) {
    // An empty set (`--tag ''`) matches snapshots without any tag, as in restic.
    const ok = f.tags.some((set) => (set.length === 0 ? s.tags.length === 0 : set.every((t) => s.tags.includes(t))));
    if (!ok) return false;
  }
  if (f.paths?.length) {
    const have = new Set(s.paths.map(normalizeSourcePath));
    if (!f.paths.every((p) => have.has(normalizeSourcePath(p)))) return false;
  }
  return true;
}
