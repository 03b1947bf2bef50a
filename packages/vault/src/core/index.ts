/** The vault core: pure, no I/O (enforced by eslint and test/core-imports.test.ts). */
export { VaultCore, type Decision, type OpenResult, type OpenedVaultRequest, type RecordWrite, type RefusalCode } from './vault-core.js';
export { DEFAULT_POLICY, checkPolicy, type CorePolicy } from './config.js';
export { KEY_LABELS } from './key-labels.js';
export { RecordIntegrityError, RECORD_FORMAT_VERSION, DEFAULT_RECORD_KEYRING, decodeRecord, encodeRecord, sealRecord, unsealRecord, recordAad, type AccountRecord, type ActiveRecord, type RecordKeyring } from './record.js';
export { sealOpaqueSetup, unsealOpaqueSetup } from './opaque-setup.js';
export { PlatformError, type Platform } from './platform.js';
