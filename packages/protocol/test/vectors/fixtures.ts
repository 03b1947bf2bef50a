/**
 * Deterministic keys and helpers shared by the vault vector generator and the vector
 * test. Test-only: uses node:crypto to turn a fixed scalar into a P-256 key pair.
 */
import { createECDH, createHash } from 'node:crypto';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidPeerKeyError, type EphemeralKeyPair } from '../../src/index.js';

export const VECTOR_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', '..', 'spec', 'vectors', 'vault');

/** A P-256 scalar from a seed string (SHA-256; valid with overwhelming probability). */
export function scalar(seed: string): Buffer {
  return createHash('sha256').update(`coffer vault vector: ${seed}`).digest();
}

export function publicKeyOf(sk: Buffer): Uint8Array {
  const e = createECDH('prime256v1');
  e.setPrivateKey(sk);
  return new Uint8Array(e.getPublicKey());
}

export function dhWith(sk: Buffer): (enc: Uint8Array) => Promise<Uint8Array> {
  const e = createECDH('prime256v1');
  e.setPrivateKey(sk);
  return async (enc) => {
    try {
      return new Uint8Array(e.computeSecret(enc));
    } catch {
      throw new InvalidPeerKeyError();
    }
  };
}

export async function ephemeral(sk: Buffer): Promise<EphemeralKeyPair> {
  return { publicKey: publicKeyOf(sk), dh: dhWith(sk) };
}

export type Expect = 'success' | 'decode-error' | 'decryption-error';

export type Vector =
  | { name: string; kind: 'request'; expect: Expect; comment: string; recipientPrivateKey: string; recipientPublicKey: string; ephemeralPrivateKey: string; account: string; op: string; body: string; request: string; openAs?: { account: string } }
  | { name: string; kind: 'response'; expect: Expect; comment: string; recipientPrivateKey: string; request: string; account: string; responseNonce: string; body: string; response: string }
  | { name: string; kind: 'request-body'; expect: Expect; comment: string; op: string; encoded: string; decoded?: unknown }
  | { name: string; kind: 'response-body'; expect: Expect; comment: string; encoded: string; decoded?: unknown }
  | { name: string; kind: 'key-wrap'; expect: Expect; comment: string; exportKey: string; account: string; nonce: string; backupKey: string; wrapped: string }
  | { name: string; kind: 'release'; expect: Expect; comment: string; sessionKey: string; account: string; nonce: string; wrappedKey: string; released: string }
  | { name: string; kind: 'owner-token'; expect: Expect; comment: string; backupKey: string; account: string; token: string; tokenHash: string }
  | { name: string; kind: 'fleet-key-id'; expect: Expect; comment: string; publicKey: string; keyId: string };

/** JSON form of decoded messages: bytes as hex. */
export function toJsonable(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
  if (Array.isArray(v)) return v.map(toJsonable);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJsonable(x)]));
  return v;
}
