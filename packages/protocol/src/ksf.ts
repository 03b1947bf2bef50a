/**
 * The OPAQUE key-stretching function (RFC 9807 §6.2 "Stretch"): argon2id with explicit
 * parameters. The client chooses them at registration; the vault records them in the
 * account record and returns them with every KE2, so they can change later without
 * breaking old records.
 */
import { ByteWriter, type ByteReader } from './bytes.js';
import { DecodeError } from './errors.js';

export interface KsfParams {
  readonly algorithm: 'argon2id';
  /** Memory in KiB (RFC 9106 `m`). */
  readonly memoryKiB: number;
  /** Passes (RFC 9106 `t`). */
  readonly iterations: number;
  /** Lanes (RFC 9106 `p`). */
  readonly parallelism: number;
}

/**
 * @serenity-kit/opaque's default, "memory-constrained" (RFC 9106 §4 second
 * recommendation): 64 MiB, 3 passes, 4 lanes. Always passed explicitly, never implied.
 */
export const DEFAULT_KSF: KsfParams = { algorithm: 'argon2id', memoryKiB: 65536, iterations: 3, parallelism: 4 };

/**
 * Cheap argon2id for tests only: an attacker holding a record made with these could
 * test passwords quickly. The vault refuses it unless its deployment sets
 * `insecureAllowWeakKsfForTesting`.
 */
export const INSECURE_FAST_KSF_FOR_TESTING: KsfParams = { algorithm: 'argon2id', memoryKiB: 8, iterations: 1, parallelism: 1 };

export const KSF_ENCODED_LENGTH = 10;
const ARGON2ID = 1;

export function encodeKsf(w: ByteWriter, p: KsfParams): ByteWriter {
  return w.u8(ARGON2ID).u32(p.memoryKiB).u32(p.iterations).u8(p.parallelism);
}

export function decodeKsf(r: ByteReader): KsfParams {
  const algorithm = r.u8('ksf.algorithm');
  if (algorithm !== ARGON2ID) throw new DecodeError(`ksf.algorithm: unknown ${algorithm}`, 'bad-field');
  const memoryKiB = r.u32('ksf.memoryKiB');
  const iterations = r.u32('ksf.iterations');
  const parallelism = r.u8('ksf.parallelism');
  // RFC 9106 §3.1: p ≥ 1, m ≥ 8p, t ≥ 1. Upper bounds keep a hostile record from
  // making a client allocate unbounded memory or spin forever.
  if (parallelism < 1 || parallelism > 16) throw new DecodeError('ksf.parallelism: out of range 1..16', 'bad-field');
  if (memoryKiB < 8 * parallelism || memoryKiB > 4 * 1024 * 1024) throw new DecodeError('ksf.memoryKiB: out of range', 'bad-field');
  if (iterations < 1 || iterations > 64) throw new DecodeError('ksf.iterations: out of range 1..64', 'bad-field');
  return { algorithm: 'argon2id', memoryKiB, iterations, parallelism };
}

/** True when `p` costs at least as much as `floor` in every parameter. */
export function ksfAtLeast(p: KsfParams, floor: KsfParams): boolean {
  return p.memoryKiB >= floor.memoryKiB && p.iterations >= floor.iterations;
}

/** The `keyStretching` option of @serenity-kit/opaque for these parameters. */
export function toSerenityKeyStretching(p: KsfParams): { 'argon2id-custom': { iterations: number; memory: number; parallelism: number } } {
  return { 'argon2id-custom': { iterations: p.iterations, memory: p.memoryKiB, parallelism: p.parallelism } };
}

export function ksfEquals(a: KsfParams, b: KsfParams): boolean {
  return a.memoryKiB === b.memoryKiB && a.iterations === b.iterations && a.parallelism === b.parallelism;
}

/** Convenience for tests and vectors. */
export function ksfBytes(p: KsfParams): Uint8Array {
  return encodeKsf(new ByteWriter(), p).finish();
}
