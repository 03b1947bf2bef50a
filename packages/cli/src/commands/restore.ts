/** `coffer restore`: a snapshot (or part of it) back into a directory. */
import { CofferError } from '@coffer/backup/errors';
import { SnapshotPaths } from '@coffer/backup/browse';
import { hex } from '@coffer/backup/blob';
import { RestoreSelection } from '@coffer/backup/filter';
import { restore } from '@coffer/backup/restore';
import { checkArgPath, checkArgPattern, openRepo, type GlobalFlags } from '../context.js';
import { resolveSnapshotArg } from './browse.js';
import type { FilterFlags } from './flags.js';
import { ExitCode, ProgressBar, UsageError, fmtBytes, type Io } from '../tui.js';

/** `coffer restore SNAPSHOT|latest[:PATH] --target DIR [--overwrite] [--no-owners] [--no-lock] [--verify] [--include P] [--exclude P]`. */
export async function restoreCmd(
  flags: GlobalFlags &
    FilterFlags & {
    target?: string;
    overwrite?: boolean;
    'no-owners'?: boolean;
    'no-lock'?: boolean;
    verify?: boolean;
    include?: string[];
    iinclude?: string[];
    exclude?: string[];
    iexclude?: string[];
  },
  args: string[],
  io: Io,
): Promise<number> {
  if (args.length !== 1) throw new UsageError('restore: give one snapshot ID (or "latest") and --target DIR');
  if (!flags.target) throw new UsageError('restore: --target DIR is required (where to put the restored files)');
  checkArgPath('--target', flags.target);
  for (const k of ['include', 'iinclude', 'exclude', 'iexclude'] as const) for (const p of flags[k] ?? []) checkArgPattern(`--${k}`, p);
  const select = new RestoreSelection({
    include: [...(flags.include ?? []).map((pattern) => ({ pattern })), ...(flags.iinclude ?? []).map((pattern) => ({ pattern, ignoreCase: true }))],
    exclude: [...(flags.exclude ?? []).map((pattern) => ({ pattern })), ...(flags.iexclude ?? []).map((pattern) => ({ pattern, ignoreCase: true }))],
  });
  const repo = await openRepo(flags, io);
  // `latest` (as --tag/--host/--path allow) or an ID, with `:PATH` for part of it (browse.ts).
  const { rec, path } = await resolveSnapshotArg(flags, io, repo, args[0]!);
  const bar = new ProgressBar(io, !flags.json && !flags.quiet);
  const started = Date.now();
  const r = await restore(repo, rec, {
    target: flags.target,
    overwrite: flags.overwrite === true,
    noLock: flags['no-lock'] === true,
    ...(select.active ? { select } : {}),
    ...(flags['no-owners'] ? { owners: false } : {}),
    ...(flags.verify ? { verify: true } : {}),
    ...(path !== undefined ? { subtree: new SnapshotPaths(rec.snapshot).select(path) } : {}),
    onProgress: (p) => bar.update(p.bytes, p.totalBytes, p.files, p.totalFiles),
    onWarning: (w) => {
      bar.done();
      io.stderr.write(`coffer: warning: ${w.path}: ${w.message}\n`);
    },
  });
  bar.done();
  if (select.active && r.files + r.dirs + r.symlinks + r.others === 0) {
    throw new CofferError('not-found', `nothing in snapshot ${hex(rec.id).slice(0, 8)} matches the --include/--exclude patterns; nothing was restored`);
  }
  const secs = (Date.now() - started) / 1000;
  if (flags.json) io.stdout.write(JSON.stringify({ snapshot: hex(rec.id), target: flags.target, ...r, seconds: secs }) + '\n');
  else if (!flags.quiet) {
    io.stderr.write(`restored snapshot ${hex(rec.id).slice(0, 8)} to ${flags.target}: ${r.files} files, ${r.dirs} dirs, ${r.symlinks} symlinks, ${fmtBytes(r.bytes)} in ${secs.toFixed(1)} s\n`);
    if (r.verified) io.stderr.write(`verified ${r.verified.files} files (${fmtBytes(r.verified.bytes)}) read back from ${flags.target}: as in the snapshot\n`);
  }
  // Reading without a lock (storage refused it) was warned about above; it is not an
  // item restored inexactly, so on its own it does not make the exit code 3.
  const inexact = r.warnings.filter((w) => !w.noLock);
  if (inexact.length > 0) {
    io.stderr.write(`coffer: warning: ${inexact.length} item(s) were not restored exactly (see the warnings above)\n`);
    return ExitCode.Incomplete;
  }
  return ExitCode.Ok;
}
