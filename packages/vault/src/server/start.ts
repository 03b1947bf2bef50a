/**
 * Assembles a vault from its config: platform, fleet file, core, store, service, app.
 * Shared by `coffer-vault serve`, tests and the benchmark.
 */
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import { VaultCore } from '../core/vault-core.js';
import { openPlatform, provisionVaultKeys, SOFTWARE_PLATFORM_WARNING, type OpenedPlatform } from '../platform/index.js';
import { EtcdRecordStore } from '../store/etcd.js';
import { SqliteRecordStore } from '../store/sqlite.js';
import type { RecordStore } from '../store/store.js';
import { buildAdminApp, buildApp } from './app.js';
import { checkLinkAuth, ConfigError, DEFAULT_SWEEP_INTERVAL_MS, NO_LINK_AUTH_WARNING, type StoreConfig, type VaultConfig } from './config.js';
import { readFileSync } from 'node:fs';
import { ensureFleetFile, loadFleet, type LoadedFleet } from './fleet.js';
import { createMetrics, type VaultMetrics } from './metrics.js';
import { installNodeCrypto } from './node-crypto.js';
import { VaultService } from './vault-service.js';
import { loadLinkKey } from './relay-auth.js';

export interface RunningVault {
  /** The request listener's app (the front end talks to it): no /metrics. */
  readonly app: FastifyInstance;
  /** The admin listener's app: /metrics and /healthz (config `admin`). */
  readonly admin: FastifyInstance;
  readonly fleet: LoadedFleet;
  readonly metrics: VaultMetrics;
  readonly store: RecordStore;
  readonly platform: OpenedPlatform;
  close(): Promise<void>;
}

export interface AssembleOptions {
  readonly logger?: FastifyServerOptions['logger'];
  /**
   * Create what is missing on first start: the software platform's key file, and the
   * fleet file (for PKCS#11 the keys must already be on the token: `keys create`).
   */
  readonly createIfMissing?: boolean;
  readonly defaultMetrics?: boolean;
  readonly warn?: (message: string) => void;
}

/** The etcd store from its config: TLS files read here, once. @throws ConfigError for an unreadable file */
export function openEtcdStore(c: Extract<StoreConfig, { kind: 'etcd' }>): EtcdRecordStore {
  const read = (what: string, path: string | undefined): Buffer | undefined => {
    if (!path) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new ConfigError(`etcd.${what} ${path}: ${(err as Error).message}`);
    }
  };
  const ca = read('caFile', c.caFile);
  const cert = read('certFile', c.certFile);
  const key = read('keyFile', c.keyFile);
  return new EtcdRecordStore({
    endpoints: c.endpoints,
    prefix: c.prefix,
    timeoutMs: c.timeoutMs,
    ...(c.compactIntervalMs !== undefined ? { compactIntervalMs: c.compactIntervalMs } : {}),
    ...(ca || cert ? { tls: { ...(ca ? { ca } : {}), ...(cert && key ? { cert, key } : {}) } } : {}),
    ...(c.user && c.password ? { auth: { user: c.user, password: c.password } } : {}),
  });
}

export async function assembleVault(config: VaultConfig, options: AssembleOptions = {}): Promise<RunningVault> {
  installNodeCrypto();
  const warn = options.warn ?? ((m: string) => process.stderr.write(`coffer-vault: WARNING: ${m}\n`));
  if (checkLinkAuth(config) === 'insecure-off') warn(NO_LINK_AUTH_WARNING);
  if (config.platform.kind === 'software') {
    warn(SOFTWARE_PLATFORM_WARNING);
    if (options.createIfMissing) await provisionVaultKeys(config.platform);
  }
  const platform = await openPlatform(config.platform);
  let store: RecordStore | undefined;
  try {
    const fleet = options.createIfMissing ? (await ensureFleetFile(platform.platform, config.fleetFile)).fleet : await loadFleet(platform.platform, config.fleetFile);
    const core = await VaultCore.create(platform.platform, config.policy, fleet.fleetKey, fleet.opaqueSetup, fleet.recordKeys);
    store = config.store?.kind === 'etcd' ? openEtcdStore(config.store) : new SqliteRecordStore(config.storePath);
    const metrics = createMetrics({ defaultMetrics: options.defaultMetrics ?? false });
    let log: FastifyInstance['log'] | null = null;
    const service = new VaultService({
      core,
      store,
      metrics,
      insecureCrashAfterCommitForTesting: config.insecureCrashAfterCommitForTesting,
      sweepIntervalMs: config.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS,
      log: { info: (o, m) => log?.info(o, m), warn: (o, m) => log?.warn(o, m), error: (o, m) => log?.error(o, m) },
    });
    const linkKey = config.linkKeyFile ? loadLinkKey(config.linkKeyFile, { create: options.createIfMissing ?? false }) : undefined;
    const describe = { platform: platform.platform.name, store: store.name };
    const app = buildApp({ service, metrics, describe, logger: options.logger ?? false, ...(linkKey ? { linkKey } : {}) });
    const admin = buildAdminApp({ metrics, describe, log: app.log });
    log = app.log;
    if (store instanceof EtcdRecordStore) store.onCompactionError = (err) => log?.warn({ err: err.message }, 'etcd: compaction after an erasure failed; retrying');
    service.startSweeper();
    const s = store;
    return {
      app,
      admin,
      fleet,
      metrics,
      store: s,
      platform,
      async close() {
        await app.close();
        await admin.close();
        await service.close();
        await s.close();
        await platform.close();
      },
    };
  } catch (err) {
    await store?.close();
    await platform.close();
    throw err;
  }
}
