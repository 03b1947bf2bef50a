/**
 * Where a repository's objects live. Deliberately small, so that a local directory,
 * the front end's blob API and S3 can all implement it honestly:
 * - objects are immutable: `put` of an existing name fails, nothing is ever rewritten;
 * - `list` may be eventually consistent (a just-written object may be missing from it);
 * - `get` of a range reads only those bytes.
 * Errors are CofferError 'missing-object' (no such object) or 'storage' (anything else).
 */
export interface ObjectInfo {
  name: string;
  size: number;
  /**
   * When the object was written (ms since the epoch), where the backend knows it. Prune
   * keeps unindexed packs younger than the lock expiry: a backup may still be writing
   * them. Without a time, such a pack always counts as young.
   */
  mtime?: number;
}

export interface ByteRange {
  offset: number;
  length: number;
}

/** One object open for several ranged reads (openReader). */
export interface ObjectReader {
  /**
   * The object's bytes in `range`, as get(name, range) gives them (fewer at its end);
   * with `into` (at least range.length bytes), read into it and given as a view of it.
   */
  read(range: ByteRange, into?: Buffer): Promise<Uint8Array>;
  /** Lets go of what the reader holds (a descriptor). Never throws. */
  close(): Promise<void>;
}

/** A new object being written piece by piece; it appears under its name only on commit. */
export interface ObjectWriter {
  /** Appends `parts`. The caller hands them over: it never changes them afterwards, so a writer may keep them until commit. */
  write(parts: readonly Uint8Array[]): Promise<void>;
  /** Makes the object durable and visible. Fails if the name exists meanwhile. */
  commit(): Promise<void>;
  /** Discards what was written. Never throws. */
  abort(): Promise<void>;
}

export interface StorageBackend {
  /** A human-readable location for messages, e.g. the directory path. */
  readonly location: string;
  /**
   * True when an object writer (`create`) keeps the object's bytes in memory until its
   * commit (to send them then, or to send them once more): writers then keep fewer packs
   * open at once (BlobWriter), so memory stays a few packs. Absent: the bytes go out as
   * they are written (a local file).
   */
  readonly keepsUntilCommit?: boolean;
  /** Stores a new object from the concatenation of `parts`. Fails if `name` exists. */
  put(name: string, parts: readonly Uint8Array[]): Promise<void>;
  /**
   * Starts a new object written in pieces (packs are streamed this way, so a pack is
   * never whole in memory). A backend that can't stream may buffer until commit.
   */
  create(name: string): Promise<ObjectWriter>;
  /** The object's bytes, or only `range` of them. */
  get(name: string, range?: ByteRange): Promise<Uint8Array>;
  /**
   * Optional: the object opened once for several ranged reads (restore reads each pack in
   * 1 MiB pieces), with the errors get gives; close it when done. Without it, callers
   * use get with a range each time.
   */
  openReader?(name: string): Promise<ObjectReader>;
  /** Size of the object, or null when there is none by that name. */
  stat(name: string): Promise<ObjectInfo | null>;
  /** Objects whose names start with `prefix` (e.g. "snapshots/"). */
  list(prefix: string): Promise<ObjectInfo[]>;
  /** Removes an object; removing a missing one is not an error. */
  delete(name: string): Promise<void>;
  /** Makes every completed `put` durable before returning (a write barrier). */
  sync(): Promise<void>;
  /**
   * Removes what interrupted writes left behind (partial objects never committed) that
   * is older than `olderThan` (ms since the epoch); returns how many went. Optional:
   * backends whose writes are atomic have nothing to remove.
   */
  removeStalePartials?(olderThan: number): Promise<number>;
}

/** Object names are ASCII paths of [a-z0-9] segments: no dots, no escaping the root. */
export function checkObjectName(name: string): void {
  if (!/^[a-z0-9]+(\/[a-z0-9]+)*$/.test(name) || name.length > 200) {
    throw new RangeError(`name: not a valid object name: ${JSON.stringify(name).slice(0, 80)}`);
  }
}
