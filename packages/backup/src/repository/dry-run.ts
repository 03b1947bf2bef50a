/**
 * `coffer backup --dry-run`: walks the sources with the same selection as a backup
 * (filter.ts hooks, --one-file-system) and says what would be stored: the files,
 * directories and bytes, and which files would be read again because they are new or
 * changed since the parent snapshot (the cheap estimate of new data: their chunks are
 * not computed). Nothing is written to the repository and no lock is taken: it only
 * reads the snapshot list and the parent's listing, as any lock-free reader (spec §11).
 */
import { promises as fs } from 'node:fs';
import type { EntryStat } from './scan-ahead.js';
import { hostname } from 'node:os';
import { basename, resolve } from 'node:path';
import { CofferError } from '../errors.js';
import type { Repository, SnapshotRecord } from './repository.js';
import type { FileEntry } from './tree.js';

export interface DryRunOptions {
  paths: string[];
  exclude?: (abs: Buffer, st: EntryStat) => Promise<boolean> | boolean;
  oneFileSystem?: boolean;
  /** As BackupOptions.parent. */
  parent?: 'auto' | 'none' | SnapshotRecord;
  /** As BackupOptions.host. */
  host?: string;
  /** As BackupOptions.ignoreInode / ignoreCtime. */
  ignoreInode?: boolean;
  ignoreCtime?: boolean;
  /** Every entry that would be stored, by its path in the listing (for `--dry-run -v`-style output). */
  onEntry?: (rel: Buffer, kind: 'new' | 'changed' | 'unchanged' | 'dir' | 'other', size: number) => void;
}

export interface DryRunResult {
  files: number;
  dirs: number;
  /** Other entries: symlinks, hard links, special files. */
  others: number;
  bytes: number;
  /** Files new or changed since the parent snapshot: they would be read (their new data is at most `readBytes`). */
  readFiles: number;
  readBytes: number;
  /** The parent snapshot compared against (hex), if any. */
  parent?: string;
  /** What could not be listed or stat'ed. */
  warnings: Array<{ path: string; message: string }>;
}

export async function backupDryRun(repo: Repository, opts: DryRunOptions): Promise<DryRunResult> {
  if (opts.paths.length === 0) throw new CofferError('invalid-argument', 'nothing to back up: give at least one path');
  const roots: Array<{ abs: string; name: string }> = [];
  for (const p of opts.paths) {
    const abs = resolve(p);
    await fs.lstat(abs).catch((e: NodeJS.ErrnoException) => {
      throw new CofferError('not-found', e.code === 'ENOENT' ? `${p}: no such file or directory` : `${p}: ${e.message}`);
    });
    const name = basename(abs) || 'root';
    if (roots.some((r) => r.name === name)) throw new CofferError('invalid-argument', `two of the paths are named '${name}': back them up in separate snapshots`);
    roots.push({ abs, name });
  }
  const r: DryRunResult = { files: 0, dirs: 0, others: 0, bytes: 0, readFiles: 0, readBytes: 0, warnings: [] };
  const parentFiles = new Map<string, FileEntry>();
  if (opts.parent !== 'none') {
    const key = roots.map((x) => x.abs).sort().join('\0');
    const host = opts.host ?? hostname();
    const parent =
      opts.parent === undefined || opts.parent === 'auto'
        ? [...(await repo.readableSnapshots()).good].reverse().find((s) => s.snapshot.hostname === host && [...s.snapshot.paths].sort().join('\0') === key)
        : opts.parent;
    if (parent) {
      r.parent = parent.id.toString('hex');
      try {
        for await (const e of repo.tree(parent.snapshot)) if (e.type === 'file') parentFiles.set(e.rawPath.toString('latin1'), e);
      } catch (e) {
        if (!(e instanceof CofferError) || e.code === 'storage') throw e;
        parentFiles.clear();
        r.warnings.push({ path: repo.location, message: `the previous snapshot's file list can't be read (${e.message}); every file counts as new` });
      }
    }
  }
  const devs = new Set<bigint>();
  for (const root of roots) devs.add((await fs.lstat(root.abs, { bigint: true })).dev);
  const warn = (p: Buffer, message: string) => r.warnings.push({ path: p.toString('utf8'), message });

  const visit = async (abs: Buffer, rel: Buffer, st: EntryStat): Promise<void> => {
    if (opts.exclude && (await opts.exclude(abs, st))) return;
    if (st.isDirectory()) {
      r.dirs++;
      opts.onEntry?.(rel, 'dir', 0);
      if (opts.oneFileSystem && !devs.has(st.dev)) return;
      let names: Buffer[];
      try {
        names = await fs.readdir(abs, { encoding: 'buffer' });
      } catch (e) {
        warn(abs, `cannot list directory: ${(e as Error).message}`);
        return;
      }
      names.sort(Buffer.compare);
      for (const n of names) {
        const c = Buffer.concat([abs, Buffer.from('/'), n]);
        const cst = await fs.lstat(c, { bigint: true }).catch((e: Error) => {
          warn(c, `cannot stat: ${e.message}`);
          return null;
        });
        if (cst) await visit(c, Buffer.concat([rel, Buffer.from('/'), n]), cst);
      }
    } else if (st.isFile()) {
      r.files++;
      const size = Number(st.size);
      r.bytes += size;
      const prev = parentFiles.get(rel.toString('latin1'));
      const same = prev && prev.size === size && prev.mtimeNs === st.mtimeNs && (opts.ignoreInode === true || prev.inode === String(st.ino)) && (opts.ignoreCtime === true || prev.ctime === String(st.ctimeNs));
      if (!same) {
        r.readFiles++;
        r.readBytes += size;
      }
      opts.onEntry?.(rel, same ? 'unchanged' : prev ? 'changed' : 'new', size);
    } else {
      r.others++;
      opts.onEntry?.(rel, 'other', 0);
    }
  };
  for (const root of roots) {
    const abs = Buffer.from(root.abs, 'utf8');
    await visit(abs, Buffer.from(root.name, 'utf8'), await fs.lstat(abs, { bigint: true }));
  }
  return r;
}
