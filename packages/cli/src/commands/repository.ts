// The engine's modules one by one, not the @coffer/backup barrel (issue 13): `coffer
// snapshots` loads no check, prune, forget or repair; each of those commands loads its own.
import { BackupKey, formatKeyId } from '@coffer/backup/key';
import { hex } from '@coffer/backup/blob';
import { Compression } from '@coffer/backup/config';
import { removeLocks } from '@coffer/backup/lock';
import { Repository, type SnapshotRecord } from '@coffer/backup/repository';
import { isEmptyFilter, matchesFilter, parseTagList } from '@coffer/backup/snapshot';
import type { ReadDataSubset } from '@coffer/backup/check';
import type * as ForgetModule from '@coffer/backup/forget';
import type { RetentionPolicy } from '@coffer/backup/forget';
import type { PruneOptions, PruneResult } from '@coffer/backup/prune';
import { parseByteSize } from '@coffer/backup/units';
import { newTags, parseCompression, parsePad, snapshotFilter, type FilterFlags } from './flags.js';
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
  // Only an s3: location makes an S3Backend (context.ts), and it has loaded the module then.
  if (location.startsWith('s3:') && backend instanceof (await import('@coffer/backup/storage/s3')).S3Backend && (await backend.ensureBucket()) && !flags.json && !flags.quiet) io.stderr.write(`created bucket for ${location}\n`);
  const repo = await Repository.init(backend, key, { ...(padding !== undefined ? { padding } : {}), ...(compression !== undefined ? { compression } : {}) });
  if (flags.json) {
    io.stdout.write(
      JSON.stringify({ repository: location, repositoryId: hex(repo.config.repositoryId), keyId: formatKeyId(repo.config.keyId), compression: repo.config.compression === Compression.None ? 'off' : 'auto', ...(given ? {} : { key: key.toDigits() }) }) + '\n',
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
  // The repository's key ID (salted with its ID from format version 3, spec §3.2).
  if (!flags.json && !flags.quiet) io.stderr.write(`created repository ${location} (key ID ${formatKeyId(repo.config.keyId)})\n`);
  return 0;
}

/**
 * `coffer snapshots [--tag T] [--host H] [--path P] [--latest N] [--group-by host,paths,tags]`:
 * one line per snapshot, oldest first. As restic's: `--latest N` keeps the newest N of
 * each host and set of paths (of each group, with --group-by); `--group-by` lists group
 * by group (in JSON: `[{ group_key, snapshots }]`).
 */
export async function snapshots(flags: GlobalFlags & FilterFlags & { latest?: string; 'group-by'?: string }, io: Io): Promise<number> {
  const latest = flags.latest === undefined ? undefined : Number(flags.latest);
  if (latest !== undefined && !(/^\d{1,9}$/.test(flags.latest!) && latest >= 1)) throw new UsageError(`snapshots: --latest takes a whole number of snapshots, 1 or more, not '${flags.latest}'`);
  const { groupSnapshots, parseGroupBy, DEFAULT_GROUP_BY } = latest !== undefined || flags['group-by'] !== undefined ? await import('@coffer/backup/forget') : ({} as Partial<typeof ForgetModule>);
  const groupBy = flags['group-by'] === undefined ? undefined : parseGroupBy!(flags['group-by']);
  const repo = await openRepo(flags, io);
  // A damaged or foreign snapshot is skipped with a warning (repo.onWarning): one bad
  // snapshot must not hide the others (spec §10).
  const { good: every, bad } = await repo.readableSnapshots();
  repo.warnUnreadable(bad);
  // The rollback check sees every snapshot, not only those the filters show.
  await checkSeenSnapshots(flags, io, repo, every);
  const filter = snapshotFilter(flags);
  let all = isEmptyFilter(filter) ? every : every.filter((s) => matchesFilter(s.snapshot, filter));
  if (latest !== undefined) {
    const kept = new Set<SnapshotRecord>();
    for (const g of groupSnapshots!(all, groupBy ?? DEFAULT_GROUP_BY!)) for (const s of g.list.slice(-latest)) kept.add(s);
    all = all.filter((s) => kept.has(s));
  }
  const groups = groupBy ? groupSnapshots!(all, groupBy) : [{ list: all }];
  // Some unreadable beside readable ones: listed with warnings, exit 0 (as restic). None
  // readable at all: not "no snapshots yet" (there are some, and they are damaged or
  // foreign), and exit 12 so that a script notices.
  const noneReadable = every.length === 0 && bad.length > 0;
  const json = (list: readonly SnapshotRecord[]) => list.map((s) => ({ id: hex(s.id), ...s.snapshot, tree: undefined }));
  if (flags.json) {
    const out = groupBy ? groups.map((g) => ({ group_key: { hostname: g.host ?? '', paths: g.paths ?? null, tags: g.tags ?? null }, snapshots: json(g.list) })) : json(all);
    io.stdout.write(JSON.stringify(out) + '\n');
    return noneReadable ? ExitCode.Corrupt : 0;
  }
  if (noneReadable) {
    io.stderr.write(`coffer: error: no snapshot can be read: ${bad.length} could not be (see the warnings above; \`coffer check\` says more, \`coffer forget ID\` removes one)\n`);
    return ExitCode.Corrupt;
  }
  if (all.length === 0) {
    if (!flags.quiet) io.stderr.write(every.length === 0 ? 'no snapshots yet\n' : `no snapshot matches (of ${every.length})\n`);
    return 0;
  }
  for (const [i, g] of groups.entries()) {
    if (groupBy) {
      const what = [g.host !== undefined ? `host [${g.host}]` : '', g.paths !== undefined ? `paths [${g.paths.join(', ')}]` : '', g.tags !== undefined ? `tags [${g.tags.join(', ')}]` : ''].filter((x) => x);
      io.stdout.write(`${i > 0 ? '\n' : ''}snapshots for (${what.length > 0 ? what.join(', ') : 'all'}):\n`);
    }
    io.stdout.write('ID        Time                  Host              Files    Size        Paths  [Tags]\n');
    for (const s of g.list) {
      const t = new Date(s.snapshot.time).toISOString().replace('T', ' ').slice(0, 19);
      io.stdout.write(
        `${hex(s.id).slice(0, 8)}  ${t}   ${s.snapshot.hostname.slice(0, 16).padEnd(16)}  ${String(s.snapshot.stats.files).padStart(6)}   ${fmtBytes(s.snapshot.stats.bytes).padEnd(10)}  ${s.snapshot.paths.join(' ')}${s.snapshot.tags.length > 0 ? `  [${s.snapshot.tags.join(',')}]` : ''}\n`,
      );
    }
  }
  return 0;
}

/**
 * `coffer tag [ID…] --add T | --remove T | --set T [--tag T] [--host H] [--path P]` (as
 * restic's): the snapshots given (or, with no ID, every one the filters let through)
 * get new tags; each changed one is written again under a new ID and the old deleted
 * (tag.ts). Prints the new IDs on stdout.
 */
export async function tagCmd(flags: GlobalFlags & FilterFlags & { add?: string[]; remove?: string[]; set?: string[] }, ids: string[], io: Io): Promise<number> {
  if (flags.set !== undefined && (flags.add !== undefined || flags.remove !== undefined)) throw new UsageError('tag: --set replaces every tag: give it alone, or use --add and --remove');
  for (const k of ['add', 'remove'] as const) if (flags[k] !== undefined && newTags(flags[k]).length === 0) throw new UsageError(`tag: --${k} names no tag`);
  if (flags.set === undefined && flags.add === undefined && flags.remove === undefined) throw new UsageError('tag: say what to change: --add T, --remove T or --set T (--set "" removes every tag)');
  const change = flags.set !== undefined ? { set: newTags(flags.set) } : { add: newTags(flags.add), remove: newTags(flags.remove) };
  const { tagSnapshots } = await import('@coffer/backup/tag');
  const repo = await openRepo(flags, io);
  const every = await repo.snapshots();
  await checkSeenSnapshots(flags, io, repo, every);
  const filter = snapshotFilter(flags);
  let chosen: SnapshotRecord[] = [];
  // IDs (or `latest`, the newest the filters let through) must match the filters, as for restore.
  if (ids.length > 0) {
    const { findSnapshotFiltered } = await import('@coffer/backup/browse');
    for (const id of ids) chosen.push(await findSnapshotFiltered(repo, id, filter));
  } else chosen = isEmptyFilter(filter) ? every : every.filter((s) => matchesFilter(s.snapshot, filter));
  chosen = [...new Map(chosen.map((s) => [hex(s.id), s])).values()];
  if (chosen.length === 0) {
    if (!flags.quiet) io.stderr.write(every.length === 0 ? 'no snapshots yet\n' : `no snapshot matches (of ${every.length})\n`);
    return ExitCode.Ok;
  }
  const changed = await tagSnapshots(repo, chosen, change);
  await checkSeenSnapshots(flags, io, repo, await repo.snapshots(), changed.map((c) => c.from));
  if (flags.json) io.stdout.write(JSON.stringify({ changed, unchanged: chosen.length - changed.length }) + '\n');
  else {
    for (const c of changed) io.stdout.write(c.to + '\n');
    if (!flags.quiet) {
      for (const c of changed) io.stderr.write(`snapshot ${c.from.slice(0, 8)} is now ${c.to.slice(0, 8)}, tags [${c.tags.join(',')}]\n`);
      io.stderr.write(`changed the tags of ${changed.length} snapshot(s)${chosen.length > changed.length ? `; ${chosen.length - changed.length} already had them` : ''}\n`);
    }
  }
  return ExitCode.Ok;
}

/** `coffer check [--read-data | --read-data-subset n/m|x%|SIZE] [--no-lock]`. */
export async function checkCmd(flags: GlobalFlags & { 'read-data'?: boolean; 'read-data-subset'?: string; 'no-lock'?: boolean }, io: Io): Promise<number> {
  const { check, parseReadDataSubset } = await import('@coffer/backup/check');
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
          `${r.unreferencedPacks} pack(s) are in no index: left by an interrupted backup, or described by an index that was lost; \`coffer repair index\` indexes them (until then prune leaves them alone while they are younger than 30 minutes, and refuses to run once one is older and holds data no index describes)\n`,
        );
      }
      if (r.missingUnneededPacks > 0) {
        io.stderr.write(`${r.missingUnneededPacks} indexed pack(s) are gone, but no snapshot needs them (another copy exists, or nothing uses them); \`coffer prune\` drops them from the index\n`);
      }
    }
  }
  return r.problems.length === 0 ? ExitCode.Ok : ExitCode.Corrupt;
}

export type ForgetFlags = GlobalFlags &
  FilterFlags &
  PruneLimitFlags & {
  'keep-within'?: string;
  'keep-within-hourly'?: string;
  'keep-within-daily'?: string;
  'keep-within-weekly'?: string;
  'keep-within-monthly'?: string;
  'keep-within-yearly'?: string;
  'keep-tag'?: string[];
  'group-by'?: string;
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

function duration(parseDuration: typeof ForgetModule.parseDuration, v: string | undefined, name: string) {
  if (v === undefined) return undefined;
  try {
    return parseDuration(v);
  } catch (e) {
    throw new UsageError(`--${name}: ${(e as Error).message}`);
  }
}

/**
 * `coffer forget [SNAPSHOT…] [--keep-… N] [--keep-within… DURATION] [--keep-tag T]
 * [--group-by host,paths,tags] [--tag/--host/--path …] [--prune] [--dry-run]`.
 */
export async function forget(flags: ForgetFlags, ids: string[], io: Io): Promise<number> {
  const { applyPolicy, forgetSnapshots, parseDuration, parseGroupBy } = await import('@coffer/backup/forget');
  const limits = pruneLimits(flags);
  if (!flags.prune && Object.keys(limits).length > 0) throw new UsageError('forget: --max-unused and --max-repack-size go with --prune');
  const policyFlags = Object.keys(flags).filter((k) => k.startsWith('keep-') || k === 'group-by');
  if (ids.length > 0 && policyFlags.length > 0) throw new UsageError(`forget: give snapshot IDs or a policy (--${policyFlags[0]}), not both`);
  const repo = await openRepo(flags, io);
  let remove: Array<{ id: Buffer; time?: string }>;
  let keepCount = 0;
  let groups: ReturnType<typeof applyPolicy>['groups'] = [];
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
      within: duration(parseDuration, flags['keep-within'], 'keep-within'),
      withinHourly: duration(parseDuration, flags['keep-within-hourly'], 'keep-within-hourly'),
      withinDaily: duration(parseDuration, flags['keep-within-daily'], 'keep-within-daily'),
      withinWeekly: duration(parseDuration, flags['keep-within-weekly'], 'keep-within-weekly'),
      withinMonthly: duration(parseDuration, flags['keep-within-monthly'], 'keep-within-monthly'),
      withinYearly: duration(parseDuration, flags['keep-within-yearly'], 'keep-within-yearly'),
      tags: flags['keep-tag']?.map(parseTagList).filter((t) => t.length > 0),
    };
    for (const k of Object.keys(policy) as Array<keyof RetentionPolicy>) if (policy[k] === undefined || (k === 'tags' && policy.tags!.length === 0)) delete policy[k];
    const groupBy = flags['group-by'] === undefined ? undefined : parseGroupBy(flags['group-by']);
    const every = await repo.snapshots();
    await checkSeenSnapshots(flags, io, repo, every);
    // Only the snapshots the filters let through are considered (and can be removed).
    const filter = snapshotFilter(flags);
    const all = isEmptyFilter(filter) ? every : every.filter((s) => matchesFilter(s.snapshot, filter));
    const plan = applyPolicy(all, policy, groupBy);
    remove = plan.remove.map((s) => ({ id: s.id, time: s.snapshot.time }));
    keepCount = plan.keep.length;
    groups = plan.groups;
  }
  if (!flags['dry-run']) {
    await forgetSnapshots(repo, remove);
    await checkSeenSnapshots(flags, io, repo, await repo.snapshots(), remove.map((s) => hex(s.id)));
  }
  let pruned;
  if (flags.prune && !flags['dry-run']) pruned = await (await import('@coffer/backup/prune')).prune(repo, limits);
  if (flags.json) {
    const json = {
      removed: remove.map((s) => hex(s.id)),
      kept: keepCount,
      dryRun: !!flags['dry-run'],
      ...(ids.length === 0
        ? {
            groups: groups.map((g) => ({
              ...(g.host !== undefined ? { host: g.host } : {}),
              ...(g.paths !== undefined ? { paths: g.paths } : {}),
              ...(g.tags !== undefined ? { tags: g.tags } : {}),
              keep: g.keep.map((k) => ({ id: hex(k.snapshot.id), time: k.snapshot.snapshot.time, reasons: k.reasons })),
              remove: g.remove.map((r) => ({ id: hex(r.id), time: r.snapshot.time })),
            })),
          }
        : {}),
      prune: pruned,
    };
    io.stdout.write(JSON.stringify(json) + '\n');
  } else if (!flags.quiet) {
    for (const g of groups) {
      const what = [g.host !== undefined ? `host ${g.host}` : '', g.paths !== undefined ? `paths ${g.paths.join(' ')}` : '', g.tags !== undefined ? `tags [${g.tags.join(',')}]` : ''].filter((x) => x);
      io.stderr.write(`${what.length > 0 ? what.join(', ') : 'all snapshots'}: keeping ${g.keep.length}, ${flags['dry-run'] ? 'would remove' : 'removing'} ${g.remove.length}\n`);
      for (const k of g.keep) io.stderr.write(`  keep   ${hex(k.snapshot.id).slice(0, 8)} (${k.snapshot.snapshot.time}): ${k.reasons.join(', ')}\n`);
    }
    for (const s of remove) io.stderr.write(`${flags['dry-run'] ? 'would remove' : 'removed'} snapshot ${hex(s.id).slice(0, 8)}${s.time ? ` (${s.time})` : ''}\n`);
    if (pruned) printPrune(io, pruned, false);
  }
  return 0;
}

function printPrune(io: Io, r: PruneResult, dry: boolean): void {
  io.stderr.write(`${dry ? 'would delete' : 'deleted'} ${r.packsDeleted} packs, ${dry ? 'would repack' : 'repacked'} ${r.packsRepacked}, ${fmtBytes(r.bytesFreed)} ${dry ? 'to free' : 'freed'}\n`);
  if (r.youngPacksKept > 0) io.stderr.write(`kept ${r.youngPacksKept} unindexed pack(s) younger than the lock expiry (a backup may be writing them)\n`);
  if (r.missingPacksDropped > 0) io.stderr.write(`${dry ? 'would drop' : 'dropped'} ${r.missingPacksDropped} missing pack(s) from the index (no snapshot needed them)\n`);
  if (r.partialsRemoved > 0) io.stderr.write(`removed ${r.partialsRemoved} partial upload(s) left by interrupted writes\n`);
}

type PruneLimitFlags = { 'max-unused'?: string; 'max-repack-size'?: string };

/**
 * restic's `--max-unused LIMIT` (`N%` of the repository's data, a size such as 500M, or
 * `unlimited`) and `--max-repack-size SIZE`, as PruneOptions; without --max-unused every
 * pack more than 10% unused is repacked (Coffer's default).
 */
function pruneLimits(flags: PruneLimitFlags): Pick<PruneOptions, 'maxUnused' | 'maxRepackBytes'> {
  const out: Pick<PruneOptions, 'maxUnused' | 'maxRepackBytes'> = {};
  const v = flags['max-unused'];
  if (v !== undefined) {
    const pct = /^(\d{1,3}(?:\.\d+)?)\s*%$/.exec(v.trim());
    const bytes = pct ? undefined : parseByteSize(v);
    if (v.trim() === 'unlimited') out.maxUnused = 'unlimited';
    else if (pct && Number(pct[1]) <= 100) out.maxUnused = { percent: Number(pct[1]) };
    else if (bytes !== undefined) out.maxUnused = { bytes };
    else throw new UsageError(`--max-unused takes a percentage (5%), a size (500M) or 'unlimited', not '${v}'`);
  }
  const r = flags['max-repack-size'];
  if (r !== undefined) {
    const bytes = parseByteSize(r);
    if (bytes === undefined || bytes === 0) throw new UsageError(`--max-repack-size takes a size above 0 such as 500M or 2G, not '${r}'`);
    out.maxRepackBytes = bytes;
  }
  return out;
}

/** `coffer prune [--dry-run] [--max-unused LIMIT] [--max-repack-size SIZE]`. */
export async function pruneCmd(flags: GlobalFlags & PruneLimitFlags & { 'dry-run'?: boolean }, io: Io): Promise<number> {
  const limits = pruneLimits(flags);
  const { prune } = await import('@coffer/backup/prune');
  const repo = await openRepo(flags, io);
  const bar = new ProgressBar(io, !flags.json && !flags.quiet);
  const r = await prune(repo, { ...limits, dryRun: flags['dry-run'] === true, onProgress: (p) => bar.status(`prune: ${p.stage}`, p.done, p.total) }).finally(() => bar.done());
  if (flags.json) io.stdout.write(JSON.stringify(r) + '\n');
  else if (!flags.quiet) printPrune(io, r, flags['dry-run'] === true);
  return 0;
}

/** `coffer repair index [--read-all]`: rebuilds the index from the packs' trailers. */
export async function repairIndexCmd(flags: GlobalFlags & { 'read-all'?: boolean }, io: Io): Promise<number> {
  const { repairIndex } = await import('@coffer/backup/repair');
  const repo = await openRepo(flags, io);
  const bar = new ProgressBar(io, !flags.json && !flags.quiet);
  const r = await repairIndex(repo, { readAll: flags['read-all'] === true, onProgress: (d, t) => bar.update(d, t, d, t) });
  bar.done();
  if (flags.json) io.stdout.write(JSON.stringify(r) + '\n');
  else {
    for (const u of r.unreadablePacks) {
      if (u.keptBlobs) io.stderr.write(`coffer: warning: ${u.name} can't be read whole (${u.message}); ${u.keptBlobs} of its ${u.indexedBlobs} indexed blob(s) still read and stay indexed\n`);
      else io.stderr.write(`coffer: warning: ${u.name} can't be read and is not indexed: ${u.message}\n`);
    }
    if (!flags.quiet) {
      io.stderr.write(`indexed ${r.blobs} blobs in ${r.packs} packs (${r.packsRead} read from their trailers); replaced ${r.indexesReplaced} index object(s)${r.missingPacksDropped > 0 ? `; ${r.missingPacksDropped} pack(s) the old index named are gone` : ''}\n`);
    }
  }
  return r.unreadablePacks.length > 0 ? ExitCode.Corrupt : ExitCode.Ok;
}

/** `coffer repair packs ID…`: salvages damaged packs (repair.ts repairPacks). */
export async function repairPacksCmd(flags: GlobalFlags, ids: string[], io: Io): Promise<number> {
  if (ids.length === 0) throw new UsageError('repair packs: name the damaged packs (their IDs, as `coffer check --read-data` reports them)');
  const { repairPacks } = await import('@coffer/backup/repair');
  const repo = await openRepo(flags, io);
  const bar = new ProgressBar(io, !flags.json && !flags.quiet);
  const r = await repairPacks(repo, ids, { onProgress: (d, t) => bar.update(d, t, d, t) });
  bar.done();
  if (flags.json) io.stdout.write(JSON.stringify(r) + '\n');
  else {
    for (const l of r.lost.slice(0, 20)) io.stderr.write(`coffer: warning: blob ${l.id.slice(0, 16)} of ${l.pack} is lost: ${l.message}\n`);
    if (r.lost.length > 20) io.stderr.write(`coffer: warning: and ${r.lost.length - 20} more blobs lost\n`);
    if (!flags.quiet) {
      io.stderr.write(`repaired ${r.packs.length} pack(s): ${r.salvaged} blob(s) read intact and written to new packs, ${r.elsewhere} had a copy elsewhere, ${r.lost.length} lost; the damaged packs are deleted\n`);
      if (r.lost.length > 0) io.stderr.write('run `coffer repair snapshots` to rewrite the snapshots without the files whose data is lost\n');
    }
  }
  return r.lost.length > 0 ? ExitCode.Corrupt : ExitCode.Ok;
}

/** `coffer repair snapshots [--forget] [--dry-run]`. */
export async function repairSnapshotsCmd(flags: GlobalFlags & { forget?: boolean; 'dry-run'?: boolean }, io: Io): Promise<number> {
  const { repairSnapshots } = await import('@coffer/backup/repair');
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
