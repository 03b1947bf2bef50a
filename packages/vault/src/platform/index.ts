/**
 * Platform factory: the deployment's config names the platform; this opens it.
 * The PKCS#11 platform is loaded by dynamic import, so a software deployment never
 * loads pkcs11js.
 */
import type { Platform } from '../core/platform.js';
import { KEY_LABELS } from '../core/key-labels.js';
import { openSoftwarePlatform, provisionSoftwareKeys } from './software.js';

export type PlatformConfig =
  | { readonly kind: 'software'; readonly keyFile: string }
  | {
      readonly kind: 'pkcs11';
      /** Path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so. */
      readonly module: string;
      readonly tokenLabel: string;
      readonly pin: string;
      readonly poolSize?: number;
    };

export interface OpenedPlatform {
  readonly platform: Platform;
  close(): Promise<void>;
}

/** The vault's keys, by kind, as both provisioning functions take them. */
export const VAULT_KEYS = { seal: [KEY_LABELS.recordSeal], ecdh: [KEY_LABELS.fleetHpke], mac: [KEY_LABELS.logMac] } as const;

/** @throws PlatformError (token-missing, login-failed, …) */
export async function openPlatform(config: PlatformConfig): Promise<OpenedPlatform> {
  if (config.kind === 'software') {
    const platform = openSoftwarePlatform(config.keyFile);
    return { platform, close: () => platform.close() };
  }
  const { openPkcs11Platform } = await import('./pkcs11/index.js');
  const platform = await openPkcs11Platform({ module: config.module, tokenLabel: config.tokenLabel, pin: config.pin, ...(config.poolSize ? { poolSize: config.poolSize } : {}) });
  return { platform, close: () => platform.close() };
}

/**
 * Creates the vault's keys on the platform where missing (idempotent).
 * @param options.exportable PKCS#11: create them CKA_EXTRACTABLE (still sensitive) so the
 *   key ceremony can wrap them to other tokens (`fleet init` on the first node)
 * @returns the labels created
 */
export async function provisionVaultKeys(config: PlatformConfig, options: { exportable?: boolean } = {}): Promise<readonly string[]> {
  if (config.kind === 'software') return provisionSoftwareKeys(config.keyFile, VAULT_KEYS);
  const { provisionPkcs11Keys } = await import('./pkcs11/index.js');
  const report = await provisionPkcs11Keys({ module: config.module, tokenLabel: config.tokenLabel, pin: config.pin }, VAULT_KEYS, options);
  return report.created;
}

export { SOFTWARE_PLATFORM_WARNING } from './software.js';
