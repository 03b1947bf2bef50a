/**
 * The OPAQUE server setup (RFC 9807 §6.2: OPRF seed and server AKE key pair, as
 * @serenity-kit/opaque serializes it) at rest: sealed by the HSM's record key and bound
 * to the fleet key ID. SoftHSM2 cannot run ristretto255, so the setup is unsealed into
 * the vault process's memory at start-up; docs/threat-model.md says what that means.
 */
import { ByteWriter, LABELS, Secret, utf8 } from '@coffer/protocol';
import { KEY_LABELS } from './key-labels.js';
import { PlatformError, type Platform } from './platform.js';

function aad(fleetKeyId: Uint8Array): Uint8Array {
  return new ByteWriter().bytes(utf8(LABELS.opaqueSetupSeal)).u8(0).bytes(fleetKeyId).finish();
}

export async function sealOpaqueSetup(platform: Platform, fleetKeyId: Uint8Array, setup: Secret<string>): Promise<Uint8Array> {
  return platform.seal(KEY_LABELS.recordSeal, aad(fleetKeyId), utf8(setup.expose()));
}

/** @throws PlatformError('key-missing') when the sealed setup does not open with this platform's key. */
export async function unsealOpaqueSetup(platform: Platform, fleetKeyId: Uint8Array, sealed: Uint8Array): Promise<Secret<string>> {
  const plain = await platform.unseal(KEY_LABELS.recordSeal, aad(fleetKeyId), sealed);
  if (!plain) throw new PlatformError('the sealed OPAQUE server setup does not open with this platform\'s record key (another fleet\'s file?)', 'key-missing');
  return new Secret(new TextDecoder().decode(plain));
}
