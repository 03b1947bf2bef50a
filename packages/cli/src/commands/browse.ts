/**
 * Looking into snapshots without restoring them: `coffer ls`, `find`, `diff`, `dump`,
 * `stats`, and what they share with `snapshots`, `forget` and `restore`: choosing
 * snapshots (`latest`, ID prefixes, `--tag/--host/--path`) and parts of them
 * (`SNAPSHOT:PATH`). Paths are shown absolute, as they were on the backed-up machine;
 * bytes that are not UTF-8 are shown escaped (`\xNN`), and `--json` adds the exact bytes
 * as base64 (`path64`).
 */
import {
  diffSnapshots,
  dumpSnapshot,
  escapePath,
  findInSnapshots,
  findSnapshotFiltered,
  listSnapshot,
  snapshotStats,
  splitSnapshotRef,
  unescapePath,
  STATS_MODES,
  type StatsMode,
} from '@coffer/backup/browse';
import { hex } from '@coffer/backup/blob';
import type { Repository, SnapshotRecord } from '@coffer/backup/repository';
import { isEmptyFilter, matchesFilter } from '@coffer/backup/snapshot';
import type { TreeEntry } from '@coffer/backup';
import { parseTime, snapshotFilter, type FilterFlags } from './flags.js';
import { checkArgPattern, openRepo, type GlobalFlags } from '../context.js';
import { checkSeenSnapshots } from '../seen.js';
import { ProgressBar, UsageError, fmtBytes, type Io } from '../tui.js';


/**
 * The snapshot an argument names (`latest`, an ID prefix; with `:PATH` a part of it), as
 * the filters allow. `latest` is checked against what this device saw (rollback).
 */
export async function resolveSnapshotArg(flags: GlobalFlags & FilterFlags, io: Io, repo: Repository, arg: string): Promise<{ rec: SnapshotRecord; path?: Buffer }> {
  const { ref, path } = splitSnapshotRef(arg);
  if (ref === 'latest') await checkSeenSnapshots(flags, io, repo, await repo.snapshots());
  const rec = await findSnapshotFiltered(repo, ref, snapshotFilter(flags));
  return { rec, ...(path !== undefined ? { path: unescapePath(path) } : {}) };
}

/** The snapshots a command works on: the IDs given, or every one the filters let through. */
async function chooseSnapshots(flags: GlobalFlags & FilterFlags, io: Io, repo: Repository, refs: string[]): Promise<SnapshotRecord[]> {
  if (refs.length > 0) {
    const out: SnapshotRecord[] = [];
    for (const r of refs) out.push((await resolveSnapshotArg(flags, io, repo, r)).rec);
    return out;
  }
  const all = await repo.snapshots();
  await checkSeenSnapshots(flags, io, repo, all);
  const filter = snapshotFilter(flags);
  return isEmptyFilter(filter) ? all : all.filter((s) => matchesFilter(s.snapshot, filter));
}

/** "snapshot 1a2b3c4d of /home/me at 2026-01-02 10:00:00 (host)" for stderr. */
function describe(rec: SnapshotRecord): string {
  return `snapshot ${hex(rec.id).slice(0, 8)} of ${rec.snapshot.paths.join(' ')} at ${shortTime(rec.snapshot.time)} (${rec.snapshot.hostname})`;
}

function shortTime(iso: string): string {
  return new Date(iso).toISOString().replace('T', ' ').slice(0, 19);
}

/** A "scanning 3/10 snapshots" line on a terminal's stderr. */
class Counter {
  readonly #on: boolean;
  constructor(
    private readonly io: Io,
    flags: GlobalFlags,
    private readonly total: number,
  ) {
    this.#on = io.stderr.isTTY === true && !flags.json && !flags.quiet && total > 1;
  }
  tick(done: number): void {
    if (this.#on) this.io.stderr.write(`\rscanning snapshots: ${done}/${this.total}`);
  }
  done(): void {
    if (this.#on) this.io.stderr.write('\r\x1b[K');
  }
}

const typeChar: Record<TreeEntry['type'], string> = { dir: 'd', file: '-', hardlink: '-', symlink: 'l', fifo: 'p', socket: 's', chardev: 'c', blockdev: 'b' };

function modeString(e: TreeEntry): string {
  const m = e.mode;
  const rwx = (r: number, w: number, x: number, special: boolean, ch: string) =>
    `${m & r ? 'r' : '-'}${m & w ? 'w' : '-'}${special ? (m & x ? ch : ch.toUpperCase()) : m & x ? 'x' : '-'}`;
  return `${typeChar[e.type]}${rwx(0o400, 0o200, 0o100, (m & 0o4000) !== 0, 's')}${rwx(0o40, 0o20, 0o10, (m & 0o2000) !== 0, 's')}${rwx(0o4, 0o2, 0o1, (m & 0o1000) !== 0, 't')}`;
}

/** Nanosecond time as ISO 8601 (`2026-01-02T10:00:00.123456789Z`). */
export function isoNs(ns: bigint): string {
  const NS = 1_000_000_000n;
  const sec = ns >= 0n ? ns / NS : -((-ns + NS - 1n) / NS);
  const frac = String(ns - sec * NS).padStart(9, '0');
  return new Date(Number(sec) * 1000).toISOString().replace(/\.\d{3}Z$/, `.${frac}Z`);
}

function pathFields(key: string, raw: Buffer): Record<string, string> {
  const text = escapePath(raw);
  // Exact bytes in base64 when the text can't carry them (not UTF-8, or escaped).
  return text === raw.toString('utf8') ? { [key]: text } : { [key]: text, [`${key}64`]: raw.toString('base64') };
}

/** One entry as JSON (ls, find). */
function entryJson(path: Buffer, e: TreeEntry): Record<string, unknown> {
  const slash = path.lastIndexOf(0x2f);
  return {
    ...pathFields('path', path),
    ...pathFields('name', path.subarray(slash + 1)),
    type: e.type,
    mode: e.mode,
    permissions: modeString(e),
    ...(e.type === 'file' ? { size: e.size } : {}),
    mtime: isoNs(e.mtimeNs),
    ...(e.owner ? { uid: e.owner.uid, gid: e.owner.gid, ...(e.owner.user ? { user: e.owner.user } : {}), ...(e.owner.group ? { group: e.owner.group } : {}) } : {}),
    ...(e.type === 'symlink' ? pathFields('target', e.target) : {}),
    ...(e.type === 'hardlink' ? pathFields('link', e.link) : {}),
    ...(e.type === 'chardev' || e.type === 'blockdev' ? { major: e.major, minor: e.minor } : {}),
  };
}

function longLine(path: Buffer, e: TreeEntry): string {
  const uid = e.owner ? String(e.owner.user ?? e.owner.uid) : '?';
  const gid = e.owner ? String(e.owner.group ?? e.owner.gid) : '?';
  const size = e.type === 'file' ? String(e.size) : e.type === 'chardev' || e.type === 'blockdev' ? `${e.major},${e.minor}` : '0';
  const t = isoNs(e.mtimeNs).replace('T', ' ').slice(0, 19);
  const extra = e.type === 'symlink' ? ` -> ${escapePath(e.target)}` : e.type === 'hardlink' ? ` (hard link to ${escapePath(e.link)})` : '';
  return `${modeString(e)} ${uid.padStart(6)} ${gid.padStart(6)} ${size.padStart(12)} ${t} ${escapePath(path)}${e.type === 'dir' ? '/' : ''}${extra}\n`;
}

/** Writes a line of a long listing, waiting while stdout's reader catches up (memory stays flat). */
async function emit(io: Io, text: string): Promise<void> {
  if (!io.stdout.write(text)) await new Promise<void>((resolve) => io.stdout.once('drain', () => resolve()));
}

type LsFlags = GlobalFlags & FilterFlags & { long?: boolean; recursive?: boolean };

/** `coffer ls SNAPSHOT[:PATH] [PATH…] [-l] [--recursive]`. */
export async function lsCmd(flags: LsFlags, args: string[], io: Io): Promise<number> {
  if (args.length === 0) throw new UsageError('ls: give a snapshot ID (or "latest"), e.g. `coffer ls latest /home/me`');
  const repo = await openRepo(flags, io);
  const { rec, path } = await resolveSnapshotArg(flags, io, repo, args[0]!);
  const paths = [...(path !== undefined ? [path] : []), ...args.slice(1).map(unescapePath)];
  // Said once the first entry is found, so that an error comes alone.
  let header = !flags.json && !flags.quiet;
  // As restic: the whole snapshot without a path; a path's entry and children, or all below it with --recursive.
  const targets = paths.length > 0 ? paths : [undefined];
  for (const p of targets) {
    for await (const l of listSnapshot(repo, rec, p, { recursive: p === undefined || flags.recursive === true })) {
      if (header) io.stderr.write(`${describe(rec)}:\n`);
      header = false;
      if (flags.json) await emit(io, JSON.stringify({ snapshot: hex(rec.id), ...entryJson(l.path, l.entry) }) + '\n');
      else if (flags.long) await emit(io, longLine(l.path, l.entry));
      else await emit(io, `${escapePath(l.path)}${l.entry.type === 'dir' ? '/' : ''}\n`);
    }
  }
  return 0;
}

type FindFlags = GlobalFlags & FilterFlags & { 'ignore-case'?: boolean; snapshot?: string[]; newest?: string; oldest?: string; long?: boolean };

/** `coffer find PATTERN… [--snapshot ID…] [-i] [--newest T] [--oldest T]`. */
export async function findCmd(flags: FindFlags, patterns: string[], io: Io): Promise<number> {
  if (patterns.length === 0) throw new UsageError("find: give a pattern, e.g. `coffer find '*.txt'`");
  for (const p of patterns) checkArgPattern('find: pattern', p);
  const oldest = flags.oldest !== undefined ? parseTime(flags.oldest, 'oldest', false) : undefined;
  const newest = flags.newest !== undefined ? parseTime(flags.newest, 'newest', true) : undefined;
  const repo = await openRepo(flags, io);
  const snaps = await chooseSnapshots(flags, io, repo, flags.snapshot ?? []);
  const counter = new Counter(io, flags, snaps.length);
  // Matches are written as they are found (memory flat however many match): a
  // snapshot's heading before its first, a blank line after its last; --json as one
  // array written element by element.
  let current: SnapshotRecord | undefined;
  let matchesOut = 0;
  const start = (rec: SnapshotRecord) => {
    counter.done();
    if (flags.json) {
      const head = JSON.stringify({ snapshot: hex(rec.id), time: rec.snapshot.time, hostname: rec.snapshot.hostname, paths: rec.snapshot.paths, matches: [] });
      io.stdout.write(`${current ? ']},' : '['}${head.slice(0, -2)}`);
    } else io.stdout.write(`${current ? '\n' : ''}Found matching entries in ${describe(rec)}:\n`);
    current = rec;
    matchesOut = 0;
  };
  const hits = await findInSnapshots(
    repo,
    snaps,
    { patterns, ignoreCase: flags['ignore-case'] === true, ...(oldest !== undefined ? { oldest } : {}), ...(newest !== undefined ? { newest } : {}) },
    (d) => counter.tick(d),
    (rec, m) => {
      if (rec !== current) start(rec);
      if (flags.json) io.stdout.write(`${matchesOut > 0 ? ',' : ''}${JSON.stringify(entryJson(m.path, m.entry))}`);
      else io.stdout.write(flags.long ? longLine(m.path, m.entry) : `${escapePath(m.path)}${m.entry.type === 'dir' ? '/' : ''}\n`);
      matchesOut++;
    },
  );
  counter.done();
  if (flags.json) io.stdout.write(current ? ']}]\n' : '[]\n');
  else {
    if (current) io.stdout.write('\n');
    if (!flags.quiet) io.stderr.write(`${hits.length} of ${snaps.length} snapshot(s) hold matching paths\n`);
  }
  return 0;
}

/** `coffer diff A B`: restic's markers: + added, - removed, M content, T type, U metadata only. */
export async function diffCmd(flags: GlobalFlags & FilterFlags, args: string[], io: Io): Promise<number> {
  if (args.length !== 2) throw new UsageError('diff: give two snapshots, e.g. `coffer diff 1a2b3c4d latest`');
  const repo = await openRepo(flags, io);
  const a = (await resolveSnapshotArg(flags, io, repo, args[0]!)).rec;
  const b = (await resolveSnapshotArg(flags, io, repo, args[1]!)).rec;
  // Changes are written as they are found, so memory stays flat however large the
  // snapshots (a JSON document too: its `changes` array is written element by element).
  if (flags.json) {
    io.stdout.write(`{"from":${JSON.stringify(hex(a.id))},"to":${JSON.stringify(hex(b.id))},"changes":[`);
    let first = true;
    const r = await diffSnapshots(repo, a, b, (c) => {
      io.stdout.write(`${first ? '' : ','}${JSON.stringify({ change: c.kind, ...pathFields('path', c.path), type: c.type })}`);
      first = false;
    });
    const { added, removed, modified, metadataOnly, typeChanged, blobsAdded, blobsRemoved, bytesAdded, bytesRemoved } = r;
    io.stdout.write(`],${JSON.stringify({ added, removed, modified, metadataOnly, typeChanged, blobsAdded, blobsRemoved, bytesAdded, bytesRemoved }).slice(1)}\n`);
    return 0;
  }
  if (!flags.quiet) io.stderr.write(`comparing ${describe(a)}\n     with ${describe(b)}\n`);
  const r = await diffSnapshots(repo, a, b, (c) => io.stdout.write(`${c.kind}    ${escapePath(c.path)}${c.type === 'dir' ? '/' : ''}\n`));
  const counts = (c: typeof r.added) => `${c.files} files, ${c.dirs} dirs, ${c.others} others, ${fmtBytes(c.bytes)}`;
  io.stdout.write(
    `\nAdded:    ${counts(r.added)}\nRemoved:  ${counts(r.removed)}\nChanged:  ${r.modified} modified, ${r.typeChanged} type changed, ${r.metadataOnly} metadata only\n` +
      `Data:     ${r.blobsAdded} blobs added (${fmtBytes(r.bytesAdded)}), ${r.blobsRemoved} blobs removed (${fmtBytes(r.bytesRemoved)})\n`,
  );
  return 0;
}

/** `coffer dump SNAPSHOT PATH [--archive tar|zip]`: a file's bytes, or a tar (or zip) stream, on stdout. */
export async function dumpCmd(flags: GlobalFlags & FilterFlags & { archive?: string }, args: string[], io: Io): Promise<number> {
  const { ref, path: inRef } = args.length === 1 ? splitSnapshotRef(args[0]!) : { ref: args[0], path: undefined };
  if (args.length === 0 || args.length > 2 || (args.length === 1 && inRef === undefined) || (args.length === 2 && splitSnapshotRef(args[0]!).path !== undefined)) {
    throw new UsageError('dump: give a snapshot and a path, e.g. `coffer dump latest /home/me/notes.txt > notes.txt`');
  }
  if (flags.archive !== undefined && flags.archive !== 'tar' && flags.archive !== 'zip') throw new UsageError(`dump: --archive ${flags.archive} is not supported (tar or zip)`);
  const repo = await openRepo(flags, io);
  const { rec } = await resolveSnapshotArg(flags, io, repo, ref!);
  const path = unescapePath(args.length === 2 ? args[1]! : inRef!);
  // A tar stream on a terminal is noise; a file's text is what someone may want to read.
  const bar = new ProgressBar(io, !flags.quiet && !flags.json && io.stdout.isTTY !== true);
  const r = await dumpSnapshot(repo, rec, path, io.stdout, {
    ...(flags.archive === 'tar' || flags.archive === 'zip' ? { archive: flags.archive } : {}),
    onProgress: (p) => bar.update(p.bytes, undefined, p.entries, undefined),
    beforeTar: () => {
      if (io.stdout.isTTY === true && flags.archive === 'zip') throw new UsageError('dump: a zip archive is binary: redirect it to a file (e.g. `> docs.zip`)');
      if (io.stdout.isTTY === true) throw new UsageError('dump: this is a directory, written as a tar stream: redirect it to a file or a pipe (e.g. `> docs.tar` or `| tar -x`)');
    },
  });
  bar.done();
  // stdout holds the data: the summary, with --json too, goes to stderr.
  if (flags.json) io.stderr.write(JSON.stringify({ snapshot: hex(rec.id), ...r }) + '\n');
  else if (!flags.quiet) io.stderr.write(`dumped ${r.format === 'file' ? 'a file' : `${r.entries} entries as ${r.format}`}: ${fmtBytes(r.bytes)} of file contents\n`);
  if (r.skipped && !flags.json) io.stderr.write(`coffer: warning: ${r.skipped} FIFO(s), device node(s) or socket(s) left out: zip has no type for them (--archive tar keeps FIFOs and devices)\n`);
  return 0;
}

/** `coffer stats [SNAPSHOT…] [--mode restore-size|raw-data]`. */
export async function statsCmd(flags: GlobalFlags & FilterFlags & { mode?: string }, refs: string[], io: Io): Promise<number> {
  const mode = (flags.mode ?? 'restore-size') as StatsMode;
  if (!STATS_MODES.includes(mode)) throw new UsageError(`stats: unknown --mode '${flags.mode}' (use ${STATS_MODES.join(', ')})`);
  const repo = await openRepo(flags, io);
  const snaps = await chooseSnapshots(flags, io, repo, refs);
  const counter = new Counter(io, flags, snaps.length);
  const r = await snapshotStats(repo, snaps, mode, (d) => counter.tick(d));
  counter.done();
  if (flags.json) {
    io.stdout.write(JSON.stringify(r) + '\n');
    return 0;
  }
  const row = (k: string, v: string) => `${k.padStart(24)}:  ${v}\n`;
  let out = `Stats in ${mode} mode:\n${row('Snapshots processed', String(r.snapshots))}`;
  if (mode === 'restore-size') {
    out += row('Total file count', String(r.files)) + row('Directories', String(r.dirs)) + row('Other entries', String(r.others)) + row('Total size', fmtBytes(r.bytes!));
  } else if (mode === 'files-by-contents') {
    out += row('Total file count', `${r.files} (distinct contents)`) + row('Total size', fmtBytes(r.bytes!));
  } else if (mode === 'blobs-per-file') {
    out += row('Total file count', `${r.files} (distinct contents)`) + row('Total blob count', String(r.blobs)) + row('Total size', fmtBytes(r.rawBytes!));
    if (r.missingBlobs) out += row('Blobs in no index', `${r.missingBlobs} (run coffer check)`);
  } else {
    out += row('Total blob count', String(r.blobs)) + row('Total uncompressed size', fmtBytes(r.rawBytes!)) + row('Total size (stored)', fmtBytes(r.storedBytes!));
    if (r.storedBytes! > 0) out += row('Compression ratio', `${(r.rawBytes! / r.storedBytes!).toFixed(2)}x`);
    if (r.missingBlobs) out += row('Blobs in no index', `${r.missingBlobs} (run coffer check)`);
  }
  io.stdout.write(out);
  return 0;
}
