/** @coffer/relay: the Coffer front end (spec/relay-api.md). */
export { buildApp, buildAdminApp, DEFAULT_LIMITS, DEFAULT_MAX_OBJECT_BYTES, LOG_REDACT, type AppOptions, type RateLimits } from './app.js';
export { loadConfig, ConfigError, DEFAULT_PORT, type RelayConfig } from './config.js';
export { assembleRelay, type RunningRelay, type AssembleOptions } from './start.js';
export { ERRORS, RelayError, errorBody, type ErrorCode, type ErrorBody } from './errors.js';
export { SqliteAccountStore, SESSION_SIGNING_LABEL, sessionSigningInput, type AccountStore } from './auth/account-store.js';
export { PgAccountStore } from './auth/pg-store.js';
export { JwtVerifier, type JwtConfig } from './auth/jwt.js';
export { LocalBlobStore } from './blobs/local.js';
export { S3BlobStore, type S3Config } from './blobs/s3.js';
export { BlobStoreError, type BlobStore, type BlobInfo, type ByteRange } from './blobs/store.js';
export { VaultForwarder, type ForwardResult } from './vault-forwarder.js';
export { TokenBuckets, type BucketRule } from './rate-limit.js';
export { loadLinkKey } from '@coffer/protocol/node';
