/**
 * The repository config object (spec/backup-format.md §4): the only object stored in
 * the clear. It names the format version, the repository ID, the key ID and the
 * chunker parameters, and is MACed under a key derived from the backup key, so a
 * wrong key is told apart from a corrupt repository before anything is decrypted.
 *
 * Version 4 is version 3 with chunk IDs made by keyed BLAKE3 instead of HMAC-SHA256
 * (spec §6.2).
 *
 * Version 3 stores a key ID salted with the repository ID (so two repositories of one
 * key can't be linked by their configs) and a key check that does not depend on the
 * repository ID (a random nonce and its HMAC under a key from K alone): with one byte
 * damaged anywhere, one of the two still proves the key right, so damage is never
 * reported as a wrong key.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { type BackupKey, formatKeyId } from '../crypto/backup-key.js';
import { BackupLabel } from '../crypto/labels.js';
import type { ChunkIdFunction } from '../crypto/repository-keys.js';
import { type ChunkerParams, validateChunkerParams } from '../chunker/fastcdc.js';
import { CofferError } from '../errors.js';
import { PadMode } from './padding.js';

export const CONFIG_NAME = 'config';
export const CONFIG_MAGIC = 'CFRP';
/** The version this coffer writes; it reads versions 1 to 3 too (spec §4). */
export const REPOSITORY_VERSION = 4;
export const READABLE_VERSIONS: readonly number[] = [1, 2, 3, 4];

/**
 * How a repository of `version` makes chunk IDs (spec §6.2): keyed BLAKE3 from version 4
 * (the same config layout as version 3: the version byte says it), HMAC-SHA256 before.
 * A repository keeps its version for life, and with it its chunk IDs.
 */
export function repositoryChunkIds(version: number): ChunkIdFunction {
  return version >= 4 ? 'blake3' : 'hmac-sha256';
}
/** The size of a version 1 or 2 config. */
export const CONFIG_BYTES = 88;
/** The size of a version 3 config: a key-check nonce and tag before the MAC. */
export const CONFIG_V3_BYTES = 120;

/** The config's size in `version`. */
export function configBytes(version: number): number {
  return version >= 3 ? CONFIG_V3_BYTES : CONFIG_BYTES;
}

export enum Compression {
  None = 0,
  Zstd = 1,
}

export interface RepositoryConfig {
  version: number;
  repositoryId: Uint8Array; // 16 bytes
  keyId: Uint8Array; // 16 bytes
  chunker: ChunkerParams;
  compression: Compression;
  /** The default padding of backups (version 2; version 1 repositories have none). */
  padding: PadMode;
  /** Version 3: the random nonce of the key check (16 bytes). */
  keyCheckNonce?: Uint8Array;
}

function configMac(key: BackupKey, repositoryId: Uint8Array, body: Uint8Array): Buffer {
  const macKey = key.derive(BackupLabel.configMac, 32, repositoryId);
  return createHmac('sha256', macKey).update(body).digest();
}

export function newConfig(key: BackupKey, chunker: ChunkerParams, compression: Compression, rng = randomBytes, padding = PadMode.Auto): RepositoryConfig {
  validateChunkerParams(chunker);
  const repositoryId = Uint8Array.from(rng(16));
  const keyCheckNonce = Uint8Array.from(rng(16));
  return { version: REPOSITORY_VERSION, repositoryId, keyId: key.repositoryKeyId(repositoryId), chunker, compression, padding, keyCheckNonce };
}

/** The key ID the user sees for this repository: the one its config stores (salted from version 3 on). */
export function repositoryKeyIdOf(c: RepositoryConfig): Uint8Array {
  return c.keyId;
}

export function encodeConfig(key: BackupKey, c: RepositoryConfig): Uint8Array {
  const size = configBytes(c.version);
  const out = Buffer.alloc(size);
  out.write(CONFIG_MAGIC, 0, 'ascii');
  out[4] = c.version;
  out.set(c.repositoryId, 8);
  out.set(c.keyId, 24);
  out.writeUInt32BE(c.chunker.minSize, 40);
  out.writeUInt32BE(c.chunker.avgSize, 44);
  out.writeUInt32BE(c.chunker.maxSize, 48);
  out[52] = c.compression;
  if (c.version >= 2) out[53] = c.padding;
  if (c.version >= 3) {
    if (!c.keyCheckNonce || c.keyCheckNonce.length !== 16) throw new RangeError('keyCheckNonce: expected 16 bytes for a version 3 config');
    out.set(c.keyCheckNonce, 56);
    out.set(key.keyCheck(c.keyCheckNonce), 72);
  }
  out.set(configMac(key, c.repositoryId, out.subarray(0, size - 32)), size - 32);
  return out;
}

/**
 * Reads a config and checks it against `key`, in the order that gives the most useful
 * error: not a repository → unsupported version → wrong key → corrupt (spec §4).
 */
export function decodeConfig(key: BackupKey, bytes: Uint8Array, where: string): RepositoryConfig {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // Compared as bytes: Node's 'ascii' decoding drops the high bit, so 0xC3 read as 'C'.
  if (b.length < 8 || !b.subarray(0, 4).equals(Buffer.from(CONFIG_MAGIC, 'latin1'))) {
    throw new CofferError('not-a-repository', `${where} is not a Coffer repository (its config is not recognised)`);
  }
  const version = b[4]!;
  if (!READABLE_VERSIONS.includes(version)) {
    throw new CofferError(
      'unsupported-version',
      `${where} is a version ${version} repository; this coffer reads versions ${READABLE_VERSIONS.slice(0, -1).join(', ')} and ${READABLE_VERSIONS[READABLE_VERSIONS.length - 1]}`,
    );
  }
  const size = configBytes(version);
  if (b.length !== size) throw new CofferError('corrupt', `the config of ${where} has the wrong size (${b.length} bytes)`);
  if (version >= 3) return decodeConfigV3(key, b, where);
  const keyId = b.subarray(24, 40);
  const mine = key.keyId();
  const repositoryId = Uint8Array.from(b.subarray(8, 24));
  if (!timingSafeEqual(keyId, mine)) {
    // A damaged key ID must not send the holder of the right key away with "wrong key":
    // if the MAC verifies with our key ID in its place, the key is right (spec §4).
    const body = Buffer.from(b.subarray(0, 56));
    body.set(mine, 24);
    if (timingSafeEqual(configMac(key, repositoryId, body), b.subarray(56, 88))) {
      throw new CofferError('corrupt', `the config of ${where} is corrupt (its key ID is damaged)`);
    }
    throw new CofferError(
      'wrong-key',
      `wrong key: ${where} belongs to key ${formatKeyId(keyId)}, the key given is ${formatKeyId(mine)}`,
    );
  }
  const expected = configMac(key, repositoryId, b.subarray(0, 56));
  if (!timingSafeEqual(expected, b.subarray(56, 88)) || b.readUInt8(5) + b.readUInt16BE(6) !== 0 || (version === 1 && b[53] !== 0) || b.readUInt16BE(54) !== 0) {
    throw new CofferError('corrupt', `the config of ${where} is corrupt (its MAC does not verify)`);
  }
  return decodeFields(b, version, repositoryId, keyId, where);
}

/**
 * Version 3 (spec §4): the key ID is salted with the repository ID; when it differs,
 * the key check (which does not involve the repository ID) decides between a damaged
 * config and a wrong key.
 */
function decodeConfigV3(key: BackupKey, b: Buffer, where: string): RepositoryConfig {
  const repositoryId = Uint8Array.from(b.subarray(8, 24));
  const keyId = b.subarray(24, 40);
  const nonce = b.subarray(56, 72);
  const check = b.subarray(72, 88);
  const mine = key.repositoryKeyId(repositoryId);
  const keyCheckOk = timingSafeEqual(key.keyCheck(nonce), check);
  if (!timingSafeEqual(keyId, mine)) {
    const body = Buffer.from(b.subarray(0, 88));
    body.set(mine, 24);
    if (keyCheckOk || timingSafeEqual(configMac(key, repositoryId, body), b.subarray(88, 120))) {
      throw new CofferError('corrupt', `the config of ${where} is corrupt (its repository ID or key ID is damaged; the key is right)`);
    }
    throw new CofferError(
      'wrong-key',
      `wrong key: ${where} belongs to another key (key ID ${formatKeyId(keyId)} in this repository; the key given would show ${formatKeyId(mine)} here)`,
    );
  }
  const expected = configMac(key, repositoryId, b.subarray(0, 88));
  if (!timingSafeEqual(expected, b.subarray(88, 120)) || !keyCheckOk || b.readUInt8(5) + b.readUInt16BE(6) !== 0 || b.readUInt16BE(54) !== 0) {
    throw new CofferError('corrupt', `the config of ${where} is corrupt (its MAC does not verify)`);
  }
  return { ...decodeFields(b, b[4]!, repositoryId, keyId, where), keyCheckNonce: Uint8Array.from(nonce) };
}

function decodeFields(b: Buffer, version: number, repositoryId: Uint8Array, keyId: Uint8Array, where: string): RepositoryConfig {
  const chunker = { minSize: b.readUInt32BE(40), avgSize: b.readUInt32BE(44), maxSize: b.readUInt32BE(48) };
  try {
    validateChunkerParams(chunker);
  } catch {
    throw new CofferError('corrupt', `the config of ${where} has invalid chunker parameters`);
  }
  const compression = b[52]!;
  if (compression !== Compression.None && compression !== Compression.Zstd) {
    throw new CofferError('unsupported-version', `${where} uses compression ${compression}, unknown to this coffer`);
  }
  const padding = b[53]!;
  if (padding > PadMode.Max) throw new CofferError('unsupported-version', `${where} uses padding mode ${padding}, unknown to this coffer`);
  return { version, repositoryId, keyId: Uint8Array.from(keyId), chunker, compression, padding };
}
