/**
 * Assembles a relay from its config: account store, JWT verifier, link key, vault
 * forwarder, blob store, app. Shared by `coffer-relay`, tests and the benchmark.
 */
import { readFileSync } from 'node:fs';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import { buildAdminApp, buildApp } from './app.js';
import { SqliteAccountStore, type AccountStore } from './auth/account-store.js';
import { PgAccountStore } from './auth/pg-store.js';
import { SessionCachingStore } from './auth/session-cache.js';
import { JwtVerifier } from './auth/jwt.js';
import type { PasswordKdf } from './auth/password.js';
import { LocalBlobStore } from './blobs/local.js';
import { S3BlobStore } from './blobs/s3.js';
import type { BlobStore } from './blobs/store.js';
import type { RelayConfig } from './config.js';
import { installNodeCrypto, loadLinkKey } from '@coffer/protocol/node';
import { createMetrics, type RelayMetrics } from './metrics.js';
import { VaultForwarder } from './vault-forwarder.js';

export interface RunningRelay {
  readonly app: FastifyInstance;
  /** /metrics and /healthz, for the admin listener. */
  readonly admin: FastifyInstance;
  readonly jwt: JwtVerifier | null;
  readonly metrics: RelayMetrics;
  readonly accounts: AccountStore | null;
  readonly blobs: BlobStore;
  close(): Promise<void>;
}

export interface AssembleOptions {
  readonly logger?: FastifyServerOptions['logger'];
  /** Create the link key file if missing (the embedded default). */
  readonly createLinkKey?: boolean;
  readonly defaultMetrics?: boolean;
  /** Replace the configured blob store (tests of a failing store). */
  readonly blobStore?: BlobStore;
  /** Replace the account-password KDF (tests count its calls). */
  readonly passwordKdf?: PasswordKdf;
  /** The clock of sessions, challenges and rate limits (tests); default Date.now. */
  readonly now?: () => number;
}

export async function openAccountStore(config: RelayConfig, options: { now?: () => number } = {}): Promise<AccountStore> {
  const o = { sessionTtlMs: config.sessionTtlMs, ...(options.now ? { now: options.now } : {}) };
  let store: AccountStore;
  if (config.accountStore.backend === 'postgres') {
    const pgStore = await PgAccountStore.open(config.accountStore, o);
    // Hearing other relays' revocations before serving (the cache believes nothing until then).
    if (config.sessionCacheMs > 0) await pgStore.listening();
    store = pgStore;
  } else store = new SqliteAccountStore(config.dbPath, o);
  // Verified sessions believed for a few seconds (auth/session-cache.ts): on PostgreSQL a
  // session check per forwarded message was a round trip to the server on the hot path.
  return config.sessionCacheMs > 0 ? new SessionCachingStore(store, { ttlMs: config.sessionCacheMs, ...(options.now ? { now: options.now } : {}) }) : store;
}

/** A temporary file not written for this long (or twice the request timeout) is an upload a crash cut off. */
const STALE_UPLOAD_MS = 15 * 60_000;

export async function assembleRelay(config: RelayConfig, options: AssembleOptions = {}): Promise<RunningRelay> {
  // The link MAC of every forwarded request on node:crypto (synchronous), not WebCrypto.
  installNodeCrypto();
  const linkKey = loadLinkKey(config.linkKeyFile, { create: options.createLinkKey ?? false });
  const metrics = createMetrics({ defaultMetrics: options.defaultMetrics ?? false });
  const accounts = config.accounts ? await openAccountStore(config, options.now ? { now: options.now } : {}) : null;
  const jwt = config.jwt ? new JwtVerifier(config.jwt) : null;
  const forwarder = new VaultForwarder({ nodes: config.vault.nodes, linkKey, attemptTimeoutMs: config.vault.attemptTimeoutMs, deadlineMs: config.vault.deadlineMs, metrics });
  const blobs = options.blobStore ?? (config.blobs.backend === 'local' ? new LocalBlobStore(config.blobs.dir) : new S3BlobStore(config.blobs));
  const app = buildApp({
    accounts,
    jwt,
    forwarder,
    blobs,
    metrics,
    limits: config.limits,
    maxObjectBytes: config.blobs.maxObjectBytes,
    quotaBytes: config.blobs.quotaBytes,
    maxInFlightBytes: config.blobs.maxInFlightBytes,
    maxInFlightBytesPerAccount: config.blobs.maxInFlightBytesPerAccount,
    bodyIdleTimeoutMs: config.blobs.bodyIdleTimeoutMs,
    ...(config.trustProxy !== null ? { trustProxy: config.trustProxy } : {}),
    ...(options.passwordKdf ? { passwordKdf: options.passwordKdf } : {}),
    ...(options.now ? { now: options.now } : {}),
    logger: options.logger ?? false,
    requestTimeoutMs: config.requestTimeoutMs,
    maxConnectionsPerAddress: config.maxConnectionsPerAddress,
    fleetBundleFile: config.fleetBundleFile,
    https: config.tls ? { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) } : null,
  });
  const admin = buildAdminApp(metrics);
  // Temporary files of uploads a crash cut off, and the directories only they held
  // (LocalBlobStore.sweepTemporaries): swept once at start, in the background.
  if (blobs instanceof LocalBlobStore) {
    const staleAfterMs = Math.max(STALE_UPLOAD_MS, 2 * Math.max(config.requestTimeoutMs, config.blobs.bodyIdleTimeoutMs));
    void blobs.sweepTemporaries(config.requestTimeoutMs > 0 ? staleAfterMs : 24 * 3_600_000);
  }
  return {
    app,
    admin,
    jwt,
    metrics,
    accounts,
    blobs,
    async close() {
      await app.close();
      await admin.close();
      jwt?.close();
      forwarder.close();
      await accounts?.close();
      await blobs.close();
    },
  };
}
