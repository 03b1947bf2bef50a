import { fstatSync, promises as fs } from 'node:fs';
import type { Readable } from 'node:stream';
// The engine's modules one by one (issue 13): a backup loads the backup engine, not
// restore, browse, prune or check; --parent, --dry-run, --stdin and the file selection
// options load their modules when given.
import { CofferError } from '@coffer/backup/errors';
import { backup, tuneHeapForBackup, type BackupProgress } from '@coffer/backup/backup';
import { hex } from '@coffer/backup/blob';
import { parseByteSize } from '@coffer/backup/units';
import type * as FilterModule from '@coffer/backup/filter';
import type { PatternRule } from '@coffer/backup/filter';
import { checkArgPattern, openRepo, type GlobalFlags } from '../context.js';
import { checkSeenSnapshots } from '../seen.js';
import { newTags, parseCompression, parsePad, snapshotIdentity } from './flags.js';
import { ExitCode, ProgressBar, UsageError, fmtBytes, type Io } from '../tui.js';


/** The file selection flags of `coffer backup` (issue 12). */
export interface SelectFlags {
  exclude?: string[];
  iexclude?: string[];
  'exclude-file'?: string[];
  'iexclude-file'?: string[];
  'exclude-caches'?: boolean;
  'exclude-if-present'?: string[];
  'exclude-larger-than'?: string;
  'one-file-system'?: boolean;
  'ignore-inode'?: boolean;
  'ignore-ctime'?: boolean;
  'files-from'?: string[];
  'files-from-raw'?: string[];
  'dry-run'?: boolean;
  stdin?: boolean;
  'stdin-filename'?: string;
  'stdin-from-command'?: boolean;
}

/**
 * `--ignore-inode` / `--ignore-ctime`: as restic's, --ignore-inode ignores the ctime too
 * (a file on a FUSE or network mount that shows new inode numbers shows new ctimes).
 */
function ignoreFlags(flags: SelectFlags): { ignoreInode?: true; ignoreCtime?: true } {
  if (flags['ignore-inode']) return { ignoreInode: true, ignoreCtime: true };
  return flags['ignore-ctime'] ? { ignoreCtime: true } : {};
}

/** `--exclude-larger-than SIZE`: bytes (K, M, G, T: powers of 1024, as restic's); 0 would leave out every file with data. */
function parseMaxSize(v: string): number {
  const bytes = parseByteSize(v);
  if (bytes === undefined) throw new UsageError(`backup: --exclude-larger-than takes a size such as 500M or 2G (K, M, G, T: powers of 1024), not '${v}'`);
  if (bytes === 0) throw new UsageError('backup: --exclude-larger-than 0 would leave out every file that has any data; give a size above 0');
  return bytes;
}

/** `--exclude`/`--iexclude` values and the patterns of `--exclude-file`/`--iexclude-file`, in that order. */
async function excludeRules(flags: SelectFlags, readPatternFile: typeof FilterModule.readPatternFile): Promise<PatternRule[]> {
  const rules: PatternRule[] = [];
  for (const f of flags['exclude-file'] ?? []) rules.push(...(await readPatternFile(f)));
  for (const f of flags['iexclude-file'] ?? []) rules.push(...(await readPatternFile(f, true)));
  for (const p of flags.exclude ?? []) rules.push({ pattern: checkArgPattern('--exclude', p) });
  for (const p of flags.iexclude ?? []) rules.push({ pattern: checkArgPattern('--iexclude', p), ignoreCase: true });
  return rules;
}

/** `coffer backup PATH… [--tag T]… [selection]`, `--stdin`, `--dry-run`. */
export async function backupCmd(flags: GlobalFlags & SelectFlags & { tag?: string[]; pad?: string; compression?: string; force?: boolean; parent?: string; host?: string[]; time?: string }, paths: string[], io: Io): Promise<number> {
  if ((flags.stdin || flags['stdin-from-command']) && (flags.force || flags.parent !== undefined)) {
    throw new UsageError('backup: --force and --parent are for files and directories, not --stdin (standard input is always read)');
  }
  if (flags.stdin || flags['stdin-from-command']) return backupStdinCmd(flags, paths, io);
  if (flags.force && flags.parent !== undefined) throw new UsageError('backup: --force reads every file and --parent names a snapshot to compare with: give one of them');
  if (flags.parent === '') throw new UsageError('backup: --parent needs a snapshot ID (or latest)');
  if (flags['stdin-filename'] !== undefined) throw new UsageError('backup: --stdin-filename goes with --stdin or --stdin-from-command');
  const listFiles = [...(flags['files-from'] ?? []).map((f) => ({ f, raw: false })), ...(flags['files-from-raw'] ?? []).map((f) => ({ f, raw: true }))];
  if (paths.length === 0 && listFiles.length === 0) throw new UsageError('backup: give the paths to back up, e.g. `coffer backup ~/Documents`');
  // An empty argument (an unset variable in a script: `coffer backup "$DIR"`) would be
  // the current directory: refused.
  if (paths.some((p) => p === '')) throw new UsageError('backup: an empty path was given (an unset variable?); name the directory, `.` for the current one');
  const padding = flags.pad === undefined ? undefined : parsePad(flags.pad);
  const compression = flags.compression === undefined ? undefined : parseCompression(flags.compression);
  const identity = snapshotIdentity(flags);
  // Every flag is checked (pattern files read, lists parsed) before the repository is opened.
  // Without selection options there is nothing to exclude (backupExcluder would say
  // undefined): the filter module (and picomatch) is then not loaded.
  const excludeLargerThan = flags['exclude-larger-than'] === undefined ? undefined : parseMaxSize(flags['exclude-larger-than']);
  const selecting =
    listFiles.length > 0 ||
    flags['exclude-caches'] === true ||
    excludeLargerThan !== undefined ||
    [flags.exclude, flags.iexclude, flags['exclude-file'], flags['iexclude-file'], flags['exclude-if-present']].some((v) => v !== undefined && v.length > 0);
  const filter = selecting ? await import('@coffer/backup/filter') : undefined;
  let exclude = filter?.backupExcluder({
    exclude: await excludeRules(flags, filter.readPatternFile),
    excludeCaches: flags['exclude-caches'] === true,
    excludeIfPresent: flags['exclude-if-present'] ?? [],
    ...(excludeLargerThan !== undefined ? { excludeLargerThan } : {}),
  });
  if (filter && listFiles.length > 0) {
    const { readFilesFrom, listedSelection, eitherExcludes } = filter;
    const listed: Buffer[] = paths.map((p) => Buffer.from(p, 'utf8'));
    for (const { f, raw } of listFiles) listed.push(...(await readFilesFrom(f, raw)));
    if (listed.length === 0) throw new UsageError(`backup: ${listFiles.map((x) => x.f).join(', ')} lists no files`);
    for (const p of listed) {
      await fs.lstat(p).catch((e: NodeJS.ErrnoException) => {
        throw new CofferError('not-found', `${p.toString('utf8')} (listed in ${listFiles.map((x) => x.f).join(', ')}): ${e.code === 'ENOENT' ? 'no such file or directory' : e.message}`);
      });
    }
    const sel = listedSelection(listed);
    paths = [sel.root];
    exclude = eitherExcludes(sel.exclude, exclude);
  }
  const repo = await openRepo(flags, io);
  // --parent: any snapshot (not filtered by this backup's --tag, which tags the new one).
  const parent = flags.force ? ('none' as const) : flags.parent !== undefined ? await (await import('@coffer/backup/browse')).findSnapshotFiltered(repo, flags.parent, {}) : undefined;
  if (flags['dry-run']) {
    const { backupDryRun } = await import('@coffer/backup/dry-run');
    const d = await backupDryRun(repo, {
      paths,
      ...(parent !== undefined ? { parent } : {}),
      ...(identity.host !== undefined ? { host: identity.host } : {}),
      ...(exclude ? { exclude } : {}),
      ...(flags['one-file-system'] ? { oneFileSystem: true } : {}),
      ...ignoreFlags(flags),
      onEntry: (rel, kind, size) => {
        // The files that would be read: new or changed since the parent snapshot.
        if (!flags.json && !flags.quiet && (kind === 'new' || kind === 'changed')) io.stderr.write(`would read ${kind} file ${rel.toString('utf8')} (${fmtBytes(size)})\n`);
      },
    });
    for (const w of d.warnings) io.stderr.write(`coffer: warning: ${w.path}: ${w.message}\n`);
    if (flags.json) io.stdout.write(JSON.stringify({ dryRun: true, ...d }) + '\n');
    else if (!flags.quiet) {
      io.stderr.write(
        `dry run: would store ${d.files} files, ${d.dirs} dirs${d.others ? `, ${d.others} other items` : ''}, ${fmtBytes(d.bytes)}; ${d.readFiles} new or changed files to read (${fmtBytes(d.readBytes)}, at most that much new data)${d.parent ? ` against snapshot ${d.parent.slice(0, 8)}` : ''}; nothing was written\n`,
      );
    }
    return d.warnings.length > 0 ? ExitCode.Incomplete : ExitCode.Ok;
  }
  const bar = new ProgressBar(io, !flags.json && !flags.quiet);
  const started = Date.now();
  tuneHeapForBackup(); // this process runs the backup: a heap that grows less (see its comment)
  const r = await backup(repo, {
    paths,
    ...(parent !== undefined ? { parent } : {}),
    ...identity,
    ...(padding !== undefined ? { padding } : {}),
    ...(compression !== undefined ? { compression } : {}),
    ...(exclude ? { exclude } : {}),
    ...(flags['one-file-system'] ? { oneFileSystem: true } : {}),
    ...ignoreFlags(flags),
    tags: newTags(flags.tag),
    // Without a bar, no progress: the backup then skips its pre-scan for totals.
    ...(bar.enabled ? { onProgress: (p: BackupProgress) => bar.update(p.bytes, p.totalBytes, p.files, p.totalFiles) } : {}),
    onWarning: (w) => {
      bar.done();
      io.stderr.write(`coffer: warning: ${w.path}: ${w.message}\n`);
    },
  });
  bar.done();
  for (const n of r.notes) if (!flags.quiet) io.stderr.write(`coffer: note: ${n}\n`);
  await checkSeenSnapshots(flags, io, repo, await repo.snapshots());
  const secs = (Date.now() - started) / 1000;
  const s = r.snapshot.stats;
  if (flags.json) {
    io.stdout.write(JSON.stringify({ id: hex(r.id), ...s, seconds: secs, read: r.read, warnings: r.warnings }) + '\n');
  } else {
    io.stdout.write(hex(r.id) + '\n');
    if (!flags.quiet) {
      io.stderr.write(
        `snapshot ${hex(r.id).slice(0, 8)} saved: ${s.files} files, ${s.dirs} dirs, ${fmtBytes(s.bytes)} in ${secs.toFixed(1)} s; ${fmtBytes(s.addedBytes)} added to the repository\n`,
      );
    }
  }
  if (r.warnings.length > 0) {
    io.stderr.write(`coffer: warning: ${r.warnings.length} item(s) could not be read whole or at all; this snapshot may lack them (see the warnings above)\n`);
    return ExitCode.Incomplete;
  }
  return ExitCode.Ok;
}

/** `coffer backup --stdin --stdin-filename NAME` / `--stdin-from-command -- CMD ARGS…`. */
async function backupStdinCmd(flags: GlobalFlags & SelectFlags & { tag?: string[]; pad?: string; compression?: string; host?: string[]; time?: string }, args: string[], io: Io): Promise<number> {
  const fromCommand = flags['stdin-from-command'] === true;
  if (flags.stdin && fromCommand) throw new UsageError('backup: --stdin and --stdin-from-command don\'t mix');
  const selection = ['exclude', 'iexclude', 'exclude-file', 'iexclude-file', 'exclude-caches', 'exclude-if-present', 'exclude-larger-than', 'one-file-system', 'ignore-inode', 'ignore-ctime', 'files-from', 'files-from-raw', 'dry-run'] as const;
  for (const k of selection) if (flags[k] !== undefined) throw new UsageError(`backup: --${k} does not apply to a backup of standard input`);
  if (fromCommand && args.length === 0) throw new UsageError('backup: --stdin-from-command needs the command, e.g. `coffer backup --stdin-from-command -- pg_dump mydb`');
  if (!fromCommand && args.length > 0) throw new UsageError('backup: --stdin takes no paths (the data comes from standard input)');
  const filename = flags['stdin-filename'] ?? 'stdin';
  const { backupStdin, checkStdinFilename } = await import('@coffer/backup/stdin');
  try {
    checkStdinFilename(filename);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (!fromCommand && process.stdin.isTTY) {
    throw new UsageError('backup: --stdin reads standard input, which is a terminal: pipe the data in, e.g. `pg_dump mydb | coffer backup --stdin --stdin-filename mydb.sql`');
  }
  // Node gives a directory on standard input (`< somedir`) as an empty stream, no error:
  // it was saved as an empty file, exit 0.
  if (!fromCommand && isDirectoryFd(0)) {
    throw new UsageError('backup: --stdin reads standard input, which is a directory: redirect a file or pipe the data in (to back up the directory, give it as a path)');
  }
  const padding = flags.pad === undefined ? undefined : parsePad(flags.pad);
  const compression = flags.compression === undefined ? undefined : parseCompression(flags.compression);
  const identity = snapshotIdentity(flags);
  const repo = await openRepo(flags, io);
  const bar = new ProgressBar(io, !flags.json && !flags.quiet);
  const started = Date.now();
  let input: NodeJS.ReadableStream = process.stdin;
  let beforeCommit: (() => Promise<void>) | undefined;
  if (fromCommand) {
    const [cmd, ...cmdArgs] = args;
    // Loaded here, not with the command: every other backup would pay for them at start.
    const [{ spawn }, { PassThrough }] = await Promise.all([import('node:child_process'), import('node:stream')]);
    const child = spawn(cmd!, cmdArgs, { stdio: ['ignore', 'pipe', 'inherit'] });
    // Interrupted (SIGTERM to this process alone: a service manager, `timeout`), the
    // command goes too; it was left running as an orphan. (Ctrl-C reaches both anyway.)
    const { onInterrupt } = await import('@coffer/backup/interrupt');
    const forget = onInterrupt(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    });
    child.once('close', () => forget());
    const exited = new Promise<void>((resolve, reject) => {
      // Exit 1 (not a usage error): the command ran, or was looked for, and failed.
      child.on('error', (e: NodeJS.ErrnoException) => reject(new CofferError('not-found', `cannot run ${cmd}: ${e.code === 'ENOENT' ? 'no such command' : e.message}; no snapshot was saved`)));
      child.on('close', (code, signal) => {
        if (code === 0) resolve();
        else reject(new CofferError('not-found', `${cmd} failed (${signal ? `signal ${signal}` : `exit code ${code}`}): no snapshot was saved`));
      });
    });
    exited.catch(() => {});
    // Consumed at once: node discards a child's unread stdout when the child exits
    // (a fast command's whole output would be lost while the repository opens).
    const pass = new PassThrough();
    child.stdout.pipe(pass);
    input = pass;
    beforeCommit = () => exited;
    // A command that can't start never ends its stdout: fail at once.
    child.on('error', () => pass.destroy());
  }
  let r;
  try {
    r = await backupStdin(repo, {
      input: input as Readable,
      filename,
      tags: newTags(flags.tag),
      ...identity,
      ...(padding !== undefined ? { padding } : {}),
      ...(compression !== undefined ? { compression } : {}),
      ...(beforeCommit ? { beforeCommit } : {}),
      onProgress: (bytes) => bar.update(bytes, undefined, 0, undefined),
    });
  } catch (e) {
    if (beforeCommit) await beforeCommit(); // the command's own failure is the clearer message
    throw e;
  } finally {
    bar.done();
  }
  const secs = (Date.now() - started) / 1000;
  const s = r.snapshot.stats;
  if (flags.json) io.stdout.write(JSON.stringify({ id: hex(r.id), ...s, seconds: secs, warnings: [] }) + '\n');
  else {
    io.stdout.write(hex(r.id) + '\n');
    if (!flags.quiet) io.stderr.write(`snapshot ${hex(r.id).slice(0, 8)} saved: ${filename}, ${fmtBytes(s.bytes)} from ${fromCommand ? args[0] : 'standard input'} in ${secs.toFixed(1)} s; ${fmtBytes(s.addedBytes)} added to the repository\n`);
  }
  return ExitCode.Ok;
}

/** Whether descriptor `fd` is an open directory (false when it can't be stat'ed). */
function isDirectoryFd(fd: number): boolean {
  try {
    return fstatSync(fd).isDirectory();
  } catch {
    return false;
  }
}
