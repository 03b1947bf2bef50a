/**
 * `coffer repair index` and `coffer repair snapshots` (spec §12.2): what to do when
 * `check` finds an index lost or damaged, or snapshots whose data is gone.
 *
 * - repairIndex rebuilds the index from the packs themselves: every pack carries a
 *   trailer listing its blobs (spec §7). Packs an intact index already describes (listed
 *   with the indexed size) are taken from it unless `readAll`; the others are read and
 *   decrypted. One new index replaces all the old ones. Packs that can't be read are
 *   reported and left where they are.
 * - repairSnapshots finds snapshots that can't be fully restored: a snapshot whose file
 *   list is readable is rewritten without the files whose data is gone (tagged
 *   `repaired`, `repairedFrom` naming the original); one whose file list is gone can only
 *   be removed. With `forget`, the originals (and unreadable snapshots) are removed.
 */
import { ObjectKind, decodeHeader } from '../crypto/sealed-object.js';
import { CofferError, DecryptionError } from '../errors.js';
import { BlobType, hex, idFromName, idKey, indexName, packName, snapshotName, validObjects } from './blob.js';
import { BlobWriter } from './blob-writer.js';
import { TreeWriter } from './backup.js';
import { FastCdc } from '../chunker/fastcdc.js';
import { decodeIndex, encodeIndex, type IndexedPack } from './index-file.js';
import { RepositoryLock } from './lock.js';
import { decodePackTrailer } from './pack.js';
import type { Repository } from './repository.js';
import { decodeSnapshot, encodeSnapshot, type Snapshot } from './snapshot.js';
import type { TreeEntry } from './tree.js';

export interface RepairIndexResult {
  /** Packs the new index describes. */
  packs: number;
  blobs: number;
  /** Of those, packs whose trailer was read (the rest came from an intact index). */
  packsRead: number;
  /** Packs that could not be read: left alone, not indexed but for the blobs of an old index's entry that still read (`keptBlobs` of `indexedBlobs`). */
  unreadablePacks: Array<{ name: string; message: string; keptBlobs?: number; indexedBlobs?: number }>;
  /** Index objects replaced (including unreadable ones). */
  indexesReplaced: number;
  /** Packs old indexes named that are not stored any more. */
  missingPacksDropped: number;
}

export interface RepairIndexOptions {
  /** Read every pack's trailer, even where an intact index describes it. */
  readAll?: boolean;
  onProgress?: (done: number, total: number) => void;
}

/** Every index object's packs, by pack ID (`idKey`); `unreadable` is told of an index that can't be read (a CofferError), and may throw. */
async function readIndexes(repo: Repository, unreadable: (name: string, e: CofferError) => void): Promise<{ names: string[]; packs: Map<string, IndexedPack> }> {
  const names = validObjects(await repo.backend.list('index/')).map((o) => o.name);
  const packs = new Map<string, IndexedPack>();
  for (const name of names) {
    try {
      for (const p of decodeIndex(await repo.readObject(name, ObjectKind.Index), name)) packs.set(idKey(p.packId), p);
    } catch (e) {
      if (!(e instanceof CofferError)) throw e;
      unreadable(name, e);
    }
  }
  return { names, packs };
}

export async function repairIndex(repo: Repository, opts: RepairIndexOptions = {}): Promise<RepairIndexResult> {
  const lock = await RepositoryLock.acquire(repo, true);
  try {
    // An index that can't be read is being replaced: what it said is lost either way.
    const { names: oldIndexes, packs: known } = await readIndexes(repo, () => {});
    const stored = [...(await repo.storedPacks()).values()];
    const storedNames = new Set(stored.map((o) => o.name));
    const packs: IndexedPack[] = [];
    const unreadable: RepairIndexResult['unreadablePacks'] = [];
    let packsRead = 0;
    let done = 0;
    for (const o of stored) {
      const id = idFromName(o.name)!;
      const fromIndex = known.get(idKey(id));
      if (!opts.readAll && fromIndex && fromIndex.sealedLength === o.size) {
        packs.push(fromIndex);
      } else {
        try {
          const sealed = await repo.backend.get(o.name);
          if (!Buffer.from(decodeHeader(sealed).id).equals(id)) throw new CofferError('corrupt', 'it holds a different object than its name says');
          const entries = decodePackTrailer(repo.openSealed(o.name, ObjectKind.Pack, id, sealed), o.name);
          packs.push({ packId: id, sealedLength: sealed.length, blobs: entries });
          packsRead++;
        } catch (e) {
          if (!(e instanceof CofferError)) throw e;
          // A damaged pack (truncated, a bad segment) an old index describes: the blobs
          // that still read (each authenticates on its own) stay indexed, so that repair
          // never makes intact data unreachable; the index's length is kept (their segments
          // are found by it) and check keeps reporting the pack.
          const kept: IndexedPack['blobs'] = [];
          for (const b of fromIndex?.blobs ?? []) {
            try {
              await repo.readStored({ packId: id, ...b }, fromIndex!.sealedLength);
              kept.push(b);
            } catch (err) {
              if (!(err instanceof CofferError) && !(err instanceof DecryptionError)) throw err;
            }
          }
          if (kept.length > 0) packs.push({ packId: id, sealedLength: fromIndex!.sealedLength, blobs: kept });
          unreadable.push({ name: o.name, message: e.message, ...(fromIndex ? { keptBlobs: kept.length, indexedBlobs: fromIndex.blobs.length } : {}) });
        }
      }
      opts.onProgress?.(++done, stored.length);
    }
    const missingPacksDropped = [...known.values()].filter((p) => !storedNames.has(packName(p.packId))).length;
    await lock.ensureHeld();
    // The repository's own index version (a version 1 repository stays readable by the
    // coffer that wrote it) and padding (spec §7.3, §8).
    if (packs.length > 0) await repo.writeObject(ObjectKind.Index, encodeIndex(packs, repo.config.version === 1 ? 1 : 2, repo.config.padding), indexName);
    await repo.backend.sync(); // the new index durable before the old ones go
    for (const name of oldIndexes) await repo.backend.delete(name);
    await repo.backend.sync();
    repo.invalidateIndex();
    return {
      packs: packs.length,
      blobs: packs.reduce((a, p) => a + p.blobs.length, 0),
      packsRead,
      unreadablePacks: unreadable,
      indexesReplaced: oldIndexes.length,
      missingPacksDropped,
    };
  } finally {
    await lock.release().catch(() => {});
  }
}

export type SnapshotRepair =
  | { id: string; status: 'rewritten'; newId?: string; removedFiles: string[]; forgotten: boolean }
  | { id: string; status: 'unrepairable' | 'unreadable'; message: string; forgotten: boolean };

export interface RepairSnapshotsOptions {
  /** Remove the originals of rewritten snapshots, and snapshots that can't be repaired. */
  forget?: boolean;
  /** Report only: write and remove nothing. */
  dryRun?: boolean;
}

export interface RepairSnapshotsResult {
  checked: number;
  repairs: SnapshotRepair[];
}

export async function repairSnapshots(repo: Repository, opts: RepairSnapshotsOptions = {}): Promise<RepairSnapshotsResult> {
  const lock = await RepositoryLock.acquire(repo, true);
  try {
    repo.invalidateIndex();
    const index = await repo.index();
    const present = (h: string) => index.has(Buffer.from(h, 'hex'));
    const repairs: SnapshotRepair[] = [];
    const names = validObjects(await repo.backend.list('snapshots/')).map((o) => o.name);
    for (const name of names) {
      const sid = hex(idFromName(name)!);
      let snap: Snapshot;
      try {
        snap = decodeSnapshot(await repo.readObject(name, ObjectKind.Snapshot), name);
      } catch (e) {
        if (CofferError.is(e, 'missing-object')) continue;
        if (!(e instanceof CofferError) || e.code === 'storage') throw e;
        repairs.push({ id: sid, status: 'unreadable', message: e.message, forgotten: false });
        continue;
      }
      const missingTree = snap.tree.filter((t) => !present(t));
      if (missingTree.length > 0) {
        repairs.push({ id: sid, status: 'unrepairable', message: `its file list is gone (tree blob ${missingTree[0]!.slice(0, 16)})`, forgotten: false });
        continue;
      }
      const entries: TreeEntry[] = [];
      const removedFiles: string[] = [];
      // Hard links to a removed file go too: their data is the same (spec §9.2 also
      // requires a hard link to name an earlier file entry).
      const removedRaw = new Set<string>();
      try {
        for await (const e of repo.tree(snap)) {
          if (e.type === 'file' && !e.chunks.every(present)) {
            removedFiles.push(e.path);
            removedRaw.add(e.rawPath.toString('latin1'));
          } else if (e.type === 'hardlink' && removedRaw.has(e.link.toString('latin1'))) {
            removedFiles.push(e.path);
          } else entries.push(e);
        }
      } catch (e) {
        if (!(e instanceof CofferError) || e.code === 'storage') throw e;
        repairs.push({ id: sid, status: 'unrepairable', message: `its file list can't be read (${e.message})`, forgotten: false });
        continue;
      }
      if (removedFiles.length === 0) continue;
      if (repo.config.version < 2) {
        // This coffer writes only format version 2 (like backup): a version 1
        // repository's snapshot is reported, and removed with --forget.
        repairs.push({ id: sid, status: 'unrepairable', message: `${removedFiles.length} file(s) lost their data, and a format version 1 repository can't be rewritten (e.g. ${removedFiles.slice(0, 3).join(', ')})`, forgotten: false });
        continue;
      }
      const rep: SnapshotRepair = { id: sid, status: 'rewritten', removedFiles, forgotten: false };
      if (!opts.dryRun) rep.newId = hex(await writeRepaired(repo, lock, snap, sid, entries, removedFiles.length));
      repairs.push(rep);
    }
    if (opts.forget && !opts.dryRun) {
      for (const r of repairs) {
        await repo.backend.delete(snapshotName(Buffer.from(r.id, 'hex')));
        r.forgotten = true;
      }
      await repo.backend.sync();
    }
    return { checked: names.length, repairs };
  } finally {
    await lock.release().catch(() => {});
  }
}

/** Writes `entries` as a new tree listing and a new snapshot like `snap`; returns its ID. */
async function writeRepaired(repo: Repository, lock: RepositoryLock, snap: Snapshot, sid: string, entries: TreeEntry[], removed: number): Promise<Buffer> {
  const index = await repo.index();
  const writer = new BlobWriter(repo, (id) => index.has(id));
  const tree = new TreeWriter(new FastCdc(repo.keys.gearTable, repo.config.chunker), async (raw) => {
    const id = repo.keys.chunkId(raw);
    await writer.add(BlobType.Tree, id, raw);
    return id.toString('hex');
  });
  let files = 0;
  let bytes = 0;
  let treeIds: string[];
  try {
    for (const e of entries) {
      if (e.type === 'file') {
        files++;
        bytes += e.size;
      }
      await tree.write(e);
    }
    treeIds = await tree.finish();
    await writer.finish(() => lock.ensureHeld());
  } catch (e) {
    await writer.abort(); // no partial pack left behind (a full disk needs its room)
    throw e;
  }
  // The listing was written in the version 2 form (encodeEntry), whatever it was read from.
  const fixed: Snapshot & { repairedFrom: string } = {
    ...snap,
    version: 2,
    tags: [...snap.tags.filter((t) => t !== 'repaired'), 'repaired'],
    tree: treeIds,
    stats: { ...snap.stats, files, bytes, addedBytes: writer.addedBytes, newChunks: writer.newBlobs, warnings: (snap.stats.warnings ?? 0) + removed },
    repairedFrom: sid,
  };
  await lock.ensureHeld();
  const id = await repo.writeObject(ObjectKind.Snapshot, encodeSnapshot(fixed, repo.config.padding), snapshotName);
  await repo.backend.sync();
  repo.invalidateIndex();
  return id;
}

export interface RepairPacksResult {
  /** The packs repaired (names), each now deleted. */
  packs: string[];
  /** Blobs of them read intact (each checked against its ID) and written into new packs. */
  salvaged: number;
  /** Blobs of them that had an intact copy in another pack already (not written again). */
  elsewhere: number;
  /** Blobs of them that could not be read intact: lost (`coffer repair snapshots` removes the files that need them). */
  lost: Array<{ id: string; pack: string; message: string }>;
}

/**
 * `coffer repair packs ID…` (as restic's): salvages damaged packs. Every blob an index
 * lists in them is read on its own (a ranged read of the segments that hold it, checked
 * against its ID, spec §8.1); the intact ones are written into new packs, a new index
 * replaces the old ones (the damaged packs left out), and only then are the damaged packs
 * deleted. What could not be read was lost already; `coffer repair snapshots` then
 * removes the files that need it, and prune (which refuses while a damaged pack is
 * indexed) works again. Packs are named by their 64-hex-digit ID or `data/…` name.
 * @throws CofferError('invalid-argument') for a name that is no pack ID, ('not-found') for a pack no index lists
 */
export async function repairPacks(repo: Repository, ids: readonly string[], opts: { onProgress?: (done: number, total: number) => void } = {}): Promise<RepairPacksResult> {
  if (ids.length === 0) throw new CofferError('invalid-argument', 'repair packs: name the damaged packs (their IDs, as `coffer check --read-data` reports them)');
  const wanted = new Map<string, Buffer>();
  for (const raw of ids) {
    const m = /(?:^|\/)([0-9a-f]{64})$/i.exec(raw.trim());
    if (!m) throw new CofferError('invalid-argument', `'${raw}' is not a pack ID (64 hex digits, or the pack's data/… name)`);
    const id = Buffer.from(m[1]!.toLowerCase(), 'hex');
    wanted.set(idKey(id), id);
  }
  const lock = await RepositoryLock.acquire(repo, true);
  try {
    repo.invalidateIndex();
    // Every index must read: one that doesn't may describe the only copy of something, and the new index replaces them all.
    const { names: indexNames, packs } = await readIndexes(repo, (name, e) => {
      throw new CofferError('needs-repair', `repair packs: ${name} can't be read (${e.message}); run \`coffer repair index\` first`);
    });
    for (const [k, id] of wanted) if (!packs.has(k)) throw new CofferError('not-found', `pack ${hex(id)} is in no index (\`coffer repair index\` indexes what can be read of a stored pack)`);
    const stored = await repo.storedPacks();
    // Intact copies elsewhere: a blob listed in a pack that is not being repaired and is stored with its indexed size.
    const intactElsewhere = new Set<string>();
    for (const [k, p] of packs) {
      if (wanted.has(k) || stored.get(packName(p.packId))?.size !== p.sealedLength) continue;
      for (const b of p.blobs) intactElsewhere.add(idKey(b.id));
    }
    const writer = new BlobWriter(repo, (id) => intactElsewhere.has(idKey(id)));
    const result: RepairPacksResult = { packs: [], salvaged: 0, elsewhere: 0, lost: [] };
    const total = [...wanted.keys()].reduce((a, k) => a + packs.get(k)!.blobs.length, 0);
    let done = 0;
    let fresh: IndexedPack[];
    try {
      for (const k of wanted.keys()) {
        const p = packs.get(k)!;
        const name = packName(p.packId);
        result.packs.push(name);
        for (const b of p.blobs) {
          opts.onProgress?.(++done, total);
          if (intactElsewhere.has(idKey(b.id))) {
            result.elsewhere++;
            continue;
          }
          let raw: Buffer;
          try {
            raw = await repo.readBlob(b.id, { packId: p.packId, type: b.type, flags: b.flags, offset: b.offset, storedLength: b.storedLength, rawLength: b.rawLength });
          } catch (e) {
            if (!(e instanceof CofferError) || (e.code !== 'corrupt' && e.code !== 'missing-object')) throw e;
            result.lost.push({ id: hex(b.id), pack: name, message: e.message });
            continue;
          }
          await writer.add(b.type === BlobType.Tree ? BlobType.Tree : BlobType.Data, b.id, raw);
          intactElsewhere.add(idKey(b.id)); // listed twice in the damaged packs: written once
          result.salvaged++;
        }
      }
      fresh = await writer.finishPacks();
    } catch (e) {
      await writer.abort();
      throw e;
    }
    await repo.backend.sync(); // the new packs durable before the index that names them
    await lock.ensureHeld();
    const kept = [...packs].filter(([k]) => !wanted.has(k)).map(([, p]) => p);
    const all = [...kept, ...fresh];
    if (all.length > 0) await repo.writeObject(ObjectKind.Index, encodeIndex(all, repo.config.version === 1 ? 1 : 2, repo.config.padding), indexName);
    await repo.backend.sync(); // the new index durable before the old ones and the damaged packs go
    for (const name of indexNames) await repo.backend.delete(name);
    await repo.backend.sync();
    for (const name of result.packs) if (stored.has(name)) await repo.backend.delete(name);
    await repo.backend.sync();
    repo.invalidateIndex();
    return result;
  } finally {
    await lock.release().catch(() => {});
  }
}
