/**
 * Where the blob API keeps encrypted backup objects (spec/relay-api.md §3): one
 * namespace per account, immutable objects. Backends: a local directory and S3.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';

export const BLOB_NAME = /^[a-z0-9]+(\/[a-z0-9]+)*$/;
export const BLOB_NAME_MAX = 200;
export const BLOB_PREFIX = /^[a-z0-9/]{0,200}$/;

export function isBlobName(name: string): boolean {
  return name.length <= BLOB_NAME_MAX && BLOB_NAME.test(name);
}

/** An account's namespace: a hash of its ID, so any ID maps to a safe path or key prefix. */
export function namespaceOf(account: string): string {
  return createHash('sha256').update(`coffer-relay/v1/namespace\0${account}`).digest('hex').slice(0, 32);
}

export interface BlobInfo {
  readonly name: string;
  readonly size: number;
}

/** Inclusive byte range. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/**
 * The bytes of a new object: a buffer, or a stream that the store reads to its end
 * (request bodies stream through; a stream that fails makes the put fail with that
 * error and leaves nothing behind). `length`, when known, is the stream's exact length.
 */
export type BlobBody = Buffer | Readable;

export interface BlobStore {
  readonly name: string;
  /**
   * 'exists' if the object is already there (nothing kept). The object becomes visible
   * only once complete and durable; a failed or aborted put leaves no object and no
   * temporary data.
   */
  put(ns: string, name: string, data: BlobBody, options?: { readonly length?: number }): Promise<'created' | 'exists'>;
  /** Size in bytes, or null when absent. */
  size(ns: string, name: string): Promise<number | null>;
  /** The bytes (or a range of them); null when absent. */
  read(ns: string, name: string, range?: ByteRange): Promise<Readable | null>;
  /** Objects whose names start with `prefix`, sorted by name. */
  list(ns: string, prefix: string): Promise<BlobInfo[]>;
  /**
   * Removes the object; true when this call removed it, false when it was absent (the
   * caller releases quota only on true, so concurrent deletes release it once).
   */
  delete(ns: string, name: string): Promise<boolean>;
  close(): Promise<void>;
}

/** A backend failure; `full` when the storage is out of space. */
export class BlobStoreError extends Error {
  override readonly name = 'BlobStoreError';
  constructor(
    message: string,
    readonly full = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
