/**
 * `coffer prune`: removes data no snapshot needs. Under the exclusive lock, in an order
 * that keeps every snapshot restorable if the process dies at any point (spec §12.3):
 *   1. copy the still-used blobs of mostly-unused packs into new packs;
 *   2. write a new index describing every pack that stays, and sync;
 *   3. delete the old index objects, and sync;
 *   4. delete packs that no index mentions any more.
 * A crash after 2 leaves two indexes describing existing packs; after 3, unreferenced
 * packs, which the next prune removes.
 */
import { ObjectKind } from '../crypto/sealed-object.js';
import { BlobType, idKey, indexName, packName } from './blob.js';
import { BlobWriter } from './blob-writer.js';
import { decodeIndex, encodeIndex, type IndexedPack } from './index-file.js';
import { RepositoryLock } from './lock.js';
import type { Repository } from './repository.js';

export interface PruneResult {
  packsDeleted: number;
  packsRepacked: number;
  bytesFreed: number;
  blobsKept: number;
}

export interface PruneOptions {
  /** Repack a pack when more than this fraction of it is unused (default 0.1). */
  maxUnused?: number;
  dryRun?: boolean;
  /** Test hook: called between the steps above, to simulate a crash. */
  onStep?: (step: 'repacked' | 'index-written' | 'old-index-deleted') => Promise<void> | void;
}

export async function prune(repo: Repository, opts: PruneOptions = {}): Promise<PruneResult> {
  const lock = await RepositoryLock.acquire(repo, true);
  try {
    return await runPrune(repo, opts);
  } finally {
    await lock.release().catch(() => {});
  }
}

async function runPrune(repo: Repository, opts: PruneOptions): Promise<PruneResult> {
  const maxUnused = opts.maxUnused ?? 0.1;
  repo.invalidateIndex();
  const indexNames = (await repo.backend.list('index/')).map((o) => o.name);
  const packs = new Map<string, IndexedPack>();
  for (const name of indexNames) {
    for (const p of decodeIndex(await repo.readObject(name, ObjectKind.Index), name)) packs.set(idKey(p.packId), p);
  }

  // Which blobs are used by some snapshot? (A snapshot that can't be read aborts the
  // prune: better to keep garbage than to delete what an unreadable snapshot needs.)
  const used = new Set<string>();
  for (const s of await repo.snapshots()) {
    for (const t of s.snapshot.tree) used.add(idKey(Buffer.from(t, 'hex')));
    for await (const e of repo.tree(s.snapshot)) {
      if (e.type === 'file') for (const c of e.chunks) used.add(idKey(Buffer.from(c, 'hex')));
    }
  }

  // One home per used blob: the first pack that has it.
  const home = new Map<string, string>();
  for (const [pk, p] of packs) for (const b of p.blobs) if (used.has(idKey(b.id)) && !home.has(idKey(b.id))) home.set(idKey(b.id), pk);

  const keep: IndexedPack[] = [];
  const repack: IndexedPack[] = [];
  const drop: IndexedPack[] = [];
  for (const [pk, p] of packs) {
    const live = p.blobs.filter((b) => home.get(idKey(b.id)) === pk);
    const total = p.blobs.reduce((a, b) => a + b.storedLength, 0);
    const liveBytes = live.reduce((a, b) => a + b.storedLength, 0);
    if (live.length === 0) drop.push(p);
    else if (total - liveBytes > maxUnused * total) repack.push(p);
    else keep.push({ ...p, blobs: live });
  }
  const stored = await repo.backend.list('data/');
  const indexed = new Set([...packs.values()].map((p) => packName(p.packId)));
  const orphans = stored.filter((o) => !indexed.has(o.name));
  const result: PruneResult = {
    packsDeleted: drop.length + orphans.length,
    packsRepacked: repack.length,
    bytesFreed: [...drop, ...repack].reduce((a, p) => a + p.sealedLength, 0) + orphans.reduce((a, o) => a + o.size, 0),
    blobsKept: home.size,
  };
  if (opts.dryRun || (repack.length === 0 && drop.length === 0 && orphans.length === 0 && indexNames.length <= 1)) return result;

  // 1. Repack: the new packs' index comes from the writer, written with the others below.
  const keptIds = new Set(keep.flatMap((p) => p.blobs.map((b) => idKey(b.id))));
  const writer = new BlobWriter(repo, (id) => keptIds.has(idKey(id)));
  for (const p of repack) {
    const name = packName(p.packId);
    const plain = repo.openSealed(name, ObjectKind.Pack, p.packId, await repo.backend.get(name));
    for (const b of p.blobs) {
      if (home.get(idKey(b.id)) !== idKey(p.packId)) continue;
      const raw = await repo.readBlobFrom(plain, b, name);
      await writer.add(b.type === BlobType.Tree ? BlobType.Tree : BlobType.Data, b.id, raw);
    }
  }
  const fresh = await writer.finishPacks();
  await repo.backend.sync(); // the new packs durable before the index that names them
  await opts.onStep?.('repacked');

  // 2. The new index, durable before anything is deleted.
  await repo.writeObject(ObjectKind.Index, encodeIndex([...keep, ...fresh], repo.config.version === 1 ? 1 : 2, repo.config.padding), indexName);
  await repo.backend.sync();
  await opts.onStep?.('index-written');

  // 3. Old indexes.
  for (const name of indexNames) await repo.backend.delete(name);
  await repo.backend.sync();
  await opts.onStep?.('old-index-deleted');

  // 4. Packs nobody indexes any more.
  for (const p of [...drop, ...repack]) await repo.backend.delete(packName(p.packId));
  for (const o of orphans) await repo.backend.delete(o.name);
  await repo.backend.sync();
  repo.invalidateIndex();
  return result;
}
