/**
 * The fleet key bundle: the vault fleet's HPKE public key(s) that a client pins.
 * JSON so operators can publish and audit it; `coffer-vault bundle` prints it.
 */
import { concat, fromHex, toHex, utf8, equalBytes } from './bytes.js';
import { ClientUsageError } from './errors.js';
import { P256_PUBLIC_KEY_LENGTH } from './hpke.js';
import { LABELS } from './labels.js';
import { sha256 } from './primitives.js';

export const FLEET_KEY_ID_LENGTH = 8;
export const HPKE_SUITE_NAME = 'DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM';

export interface FleetKey {
  /** 8 bytes identifying the key in every request (spec §3.1). */
  readonly keyId: Uint8Array;
  /** SEC1 uncompressed P-256 point, 65 bytes. */
  readonly publicKey: Uint8Array;
}

export interface FleetKeyBundle {
  readonly version: 1;
  readonly suite: typeof HPKE_SUITE_NAME;
  readonly keys: readonly FleetKey[];
}

/** keyId = SHA-256(label || 0x00 || publicKey)[0..8]. */
export async function fleetKeyId(publicKey: Uint8Array): Promise<Uint8Array> {
  const digest = await sha256(concat(utf8(LABELS.fleetKeyId), new Uint8Array([0]), publicKey));
  return digest.slice(0, FLEET_KEY_ID_LENGTH);
}

export async function fleetKeyFromPublicKey(publicKey: Uint8Array): Promise<FleetKey> {
  if (publicKey.length !== P256_PUBLIC_KEY_LENGTH || publicKey[0] !== 0x04) {
    throw new RangeError('publicKey: expected a 65-byte uncompressed P-256 point');
  }
  return { keyId: await fleetKeyId(publicKey), publicKey: publicKey.slice() };
}

export function bundleToJson(bundle: FleetKeyBundle): string {
  return JSON.stringify(
    {
      version: bundle.version,
      suite: bundle.suite,
      keys: bundle.keys.map((k) => ({ keyId: toHex(k.keyId), publicKey: toHex(k.publicKey) })),
    },
    null,
    2,
  );
}

/**
 * Parses and checks a bundle: the suite must be the one this client speaks and every
 * key ID must match its public key.
 * @throws ClientUsageError naming what is wrong.
 */
export async function parseFleetKeyBundle(json: string): Promise<FleetKeyBundle> {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    throw new ClientUsageError('fleet key bundle: not JSON');
  }
  const o = raw as { version?: unknown; suite?: unknown; keys?: unknown };
  if (o === null || typeof o !== 'object' || o.version !== 1) throw new ClientUsageError('fleet key bundle: version must be 1');
  if (o.suite !== HPKE_SUITE_NAME) throw new ClientUsageError(`fleet key bundle: suite must be "${HPKE_SUITE_NAME}"`);
  if (!Array.isArray(o.keys) || o.keys.length === 0) throw new ClientUsageError('fleet key bundle: keys must be a non-empty array');
  const keys: FleetKey[] = [];
  for (const [i, k] of (o.keys as { keyId?: unknown; publicKey?: unknown }[]).entries()) {
    if (typeof k?.keyId !== 'string' || typeof k.publicKey !== 'string') throw new ClientUsageError(`fleet key bundle: keys[${i}] needs keyId and publicKey hex strings`);
    let key: FleetKey;
    try {
      key = await fleetKeyFromPublicKey(fromHex(k.publicKey));
    } catch {
      throw new ClientUsageError(`fleet key bundle: keys[${i}].publicKey is not a P-256 point`);
    }
    if (!/^[0-9a-f]{16}$/.test(k.keyId) || !equalBytes(key.keyId, fromHex(k.keyId))) throw new ClientUsageError(`fleet key bundle: keys[${i}].keyId does not match its public key`);
    keys.push(key);
  }
  return { version: 1, suite: HPKE_SUITE_NAME, keys };
}
