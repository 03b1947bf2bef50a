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
import { LogCommitter } from './log-commit.js';
import { FleetCommitter } from './fleet-group.js';
import { isLogStore } from '../store/store.js';
import { concat, sha256, utf8 } from '@coffer/protocol';
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
  readonly service: VaultService;
  /** Rollback protection (spec §13), when on: a one-node group over the SQLite store. */
  readonly committer: LogCommitter | null;
  /** Rollback protection of an etcd fleet (spec §13.6–§13.9), when on. */
  readonly fleetGroup: FleetCommitter | null;
  close(): Promise<void>;
}

/** Rollback protection needs the platform's anchor; ROLLBACK_WARNING when it is off. */
export const NO_ROLLBACK_PROTECTION_WARNING =
  'rollback protection is OFF: the record store is trusted not to be rolled back (restoring an old copy of it gives accounts fresh guesses). See docs/threat-model.md';

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
    const wanted = !config.insecureNoRollbackProtectionForTesting;
    const groupSize = config.groupSize ?? (config.rollbackProtection ? 1 : 3);
    store = config.store?.kind === 'etcd' ? openEtcdStore(config.store) : new SqliteRecordStore(config.storePath, { exclusive: wanted });
    const metrics = createMetrics({ defaultMetrics: options.defaultMetrics ?? false });
    let log: FastifyInstance['log'] | null = null;
    const serviceLog = { info: (o: object, m: string) => log?.info(o, m), warn: (o: object, m: string) => log?.warn(o, m), error: (o: object, m: string) => log?.error(o, m) };
    // A one-node group over SQLite (spec §13.4), on either platform's anchor (software:
    // an fsynced file; PKCS#11: the token object); an etcd fleet is a group of
    // groupSize members (§13.5–§13.9).
    let committer: LogCommitter | null = null;
    let fleetGroup: FleetCommitter | null = null;
    if (wanted && isLogStore(store)) {
      // The group ID binds the fleet key, the etcd prefix and the group's size (spec §13.5):
      // a node configured with another size is another group and cannot count for this one.
      const scope = config.store?.kind === 'etcd' ? utf8(`\u0000etcd:${config.store.prefix}${groupSize > 1 ? `\u0000size:${groupSize}` : ''}`) : new Uint8Array(0);
      const group = (await sha256(concat(utf8('coffer/vault/v1/embedded-group'), new Uint8Array([0]), fleet.fleetKey.keyId, scope))).slice(0, 16);
      if (store instanceof EtcdRecordStore && groupSize > 1) {
        fleetGroup = new FleetCommitter({
          ...(config.adoptLogHead ? { adoptUnloggedStore: true } : {}), platform: platform.platform, store, group, groupSize, metrics, log: serviceLog, ...(config.logBatchMax ? { maxBatchRequests: config.logBatchMax } : {}), insecureCrashBeforeCaptureForTesting: config.insecureCrashBeforeCaptureForTesting ?? false,
          ...(config.acksBeforeCaptureForTesting ? { acksBeforeCaptureForTesting: true } : {}), ...(config.fullPassMsForTesting ? { fullPassMsForTesting: config.fullPassMsForTesting } : {}), ...(config.peerUrl ? { peerUrl: config.peerUrl } : {}) });
      } else committer = new LogCommitter({ platform: platform.platform, store, group, metrics, log: serviceLog, adoptWithoutAnchor: config.adoptLogHead ?? false, insecureCrashBeforeCaptureForTesting: config.insecureCrashBeforeCaptureForTesting ?? false });
    } else warn(NO_ROLLBACK_PROTECTION_WARNING);
    const service = new VaultService({
      core,
      store,
      metrics,
      insecureCrashAfterCommitForTesting: config.insecureCrashAfterCommitForTesting,
      sweepIntervalMs: config.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS,
      log: serviceLog,
      ...(committer ? { committer } : fleetGroup ? { committer: fleetGroup } : {}),
    });
    const linkKey = config.linkKeyFile ? loadLinkKey(config.linkKeyFile, { create: options.createIfMissing ?? false }) : undefined;
    const describe = { platform: platform.platform.name, store: store.name };
    const app = buildApp({ service, metrics, describe, logger: options.logger ?? false, ...(linkKey ? { linkKey } : {}), ...(fleetGroup ? { group: fleetGroup } : {}) });
    const admin = buildAdminApp({ metrics, describe, log: app.log });
    log = app.log;
    if (store instanceof EtcdRecordStore) store.onCompactionError = (err) => log?.warn({ err: err.message }, 'etcd: compaction after an erasure failed; retrying');
    service.startSweeper();
    // Resume now (anchor, log, records), so a rolled-back store is reported at start-up;
    // the vault still starts and refuses requests (store-rolled-back) while it lasts.
    if (committer) await committer.ready().catch(() => undefined);
    if (fleetGroup) await fleetGroup.start();
    const s = store;
    return {
      app,
      admin,
      fleet,
      metrics,
      store: s,
      platform,
      service,
      committer,
      fleetGroup,
      async close() {
        await app.close();
        await admin.close();
        await service.close();
        await fleetGroup?.close();
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
