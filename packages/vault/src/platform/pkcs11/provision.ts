/**
 * Creating the vault's keys on a token (the `vault` admin command's PKCS#11 half).
 */
import pkcs11js from 'pkcs11js';
import type { Handle, PKCS11 } from 'pkcs11js';
import { PlatformError } from '../../core/platform.js';
import { toPlatformError } from './errors.js';
import { ecdhKeyPairTemplates, findByLabel, findKey, macKeyTemplate, sealKeyTemplate } from './keys.js';
import type { KeyKind } from './keys.js';
import type { Pkcs11Options } from './token.js';
import { openToken } from './token.js';

/** The labels of the keys to create, by use. */
export interface Pkcs11KeyLabels {
  /** AES-256 keys for `seal`/`unseal` (and AES key wrap). */
  readonly seal?: readonly string[];
  /** 256-bit generic secrets for `mac` (CKM_SHA256_HMAC). */
  readonly mac?: readonly string[];
  /** P-256 key pairs for `ecdh`/`publicKey` (private half: CKA_DERIVE only). */
  readonly ecdh?: readonly string[];
}

/** What provisioning did, label by label. */
export interface ProvisionReport {
  readonly created: readonly string[];
  /** Labels whose keys were already on the token and were left as they are. */
  readonly existing: readonly string[];
}

/**
 * Creates on the token every key in `labels` that is not there yet, as non-extractable,
 * sensitive, non-modifiable token objects. Keys already present under a label are left
 * alone (so running it twice is harmless), after checking that they are of the right
 * type; a label held by a key of the wrong type, or by only half of a key pair, is an
 * error rather than something to overwrite.
 * @throws PlatformError token-missing, login-failed; key-missing when a label is taken
 *   by an unusable object; hsm-failure when the token refuses to generate a key
 * With `exportable`, the keys it creates are CKA_EXTRACTABLE (still sensitive): only the
 * fleet's keys on a ceremony source token (`fleet init`, `fleet rotate`), so that they can
 * be wrapped to other tokens.
 * @example
 * await provisionPkcs11Keys(opts, { seal: ['coffer-record-seal-v1'], mac: ['coffer-log-mac-v1'], ecdh: ['coffer-fleet-hpke-v1'] });
 */
export async function provisionPkcs11Keys(opts: Pkcs11Options, labels: Pkcs11KeyLabels, options: { exportable?: boolean } = {}): Promise<ProvisionReport> {
  const exportable = options.exportable === true;
  const wanted: [KeyKind, string][] = [
    ...(labels.seal ?? []).map((l): [KeyKind, string] => ['seal', l]),
    ...(labels.mac ?? []).map((l): [KeyKind, string] => ['mac', l]),
    ...(labels.ecdh ?? []).map((l): [KeyKind, string] => ['ecdh-private', l]),
  ];
  for (const [, l] of wanted) {
    if (typeof l !== 'string' || l === '') throw new TypeError('key labels must be non-empty strings');
  }
  const token = openToken({ ...opts, poolSize: 1 });
  try {
    return await token.pool.use((s) => {
      const created: string[] = [];
      const existing: string[] = [];
      for (const [kind, label] of wanted) {
        (ensure(token.pkcs11, s, kind, label, exportable) ? created : existing).push(label);
      }
      return { created, existing };
    });
  } finally {
    await token.close();
  }
}

/** Creates the key unless present; true if it created it. */
function ensure(p: PKCS11, s: Handle, kind: KeyKind, label: string, exportable: boolean): boolean {
  if (kind === 'ecdh-private') {
    const priv = findByLabel(p, s, 'ecdh-private', label).length;
    const pub = findByLabel(p, s, 'ecdh-public', label).length;
    if (priv > 0 || pub > 0) {
      if (priv === 0 || pub === 0) {
        throw new PlatformError(`pkcs11: only half of key pair ${JSON.stringify(label)} is on the token`, 'key-missing');
      }
      findKey(p, s, 'ecdh-private', label);
      findKey(p, s, 'ecdh-public', label);
      return false;
    }
    const t = ecdhKeyPairTemplates(label, exportable);
    try {
      p.C_GenerateKeyPair(s, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, t.publicKey, t.privateKey);
    } catch (err) {
      throw toPlatformError(err, `generating P-256 key pair ${JSON.stringify(label)}`);
    }
    return true;
  }
  if (findByLabel(p, s, kind, label).length > 0) {
    findKey(p, s, kind, label); // throws if it is not a usable key of this kind
    return false;
  }
  try {
    if (kind === 'seal') p.C_GenerateKey(s, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, sealKeyTemplate(label, exportable));
    else p.C_GenerateKey(s, { mechanism: pkcs11js.CKM_GENERIC_SECRET_KEY_GEN }, macKeyTemplate(label, exportable));
  } catch (err) {
    throw toPlatformError(err, `generating ${kind} key ${JSON.stringify(label)}`);
  }
  return true;
}
