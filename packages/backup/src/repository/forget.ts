/**
 * Retention policies for `coffer forget` (restic's semantics): for each `keep-X N`, the
 * newest snapshot in each of the N most recent X-periods that have one is kept; a
 * snapshot kept by any rule stays. Snapshots are grouped by host and paths, so one
 * machine's policy never removes another's snapshots.
 */
import { CofferError } from '../errors.js';
import { snapshotName } from './blob.js';
import { RepositoryLock } from './lock.js';
import type { Repository, SnapshotRecord } from './repository.js';

export interface RetentionPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
}

export function isEmptyPolicy(p: RetentionPolicy): boolean {
  return Object.values(p).every((v) => v === undefined);
}

const periods: Array<[keyof RetentionPolicy, (d: Date) => string]> = [
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

/** Splits snapshots into those the policy keeps and those it removes. */
export function applyPolicy(all: SnapshotRecord[], policy: RetentionPolicy): { keep: SnapshotRecord[]; remove: SnapshotRecord[] } {
  for (const [k, v] of Object.entries(policy)) {
    if (v !== undefined && (!Number.isInteger(v) || v < 0)) throw new CofferError('invalid-argument', `--keep-${k} needs a whole number ≥ 0`);
  }
  if (isEmptyPolicy(policy)) throw new CofferError('invalid-argument', 'no retention policy given (e.g. --keep-last 7 --keep-daily 14); refusing to remove everything');
  const groups = new Map<string, SnapshotRecord[]>();
  for (const s of all) {
    const g = `${s.snapshot.hostname}\0${[...s.snapshot.paths].sort().join('\0')}`;
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g)!.push(s);
  }
  const kept = new Set<SnapshotRecord>();
  for (const list of groups.values()) {
    const newestFirst = [...list].sort((a, b) => Date.parse(b.snapshot.time) - Date.parse(a.snapshot.time));
    newestFirst.slice(0, policy.last ?? 0).forEach((s) => kept.add(s));
    for (const [name, bucket] of periods) {
      let n = policy[name] ?? 0;
      let lastBucket: string | undefined;
      for (const s of newestFirst) {
        if (n <= 0) break;
        const b = bucket(new Date(s.snapshot.time));
        if (b !== lastBucket) {
          kept.add(s);
          lastBucket = b;
          n--;
        }
      }
    }
  }
  return { keep: all.filter((s) => kept.has(s)), remove: all.filter((s) => !kept.has(s)) };
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

