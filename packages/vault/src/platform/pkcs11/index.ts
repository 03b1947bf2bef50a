/**
 * The PKCS#11 platform: the vault's keys on a PKCS#11 token (SoftHSM2 in development
 * and tests, any PKCS#11 HSM in production). See docs/pkcs11.md.
 */
export { openPkcs11Platform } from './pkcs11-platform.js';
export type { Pkcs11Platform } from './pkcs11-platform.js';
export type { Pkcs11Options } from './token.js';
export { provisionPkcs11Keys } from './provision.js';
export type { Pkcs11KeyLabels, ProvisionReport } from './provision.js';
export { destroyKeys, inspectKey, KeyTransferError, PKCS11_TRANSFER_SUITE, unwrapKeys, wrapKeysFor } from './transfer.js';
export type { KeyAttributes, TransferItem, TransferKind, UnwrapReport, WrappedItem, WrappedKeys } from './transfer.js';
export { ANCHOR_LABEL } from './anchor.js';
