import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';
import { inspect } from 'node:util';
import type { BackupKey } from './backup-key.js';
import { BackupLabel } from './labels.js';
import { napiBinding } from '../repository/native-binding.js';

/**
 * How a repository makes chunk IDs (spec §6.2): HMAC-SHA256 (format versions 1–3) or
 * keyed BLAKE3 (version 4 on). Keyed BLAKE3 costs ~105 µs of CPU per MiB on this
 * machine's cores against HMAC-SHA256's ~510 (SHA extensions and all), the same for a
 * 5 KB file (~4 µs each): every byte backed up, and every byte restored or checked, is
 * hashed once (issue 13: on the 1 GiB chat set the chunk-ID check was a fifth of a
 * restore's CPU).
 */
export type ChunkIdFunction = 'hmac-sha256' | 'blake3';

/** A chunk-ID key as it travels to a thread: its function and its 32 bytes. */
export interface ChunkIdKeySpec {
  fn: ChunkIdFunction;
  key: Uint8Array;
}

/** A chunk-ID key made ready once per thread (chunkIdKeyOf): `id` gives a chunk's ID. */
export interface ChunkIdKey {
  id(chunk: Uint8Array): Buffer;
}

interface Blake3Hasher {
  reset(): void;
  update(input: Uint8Array): Blake3Hasher;
  digestBuffer(): Buffer;
}
interface BlakeApi {
  Blake3Hasher: { newKeyed(key: Buffer): Blake3Hasher };
}
let blakeApi: BlakeApi | undefined;

/** The BLAKE3 binding (`@napi-rs/blake-hash`, prebuilt for Linux, macOS, Windows, FreeBSD, Android), or a clear error. */
function blake3Api(): BlakeApi {
  if (!blakeApi) {
    try {
      blakeApi = napiBinding<BlakeApi>('@napi-rs/blake-hash');
    } catch (e) {
      throw new Error(`keyed BLAKE3 (the chunk IDs of version 4 repositories) is not available here: the @napi-rs/blake-hash package did not load (${(e as Error).message})`, { cause: e });
    }
  }
  return blakeApi;
}

class HmacChunkIdKey implements ChunkIdKey {
  readonly #key: KeyObject;
  constructor(key: Uint8Array) {
    this.#key = createSecretKey(key);
  }
  id(chunk: Uint8Array): Buffer {
    return createHmac('sha256', this.#key).update(chunk).digest();
  }
}

class Blake3ChunkIdKey implements ChunkIdKey {
  /** One keyed hasher, reset before each chunk (reset keeps the key). */
  readonly #h: Blake3Hasher;
  constructor(key: Uint8Array) {
    if (key.length !== 32) throw new RangeError('a BLAKE3 chunk-ID key is 32 bytes');
    this.#h = blake3Api().Blake3Hasher.newKeyed(Buffer.from(key));
  }
  id(chunk: Uint8Array): Buffer {
    this.#h.reset();
    return this.#h.update(chunk).digestBuffer();
  }
}

/** The chunk-ID key of `spec`, ready to use on this thread. */
export function chunkIdKeyOf(spec: ChunkIdKeySpec): ChunkIdKey {
  return spec.fn === 'blake3' ? new Blake3ChunkIdKey(spec.key) : new HmacChunkIdKey(spec.key);
}

/**
 * A chunk's keyed ID (spec §6.2) under a chunk-ID key made ready once by the caller
 * (chunkIdKeyOf: given as bytes, every createHmac imported them anew, about 1 µs of a
 * small file's 4.5 µs): RepositoryKeys.chunkId, and the threads given the key (chunking,
 * restore's writer and check threads).
 */
export function chunkIdUnder(key: ChunkIdKey, chunk: Uint8Array): Buffer {
  return key.id(chunk);
}

/**
 * The keys one repository uses, each derived from the backup key with its own label
 * and the repository ID as HKDF salt (spec §3.3), so two repositories under one key
 * share no derived key and objects can't be moved between them.
 */
export class RepositoryKeys {
  readonly objectMaster: Uint8Array;
  readonly gearTable: Uint8Array;
  readonly chunkIdFunction: ChunkIdFunction;
  readonly #chunkIdKey: Uint8Array;
  #chunkIdKeyReady: ChunkIdKey | undefined;

  /** @param chunkIds how the repository makes chunk IDs (its format version: repositoryChunkIds) */
  constructor(key: BackupKey, repositoryId: Uint8Array, chunkIds: ChunkIdFunction = 'hmac-sha256') {
    this.objectMaster = key.derive(BackupLabel.objectMaster, 32, repositoryId);
    this.gearTable = key.derive(BackupLabel.gearTable, 1024, repositoryId);
    this.chunkIdFunction = chunkIds;
    this.#chunkIdKey = key.derive(chunkIds === 'blake3' ? BackupLabel.chunkIdBlake3 : BackupLabel.chunkId, 32, repositoryId);
  }

  /** The chunk-ID key's bytes (its function: chunkIdFunction). */
  get chunkIdKey(): Uint8Array {
    return this.#chunkIdKey;
  }

  /** The chunk-ID key and its function, for the threads (which run in this process): chunkIdKeyOf there. */
  get chunkIdSpec(): ChunkIdKeySpec {
    return { fn: this.chunkIdFunction, key: this.#chunkIdKey };
  }

  /** Keyed chunk ID of the chunk's plaintext (spec §6.2): HMAC-SHA256 or keyed BLAKE3, as the repository's version says. */
  chunkId(chunk: Uint8Array): Buffer {
    this.#chunkIdKeyReady ??= chunkIdKeyOf(this.chunkIdSpec);
    return this.#chunkIdKeyReady.id(chunk);
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
