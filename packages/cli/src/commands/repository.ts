import { parsePad } from './backup.js';
import {
  BackupKey,
  Repository,
  applyPolicy,
  check,
  forgetSnapshots,
  formatKeyId,
  hex,
  prune,
  removeLocks,
  type RetentionPolicy,
} from '@coffer/backup';
import { backendFor, isRelayRepository, loadKeyIfGiven, openRepo, repoLocation, type GlobalFlags } from '../context.js';
import { ExitCode, ProgressBar, UsageError, fmtBytes, type Io } from '../tui.js';

/** `coffer init`: creates a repository; without a key, makes one and shows it once. */
export async function init(flags: GlobalFlags & { pad?: string }, io: Io): Promise<number> {
  const location = repoLocation(flags, io);
  const given = await loadKeyIfGiven(flags, io);
  if (!given && isRelayRepository(location)) {
    throw new UsageError('no key for the relay repository: run `coffer vault enable` (or `coffer vault recover` on a new device) first, or give --key-file');
  }
  const key = given ?? BackupKey.generate();
  const padding = flags.pad === undefined ? undefined : parsePad(flags.pad);
  const repo = await Repository.init(await backendFor(location, flags, io), key, { ...(padding !== undefined ? { padding } : {}) });
  if (flags.json) {
    io.stdout.write(
      JSON.stringify({ repository: location, repositoryId: hex(repo.config.repositoryId), keyId: formatKeyId(key.keyId()), ...(given ? {} : { key: key.toDigits() }) }) + '\n',
    );
  } else if (!given) {
    io.stdout.write(key.toDigits() + '\n');
  }
  if (!given && !flags.quiet) {
    io.stderr.write(
      'coffer: warning: this is your new backup key, shown only this once. Write it down and keep it safe:\n' +
        'coffer: warning: without it (or a vault password, later) nobody can restore these backups, not even us.\n' +
        'coffer: warning: pass it to later commands with --key-file FILE or COFFER_KEY\n',
    );
  }
  if (!flags.json && !flags.quiet) io.stderr.write(`created repository ${location} (key ID ${formatKeyId(key.keyId())})\n`);
  return 0;
}

/** `coffer snapshots`: one line per snapshot, oldest first. */
export async function snapshots(flags: GlobalFlags, io: Io): Promise<number> {
  const repo = await openRepo(flags, io);
  const { good: all, bad } = await repo.readableSnapshots();
  // One damaged or foreign snapshot must not hide the others (spec §10): list the rest.
  for (const b of bad) io.stderr.write(`coffer: warning: ${b.name} cannot be read: ${(b.error as Error).message}\n`);
  const done = bad.length > 0 ? ExitCode.Incomplete : ExitCode.Ok;
  if (flags.json) {
    io.stdout.write(JSON.stringify(all.map((s) => ({ id: hex(s.id), ...s.snapshot, tree: undefined }))) + '\n');
    return done;
  }
  if (all.length === 0) {
    if (!flags.quiet) io.stderr.write('no snapshots yet\n');
    return done;
  }
  io.stdout.write('ID        Time                  Host              Files    Size        Paths\n');
  for (const s of all) {
    const t = new Date(s.snapshot.time).toISOString().replace('T', ' ').slice(0, 19);
    io.stdout.write(
      `${hex(s.id).slice(0, 8)}  ${t}   ${s.snapshot.hostname.slice(0, 16).padEnd(16)}  ${String(s.snapshot.stats.files).padStart(6)}   ${fmtBytes(s.snapshot.stats.bytes).padEnd(10)}  ${s.snapshot.paths.join(' ')}\n`,
    );
  }
  return done;
}

/** `coffer check [--read-data]`. */
export async function checkCmd(flags: GlobalFlags & { 'read-data'?: boolean }, io: Io): Promise<number> {
  const repo = await openRepo(flags, io);
  const bar = new ProgressBar(io, !flags.json && !flags.quiet);
  const r = await check(repo, { readData: flags['read-data'] === true, onProgress: (d, t) => bar.update(d, t, d, t) });
  bar.done();
  if (flags.json) io.stdout.write(JSON.stringify(r) + '\n');
  else {
    for (const p of r.problems) {
      const which = p.snapshots.length > 0 ? ` (affects snapshot${p.snapshots.length > 1 ? 's' : ''} ${p.snapshots.map((s) => s.slice(0, 8)).join(', ')})` : '';
      io.stderr.write(`coffer: error: ${p.message}${which}\n`);
    }
    if (!flags.quiet) {
      io.stderr.write(
        `checked ${r.snapshots} snapshots, ${r.packs} packs, ${r.blobs} blobs${flags['read-data'] ? `, read ${fmtBytes(r.bytesRead)}` : ''}: ${r.problems.length === 0 ? 'no problems' : `${r.problems.length} problem(s)`}\n`,
      );
      if (r.unreferencedPacks > 0) io.stderr.write(`${r.unreferencedPacks} pack(s) are not indexed (left by an interrupted backup); \`coffer prune\` removes them\n`);
    }
  }
  return r.problems.length === 0 ? ExitCode.Ok : ExitCode.Corrupt;
}

export type ForgetFlags = GlobalFlags & {
  'keep-last'?: string;
  'keep-hourly'?: string;
  'keep-daily'?: string;
  'keep-weekly'?: string;
  'keep-monthly'?: string;
  'keep-yearly'?: string;
  prune?: boolean;
  'dry-run'?: boolean;
};

function num(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new UsageError(`--${name} needs a whole number, got '${v}'`);
  return Number(v);
}

/** `coffer forget [SNAPSHOT…] [--keep-… N] [--prune] [--dry-run]`. */
export async function forget(flags: ForgetFlags, ids: string[], io: Io): Promise<number> {
  const repo = await openRepo(flags, io);
  let remove;
  let keepCount = 0;
  if (ids.length > 0) {
    remove = [];
    for (const id of ids) remove.push(await repo.findSnapshot(id));
  } else {
    const policy: RetentionPolicy = {
      last: num(flags['keep-last'], 'keep-last'),
      hourly: num(flags['keep-hourly'], 'keep-hourly'),
      daily: num(flags['keep-daily'], 'keep-daily'),
      weekly: num(flags['keep-weekly'], 'keep-weekly'),
      monthly: num(flags['keep-monthly'], 'keep-monthly'),
      yearly: num(flags['keep-yearly'], 'keep-yearly'),
    };
    for (const k of Object.keys(policy) as Array<keyof RetentionPolicy>) if (policy[k] === undefined) delete policy[k];
    const plan = applyPolicy(await repo.snapshots(), policy);
    remove = plan.remove;
    keepCount = plan.keep.length;
  }
  if (!flags['dry-run']) await forgetSnapshots(repo, remove);
  let pruned;
  if (flags.prune && !flags['dry-run']) pruned = await prune(repo);
  if (flags.json) io.stdout.write(JSON.stringify({ removed: remove.map((s) => hex(s.id)), kept: keepCount, dryRun: !!flags['dry-run'], prune: pruned }) + '\n');
  else if (!flags.quiet) {
    for (const s of remove) io.stderr.write(`${flags['dry-run'] ? 'would remove' : 'removed'} snapshot ${hex(s.id).slice(0, 8)} (${s.snapshot.time})\n`);
    if (pruned) io.stderr.write(`pruned: ${pruned.packsDeleted} packs deleted, ${pruned.packsRepacked} repacked, ${fmtBytes(pruned.bytesFreed)} freed\n`);
  }
  return 0;
}

/** `coffer prune [--dry-run]`. */
export async function pruneCmd(flags: GlobalFlags & { 'dry-run'?: boolean }, io: Io): Promise<number> {
  const repo = await openRepo(flags, io);
  const r = await prune(repo, { dryRun: flags['dry-run'] === true });
  if (flags.json) io.stdout.write(JSON.stringify(r) + '\n');
  else if (!flags.quiet) {
    io.stderr.write(`${flags['dry-run'] ? 'would delete' : 'deleted'} ${r.packsDeleted} packs, ${flags['dry-run'] ? 'would repack' : 'repacked'} ${r.packsRepacked}, ${fmtBytes(r.bytesFreed)} ${flags['dry-run'] ? 'to free' : 'freed'}\n`);
  }
  return 0;
}

/** `coffer unlock [--remove-all]`: removes stale locks (all locks with --remove-all). */
export async function unlock(flags: GlobalFlags & { 'remove-all'?: boolean }, io: Io): Promise<number> {
  const repo = await openRepo(flags, io);
  const n = await removeLocks(repo, flags['remove-all'] === true);
  if (flags.json) io.stdout.write(JSON.stringify({ removed: n }) + '\n');
  else if (!flags.quiet) io.stderr.write(`removed ${n} lock(s)\n`);
  return 0;
}
