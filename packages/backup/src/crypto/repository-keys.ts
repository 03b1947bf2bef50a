import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';
import { inspect } from 'node:util';
import type { BackupKey } from './backup-key.js';
import { BackupLabel } from './labels.js';

/**
 * A chunk's keyed ID (spec §6.2) under the chunk-ID key, made a KeyObject once by the
 * caller (given as bytes, every createHmac imported them anew: about 1 µs of a small
 * file's 4.5 µs): RepositoryKeys.chunkId, and the threads given the key (chunking,
 * restore's writer).
 */
export function chunkIdUnder(key: KeyObject, chunk: Uint8Array): Buffer {
  return createHmac('sha256', key).update(chunk).digest();
}

/**
 * The keys one repository uses, each derived from the backup key with its own label
 * and the repository ID as HKDF salt (spec §3.3), so two repositories under one key
 * share no derived key and objects can't be moved between them.
 */
export class RepositoryKeys {
  readonly objectMaster: Uint8Array;
  readonly gearTable: Uint8Array;
  readonly #chunkIdKey: Uint8Array;
  #chunkIdKeyObject: KeyObject | undefined;

  constructor(key: BackupKey, repositoryId: Uint8Array) {
    this.objectMaster = key.derive(BackupLabel.objectMaster, 32, repositoryId);
    this.gearTable = key.derive(BackupLabel.gearTable, 1024, repositoryId);
    this.#chunkIdKey = key.derive(BackupLabel.chunkId, 32, repositoryId);
  }

  /** The chunk-ID key, for the chunking workers (which run in this process). */
  get chunkIdKey(): Uint8Array {
    return this.#chunkIdKey;
  }

  /** Keyed chunk ID: HMAC-SHA256 of the chunk's plaintext (spec §6.2). */
  chunkId(chunk: Uint8Array): Buffer {
    this.#chunkIdKeyObject ??= createSecretKey(this.#chunkIdKey);
    return chunkIdUnder(this.#chunkIdKeyObject, chunk);
  }

  // Secret material: never printed, whether by JSON, String() or console.log (STYLE.md §7).
  toString(): string {
    return 'RepositoryKeys([redacted])';
  }
  toJSON(): string {
    return '[redacted]';
  }
  [inspect.custom](): string {
    return this.toString();
  }
}
