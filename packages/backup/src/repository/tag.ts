/**
 * `coffer tag` (as restic's): changes the tags of snapshots. A snapshot is sealed and
 * never rewritten under its name (spec §10), so each changed snapshot is written again
 * with the new tags under a new random ID — same tree, time, host, paths and stats, and
 * `original` set to the first snapshot of the line (its own `original`, else its ID, as
 * restic records it) — and only once that is synced is the old one deleted. A crash
 * between the two leaves both (the same files under two tag sets), never neither.
 */
import { ObjectKind } from '../crypto/sealed-object.js';
import { CofferError } from '../errors.js';
import { hex, snapshotName } from './blob.js';
import { RepositoryLock } from './lock.js';
import type { Repository, SnapshotRecord } from './repository.js';
import { decodeSnapshot, encodeSnapshot, type Snapshot } from './snapshot.js';

/** `set` replaces every tag (an empty list removes them all); otherwise `remove` goes, then `add` is added. */
export type TagChange = { set: readonly string[] } | { add?: readonly string[]; remove?: readonly string[] };

export interface Retagged {
  /** The old snapshot's hex ID (deleted). */
  from: string;
  /** The new snapshot's hex ID. */
  to: string;
  tags: string[];
}

/** The tags a snapshot gets; null when they would not change. */
function changedTags(tags: readonly string[], change: TagChange): string[] | null {
  let next: string[];
  if ('set' in change) next = [...new Set(change.set)];
  else {
    const remove = new Set(change.remove ?? []);
    next = tags.filter((t) => !remove.has(t));
    for (const t of change.add ?? []) if (!next.includes(t)) next.push(t);
  }
  return next.length === tags.length && next.every((t, i) => t === tags[i]) ? null : next;
}

/**
 * Changes the tags of `snapshots` under the exclusive lock (a prune must not see the old
 * snapshot gone before the new one is there). Each is read again under the lock: one
 * removed meanwhile (a forget on another device) is an error, nothing else changed.
 * Returns the snapshots changed; those whose tags would not change are left as they are.
 */
export async function tagSnapshots(repo: Repository, snapshots: readonly SnapshotRecord[], change: TagChange): Promise<Retagged[]> {
  const lock = await RepositoryLock.acquire(repo, true);
  try {
    const plan: Array<{ id: Buffer; snap: Snapshot; tags: string[] }> = [];
    for (const s of snapshots) {
      const name = snapshotName(s.id);
      let snap: Snapshot;
      try {
        snap = decodeSnapshot(await repo.readObject(name, ObjectKind.Snapshot), name);
      } catch (e) {
        if (CofferError.is(e, 'missing-object')) throw new CofferError('not-found', `snapshot ${hex(s.id).slice(0, 8)} was removed meanwhile (by another device?); nothing was changed`);
        throw e;
      }
      const tags = changedTags(snap.tags, change);
      if (tags) plan.push({ id: s.id, snap, tags });
    }
    const out: Retagged[] = [];
    for (const { id, snap, tags } of plan) {
      const next: Snapshot = { ...snap, tags, original: snap.original ?? hex(id) };
      await lock.ensureHeld();
      const to = await repo.writeObject(ObjectKind.Snapshot, encodeSnapshot(next, repo.config.padding), snapshotName);
      await repo.backend.sync();
      await lock.ensureHeld();
      await repo.backend.delete(snapshotName(id));
      out.push({ from: hex(id), to: hex(to), tags });
    }
    if (out.length > 0) await repo.backend.sync();
    return out;
  } finally {
    await lock.release().catch(() => {});
  }
}
