/**
 * Retention policies for `coffer forget` (restic's semantics): for each `keep-X N`, the
 * newest snapshot in each of the N most recent X-periods that have one is kept; a
 * snapshot kept by any rule stays. Snapshots are grouped (by host and paths unless
 * `groupBy` says otherwise), so one machine's policy never removes another's snapshots.
 *
 * `within` keeps every snapshot newer than the group's newest minus the duration;
 * `withinHourly` … `withinYearly` keep the newest snapshot of each period within such a
 * duration; `tags` keeps snapshots carrying every tag of any one listed set. Durations
 * count back from the group's newest snapshot that is not in the future, not from now
 * (as restic), so a machine that stopped backing up does not lose its last snapshots to
 * the calendar, nor one with a wrong clock everything else.
 */
import { CofferError } from '../errors.js';
import { snapshotName } from './blob.js';
import { RepositoryLock } from './lock.js';
import type { Repository, SnapshotRecord } from './repository.js';

/** A calendar duration, restic's `1y2m3d4h` (years, months, days, hours). */
export interface Duration {
  years: number;
  months: number;
  days: number;
  hours: number;
}

export interface RetentionPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  within?: Duration;
  withinHourly?: Duration;
  withinDaily?: Duration;
  withinWeekly?: Duration;
  withinMonthly?: Duration;
  withinYearly?: Duration;
  /** Keep snapshots that have every tag of at least one of these sets. */
  tags?: string[][];
}

/** How snapshots are grouped before the policy applies to each group (default host and paths). */
export interface GroupBy {
  host: boolean;
  paths: boolean;
  tags: boolean;
}

export const DEFAULT_GROUP_BY: GroupBy = { host: true, paths: true, tags: false };

/** `--group-by host,paths,tags` (any subset, '' for one group of everything). */
export function parseGroupBy(s: string): GroupBy {
  const g: GroupBy = { host: false, paths: false, tags: false };
  for (const part of s.split(',').map((x) => x.trim()).filter((x) => x !== '')) {
    if (part === 'host' || part === 'paths' || part === 'tags') g[part] = true;
    else throw new CofferError('invalid-argument', `--group-by: unknown field '${part}' (use host, paths, tags, separated by commas, or '' for no grouping)`);
  }
  return g;
}

/**
 * Parses restic's duration syntax: one or more `<number><unit>` with units y (years),
 * m (months), d (days), h (hours), e.g. `1y2m3d4h`, `30d`, `12h`.
 * @throws CofferError('invalid-argument') for anything else.
 */
export function parseDuration(s: string): Duration {
  const d: Duration = { years: 0, months: 0, days: 0, hours: 0 };
  const bad = () => new CofferError('invalid-argument', `'${s}' is not a duration: use numbers with units y, m, d, h (e.g. 1y2m3d4h, 30d, 12h)`);
  if (!/^(\d+[ymdh])+$/.test(s)) throw bad();
  const seen = new Set<string>();
  for (const [, n, u] of s.matchAll(/(\d+)([ymdh])/g)) {
    if (seen.has(u!)) throw bad();
    seen.add(u!);
    const v = Number(n);
    if (!Number.isSafeInteger(v) || v > 1_000_000) throw bad();
    if (u === 'y') d.years = v;
    else if (u === 'm') d.months = v;
    else if (u === 'd') d.days = v;
    else d.hours = v;
  }
  return d;
}

export function formatDuration(d: Duration): string {
  const s = `${d.years ? `${d.years}y` : ''}${d.months ? `${d.months}m` : ''}${d.days ? `${d.days}d` : ''}${d.hours ? `${d.hours}h` : ''}`;
  return s === '' ? '0h' : s;
}

/** `t` minus `d`, on the UTC calendar (month ends roll over as Go's AddDate, which restic uses). */
export function subtractDuration(t: Date, d: Duration): Date {
  const r = new Date(t.getTime());
  r.setUTCFullYear(r.getUTCFullYear() - d.years, r.getUTCMonth() - d.months, r.getUTCDate() - d.days);
  return new Date(r.getTime() - d.hours * 3_600_000);
}

/**
 * True when no rule is given: such a "policy" would remove everything. A count of 0
 * (`--keep-last 0`) and a duration of 0 (`--keep-within 0d`) keep nothing, so they are
 * no rule either (restic reads 0 as "not set"), nor is an empty tag list.
 */
export function isEmptyPolicy(p: RetentionPolicy): boolean {
  return Object.entries(p).every(([k, v]) => {
    if (v === undefined || v === 0) return true;
    if (k === 'tags') return (v as string[][]).every((set) => set.length === 0);
    if (typeof v === 'object') return Object.values(v as Duration).every((n) => n === 0);
    return false;
  });
}

type Period = 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly';
const periods: Array<[Period, (d: Date) => string]> = [
  ['hourly', (d) => d.toISOString().slice(0, 13)],
  ['daily', (d) => d.toISOString().slice(0, 10)],
  ['weekly', (d) => {
    // ISO week: the Thursday of this week decides the year.
    const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
    const day = t.getUTCDay() || 7;
    t.setUTCDate(t.getUTCDate() + 4 - day);
    const yearStart = Date.UTC(t.getUTCFullYear(), 0, 1);
    return `${t.getUTCFullYear()}-W${Math.ceil(((t.getTime() - yearStart) / 86400000 + 1) / 7)}`;
  }],
  ['monthly', (d) => d.toISOString().slice(0, 7)],
  ['yearly', (d) => d.toISOString().slice(0, 4)],
];


const withinKey: Record<Period, keyof RetentionPolicy> = {
  hourly: 'withinHourly',
  daily: 'withinDaily',
  weekly: 'withinWeekly',
  monthly: 'withinMonthly',
  yearly: 'withinYearly',
};

/** One group's outcome: which snapshots stay (and why) and which go. */
export interface PolicyGroup {
  host?: string;
  paths?: string[];
  tags?: string[];
  keep: Array<{ snapshot: SnapshotRecord; reasons: string[] }>;
  remove: SnapshotRecord[];
}

export interface PolicyResult {
  keep: SnapshotRecord[];
  remove: SnapshotRecord[];
  groups: PolicyGroup[];
}

export interface SnapshotGroup {
  /** The group's key: the fields grouped by (sorted paths and tags). */
  host?: string;
  paths?: string[];
  tags?: string[];
  /** Its snapshots, in the order given. */
  list: SnapshotRecord[];
}

/** Groups snapshots by the fields of `groupBy` (restic's --group-by), groups in order of their first snapshot. */
export function groupSnapshots(all: readonly SnapshotRecord[], groupBy: GroupBy): SnapshotGroup[] {
  const groups = new Map<string, SnapshotGroup>();
  for (const s of all) {
    const paths = [...s.snapshot.paths].sort();
    const tags = [...new Set(s.snapshot.tags)].sort();
    const g = JSON.stringify([groupBy.host ? s.snapshot.hostname : null, groupBy.paths ? paths : null, groupBy.tags ? tags : null]);
    if (!groups.has(g)) {
      groups.set(g, {
        ...(groupBy.host ? { host: s.snapshot.hostname } : {}),
        ...(groupBy.paths ? { paths } : {}),
        ...(groupBy.tags ? { tags } : {}),
        list: [],
      });
    }
    groups.get(g)!.list.push(s);
  }
  return [...groups.values()];
}

/** Splits snapshots into those the policy keeps and those it removes, group by group. */
export function applyPolicy(all: SnapshotRecord[], policy: RetentionPolicy, groupBy: GroupBy = DEFAULT_GROUP_BY, now: number = Date.now()): PolicyResult {
  for (const k of ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const) {
    const v = policy[k];
    if (v !== undefined && (!Number.isInteger(v) || v < 0)) throw new CofferError('invalid-argument', `--keep-${k} needs a whole number ≥ 0`);
  }
  if (isEmptyPolicy(policy)) throw new CofferError('invalid-argument', 'no retention policy given (e.g. --keep-last 7 --keep-daily 14); refusing to remove everything');
  const groups = groupSnapshots(all, groupBy);
  const reasons = new Map<SnapshotRecord, string[]>();
  const keep = (s: SnapshotRecord, why: string) => {
    const r = reasons.get(s);
    if (r) r.push(why);
    else reasons.set(s, [why]);
  };
  const out: PolicyGroup[] = [];
  for (const g of groups.values()) {
    // Newest first; equal times by ID, as "latest" (spec §10).
    const newestFirst = [...g.list].sort((a, b) => Date.parse(b.snapshot.time) - Date.parse(a.snapshot.time) || Buffer.compare(b.id, a.id));
    // Durations count back from the newest snapshot that isn't in the future (restic's
    // findLatestTimestamp): one made with a wrong clock must not push the others out.
    // With none in the past, every snapshot is within.
    const past = newestFirst.find((s) => Date.parse(s.snapshot.time) < now);
    const latest = past ? new Date(past.snapshot.time) : undefined;
    const sinceFor = (d: Duration) => (latest ? subtractDuration(latest, d).getTime() : -Infinity);
    newestFirst.slice(0, policy.last ?? 0).forEach((s) => keep(s, 'last snapshot'));
    for (const [name, bucket] of periods) {
      let n = policy[name] ?? 0;
      let lastBucket: string | undefined;
      for (const s of newestFirst) {
        if (n <= 0) break;
        const b = bucket(new Date(s.snapshot.time));
        if (b !== lastBucket) {
          keep(s, `${name} snapshot`);
          lastBucket = b;
          n--;
        }
      }
      const within = policy[withinKey[name]] as Duration | undefined;
      if (within) {
        const since = sinceFor(within);
        let lastWithin: string | undefined;
        for (const s of newestFirst) {
          if (Date.parse(s.snapshot.time) <= since) break;
          const b = bucket(new Date(s.snapshot.time));
          if (b !== lastWithin) {
            keep(s, `${name} within ${formatDuration(within)}`);
            lastWithin = b;
          }
        }
      }
    }
    if (policy.within) {
      const since = sinceFor(policy.within);
      for (const s of newestFirst) if (Date.parse(s.snapshot.time) > since) keep(s, `within ${formatDuration(policy.within)}`);
    }
    if (policy.tags?.length) {
      for (const s of newestFirst) {
        const set = policy.tags.find((ts) => ts.length > 0 && ts.every((t) => s.snapshot.tags.includes(t)));
        if (set) keep(s, `has tag ${set.join(',')}`);
      }
    }
    out.push({
      ...(g.host !== undefined ? { host: g.host } : {}),
      ...(g.paths !== undefined ? { paths: g.paths } : {}),
      ...(g.tags !== undefined ? { tags: g.tags } : {}),
      keep: g.list.filter((s) => reasons.has(s)).map((s) => ({ snapshot: s, reasons: reasons.get(s)! })),
      remove: g.list.filter((s) => !reasons.has(s)),
    });
  }
  const kept = all.filter((s) => reasons.has(s));
  // Only tag rules can keep nothing at all (every other rule keeps each group's newest): a
  // tag no snapshot has (a typo) would remove every snapshot. Refused; forgetting every
  // snapshot takes their IDs.
  if (kept.length === 0 && all.length > 0) {
    throw new CofferError('invalid-argument', `the policy keeps no snapshot (${policy.tags?.length ? `no snapshot has ${policy.tags.map((t) => t.join(',')).join(' or ')}` : 'no rule keeps one'}); refusing to remove all ${all.length}: give a count rule (--keep-last 1) as well, or the IDs of the snapshots to forget`);
  }
  return { keep: kept, remove: all.filter((s) => !reasons.has(s)), groups: out };
}

/**
 * Removes snapshot objects, under the exclusive lock (a prune or another forget must not
 * run meanwhile). Only IDs are needed: a snapshot that can't be decrypted (a foreign or
 * damaged one) can be forgotten. Their data stays until `prune`.
 */
export async function forgetSnapshots(repo: Repository, remove: ReadonlyArray<{ id: Buffer }>): Promise<void> {
  const lock = await RepositoryLock.acquire(repo, true);
  try {
    await lock.ensureHeld();
    for (const s of remove) await repo.backend.delete(snapshotName(s.id));
    await repo.backend.sync();
  } finally {
    await lock.release().catch(() => {});
  }
}

