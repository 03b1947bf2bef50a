/**
 * `coffer prune`: removes data no snapshot needs, under the exclusive lock (spec §12.1).
 *
 * The index is a claim; the pack listing is what is there. Prune keeps, for every blob
 * a snapshot needs, a copy in a pack it has seen in the listing with the indexed size,
 * and never deletes the last such copy. It refuses, deleting nothing, when:
 *   - a snapshot can't be read (it can't know what that snapshot needs);
 *   - an index can't be read (`coffer repair index`);
 *   - a needed blob has no copy in a stored pack (its pack is missing, or it is in no
 *     index): `coffer repair index`, then `coffer repair snapshots`;
 *   - a pack older than the lock expiry is in no index and holds blobs no index
 *     describes: it may be what a lost index described (`coffer repair index`).
 * Unindexed packs younger than the lock expiry are left alone: a backup may be writing
 * them. Index entries of packs that are gone are dropped when nothing needs them.
 *
 * Order, so that a crash at any point leaves every snapshot restorable and the next
 * prune able to finish (readers check index claims against the listing):
 *   0. remove stale partial writes;
 *   1. delete packs holding nothing needed (frees space before anything is written);
 *   2. copy the still-used blobs of mostly-unused packs into new packs, and sync;
 *   3. write a new index describing every pack that stays, and sync;
 *   4. delete the packs just repacked, and sync;
 *   5. delete the old index objects, and sync.
 */
import { ObjectKind, decodeHeader } from '../crypto/sealed-object.js';
import { CofferError } from '../errors.js';
import type { ObjectInfo } from '../storage/backend.js';
import { BlobType, hex, idFromName, idKey, indexName, packName, validObjects } from './blob.js';
import { BlobWriter } from './blob-writer.js';
import { decodeIndex, encodeIndex, type IndexedPack } from './index-file.js';
import { LOCK_EXPIRY_MS, RepositoryLock } from './lock.js';
import { decodePackTrailer } from './pack.js';
import type { Repository } from './repository.js';
import { decodeSnapshot } from './snapshot.js';

export interface PruneResult {
  packsDeleted: number;
  packsRepacked: number;
  bytesFreed: number;
  blobsKept: number;
  /** Unindexed packs left alone because they are younger than the lock expiry. */
  youngPacksKept: number;
  /** Index entries dropped because their pack is gone (and nothing needed only it). */
  missingPacksDropped: number;
  /** Partial writes (interrupted uploads) removed. */
  partialsRemoved: number;
}

export interface PruneProgress {
  stage: 'reading snapshots' | 'repacking' | 'deleting';
  done: number;
  total: number;
}

export interface PruneOptions {
  /**
   * Which partly used packs are repacked. A number: every pack of which more than this
   * fraction is unused (default 0.1). restic's `--max-unused`: the unused bytes left in
   * the repository after prune may be at most `percent` % of all its data, or `bytes`,
   * or any amount (`unlimited`: no pack is repacked, only wholly unused ones deleted);
   * packs are repacked most-unused first until that holds.
   */
  maxUnused?: number | { percent: number } | { bytes: number } | 'unlimited';
  /** restic's `--max-repack-size`: repack packs of at most this many bytes in all (the most unused first). */
  maxRepackBytes?: number;
  dryRun?: boolean;
  /** The clock (ms), for the age of unindexed packs; tests move it forward. */
  now?: () => number;
  /** Progress for a display: which stage, and how far through it (snapshots read, packs repacked, objects deleted). */
  onProgress?: (p: PruneProgress) => void;
  /** Test hook: called between the steps above, to simulate a crash. */
  onStep?: (step: 'dropped' | 'repacked' | 'index-written' | 'repacked-deleted' | 'old-index-deleted') => Promise<void> | void;
}

export async function prune(repo: Repository, opts: PruneOptions = {}): Promise<PruneResult> {
  const lock = await RepositoryLock.acquire(repo, true);
  try {
    return await runPrune(repo, lock, opts);
  } finally {
    await lock.release().catch(() => {});
  }
}

const refuse = (what: string[], fix: string) => {
  const more = what.length > 5 ? `; and ${what.length - 5} more` : '';
  return new CofferError('needs-repair', `prune refused, nothing was deleted: ${what.slice(0, 5).join('; ')}${more}. ${fix}`);
};

async function runPrune(repo: Repository, lock: RepositoryLock, opts: PruneOptions): Promise<PruneResult> {
  const maxUnused = opts.maxUnused ?? 0.1;
  if (typeof maxUnused === 'number' && !(maxUnused >= 0 && maxUnused <= 1)) throw new CofferError('invalid-argument', `maxUnused: a fraction from 0 to 1, not ${maxUnused}`);
  const now = opts.now?.() ?? Date.now();
  repo.invalidateIndex();

  // What the indexes claim. Every index must be readable: one that isn't may describe
  // the only copy of something.
  const indexNames = validObjects(await repo.backend.list('index/')).map((o) => o.name);
  const packs = new Map<string, IndexedPack>();
  const unreadable: string[] = [];
  for (const name of indexNames) {
    try {
      for (const p of decodeIndex(await repo.readObject(name, ObjectKind.Index), name)) packs.set(idKey(p.packId), p);
    } catch (e) {
      if (CofferError.is(e, 'missing-object')) throw new CofferError('locked', `${name} vanished while prune was reading it: is another prune running?`);
      unreadable.push(`${name}: ${(e as Error).message}`);
    }
  }
  if (unreadable.length > 0) throw refuse(unreadable, 'Run `coffer repair index` to rebuild the index from the packs.');

  // What is there. A pack counts as a copy only if it is listed with the indexed size.
  const stored = await repo.storedPacks();
  const state = (p: IndexedPack): 'ok' | 'missing' | 'damaged' => {
    const o = stored.get(packName(p.packId));
    return !o ? 'missing' : o.size === p.sealedLength ? 'ok' : 'damaged';
  };

  // What the snapshots need (blob → first snapshot needing it, for messages). Every
  // snapshot must be readable: prune can't keep what it can't see is needed.
  const used = new Map<string, string>();
  const snapshotObjects = validObjects(await repo.backend.list('snapshots/'));
  let snapshotsRead = 0;
  for (const { name } of snapshotObjects) {
    opts.onProgress?.({ stage: 'reading snapshots', done: snapshotsRead++, total: snapshotObjects.length });
    const sid = hex(idFromName(name)!).slice(0, 8);
    let snap;
    try {
      snap = decodeSnapshot(await repo.readObject(name, ObjectKind.Snapshot), name);
    } catch (e) {
      if (CofferError.is(e, 'missing-object')) continue; // forgotten meanwhile
      throw refuse([`snapshot ${sid} can't be read (${(e as Error).message})`], `Remove it with \`coffer forget ${sid}\` if it is not yours, or run \`coffer check\`.`);
    }
    const need = (id: string) => {
      const k = idKey(Buffer.from(id, 'hex'));
      if (!used.has(k)) used.set(k, sid);
    };
    for (const t of snap.tree) need(t);
    try {
      for await (const e of repo.tree(snap)) if (e.type === 'file') for (const c of e.chunks) need(c);
    } catch (e) {
      throw refuse([`the file list of snapshot ${sid} can't be read (${(e as Error).message})`], 'Run `coffer repair index`, then `coffer repair snapshots`.');
    }
  }

  // One home per needed blob: the first pack that has it and is stored intact.
  const home = new Map<string, string>();
  const indexedAnywhere = new Set<string>();
  const inIntactPack = new Set<string>();
  for (const [pk, p] of packs) {
    const ok = state(p) === 'ok';
    for (const b of p.blobs) {
      const k = idKey(b.id);
      indexedAnywhere.add(k);
      if (ok) inIntactPack.add(k);
      if (ok && used.has(k) && !home.has(k)) home.set(k, pk);
    }
  }
  const lost: string[] = [];
  for (const [k, sid] of used) {
    if (home.has(k)) continue;
    const where = indexedAnywhere.has(k) ? 'only in packs that are missing or damaged' : 'in no index';
    lost.push(`snapshot ${sid} needs blob ${hex(Buffer.from(k, 'latin1')).slice(0, 16)}, which is ${where}`);
  }
  if (lost.length > 0) {
    throw refuse(lost, 'Run `coffer check`; `coffer repair index` finds data in packs no index names, and `coffer repair snapshots` removes what stays lost.');
  }

  const keep: IndexedPack[] = [];
  const repack: IndexedPack[] = [];
  const drop: IndexedPack[] = [];
  /** Partly used packs: repacked or kept, as the limits say. */
  const partly: Array<{ p: IndexedPack; live: IndexedPack['blobs']; total: number; unused: number }> = [];
  let liveAll = 0;
  let missingPacksDropped = 0;
  for (const [pk, p] of packs) {
    const s = state(p);
    if (s === 'missing') {
      missingPacksDropped++;
      continue;
    }
    if (s === 'damaged') {
      keep.push(p); // not ours to fix: check reports it; its needed blobs have homes elsewhere
      continue;
    }
    const live = p.blobs.filter((b) => home.get(idKey(b.id)) === pk);
    const total = p.blobs.reduce((a, b) => a + b.storedLength, 0);
    const liveBytes = live.reduce((a, b) => a + b.storedLength, 0);
    liveAll += liveBytes;
    if (live.length === 0) drop.push(p);
    else if (liveBytes < total) partly.push({ p, live, total, unused: total - liveBytes });
    else keep.push({ ...p, blobs: live });
  }
  // Most unused first (by share, then by bytes): the repack that frees the most per byte copied.
  partly.sort((a, b) => b.unused / b.total - a.unused / a.total || b.unused - a.unused);
  let unusedLeft = partly.reduce((a, x) => a + x.unused, 0);
  const allowed =
    typeof maxUnused === 'number' ? undefined : maxUnused === 'unlimited' ? Infinity : 'bytes' in maxUnused ? maxUnused.bytes : maxUnused.percent >= 100 ? Infinity : (liveAll * maxUnused.percent) / (100 - maxUnused.percent);
  let repackBudget = opts.maxRepackBytes ?? Infinity;
  for (const x of partly) {
    const wanted = allowed === undefined ? x.unused > (maxUnused as number) * x.total : unusedLeft > allowed;
    if (wanted && x.p.sealedLength <= repackBudget) {
      repack.push(x.p);
      repackBudget -= x.p.sealedLength;
      unusedLeft -= x.unused;
    } else keep.push({ ...x.p, blobs: x.live });
  }

  // Packs no index names. Young ones may be a running backup's. Old ones are deleted
  // only when every blob in them is indexed in an intact stored pack (a duplicate, or
  // what a crashed prune copied); anything else may be the data of a lost index (or
  // the only copy, behind an old index a server replays).
  const indexed = new Set([...packs.values()].map((p) => packName(p.packId)));
  const duplicates: ObjectInfo[] = [];
  const unknown: string[] = [];
  let youngPacksKept = 0;
  for (const o of stored.values()) {
    if (indexed.has(o.name)) continue;
    if (o.mtime === undefined || o.mtime > now - LOCK_EXPIRY_MS) {
      youngPacksKept++;
      continue;
    }
    let entries;
    try {
      // Opened under the ID its header claims: a pack stored under another name is
      // still our data, and still deletable only if it is a duplicate.
      const sealed = await repo.backend.get(o.name);
      entries = decodePackTrailer(repo.openSealed(o.name, ObjectKind.Pack, decodeHeader(sealed).id, sealed), o.name);
    } catch (e) {
      unknown.push(`${o.name} is in no index and can't be read (${(e as Error).message}); if it is not yours, delete it by hand`);
      continue;
    }
    if (entries.every((b) => inIntactPack.has(idKey(b.id)))) duplicates.push(o);
    else unknown.push(`${o.name} is in no index and holds blobs no index describes`);
  }
  if (unknown.length > 0) {
    throw refuse(unknown, 'It may hold what a lost index described: run `coffer repair index` to index it (a later prune removes what no snapshot needs).');
  }

  const result: PruneResult = {
    packsDeleted: drop.length + duplicates.length,
    packsRepacked: repack.length,
    bytesFreed: [...drop, ...repack].reduce((a, p) => a + p.sealedLength, 0) + duplicates.reduce((a, o) => a + o.size, 0),
    blobsKept: home.size,
    youngPacksKept,
    missingPacksDropped,
    partialsRemoved: 0,
  };
  if (opts.dryRun) return result;
  // 0. Partial writes are never objects: always safe to remove, and they free space.
  result.partialsRemoved = (await repo.backend.removeStalePartials?.(now - LOCK_EXPIRY_MS)) ?? 0;
  if (repack.length === 0 && drop.length === 0 && duplicates.length === 0 && missingPacksDropped === 0 && indexNames.length <= 1) return result;

  // 1. Packs holding nothing needed go first, so a full disk gets room. The old indexes
  // still name them until step 5: readers skip copies in packs that are not listed.
  await lock.ensureHeld();
  const deletions = drop.length + duplicates.length + repack.length + indexNames.length;
  let deleted = 0;
  const deletedOne = () => opts.onProgress?.({ stage: 'deleting', done: ++deleted, total: deletions });
  for (const p of drop) {
    await repo.backend.delete(packName(p.packId));
    deletedOne();
  }
  for (const o of duplicates) {
    await repo.backend.delete(o.name);
    deletedOne();
  }
  await repo.backend.sync();
  await opts.onStep?.('dropped');

  // 2. Repack: the new packs' index comes from the writer, written with the others below.
  const keptIds = new Set(keep.flatMap((p) => p.blobs.map((b) => idKey(b.id))));
  const writer = new BlobWriter(repo, (id) => keptIds.has(idKey(id)));
  let repacked = 0;
  let fresh: IndexedPack[];
  try {
    for (const p of repack) {
      opts.onProgress?.({ stage: 'repacking', done: repacked++, total: repack.length });
      const name = packName(p.packId);
      const plain = repo.openSealed(name, ObjectKind.Pack, p.packId, await repo.backend.get(name));
      for (const b of p.blobs) {
        if (home.get(idKey(b.id)) !== idKey(p.packId)) continue;
        const raw = await repo.readBlobFrom(plain, b, name);
        await writer.add(b.type === BlobType.Tree ? BlobType.Tree : BlobType.Data, b.id, raw);
      }
    }
    fresh = await writer.finishPacks();
  } catch (e) {
    // The open pack's partial file goes (a full disk needs its room); left, it stayed
    // until a prune after the lock expiry.
    await writer.abort();
    throw e;
  }
  await repo.backend.sync(); // the new packs durable before the index that names them
  await opts.onStep?.('repacked');

  // 3. The new index, durable before anything it replaces is deleted.
  await lock.ensureHeld();
  await repo.writeObject(ObjectKind.Index, encodeIndex([...keep, ...fresh], repo.config.version === 1 ? 1 : 2, repo.config.padding), indexName);
  await repo.backend.sync();
  await opts.onStep?.('index-written');

  // 4. The repacked packs: their needed blobs are in the new packs now.
  for (const p of repack) {
    await repo.backend.delete(packName(p.packId));
    deletedOne();
  }
  await repo.backend.sync();
  await opts.onStep?.('repacked-deleted');

  // 5. Old indexes last: until now they describe packs that exist or that nothing needs.
  for (const name of indexNames) {
    await repo.backend.delete(name);
    deletedOne();
  }
  await repo.backend.sync();
  await opts.onStep?.('old-index-deleted');
  repo.invalidateIndex();
  return result;
}
