/**
 * Assembles a relay from its config: account store, JWT verifier, link key, vault
 * forwarder, blob store, app. Shared by `coffer-relay`, tests and the benchmark.
 */
import { readFileSync } from 'node:fs';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import { buildApp } from './app.js';
import { AccountStore } from './auth/account-store.js';
import { JwtVerifier } from './auth/jwt.js';
import type { PasswordKdf } from './auth/password.js';
import { LocalBlobStore } from './blobs/local.js';
import { S3BlobStore } from './blobs/s3.js';
import type { BlobStore } from './blobs/store.js';
import type { RelayConfig } from './config.js';
import { loadLinkKey } from '@coffer/protocol/node';
import { createMetrics, type RelayMetrics } from './metrics.js';
import { VaultForwarder } from './vault-forwarder.js';

export interface RunningRelay {
  readonly app: FastifyInstance;
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

export function assembleRelay(config: RelayConfig, options: AssembleOptions = {}): RunningRelay {
  const linkKey = loadLinkKey(config.linkKeyFile, { create: options.createLinkKey ?? false });
  const metrics = createMetrics({ defaultMetrics: options.defaultMetrics ?? false });
  const accounts = config.accounts ? new AccountStore(config.dbPath, { sessionTtlMs: config.sessionTtlMs, ...(options.now ? { now: options.now } : {}) }) : null;
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
    ...(options.passwordKdf ? { passwordKdf: options.passwordKdf } : {}),
    ...(options.now ? { now: options.now } : {}),
    logger: options.logger ?? false,
    requestTimeoutMs: config.requestTimeoutMs,
    fleetBundleFile: config.fleetBundleFile,
    https: config.tls ? { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) } : null,
  });
  return {
    app,
    metrics,
    accounts,
    blobs,
    async close() {
      await app.close();
      forwarder.close();
      accounts?.close();
      await blobs.close();
    },
  };
}
