import { CofferError, backup, hex, parseCompressionMode, parsePadMode, restore, type CompressionMode } from '@coffer/backup';
import { openRepo, type GlobalFlags } from '../context.js';
import { checkSeenSnapshots } from '../seen.js';
import { ExitCode, ProgressBar, UsageError, fmtBytes, type Io } from '../tui.js';

/** `coffer backup PATH… [--tag T]…`. */
export async function backupCmd(flags: GlobalFlags & { tag?: string[]; pad?: string; compression?: string }, paths: string[], io: Io): Promise<number> {
  if (paths.length === 0) throw new UsageError('backup: give the paths to back up, e.g. `coffer backup ~/Documents`');
  const padding = flags.pad === undefined ? undefined : parsePad(flags.pad);
  const compression = flags.compression === undefined ? undefined : parseCompression(flags.compression);
  const repo = await openRepo(flags, io);
  const bar = new ProgressBar(io, !flags.json && !flags.quiet);
  const started = Date.now();
  const r = await backup(repo, {
    paths,
    ...(padding !== undefined ? { padding } : {}),
    ...(compression !== undefined ? { compression } : {}),
    tags: flags.tag ?? [],
    onProgress: (p) => bar.update(p.bytes, p.totalBytes, p.files, p.totalFiles),
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
    io.stdout.write(JSON.stringify({ id: hex(r.id), ...s, seconds: secs, warnings: r.warnings }) + '\n');
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

/** `coffer restore SNAPSHOT|latest --target DIR [--overwrite] [--no-owners] [--no-lock]`. */
export async function restoreCmd(
  flags: GlobalFlags & { target?: string; overwrite?: boolean; 'no-owners'?: boolean; 'no-lock'?: boolean },
  args: string[],
  io: Io,
): Promise<number> {
  if (args.length !== 1) throw new UsageError('restore: give one snapshot ID (or "latest") and --target DIR');
  if (!flags.target) throw new UsageError('restore: --target DIR is required (where to put the restored files)');
  const repo = await openRepo(flags, io);
  let rec;
  if (args[0] === 'latest') {
    // "latest" is where a rollback would bite: compare with what this device saw.
    const all = await repo.snapshots();
    await checkSeenSnapshots(flags, io, repo, all);
    rec = all[all.length - 1];
    if (!rec) throw new CofferError('not-found', `the repository at ${repo.location} has no snapshots yet`);
  } else {
    rec = await repo.findSnapshot(args[0]!);
  }
  const bar = new ProgressBar(io, !flags.json && !flags.quiet);
  const started = Date.now();
  const r = await restore(repo, rec, {
    target: flags.target,
    overwrite: flags.overwrite === true,
    noLock: flags['no-lock'] === true,
    ...(flags['no-owners'] ? { owners: false } : {}),
    onProgress: (p) => bar.update(p.bytes, p.totalBytes, p.files, p.totalFiles),
    onWarning: (w) => {
      bar.done();
      io.stderr.write(`coffer: warning: ${w.path}: ${w.message}\n`);
    },
  });
  bar.done();
  const secs = (Date.now() - started) / 1000;
  if (flags.json) io.stdout.write(JSON.stringify({ snapshot: hex(rec.id), target: flags.target, ...r, seconds: secs }) + '\n');
  else if (!flags.quiet) {
    io.stderr.write(`restored snapshot ${hex(rec.id).slice(0, 8)} to ${flags.target}: ${r.files} files, ${r.dirs} dirs, ${r.symlinks} symlinks, ${fmtBytes(r.bytes)} in ${secs.toFixed(1)} s\n`);
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

/** `--pad off|auto|max` (spec §7.3); a usage error otherwise. */
export function parsePad(s: string): number {
  try {
    return parsePadMode(s);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** `--compression auto|off|max`; a usage error otherwise. */
export function parseCompression(s: string): CompressionMode {
  try {
    return parseCompressionMode(s);
  } catch (e) {
    throw new UsageError(`--compression: ${(e as Error).message.replace(/^compression: /, '')}`);
  }
}
