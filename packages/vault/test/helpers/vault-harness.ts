/**
 * A real vault for tests: software (or PKCS#11) platform, SQLite in a temp dir, the
 * Fastify app driven through `app.inject()` (no sockets) — nothing mocked. Clients are
 * the protocol package's VaultClient with real OPAQUE and HPKE.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSECURE_FAST_KSF_FOR_TESTING, VaultClient, type KsfParams } from '@coffer/protocol';
import { DEFAULT_POLICY, type CorePolicy } from '../../src/core/config.js';
import type { StoreConfig, VaultConfig } from '../../src/server/config.js';
import { assembleVault, type RunningVault } from '../../src/server/start.js';
import type { PlatformConfig } from '../../src/platform/index.js';
import { ACCOUNT_HEADER } from '../../src/server/app.js';

export interface Harness {
  readonly vault: RunningVault;
  readonly dir: string;
  readonly config: VaultConfig;
  client(account: string, options?: { ksf?: KsfParams; now?: () => number }): VaultClient;
  /** POST raw bytes as `account`; returns status and body. */
  post(account: string | null, body: Uint8Array | string, contentType?: string): Promise<{ status: number; body: Buffer; json: () => { error: { code: string } } }>;
  /** The stored record bytes (null if none). */
  stored(account: string): Promise<Uint8Array | null>;
  metric(name: string): Promise<number>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  policy?: Partial<CorePolicy>;
  dir?: string;
  platform?: PlatformConfig;
  /** Receives the service's pino log lines (JSON), at info level. */
  logLines?: string[];
  /** The record store (default: SQLite in the temp dir). */
  store?: StoreConfig;
  /** Further config (e.g. `adoptLogHead`). */
  config?: Partial<VaultConfig>;
}

export function testConfig(dir: string, options: HarnessOptions = {}): VaultConfig {
  return {
    host: '127.0.0.1',
    port: 0,
    dataDir: dir,
    platform: options.platform ?? { kind: 'software', keyFile: join(dir, 'software-keys.json') },
    storePath: join(dir, 'records.sqlite'),
    ...(options.store ? { store: options.store } : {}),
    fleetFile: join(dir, 'fleet.json'),
    policy: { ...DEFAULT_POLICY, insecureAllowWeakKsfForTesting: true, ...options.policy },
    logLevel: 'silent',
    // Driven through app.inject() with no relay in front; tests of link authentication
    // set `linkKeyFile`, which takes precedence.
    insecureNoLinkAuthForTesting: true,
    insecureCrashAfterCommitForTesting: false,
    ...options.config,
  };
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'coffer-vault-test-'));
  const config = testConfig(dir, options);
  const logLines = options.logLines;
  const logger = logLines ? { level: 'info', stream: { write: (line: string) => void logLines.push(line) } } : false;
  const vault = await assembleVault(config, { createIfMissing: true, warn: () => {}, logger });
  const post: Harness['post'] = async (account, body, contentType = 'application/octet-stream') => {
    const res = await vault.app.inject({
      method: 'POST',
      url: '/v1/request',
      headers: { 'content-type': contentType, ...(account !== null ? { [ACCOUNT_HEADER]: account } : {}) },
      payload: typeof body === 'string' ? body : Buffer.from(body),
    });
    return { status: res.statusCode, body: res.rawPayload, json: () => res.json() };
  };
  return {
    vault,
    dir,
    config,
    client(account, o = {}) {
      return new VaultClient({
        fleetKey: vault.fleet.fleetKey,
        account,
        ksf: o.ksf ?? INSECURE_FAST_KSF_FOR_TESTING,
        ...(o.now ? { now: o.now } : {}),
        transport: async (bytes) => {
          const res = await post(account, bytes);
          if (res.status !== 200) throw new Error(`vault answered HTTP ${res.status}: ${res.body.toString()}`);
          return new Uint8Array(res.body);
        },
      });
    },
    post,
    async stored(account) {
      return (await vault.store.get(account))?.value ?? null;
    },
    async metric(name) {
      const m = await vault.metrics.registry.getSingleMetricAsString(name);
      let total = 0;
      for (const line of m.split('\n')) if (line && !line.startsWith('#')) total += Number(line.split(' ').pop());
      return total;
    },
    async close() {
      await vault.close();
      if (!options.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const KEY_K = new Uint8Array(32).map((_, i) => i + 1);
