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
}

export interface ByteRange {
  offset: number;
  length: number;
}

export interface StorageBackend {
  /** A human-readable location for messages, e.g. the directory path. */
  readonly location: string;
  /** Stores a new object from the concatenation of `parts`. Fails if `name` exists. */
  put(name: string, parts: readonly Uint8Array[]): Promise<void>;
  /** The object's bytes, or only `range` of them. */
  get(name: string, range?: ByteRange): Promise<Uint8Array>;
  /** Size of the object, or null when there is none by that name. */
  stat(name: string): Promise<ObjectInfo | null>;
  /** Objects whose names start with `prefix` (e.g. "snapshots/"). */
  list(prefix: string): Promise<ObjectInfo[]>;
  /** Removes an object; removing a missing one is not an error. */
  delete(name: string): Promise<void>;
  /** Makes every completed `put` durable before returning (a write barrier). */
  sync(): Promise<void>;
}

/** Object names are ASCII paths of [a-z0-9] segments: no dots, no escaping the root. */
export function checkObjectName(name: string): void {
  if (!/^[a-z0-9]+(\/[a-z0-9]+)*$/.test(name) || name.length > 200) {
    throw new RangeError(`name: not a valid object name: ${JSON.stringify(name).slice(0, 80)}`);
  }
}
