/** What the repository stores inside packs: chunks of file contents and of tree listings. */
export enum BlobType {
  Data = 0,
  Tree = 1,
}

/** Flags of a stored blob (spec §7.1). */
export const BLOB_COMPRESSED = 1;
/** Version 2: the stored bytes are padded (spec §7.1, §7.3). */
export const BLOB_PADDED = 2;

/** Checks a blob's flags and lengths as packs and indexes state them; returns why not, or null. */
export function blobEntryProblem(flags: number, storedLength: number, rawLength: number, allowPadded: boolean): string | null {
  const known = allowPadded ? BLOB_COMPRESSED | BLOB_PADDED : BLOB_COMPRESSED;
  if ((flags & ~known) !== 0) return `unknown blob flags ${flags}`;
  const padded = (flags & BLOB_PADDED) !== 0;
  if ((flags & BLOB_COMPRESSED) === 0) {
    if (!padded && storedLength !== rawLength) return 'uncompressed blob with two lengths';
    if (padded && storedLength < rawLength + 4) return 'padded blob shorter than its content';
  }
  return null;
}

/** Where a blob lives: which pack, and where in that pack's plaintext. */
export interface BlobLocation {
  packId: Buffer; // 32 bytes
  type: BlobType;
  flags: number;
  offset: number;
  storedLength: number;
  rawLength: number;
}

export const ID_BYTES = 32;

export function hex(id: Uint8Array): string {
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex');
}

/** Map key for a 32-byte ID: latin1 strings are cheaper to hash than hex. */
export function idKey(id: Uint8Array): string {
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('latin1');
}

export function packName(packId: Uint8Array): string {
  const h = hex(packId);
  return `data/${h.slice(0, 2)}/${h}`;
}
export function indexName(id: Uint8Array): string {
  return `index/${hex(id)}`;
}
export function snapshotName(id: Uint8Array): string {
  return `snapshots/${hex(id)}`;
}
export function lockName(id: Uint8Array): string {
  return `locks/${hex(id)}`;
}

/**
 * The ID in an object name, or null when the name is not one of ours. Only the exact
 * spec §2 patterns count (`snapshots/<64 hex>`, `data/<xx>/<64 hex>` with xx its first
 * two digits, …): readers ignore every other name under these prefixes.
 */
export function idFromName(name: string): Buffer | null {
  const m = /^(?:(?:index|snapshots|locks)\/([0-9a-f]{64})|data\/([0-9a-f]{2})\/([0-9a-f]{64}))$/.exec(name);
  if (!m) return null;
  if (m[1] !== undefined) return Buffer.from(m[1], 'hex');
  if (!m[3]!.startsWith(m[2]!)) return null;
  return Buffer.from(m[3]!, 'hex');
}

/** Keeps the names of `list` that are valid object names (spec §2); the others are ignored. */
export function validObjects<T extends { name: string }>(list: readonly T[]): T[] {
  return list.filter((o) => idFromName(o.name) !== null);
}
