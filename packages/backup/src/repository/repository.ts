/**
 * A repository: config + keys + typed access to its sealed objects. Every read maps
 * crypto failures to a CofferError naming the object, so messages say *where*.
 */
import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import type { BackupKey } from '../crypto/backup-key.js';
import { RepositoryKeys } from '../crypto/repository-keys.js';
import {
  HEADER_BYTES,
  ObjectKind,
  decodeHeader,
  openObject,
  openRange,
  sealObject,
  segmentRange,
} from '../crypto/sealed-object.js';
import { DEFAULT_CHUNKER, type ChunkerParams } from '../chunker/fastcdc.js';
import { CofferError, DecryptionError } from '../errors.js';
import type { ObjectInfo, StorageBackend } from '../storage/backend.js';
import { hex, idFromName, packName, snapshotName, validObjects, type BlobLocation } from './blob.js';
import { decompressBlob, decompressBlobHere } from './compress.js';
import { CONFIG_NAME, Compression, decodeConfig, encodeConfig, newConfig, repositoryChunkIds, type RepositoryConfig } from './config.js';
import { BlobIndex, scanIndex } from './index-file.js';
import { decodeSnapshot, type Snapshot } from './snapshot.js';
import { decodeEntry, decodeEntryV1, TreeValidator, type TreeEntry } from './tree.js';
import { PadMode } from './padding.js';
import { padJson } from './snapshot.js';

/** Tests only: snapshot tree blobs read by tree() and treeEach (all decompressed on the calling thread). */
export const treeBlobsReadHereForTesting = { count: 0 };

export interface InitOptions {
  chunker?: ChunkerParams;
  compression?: Compression;
  /** The repository's default padding (spec §7.3); 'auto' unless given. */
  padding?: PadMode;
}

export interface SnapshotRecord {
  id: Buffer;
  snapshot: Snapshot;
}

export class Repository {
  readonly backend: StorageBackend;
  readonly config: RepositoryConfig;
  readonly keys: RepositoryKeys;
  /**
   * Told about objects that are skipped because they can't be read (a foreign or
   * damaged snapshot, a damaged index): one bad object must not lock the user out of
   * the others. The CLI prints these as warnings.
   */
  onWarning: (message: string) => void = () => {};
  #index: BlobIndex | undefined;

  private constructor(backend: StorageBackend, config: RepositoryConfig, keys: RepositoryKeys) {
    this.backend = backend;
    this.config = config;
    this.keys = keys;
  }

  /** Creates a repository. Refuses when one (or anything with a config) is already there. */
  static async init(backend: StorageBackend, key: BackupKey, opts: InitOptions = {}): Promise<Repository> {
    if (await backend.stat(CONFIG_NAME)) {
      throw new CofferError('repository-exists', `there is already a repository at ${backend.location}`);
    }
    // A repository whose config was lost: a new config would key everything afresh, and
    // the snapshots and indexes there (sealed under the lost one) could never be read.
    const orphans = await objectsWithoutConfig(backend);
    if (orphans) {
      throw new CofferError('repository-exists', `${backend.location} holds a repository's ${orphans} but no config: its config is missing (put it back from a copy); not making a new repository over them`);
    }
    const config = newConfig(key, opts.chunker ?? DEFAULT_CHUNKER, opts.compression ?? Compression.Zstd, undefined, opts.padding ?? PadMode.Auto);
    await backend.put(CONFIG_NAME, [encodeConfig(key, config)]);
    await backend.sync();
    return new Repository(backend, config, new RepositoryKeys(key, config.repositoryId, repositoryChunkIds(config.version)));
  }

  static async open(backend: StorageBackend, key: BackupKey): Promise<Repository> {
    let bytes: Uint8Array;
    try {
      bytes = await backend.get(CONFIG_NAME);
    } catch (e) {
      if (CofferError.is(e, 'missing-object')) {
        const orphans = await objectsWithoutConfig(backend);
        if (orphans) throw new CofferError('not-a-repository', `${backend.location} holds a repository's ${orphans} but its config is missing (put it back from a copy; \`coffer init\` would not make a new repository over them)`);
        throw new CofferError('not-a-repository', `there is no Coffer repository at ${backend.location} (create one with \`coffer init\`)`);
      }
      throw e;
    }
    const config = decodeConfig(key, bytes, backend.location);
    return new Repository(backend, config, new RepositoryKeys(key, config.repositoryId, repositoryChunkIds(config.version)));
  }

  get location(): string {
    return this.backend.location;
  }

  /** Reads and opens a whole sealed object; `name`'s ID and `kind` must match its header. */
  async readObject(name: string, kind: ObjectKind): Promise<Buffer> {
    const id = idFromName(name);
    if (!id) throw new CofferError('corrupt', `${name} is not a valid object name`);
    const sealed = await this.backend.get(name);
    return this.openSealed(name, kind, id, sealed);
  }

  openSealed(name: string, kind: ObjectKind, id: Uint8Array, sealed: Uint8Array): Buffer {
    try {
      return openObject(this.keys.objectMaster, { kind, id }, sealed);
    } catch (e) {
      if (e instanceof DecryptionError) throw new CofferError('corrupt', `${name} is corrupt: it failed authentication`);
      if (e instanceof CofferError) throw new CofferError(e.code, `${name}: ${e.message}`);
      throw e;
    }
  }

  /** Seals and stores `plaintext` as a new object with a random ID; returns the ID. */
  async writeObject(kind: ObjectKind, plaintext: Uint8Array, name: (id: Uint8Array) => string): Promise<Buffer> {
    const id = randomBytes(32);
    // Locks are JSON: version 2 pads them like snapshots (spec §11).
    if (kind === ObjectKind.Lock && this.config.version >= 2) plaintext = padJson(Buffer.from(plaintext), this.config.padding);
    await this.backend.put(name(id), [sealObject(this.keys.objectMaster, { kind, id }, plaintext)]);
    return id;
  }

  /**
   * The union of all readable index objects, loaded once, checked against the pack
   * listing (BlobIndex.preferStored). An index that can't be read is skipped and
   * reported through `onWarning` (prune, which reads the indexes itself, refuses).
   */
  async index(): Promise<BlobIndex> {
    if (this.#index) return this.#index;
    const idx = new BlobIndex();
    // Spec §2: only names of exactly this form are indexes (validObjects); others are ignored.
    const [names, stored] = await Promise.all([this.backend.list('index/'), this.storedPacks()]);
    await mapLimit(validObjects(names), 8, async ({ name }) => {
      const read = await this.#readIndex(name);
      if (read === 'missing') return;
      if (read instanceof CofferError) {
        this.onWarning(`skipping ${read.message}; \`coffer repair index\` rebuilds the index from the packs`);
        return;
      }
      idx.addScanned(read.plain, read.packs);
    });
    idx.preferStored((packId) => stored.has(packName(packId)));
    this.#index = idx;
    return idx;
  }

  /** One index object, checked (scanIndex); 'missing' when deleted meanwhile; the error when unreadable. */
  async #readIndex(name: string): Promise<{ plain: Uint8Array; packs: ReturnType<typeof scanIndex> } | 'missing' | CofferError> {
    try {
      const plain = await this.readObject(name, ObjectKind.Index);
      return { plain, packs: scanIndex(plain, name) };
    } catch (e) {
      if (CofferError.is(e, 'missing-object')) return 'missing';
      if (isUnreadable(e)) return e;
      throw e;
    }
  }

  /** The packs in storage, by object name. */
  async storedPacks(): Promise<Map<string, ObjectInfo>> {
    return new Map(validObjects(await this.backend.list('data/')).map((o) => [o.name, o]));
  }

  /** Forget the cached index (after prune rewrote it). */
  invalidateIndex(): void {
    this.#index = undefined;
  }

  /**
   * Every readable snapshot, oldest first (by `time`, then by ID bytes: spec §10). A
   * manifest that can't be read (damaged, or sealed for another repository) is skipped
   * and reported through `onWarning`: one bad snapshot must not hide the others. Prune
   * reads the snapshots itself and refuses on an unreadable one (it can't know what
   * that snapshot needs).
   */
  async snapshots(): Promise<SnapshotRecord[]> {
    const { good, bad } = await this.#readSnapshots();
    this.warnUnreadable(bad);
    return good;
  }

  /** Reports each unreadable snapshot of `readableSnapshots()` through `onWarning`, as `snapshots()` does. */
  warnUnreadable(bad: ReadonlyArray<{ name: string; error: unknown }>): void {
    for (const b of bad) this.onWarning(`skipping snapshot ${hex(idFromName(b.name)!).slice(0, 8)}: ${(b.error as Error).message}`);
  }

  /**
   * The snapshots that can be read, and the ones that can't (spec §10), without
   * warning: for callers that report the unreadable ones themselves (`coffer snapshots`).
   */
  async readableSnapshots(): Promise<{ good: SnapshotRecord[]; bad: Array<{ name: string; error: unknown }> }> {
    return this.#readSnapshots();
  }

  /**
   * Manifests read by this handle, by object name. An object is never rewritten under its
   * name (storage refuses to overwrite, and a manifest is sealed to its name), so a second
   * listing in the same process (a backup's rollback check after its parent search: issue
   * 13, ~0.45 ms per snapshot twice per backup) reads only the names it has not read yet.
   * The listing is still taken from storage every time: a name gone from it is gone from
   * the answer (and from here). The records are frozen: every caller gets the same one.
   */
  readonly #snapshotMemo = new Map<string, SnapshotRecord>();

  async #readSnapshots(): Promise<{ good: SnapshotRecord[]; bad: Array<{ name: string; error: unknown }> }> {
    const names = validObjects(await this.backend.list('snapshots/'));
    const good: SnapshotRecord[] = [];
    const bad: Array<{ name: string; error: unknown }> = [];
    const listed = new Set<string>();
    for (const { name } of names) listed.add(name);
    for (const name of this.#snapshotMemo.keys()) if (!listed.has(name)) this.#snapshotMemo.delete(name);
    await mapLimit(names, 8, async ({ name }) => {
      const known = this.#snapshotMemo.get(name);
      if (known) {
        good.push(known);
        return;
      }
      const id = idFromName(name)!;
      try {
        const plain = await this.readObject(name, ObjectKind.Snapshot);
        const record = frozenRecord(id, decodeSnapshot(plain, name));
        this.#snapshotMemo.set(name, record);
        good.push(record);
      } catch (e) {
        if (CofferError.is(e, 'missing-object')) return; // forgotten meanwhile
        if (!isUnreadable(e)) throw e;
        bad.push({ name, error: e });
      }
    });
    good.sort((a, b) => Date.parse(a.snapshot.time) - Date.parse(b.snapshot.time) || Buffer.compare(a.id, b.id));
    bad.sort((a, b) => (a.name < b.name ? -1 : 1));
    return { good, bad };
  }

  /**
   * The full ID of the one snapshot whose hex ID starts with `ref`, from the listing
   * alone: nothing is decrypted (so `forget` works on a snapshot that can't be read).
   */
  async resolveSnapshotId(ref: string): Promise<Buffer> {
    if (!/^[0-9a-f]{4,64}$/i.test(ref)) throw new CofferError('invalid-argument', `'${ref}' is not a snapshot ID (4 to 64 hex digits)`);
    const hits = validObjects(await this.backend.list('snapshots/')).filter(({ name }) => hex(idFromName(name)!).startsWith(ref.toLowerCase()));
    if (hits.length === 0) throw new CofferError('not-found', `no snapshot ${ref} in ${this.location}`);
    if (hits.length > 1) throw new CofferError('invalid-argument', `snapshot ID ${ref} is ambiguous: give more digits`);
    return idFromName(hits[0]!.name)!;
  }

  /** Finds a snapshot by "latest" or by a unique prefix of its hex ID. */
  async findSnapshot(ref: string): Promise<SnapshotRecord> {
    if (ref === 'latest') {
      const all = await this.snapshots();
      const last = all[all.length - 1];
      if (!last) throw new CofferError('not-found', `the repository at ${this.location} has no snapshots yet`);
      return last;
    }
    if (!/^[0-9a-f]{4,64}$/i.test(ref)) throw new CofferError('invalid-argument', `'${ref}' is not a snapshot ID (4 to 64 hex digits, or "latest")`);
    // Only the manifests whose name matches are read: a damaged one elsewhere must not
    // make the intact snapshots unreachable.
    const id = await this.resolveSnapshotId(ref);
    const name = snapshotName(id);
    return { id, snapshot: decodeSnapshot(await this.readObject(name, ObjectKind.Snapshot), name) };
  }

  /**
   * Reads one blob from its pack with a ranged read, and decompresses it: on libuv's pool,
   * or with `here` on this thread (its reused context), where the output's memory stays
   * in this thread's malloc arena (see BlobWriter.add's `here`).
   */
  async readBlob(id: Uint8Array, loc?: BlobLocation, here = false): Promise<Buffer> {
    const where = loc ?? (await this.index()).get(id);
    if (!where) throw new CofferError('missing-object', `blob ${hex(id)} is not in the index`);
    const name = packName(where.packId);
    const pack = (await this.index()).packs.get(where.packId.toString('latin1'));
    const sealedLen = pack?.sealedLength ?? (await this.backend.stat(name))?.size;
    if (sealedLen === undefined) throw new CofferError('missing-object', `pack ${name} is missing from the repository at ${this.location}`);
    const label = `${name} (blob ${hex(id).slice(0, 16)})`;
    let stored: Buffer;
    try {
      stored = await this.readStored(where, sealedLen);
    } catch (e) {
      if (e instanceof DecryptionError) throw new CofferError('corrupt', `${label} is corrupt: it failed authentication`);
      if (e instanceof CofferError && e.code !== 'missing-object') throw new CofferError(e.code, `${label}: ${e.message}`);
      throw e;
    }
    const raw = here ? decompressBlobHere(stored, where.flags, where.rawLength, label) : await decompressBlob(stored, where.flags, where.rawLength, label);
    // Spec §8.1: the plaintext must be what the ID names (an index entry pointing at the
    // wrong bytes, or a damaged blob that still decompresses, is caught here).
    if (!this.keys.chunkId(raw).equals(Buffer.from(id))) throw new CofferError('corrupt', `${label}: the blob does not match its ID`);
    return raw;
  }

  /**
   * A blob's stored bytes (as in its pack: compressed, not yet checked against its ID)
   * by a ranged read of the segments that hold it; a damaged segment is a DecryptionError.
   */
  async readStored(where: BlobLocation, sealedLen: number): Promise<Buffer> {
    const name = packName(where.packId);
    const headerBytes = await this.backend.get(name, { offset: 0, length: HEADER_BYTES });
    const h = decodeHeader(headerBytes);
    if (h.kind !== ObjectKind.Pack || Buffer.compare(h.id, where.packId) !== 0) {
      throw new CofferError('corrupt', 'object holds a different object than its name says');
    }
    const range = segmentRange(sealedLen, where.offset, where.storedLength);
    const segs = await this.backend.get(name, { offset: range.sealedOffset, length: range.sealedLength });
    return openRange(this.keys.objectMaster, headerBytes, range, segs, where.storedLength);
  }

  /** A blob out of an already opened pack's plaintext. */
  async readBlobFrom(plain: Buffer, b: { offset: number; storedLength: number; flags: number; rawLength: number }, where: string): Promise<Buffer> {
    if (b.offset + b.storedLength > plain.length) throw new CofferError('corrupt', `${where}: index points outside the pack`);
    return decompressBlob(plain.subarray(b.offset, b.offset + b.storedLength), b.flags, b.rawLength, where);
  }

  /** The tree listing of a snapshot, entry by entry. */
  async *tree(s: Snapshot): AsyncGenerator<TreeEntry> {
    if (s.version === 2) {
      yield* this.#treeV2(s);
      return;
    }
    let carry = '';
    // Tree blobs are cut by content, so a UTF-8 sequence may straddle two of them.
    // Version 1 listings were decoded leniently, and stay so.
    const utf8 = new TextDecoder('utf-8');
    const rules = new TreeValidator(false);
    for (const h of s.tree) {
      const where = `tree of snapshot at ${h.slice(0, 16)}`;
      const blob = await this.#readTreeBlob(h);
      const text = carry + utf8.decode(blob, { stream: true });
      // Lines end at 0x0A only (U+2028 and U+2029 are ordinary characters in JSON).
      const lines = text.split('\n');
      carry = lines.pop()!;
      for (const line of lines) {
        const e = decodeEntryV1(line, where);
        rules.check(e, where);
        yield e;
      }
    }
    carry += utf8.decode(); // a UTF-8 sequence cut off at the end
    if (carry !== '') throw new CofferError('corrupt', 'tree listing ends in the middle of an entry');
  }

  /**
   * A snapshot's tree blob, decompressed on this thread (readBlob's `here`): the listing
   * is read one blob at a time, so the pool would run nothing alongside, and each of its
   * threads kept a fresh context's memory in its own malloc arena (issue 13, as for the
   * backup's tree blobs).
   */
  #readTreeBlob(h: string): Promise<Buffer> {
    treeBlobsReadHereForTesting.count++;
    return this.readBlob(Buffer.from(h, 'hex'), undefined, true);
  }

  /**
   * tree() without a promise per entry: `each` is given every entry, in order, as each
   * tree blob is read (issue 13: restore lists ~50,000 entries before it writes anything,
   * and an async generator's round trip per entry cost ~1 µs each).
   */
  async treeEach(s: Snapshot, each: (e: TreeEntry) => void): Promise<void> {
    if (s.version !== 2) {
      for await (const e of this.tree(s)) each(e);
      return;
    }
    const listing = new ListingV2();
    for (const h of s.tree) listing.add(await this.#readTreeBlob(h), `tree of snapshot at ${h.slice(0, 16)}`, each);
    listing.end();
  }

  async *#treeV2(s: Snapshot): AsyncGenerator<TreeEntry> {
    const listing = new ListingV2();
    for (const h of s.tree) {
      const entries: TreeEntry[] = [];
      listing.add(await this.#readTreeBlob(h), `tree of snapshot at ${h.slice(0, 16)}`, (e) => entries.push(e));
      yield* entries;
    }
    listing.end();
  }
}

/**
 * A version 2 listing (valid UTF-8, spec §9.2) read blob by blob, split into lines as
 * bytes and each line made a string of its own: 0x0A is never inside a UTF-8 sequence, so
 * each blob's whole lines are validated at once, and the line after them carried to the
 * next blob. Not one string per blob cut into lines (issue 13: a blob holding one
 * non-ASCII name made all its lines two-byte strings, slower to parse; on the
 * 50,000-file tree the listing's decoding took ~20% less CPU, ~195 -> ~160 ms).
 */
class ListingV2 {
  #carry: Buffer | undefined;
  #first = true;
  readonly #rules = new TreeValidator(true);

  /** The next tree blob: each entry of the lines it completes, checked, given to `each`. */
  add(blob: Buffer, where: string, each: (e: TreeEntry) => void): void {
    const bytes = this.#carry ? Buffer.concat([this.#carry, blob]) : blob;
    // A byte order mark opening the listing is dropped, as the streaming decoder did.
    // (Fewer than three bytes and no line end yet: told with the next blob.)
    let start = 0;
    if (this.#first && bytes.length >= 3) {
      this.#first = false;
      if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) start = 3;
    } else if (this.#first && bytes.includes(0x0a)) this.#first = false;
    const end = bytes.lastIndexOf(0x0a) + 1;
    if (end > start && !isUtf8(bytes.subarray(start, end))) throw new CofferError('corrupt', `${where}: tree listing is not valid UTF-8`);
    this.#carry = end < bytes.length ? Buffer.from(bytes.subarray(Math.max(end, start))) : undefined;
    for (let from = start; from < end; ) {
      const nl = bytes.indexOf(0x0a, from);
      const e = decodeEntry(bytes.toString('utf8', from, nl), where);
      from = nl + 1;
      this.#rules.check(e, where);
      each(e);
    }
  }

  /** The listing is read: nothing may be left of it. */
  end(): void {
    if (!this.#carry) return;
    if (!isUtf8(this.#carry)) throw new CofferError('corrupt', 'tree listing is not valid UTF-8');
    throw new CofferError('corrupt', 'tree listing ends in the middle of an entry');
  }
}

/** Errors that make one object unreadable without saying anything about the others. */
function isUnreadable(e: unknown): e is CofferError {
  return e instanceof CofferError && (e.code === 'corrupt' || e.code === 'unsupported-version' || e.code === 'wrong-key');
}

/**
 * Runs `fn` over `items` with at most `limit` in flight. On a failure no new item is
 * started, and it rejects (with the first error) only once every call in flight has
 * settled, so the caller's clean-up sees everything those calls created.
 */
export async function mapLimit<T>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < items.length) {
      const i = next++;
      try {
        await fn(items[i]!, i);
      } catch (e) {
        failure ??= { error: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.error;
}

/** A snapshot record no caller can change (Repository's memo hands the same one to each). */
function frozenRecord(id: Buffer, snapshot: Snapshot): SnapshotRecord {
  Object.freeze(snapshot.paths);
  Object.freeze(snapshot.tags);
  Object.freeze(snapshot.tree);
  Object.freeze(snapshot.stats);
  return Object.freeze({ id, snapshot: Object.freeze(snapshot) });
}

/** What a location without a config holds of a repository (snapshots, indexes), or undefined when it holds neither. */
async function objectsWithoutConfig(backend: StorageBackend): Promise<string | undefined> {
  const found: string[] = [];
  for (const [prefix, one, many] of [
    ['snapshots/', 'snapshot', 'snapshots'],
    ['index/', 'index', 'indexes'],
  ] as const) {
    const n = validObjects(await backend.list(prefix)).length;
    if (n > 0) found.push(`${n} ${n === 1 ? one : many}`);
  }
  return found.length > 0 ? found.join(' and ') : undefined;
}
