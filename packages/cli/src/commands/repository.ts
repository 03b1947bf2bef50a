import { parseCompression, parsePad } from './backup.js';
import {
  BackupKey,
  Compression,
  Repository,
  S3Backend,
  applyPolicy,
  check,
  forgetSnapshots,
  formatKeyId,
  hex,
  parseReadDataSubset,
  prune,
  removeLocks,
  repairIndex,
  repairSnapshots,
  type ReadDataSubset,
  type RetentionPolicy,
} from '@coffer/backup';
import { checkSeenSnapshots } from '../seen.js';
import { backendFor, isRelayRepository, loadKeyIfGiven, openRepo, repoLocation, type GlobalFlags } from '../context.js';
import { ExitCode, ProgressBar, UsageError, fmtBytes, type Io } from '../tui.js';

/** `coffer init`: creates a repository; without a key, makes one and shows it once. */
export async function init(flags: GlobalFlags & { pad?: string; compression?: string }, io: Io): Promise<number> {
  const location = repoLocation(flags, io);
  // The config's byte (spec §4) holds the default: zstd (auto) or none (off). `max` is
  // chosen per backup: a new config value would make older coffers refuse the repository.
  let compression: Compression | undefined;
  if (flags.compression !== undefined) {
    const mode = parseCompression(flags.compression);
    if (mode === 'max') throw new UsageError('init: --compression max is chosen per backup (`coffer backup --compression max`); a repository\'s default is auto or off');
    compression = mode === 'off' ? Compression.None : Compression.Zstd;
  }
  const given = await loadKeyIfGiven(flags, io);
  if (!given && isRelayRepository(location)) {
    throw new UsageError('no key for the relay repository: run `coffer vault enable` (or `coffer vault recover` on a new device) first, or give --key-file');
  }
  const key = given ?? BackupKey.generate();
  const padding = flags.pad === undefined ? undefined : parsePad(flags.pad);
  const backend = await backendFor(location, flags, io);
  // Like restic: a new s3: repository may name a bucket that does not exist yet.
  if (backend instanceof S3Backend && (await backend.ensureBucket()) && !flags.json && !flags.quiet) io.stderr.write(`created bucket for ${location}\n`);
  const repo = await Repository.init(backend, key, { ...(padding !== undefined ? { padding } : {}), ...(compression !== undefined ? { compression } : {}) });
  if (flags.json) {
    io.stdout.write(
      JSON.stringify({ repository: location, repositoryId: hex(repo.config.repositoryId), keyId: formatKeyId(key.keyId()), compression: repo.config.compression === Compression.None ? 'off' : 'auto', ...(given ? {} : { key: key.toDigits() }) }) + '\n',
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
  // A damaged or foreign snapshot is skipped with a warning (repo.onWarning): one bad
  // snapshot must not hide the others (spec §10).
  const all = await repo.snapshots();
  await checkSeenSnapshots(flags, io, repo, all);
  if (flags.json) {
    io.stdout.write(JSON.stringify(all.map((s) => ({ id: hex(s.id), ...s.snapshot, tree: undefined }))) + '\n');
    return 0;
  }
  if (all.length === 0) {
    if (!flags.quiet) io.stderr.write('no snapshots yet\n');
    return 0;
  }
  io.stdout.write('ID        Time                  Host              Files    Size        Paths\n');
  for (const s of all) {
    const t = new Date(s.snapshot.time).toISOString().replace('T', ' ').slice(0, 19);
    io.stdout.write(
      `${hex(s.id).slice(0, 8)}  ${t}   ${s.snapshot.hostname.slice(0, 16).padEnd(16)}  ${String(s.snapshot.stats.files).padStart(6)}   ${fmtBytes(s.snapshot.stats.bytes).padEnd(10)}  ${s.snapshot.paths.join(' ')}\n`,
    );
  }
  return 0;
}

/** `coffer check [--read-data | --read-data-subset n/m|x%|SIZE] [--no-lock]`. */
export async function checkCmd(flags: GlobalFlags & { 'read-data'?: boolean; 'read-data-subset'?: string; 'no-lock'?: boolean }, io: Io): Promise<number> {
  let subset: ReadDataSubset | undefined;
  if (flags['read-data-subset'] !== undefined) {
    if (flags['read-data']) throw new UsageError('check: give --read-data (every pack) or --read-data-subset (some), not both');
    try {
      subset = parseReadDataSubset(flags['read-data-subset']);
    } catch (e) {
      throw new UsageError(`--${(e as Error).message}`);
    }
  }
  const repo = await openRepo(flags, io);
  const bar = new ProgressBar(io, !flags.json && !flags.quiet);
  const r = await check(repo, {
    readData: flags['read-data'] === true,
    ...(subset ? { readDataSubset: subset } : {}),
    noLock: flags['no-lock'] === true,
    // Bytes of the packs read, and packs read of those to read.
    onProgress: (d, t, bytes, totalBytes) => bar.update(bytes, totalBytes, d, t),
  });
  bar.done();
  if (flags.json) io.stdout.write(JSON.stringify(r) + '\n');
  else {
    for (const p of r.problems) {
      const which = p.snapshots.length > 0 ? ` (affects snapshot${p.snapshots.length > 1 ? 's' : ''} ${p.snapshots.map((s) => s.slice(0, 8)).join(', ')})` : '';
      io.stderr.write(`coffer: error: ${p.message}${which}\n`);
    }
    if (!flags.quiet) {
      io.stderr.write(
        `checked ${r.snapshots} snapshots, ${r.packs} packs, ${r.blobs} blobs${flags['read-data'] ? `, read ${fmtBytes(r.bytesRead)}` : ''}${subset ? `, read ${r.packsRead} pack(s) of subset ${flags['read-data-subset']} (${fmtBytes(r.bytesRead)})` : ''}: ${r.problems.length === 0 ? 'no problems' : `${r.problems.length} problem(s)`}\n`,
      );
      if (r.unreferencedPacks > 0) {
        // Never "prune": if the index was lost, these packs are the only copy of the data.
        io.stderr.write(
          `${r.unreferencedPacks} pack(s) are in no index: left by an interrupted backup, or described by an index that was lost; \`coffer repair index\` indexes them (prune leaves them alone until then)\n`,
        );
      }
      if (r.missingUnneededPacks > 0) {
        io.stderr.write(`${r.missingUnneededPacks} indexed pack(s) are gone, but no snapshot needs them (another copy exists, or nothing uses them); \`coffer prune\` drops them from the index\n`);
      }
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
  let remove: Array<{ id: Buffer; time?: string }>;
  let keepCount = 0;
  if (ids.length > 0) {
    // By ID: from the listing alone, so a snapshot that can't be decrypted can go too.
    remove = [];
    for (const id of ids) remove.push({ id: await repo.resolveSnapshotId(id) });
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
    const all = await repo.snapshots();
    await checkSeenSnapshots(flags, io, repo, all);
    const plan = applyPolicy(all, policy);
    remove = plan.remove.map((s) => ({ id: s.id, time: s.snapshot.time }));
    keepCount = plan.keep.length;
  }
  if (!flags['dry-run']) {
    await forgetSnapshots(repo, remove);
    await checkSeenSnapshots(flags, io, repo, await repo.snapshots(), remove.map((s) => hex(s.id)));
  }
  let pruned;
  if (flags.prune && !flags['dry-run']) pruned = await prune(repo);
  if (flags.json) io.stdout.write(JSON.stringify({ removed: remove.map((s) => hex(s.id)), kept: keepCount, dryRun: !!flags['dry-run'], prune: pruned }) + '\n');
  else if (!flags.quiet) {
    for (const s of remove) io.stderr.write(`${flags['dry-run'] ? 'would remove' : 'removed'} snapshot ${hex(s.id).slice(0, 8)}${s.time ? ` (${s.time})` : ''}\n`);
    if (pruned) printPrune(io, pruned, false);
  }
  return 0;
}

function printPrune(io: Io, r: Awaited<ReturnType<typeof prune>>, dry: boolean): void {
  io.stderr.write(`${dry ? 'would delete' : 'deleted'} ${r.packsDeleted} packs, ${dry ? 'would repack' : 'repacked'} ${r.packsRepacked}, ${fmtBytes(r.bytesFreed)} ${dry ? 'to free' : 'freed'}\n`);
  if (r.youngPacksKept > 0) io.stderr.write(`kept ${r.youngPacksKept} unindexed pack(s) younger than the lock expiry (a backup may be writing them)\n`);
  if (r.missingPacksDropped > 0) io.stderr.write(`${dry ? 'would drop' : 'dropped'} ${r.missingPacksDropped} missing pack(s) from the index (no snapshot needed them)\n`);
  if (r.partialsRemoved > 0) io.stderr.write(`removed ${r.partialsRemoved} partial upload(s) left by interrupted writes\n`);
}

/** `coffer prune [--dry-run]`. */
export async function pruneCmd(flags: GlobalFlags & { 'dry-run'?: boolean }, io: Io): Promise<number> {
  const repo = await openRepo(flags, io);
  const r = await prune(repo, { dryRun: flags['dry-run'] === true });
  if (flags.json) io.stdout.write(JSON.stringify(r) + '\n');
  else if (!flags.quiet) printPrune(io, r, flags['dry-run'] === true);
  return 0;
}

/** `coffer repair index [--read-all]`: rebuilds the index from the packs' trailers. */
export async function repairIndexCmd(flags: GlobalFlags & { 'read-all'?: boolean }, io: Io): Promise<number> {
  const repo = await openRepo(flags, io);
  const bar = new ProgressBar(io, !flags.json && !flags.quiet);
  const r = await repairIndex(repo, { readAll: flags['read-all'] === true, onProgress: (d, t) => bar.update(d, t, d, t) });
  bar.done();
  if (flags.json) io.stdout.write(JSON.stringify(r) + '\n');
  else {
    for (const u of r.unreadablePacks) io.stderr.write(`coffer: warning: ${u.name} can't be read and is not indexed: ${u.message}\n`);
    if (!flags.quiet) {
      io.stderr.write(`indexed ${r.blobs} blobs in ${r.packs} packs (${r.packsRead} read from their trailers); replaced ${r.indexesReplaced} index object(s)${r.missingPacksDropped > 0 ? `; ${r.missingPacksDropped} pack(s) the old index named are gone` : ''}\n`);
    }
  }
  return r.unreadablePacks.length > 0 ? ExitCode.Corrupt : ExitCode.Ok;
}

/** `coffer repair snapshots [--forget] [--dry-run]`. */
export async function repairSnapshotsCmd(flags: GlobalFlags & { forget?: boolean; 'dry-run'?: boolean }, io: Io): Promise<number> {
  const repo = await openRepo(flags, io);
  const r = await repairSnapshots(repo, { forget: flags.forget === true, dryRun: flags['dry-run'] === true });
  if (flags.json) io.stdout.write(JSON.stringify(r) + '\n');
  else {
    const dry = flags['dry-run'] === true;
    for (const x of r.repairs) {
      const gone = x.forgotten ? '; the original was removed' : '';
      if (x.status === 'rewritten') {
        const files = `${x.removedFiles.length} file(s) whose data is gone (e.g. ${x.removedFiles.slice(0, 3).join(', ')})`;
        io.stderr.write(dry ? `snapshot ${x.id.slice(0, 8)}: would be rewritten without ${files}\n` : `snapshot ${x.id.slice(0, 8)}: rewritten as ${x.newId!.slice(0, 8)} without ${files}${gone}\n`);
      } else {
        const what = x.forgotten ? 'removed' : dry || !flags.forget ? 'can only be removed (--forget)' : 'left';
        io.stderr.write(`snapshot ${x.id.slice(0, 8)}: ${x.status === 'unreadable' ? "can't be read" : 'can\'t be repaired'} (${x.message}); ${what}\n`);
      }
    }
    if (!flags.quiet) io.stderr.write(`checked ${r.checked} snapshots: ${r.repairs.length === 0 ? 'all whole' : `${r.repairs.length} damaged`}\n`);
  }
  return ExitCode.Ok;
}

/** `coffer unlock [--remove-all]`: removes stale locks (all locks with --remove-all). */
export async function unlock(flags: GlobalFlags & { 'remove-all'?: boolean }, io: Io): Promise<number> {
  const repo = await openRepo(flags, io);
  const n = await removeLocks(repo, flags['remove-all'] === true);
  if (flags.json) io.stdout.write(JSON.stringify({ removed: n }) + '\n');
  else if (!flags.quiet) io.stderr.write(`removed ${n} lock(s)\n`);
  return 0;
}
