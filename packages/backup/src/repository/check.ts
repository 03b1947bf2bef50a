/**
 * `coffer check`: verifies the repository's structure and, with `readData`, every byte.
 * Problems are collected, not thrown, and each names the snapshots it affects, so a
 * person knows which restores would fail.
 */
import { randomInt } from 'node:crypto';
import { ObjectKind } from '../crypto/sealed-object.js';
import { CofferError } from '../errors.js';
import { parseByteSize } from '../units.js';
import { hex, idFromName, idKey, packName, validObjects } from './blob.js';
import { decompressBlob, decompressBlobHere } from './compress.js';
import { DECOMPRESS_HERE_BELOW } from './blob-reader.js';
import { decodeIndex, type IndexedPack } from './index-file.js';
import { RepositoryLock } from './lock.js';
import { decodePackTrailer } from './pack.js';
import type { Repository } from './repository.js';
import { decodeSnapshot } from './snapshot.js';

export interface CheckProblem {
  message: string;
  /** Hex IDs of the snapshots that can't be fully restored because of it. */
  snapshots: string[];
}

export interface CheckResult {
  snapshots: number;
  packs: number;
  blobs: number;
  /**
   * Packs that no index mentions: left by an interrupted backup, or described by an
   * index that was lost. `coffer repair index` indexes them; until then prune leaves them
   * alone while younger than the lock expiry, and refuses once one is older (unless every
   * blob in it is indexed elsewhere: then it is deleted).
   */
  unreferencedPacks: number;
  /** Indexed packs that are gone but that no snapshot needs (a copy exists elsewhere, or nothing uses them); prune drops them from the index. */
  missingUnneededPacks: number;
  bytesRead: number;
  /** Packs whose bytes were read and verified (all of them with readData, a share with readDataSubset). */
  packsRead: number;
  problems: CheckProblem[];
}

/**
 * Which packs `check` reads (restic's --read-data-subset): group `n` of `m` (a fixed
 * share: over n = 1…m every pack is read exactly once), a random `percent` of the packs,
 * or random packs up to `bytes` in total (at least one).
 */
export type ReadDataSubset = { group: number; of: number } | { percent: number } | { bytes: number };

/**
 * `n/m`, `x%` or a size (`500M`, `2G`, `1.5GiB`, `4096`).
 * @throws {RangeError} naming the accepted forms
 */
export function parseReadDataSubset(s: string): ReadDataSubset {
  const bad = (why: string) => new RangeError(`read-data-subset: '${s}' ${why} (use n/m, x% or a size such as 500M)`);
  let m = /^(\d{1,9})\/(\d{1,9})$/.exec(s);
  if (m) {
    const group = Number(m[1]);
    const of = Number(m[2]);
    if (of < 1 || group < 1 || group > of) throw bad('needs 1 <= n <= m');
    return { group, of };
  }
  m = /^(\d{1,3}(?:\.\d+)?)%$/.exec(s);
  if (m) {
    const percent = Number(m[1]);
    if (!(percent > 0 && percent <= 100)) throw bad('needs a percentage above 0 and at most 100');
    return { percent };
  }
  if (/^\d/.test(s)) {
    const bytes = parseByteSize(s);
    if (bytes === undefined) throw bad('is not a subset');
    if (!(bytes > 0)) throw bad('needs a size above 0');
    return { bytes };
  }
  throw bad('is not a subset');
}

/** The packs (sorted by ID) a subset selects; `random(n)` is an integer in [0, n). */
export function selectSubset<P extends { packId: Buffer; sealedLength: number }>(packs: readonly P[], subset: ReadDataSubset, random: (n: number) => number = randomInt): P[] {
  const sorted = [...packs].sort((a, b) => Buffer.compare(a.packId, b.packId));
  // The first 32 bits of a pack's random ID decide its group: stable between runs.
  if ('group' in subset) return sorted.filter((p) => p.packId.readUInt32BE(0) % subset.of === subset.group - 1);
  for (let i = sorted.length - 1; i > 0; i--) {
    const j = random(i + 1);
    [sorted[i], sorted[j]] = [sorted[j]!, sorted[i]!];
  }
  if ('percent' in subset) return sorted.slice(0, Math.ceil((sorted.length * subset.percent) / 100));
  const out: P[] = [];
  let total = 0;
  for (const p of sorted) {
    if (out.length > 0 && total + p.sealedLength > subset.bytes) continue;
    out.push(p);
    total += p.sealedLength;
  }
  return out;
}

export interface CheckOptions {
  readData?: boolean;
  /** Read only these packs' bytes (implies reading data). */
  readDataSubset?: ReadDataSubset;
  /** For the random subsets: an integer in [0, n) (tests pass a seeded one). */
  random?: (n: number) => number;
  /** Read without taking a lock (e.g. the repository's disk is full); see spec §11. */
  noLock?: boolean;
  /** Packs read of those to read, and their bytes (sealed sizes). */
  onProgress?: (done: number, total: number, bytes: number, totalBytes: number) => void;
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export async function check(repo: Repository, opts: CheckOptions = {}): Promise<CheckResult> {
  if (opts.noLock) return runCheck(repo, opts);
  const lock = await RepositoryLock.acquire(repo, false);
  try {
    return await runCheck(repo, opts);
  } finally {
    await lock.release().catch(() => {});
  }
}

async function runCheck(repo: Repository, opts: CheckOptions): Promise<CheckResult> {
  const problems: CheckProblem[] = [];
  const stored = new Map(validObjects(await repo.backend.list('data/')).map((o) => [o.name, o.size]));

  // 1. Every index object, on its own, so one bad index doesn't hide the rest.
  const copies = new Map<string, string[]>(); // blob → packs (keys) that list it
  const rawLengths = new Map<string, number>(); // blob → its raw length (the first index entry's)
  const packs = new Map<string, IndexedPack>();
  for (const { name } of validObjects(await repo.backend.list('index/'))) {
    try {
      for (const p of decodeIndex(await repo.readObject(name, ObjectKind.Index), name)) {
        const pk = idKey(p.packId);
        packs.set(pk, p);
        for (const b of p.blobs) {
          const k = idKey(b.id);
          const list = copies.get(k);
          if (!list) {
            copies.set(k, [pk]);
            rawLengths.set(k, b.rawLength);
          } else if (!list.includes(pk)) list.push(pk);
        }
      }
    } catch (e) {
      problems.push({ message: `index ${name}: ${describe(e)} (\`coffer repair index\` rebuilds the index from the packs)`, snapshots: [] });
    }
  }
  const intact = (pk: string) => {
    const p = packs.get(pk)!;
    return stored.get(packName(p.packId)) === p.sealedLength;
  };

  // 2. Snapshots and their trees. A needed blob is fine when some copy of it is in an
  // intact pack; otherwise each pack that lists it is charged with the snapshot.
  const packUsers = new Map<string, Set<string>>(); // pack → snapshots with no other copy
  const packNeeders = new Map<string, Set<string>>(); // pack → snapshots needing a blob in it
  const add = (m: Map<string, Set<string>>, pk: string, sid: string) => {
    let set = m.get(pk);
    if (!set) m.set(pk, (set = new Set()));
    set.add(sid);
  };
  const snapshotIds: string[] = [];
  for (const { name } of validObjects(await repo.backend.list('snapshots/'))) {
    const sid = hex(idFromName(name)!);
    snapshotIds.push(sid);
    try {
      const snap = decodeSnapshot(await repo.readObject(name, ObjectKind.Snapshot), name);
      /** Charges the blob's packs with this snapshot; its raw length (NaN: in no index). */
      const need = (id: string, what: string): number => {
        const k = idKey(Buffer.from(id, 'hex'));
        const where = copies.get(k);
        if (!where) {
          problems.push({ message: `${what}: blob ${id.slice(0, 16)} is not in any index`, snapshots: [sid] });
          return NaN;
        }
        for (const pk of where) add(packNeeders, pk, sid);
        if (!where.some(intact)) for (const pk of where) add(packUsers, pk, sid);
        return rawLengths.get(k)!;
      };
      for (const t of snap.tree) need(t, `snapshot ${sid.slice(0, 8)} tree`);
      for await (const e of repo.tree(snap)) {
        if (e.type !== 'file') continue;
        // Spec §9.2: the chunks' raw lengths add up to the size (restore and dump refuse
        // a file whose chunks don't; check said "no problems").
        let sum = 0;
        for (const c of e.chunks) sum += need(c, `snapshot ${sid.slice(0, 8)} file ${e.path}`);
        if (!Number.isNaN(sum) && sum !== e.size) {
          problems.push({ message: `snapshot ${sid.slice(0, 8)} file ${e.path}: its chunks add up to ${sum} bytes, not its size ${e.size}`, snapshots: [sid] });
        }
      }
    } catch (e) {
      problems.push({ message: `snapshot ${name}: ${describe(e)}`, snapshots: [sid] });
    }
  }
  const users = (pk: string) => [...(packUsers.get(pk) ?? [])].sort();
  const needers = (pk: string) => [...(packNeeders.get(pk) ?? [])].sort();

  // 3. Every indexed pack is stored, with the size the index says. A missing pack whose
  // blobs no snapshot needs from it (another copy exists, or nothing uses them) is not
  // damage: prune drops it from the index.
  let missingUnneededPacks = 0;
  for (const [pk, p] of packs) {
    const name = packName(p.packId);
    const size = stored.get(name);
    if (size === undefined) {
      if (users(pk).length > 0) problems.push({ message: `pack ${name} is missing`, snapshots: users(pk) });
      else missingUnneededPacks++;
    } else if (size !== p.sealedLength) {
      problems.push({ message: `pack ${name} has ${size} bytes, the index says ${p.sealedLength} (truncated or extended)`, snapshots: users(pk) });
    }
  }
  const indexedNames = new Set([...packs.values()].map((p) => packName(p.packId)));
  const unreferenced = [...stored.keys()].filter((n) => !indexedNames.has(n)).length;

  // 4. With --read-data: decrypt every pack, compare with the index, verify every blob ID
  // (with --read-data-subset, only the packs the subset selects).
  let bytesRead = 0;
  let packsRead = 0;
  if (opts.readData || opts.readDataSubset) {
    let done = 0;
    let all = [...packs.entries()].filter(([, p]) => stored.has(packName(p.packId)));
    if (opts.readDataSubset) {
      const chosen = new Set(selectSubset(all.map(([, p]) => p), opts.readDataSubset, opts.random).map((p) => idKey(p.packId)));
      all = all.filter(([pk]) => chosen.has(pk));
    }
    const totalBytes = all.reduce((a, [, p]) => a + p.sealedLength, 0);
    let doneBytes = 0;
    for (const [pk, p] of all) {
      packsRead++;
      const name = packName(p.packId);
      try {
        const sealed = await repo.backend.get(name);
        bytesRead += sealed.length;
        const plain = repo.openSealed(name, ObjectKind.Pack, p.packId, sealed);
        const trailer = decodePackTrailer(plain, name);
        const inPack = new Map(trailer.map((t) => [idKey(t.id), t]));
        for (const b of p.blobs) {
          const t = inPack.get(idKey(b.id));
          if (!t || t.offset !== b.offset || t.storedLength !== b.storedLength || t.rawLength !== b.rawLength || t.flags !== b.flags || t.type !== b.type) {
            throw new CofferError('corrupt', `blob ${hex(b.id).slice(0, 16)} is not where the index says`);
          }
          // Small blobs on this thread: a round trip to libuv's pool per 4 KiB file cost
          // more than the decompression (as in BlobReader).
          const stored = plain.subarray(b.offset, b.offset + b.storedLength);
          const raw = b.rawLength < DECOMPRESS_HERE_BELOW ? decompressBlobHere(stored, b.flags, b.rawLength, name) : await decompressBlob(stored, b.flags, b.rawLength, name);
          if (!repo.keys.chunkId(raw).equals(b.id)) throw new CofferError('corrupt', `blob ${hex(b.id).slice(0, 16)} does not match its ID`);
        }
      } catch (e) {
        problems.push({ message: `pack ${name}: ${describe(e)}`, snapshots: needers(pk) });
      }
      doneBytes += p.sealedLength;
      opts.onProgress?.(++done, all.length, doneBytes, totalBytes);
    }
  }

  return {
    snapshots: snapshotIds.length,
    packs: packs.size,
    blobs: copies.size,
    unreferencedPacks: unreferenced,
    missingUnneededPacks,
    bytesRead,
    packsRead,
    problems,
  };
}
