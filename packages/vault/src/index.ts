/**
 * @coffer/vault: the Backup Key Vault. The pure core, the platforms behind it, the
 * record stores, and the coffer-vault service (spec/vault-protocol.md).
 */
export { VaultCore, DEFAULT_POLICY, checkPolicy, KEY_LABELS, RecordIntegrityError, PlatformError } from './core/index.js';
export type { CorePolicy, Decision, OpenResult, OpenedVaultRequest, RecordWrite, RefusalCode, Platform, AccountRecord } from './core/index.js';
export { openPlatform, provisionVaultKeys, VAULT_KEYS, SOFTWARE_PLATFORM_WARNING, type PlatformConfig, type OpenedPlatform } from './platform/index.js';
export { StoreError, type RecordStore, type RecordVersion, type StoredRecord, type CasResult } from './store/store.js';
export { SqliteRecordStore } from './store/sqlite.js';
export { buildApp, ACCOUNT_HEADER, type AppOptions } from './server/app.js';
export { assembleVault, type RunningVault, type AssembleOptions } from './server/start.js';
export { loadConfig, ConfigError, type VaultConfig } from './server/config.js';
export { ERRORS, type ErrorCode } from './server/errors.js';
export { VaultService, type ServiceResult } from './server/vault-service.js';
export { createMetrics, type VaultMetrics } from './server/metrics.js';
export { ensureFleetFile, loadFleet, fleetBundle, type LoadedFleet } from './server/fleet.js';
export { installNodeCrypto, nodeCryptoProvider } from './server/node-crypto.js';
