/**
 * coffer-vault configuration: defaults, then a JSON file (`--config FILE` or
 * COFFER_VAULT_CONFIG), then environment variables. With nothing set, the vault runs
 * the embedded default: software platform, SQLite under ./.coffer-data/vault,
 * listening on 127.0.0.1:7441, metrics on the admin listener 127.0.0.1:7442.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { checkPolicy, DEFAULT_POLICY, type CorePolicy } from '../core/config.js';
import type { PlatformConfig } from '../platform/index.js';

export interface VaultConfig {
  readonly host: string;
  readonly port: number;
  /**
   * The admin listener (/metrics, /healthz): never the request listener's address.
   * Default 127.0.0.1 and the request port + 1 (ephemeral when the request port is 0).
   */
  readonly admin?: { readonly host: string; readonly port: number };
  /** How often the sweeper looks for exhausted records to erase (default 1000 ms). */
  readonly sweepIntervalMs?: number;
  readonly dataDir: string;
  readonly platform: PlatformConfig;
  readonly storePath: string;
  /** Where records live: SQLite at `storePath` (default) or the fleet's etcd cluster. */
  readonly store?: StoreConfig;
  readonly fleetFile: string;
  readonly policy: CorePolicy;
  readonly logLevel: string;
  /**
   * The relay link key (spec/relay-api.md §2): /v1/request needs a valid
   * coffer-relay-auth. Default: .coffer-data/link.key on the embedded default (no data
   * directory configured). With a data directory it must be set: the vault refuses to
   * serve without one unless `insecureNoLinkAuthForTesting` is set.
   */
  readonly linkKeyFile?: string;
  /**
   * TEST ONLY (COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING=1): serve without relay
   * link authentication when no `linkKeyFile` is configured, so anything that reaches
   * the port can name any account, erase records and spend guesses. Warned at start.
   */
  readonly insecureNoLinkAuthForTesting?: boolean;
  /** TEST ONLY (COFFER_VAULT_INSECURE_CRASH_AFTER_COMMIT_FOR_TESTING=1). */
  readonly insecureCrashAfterCommitForTesting: boolean;
  /**
   * Rollback protection (spec §13) with no anchor on this node's platform and a log in
   * the store: adopt the store's head once instead of refusing (COFFER_VAULT_ADOPT_LOG_HEAD=1).
   * An operator decision after a lost anchor (docs/operations.md, "A lost anchor").
   */
  readonly adoptLogHead?: boolean;
  /**
   * TEST ONLY (COFFER_VAULT_INSECURE_NO_ROLLBACK_PROTECTION_FOR_TESTING=1): no log, no
   * anchor; the store is trusted not to roll back (what an etcd fleet still does).
   */
  readonly insecureNoRollbackProtectionForTesting?: boolean;
  /**
   * TEST ONLY (COFFER_VAULT_INSECURE_CRASH_BEFORE_CAPTURE_FOR_TESTING=1): SIGKILL right
   * after a guess-counting batch and its log entry commit in the store, before the anchor
   * write (the "killed between append and commit" case of spec §13.4).
   */
  readonly insecureCrashBeforeCaptureForTesting?: boolean;
  /**
   * TEST ONLY (COFFER_VAULT_ACKS_BEFORE_CAPTURE_FOR_TESTING=1, fleet leader): wait for a
   * majority's acks of each entry before this node's own anchor write, so acks always
   * arrive early (the race a fleet leader must not lose time on, spec §13.7).
   */
  readonly acksBeforeCaptureForTesting?: boolean;
  /** TEST ONLY (COFFER_VAULT_FULL_PASS_MS_FOR_TESTING): one interval for a fleet node's full passes, so tests see what the watch events alone drive. */
  readonly fullPassMsForTesting?: number;
  /**
   * COFFER_VAULT_ROLLBACK_PROTECTION=1 / `rollbackProtection: true` on an etcd store:
   * a one-node group (group size 1 unless `groupSize` says otherwise), the ONLY vault
   * writing the prefix. Without it an etcd store runs a fleet group (`groupSize`,
   * default 3, spec §13.5). Rollback protection is on everywhere unless the test-only
   * `insecureNoRollbackProtectionForTesting` is set.
   */
  readonly rollbackProtection?: boolean;
  /**
   * Members of this node's rollback-protection group on an etcd store (`group.size`,
   * COFFER_VAULT_GROUP_SIZE; spec §13.5): a batch is answered once floor(N/2)+1 of them
   * captured it. Default 3 (the three-data-centre fleet); 1 with `rollbackProtection`
   * (the one-node etcd group of before). Bound into the group ID: nodes configured with
   * another size are another group and cannot count for this one.
   */
  readonly groupSize?: number;
  /** At most this many requests per log entry (COFFER_VAULT_LOG_BATCH_MAX; benchmarks: 1 shows what batching buys). */
  readonly logBatchMax?: number;
  /**
   * Fleet: the http(s) URL at which the other members reach this node's request listener
   * (COFFER_VAULT_GROUP_PEER_URL / `group.peerUrl`). Followers then send acks straight to
   * the leader instead of one etcd write each (spec §13.7). Unset: acks through etcd only.
   */
  readonly peerUrl?: string;
}

export const DEFAULT_PORT = 7441;
export const DEFAULT_ADMIN_HOST = '127.0.0.1';
export const DEFAULT_SWEEP_INTERVAL_MS = 1000;
export const DEFAULT_DATA_DIR = '.coffer-data/vault';
export const DEFAULT_LINK_KEY_FILE = '.coffer-data/link.key';

interface FileConfig {
  listen?: { host?: string; port?: number };
  admin?: { host?: string; port?: number };
  sweepIntervalMs?: number;
  dataDir?: string;
  platform?: 'software' | 'pkcs11';
  software?: { keyFile?: string };
  pkcs11?: { module?: string; tokenLabel?: string; pin?: string; poolSize?: number };
  storePath?: string;
  store?: 'sqlite' | 'etcd';
  etcd?: {
    endpoints?: string[];
    prefix?: string;
    timeoutMs?: number;
    caFile?: string;
    certFile?: string;
    keyFile?: string;
    user?: string;
    passwordFile?: string;
    compactIntervalMs?: number;
  };
  fleetFile?: string;
  /** Only the keys of POLICY_FILE_KEYS; `minimumKsf` may only raise the floor (memoryKiB, iterations). */
  policy?: Record<string, unknown>;
  logLevel?: string;
  linkKeyFile?: string;
  insecureNoLinkAuthForTesting?: boolean;
  rollbackProtection?: boolean;
  group?: { size?: number; peerUrl?: string };
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export const NO_LINK_AUTH_WARNING =
  'COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING is set and there is no linkKeyFile: relay link authentication is OFF, anything that reaches this port can name any account, erase records and spend guesses (tests only)';

/**
 * Serving needs relay link authentication (spec/relay-api.md §2): a `linkKeyFile`, or
 * the loudly named test-only opt-out. Fails closed.
 * @throws ConfigError when neither is set
 */
export function checkLinkAuth(config: Pick<VaultConfig, 'linkKeyFile' | 'insecureNoLinkAuthForTesting'>): 'on' | 'insecure-off' {
  if (config.linkKeyFile) return 'on';
  if (config.insecureNoLinkAuthForTesting) return 'insecure-off';
  throw new ConfigError(
    'linkKeyFile (or COFFER_VAULT_LINK_KEY_FILE) is required when a data directory is configured: the relay link key (spec/relay-api.md §2; `coffer-relay` and every vault node share it). Only for tests: COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING=1',
  );
}

function int(name: string, text: string | undefined): number | undefined {
  if (text === undefined || text === '') return undefined;
  if (!/^\d+$/.test(text)) throw new ConfigError(`${name}: expected an integer, got "${text}"`);
  return Number(text);
}

function flag(name: string, text: string | undefined): boolean {
  if (text === undefined || text === '' || text === '0' || text === 'false') return false;
  if (text === '1' || text === 'true') return true;
  throw new ConfigError(`${name}: expected 1 or 0, got "${text}"`);
}

/** @throws ConfigError naming the setting */
export function loadConfig(options: { file?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): VaultConfig {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const path = options.file ?? env.COFFER_VAULT_CONFIG;
  let f: FileConfig = {};
  if (path) {
    try {
      f = JSON.parse(readFileSync(path, 'utf8')) as FileConfig;
    } catch (err) {
      throw new ConfigError(`config file ${path}: ${(err as Error).message}`);
    }
    if (f === null || typeof f !== 'object' || Array.isArray(f)) throw new ConfigError(`config file ${path}: must be a JSON object`);
  }
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(cwd, p));
  const dataDir = abs(env.COFFER_VAULT_DATA_DIR || f.dataDir || DEFAULT_DATA_DIR);
  const kind = env.COFFER_VAULT_PLATFORM || f.platform || 'software';
  let platform: PlatformConfig;
  if (kind === 'software') {
    platform = { kind, keyFile: abs(env.COFFER_VAULT_SOFTWARE_KEY_FILE || f.software?.keyFile || join(dataDir, 'software-keys.json')) };
  } else if (kind === 'pkcs11') {
    const module = env.COFFER_VAULT_PKCS11_MODULE || f.pkcs11?.module;
    const tokenLabel = env.COFFER_VAULT_PKCS11_TOKEN_LABEL || f.pkcs11?.tokenLabel;
    const pin = env.COFFER_VAULT_PKCS11_PIN || f.pkcs11?.pin;
    if (!module) throw new ConfigError('pkcs11.module (or COFFER_VAULT_PKCS11_MODULE) is required for platform "pkcs11"');
    if (!tokenLabel) throw new ConfigError('pkcs11.tokenLabel (or COFFER_VAULT_PKCS11_TOKEN_LABEL) is required for platform "pkcs11"');
    if (!pin) throw new ConfigError('COFFER_VAULT_PKCS11_PIN (or pkcs11.pin) is required for platform "pkcs11"');
    platform = { kind, module, tokenLabel, pin, ...(f.pkcs11?.poolSize ? { poolSize: f.pkcs11.poolSize } : {}) };
  } else {
    throw new ConfigError(`platform: must be "software" or "pkcs11", got "${kind}"`);
  }
  const port = int('COFFER_VAULT_PORT', env.COFFER_VAULT_PORT) ?? f.listen?.port ?? DEFAULT_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError(`listen.port: must be 0..65535, got ${port}`);
  const host = env.COFFER_VAULT_HOST || f.listen?.host || '127.0.0.1';
  const adminHost = env.COFFER_VAULT_ADMIN_HOST || f.admin?.host || DEFAULT_ADMIN_HOST;
  const adminPort = int('COFFER_VAULT_ADMIN_PORT', env.COFFER_VAULT_ADMIN_PORT) ?? f.admin?.port ?? (port === 0 ? 0 : port + 1);
  if (!Number.isInteger(adminPort) || adminPort < 0 || adminPort > 65535) throw new ConfigError(`admin.port: must be 0..65535, got ${adminPort}`);
  if (adminPort !== 0 && adminPort === port && (adminHost === host || adminHost === '0.0.0.0' || host === '0.0.0.0' || adminHost === '::' || host === '::')) {
    throw new ConfigError(`admin.port: the admin listener (metrics) must not share the request listener's address ${host}:${port}`);
  }
  const sweepIntervalMs = int('COFFER_VAULT_SWEEP_INTERVAL_MS', env.COFFER_VAULT_SWEEP_INTERVAL_MS) ?? f.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS;
  if (!Number.isInteger(sweepIntervalMs) || sweepIntervalMs < 50 || sweepIntervalMs > 60_000) throw new ConfigError(`sweepIntervalMs: must be 50..60000, got ${sweepIntervalMs}`);
  const weak = flag('COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING', env.COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING);
  let policy: CorePolicy;
  try {
    policy = checkPolicy({
      ...DEFAULT_POLICY,
      ...policyFromFile(f.policy),
      ...(int('COFFER_VAULT_GUESS_LIMIT', env.COFFER_VAULT_GUESS_LIMIT) !== undefined ? { guessLimit: Number(env.COFFER_VAULT_GUESS_LIMIT) } : {}),
      ...(int('COFFER_VAULT_LOGINS_PER_WINDOW', env.COFFER_VAULT_LOGINS_PER_WINDOW) !== undefined ? { loginsPerWindow: Number(env.COFFER_VAULT_LOGINS_PER_WINDOW) } : {}),
      ...(weak ? { insecureAllowWeakKsfForTesting: true } : {}),
    });
  } catch (err) {
    throw new ConfigError(`policy.${(err as Error).message}`);
  }
  const embedded = !env.COFFER_VAULT_DATA_DIR && !f.dataDir;
  const linkKeyFile = env.COFFER_VAULT_LINK_KEY_FILE || f.linkKeyFile || (embedded ? DEFAULT_LINK_KEY_FILE : undefined);
  const noLinkAuth = flag('COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING', env.COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING) || f.insecureNoLinkAuthForTesting === true;
  return {
    ...(linkKeyFile ? { linkKeyFile: abs(linkKeyFile) } : {}),
    ...(noLinkAuth ? { insecureNoLinkAuthForTesting: true } : {}),
    host,
    port,
    admin: { host: adminHost, port: adminPort },
    sweepIntervalMs,
    dataDir,
    platform,
    storePath: abs(env.COFFER_VAULT_STORE_PATH || f.storePath || join(dataDir, 'records.sqlite')),
    ...storeConfig(env, f, abs),
    fleetFile: abs(env.COFFER_VAULT_FLEET_FILE || f.fleetFile || join(dataDir, 'fleet.json')),
    policy,
    logLevel: env.COFFER_VAULT_LOG_LEVEL || f.logLevel || 'info',
    insecureCrashAfterCommitForTesting: flag('COFFER_VAULT_INSECURE_CRASH_AFTER_COMMIT_FOR_TESTING', env.COFFER_VAULT_INSECURE_CRASH_AFTER_COMMIT_FOR_TESTING),
    ...(flag('COFFER_VAULT_INSECURE_CRASH_BEFORE_CAPTURE_FOR_TESTING', env.COFFER_VAULT_INSECURE_CRASH_BEFORE_CAPTURE_FOR_TESTING) ? { insecureCrashBeforeCaptureForTesting: true } : {}),
    ...(flag('COFFER_VAULT_ACKS_BEFORE_CAPTURE_FOR_TESTING', env.COFFER_VAULT_ACKS_BEFORE_CAPTURE_FOR_TESTING) ? { acksBeforeCaptureForTesting: true } : {}),
    ...fullPassConfig(env),
    ...(flag('COFFER_VAULT_ROLLBACK_PROTECTION', env.COFFER_VAULT_ROLLBACK_PROTECTION) || f.rollbackProtection === true ? { rollbackProtection: true } : {}),
    ...(flag('COFFER_VAULT_ADOPT_LOG_HEAD', env.COFFER_VAULT_ADOPT_LOG_HEAD) ? { adoptLogHead: true } : {}),
    ...groupConfig(env, f),
    ...(flag('COFFER_VAULT_INSECURE_NO_ROLLBACK_PROTECTION_FOR_TESTING', env.COFFER_VAULT_INSECURE_NO_ROLLBACK_PROTECTION_FOR_TESTING) ? { insecureNoRollbackProtectionForTesting: true } : {}),
  };
}

export type StoreConfig =
  | { readonly kind: 'sqlite' }
  | {
      readonly kind: 'etcd';
      readonly endpoints: readonly string[];
      readonly prefix: string;
      readonly timeoutMs: number;
      /** PEM files for https:// endpoints: etcd's CA, this node's client certificate and key. */
      readonly caFile?: string;
      readonly certFile?: string;
      readonly keyFile?: string;
      /** etcd RBAC user; its password comes from `passwordFile` or COFFER_VAULT_ETCD_PASSWORD. */
      readonly user?: string;
      readonly password?: string;
      readonly compactIntervalMs?: number;
    };

/**
 * `store` / COFFER_VAULT_STORE, and for etcd its endpoints (COFFER_VAULT_ETCD_ENDPOINTS,
 * comma-separated), TLS files (COFFER_VAULT_ETCD_CA_FILE, _CERT_FILE, _KEY_FILE) and
 * RBAC user (COFFER_VAULT_ETCD_USER with COFFER_VAULT_ETCD_PASSWORD_FILE, or
 * COFFER_VAULT_ETCD_PASSWORD). The password is never read from the JSON file itself.
 */
function storeConfig(env: NodeJS.ProcessEnv, f: FileConfig, abs: (p: string) => string): { store?: StoreConfig } {
  const kind = env.COFFER_VAULT_STORE || f.store || 'sqlite';
  if (kind === 'sqlite') return {};
  if (kind !== 'etcd') throw new ConfigError(`store: must be "sqlite" or "etcd", got "${kind}"`);
  const endpoints = env.COFFER_VAULT_ETCD_ENDPOINTS ? env.COFFER_VAULT_ETCD_ENDPOINTS.split(',').map((e) => e.trim()).filter(Boolean) : (f.etcd?.endpoints ?? []);
  if (endpoints.length === 0) throw new ConfigError('etcd.endpoints (or COFFER_VAULT_ETCD_ENDPOINTS) is required for store "etcd"');
  for (const e of endpoints) {
    if (!/^https?:\/\/[^/]+\/?$/.test(e)) throw new ConfigError(`etcd.endpoints: "${e}" is not an http(s)://host:port URL`);
  }
  const timeoutMs = int('COFFER_VAULT_ETCD_TIMEOUT_MS', env.COFFER_VAULT_ETCD_TIMEOUT_MS) ?? f.etcd?.timeoutMs ?? 2000;
  if (!Number.isInteger(timeoutMs) || timeoutMs < 50 || timeoutMs > 60_000) throw new ConfigError(`etcd.timeoutMs: must be 50..60000, got ${timeoutMs}`);
  const compactIntervalMs = int('COFFER_VAULT_ETCD_COMPACT_INTERVAL_MS', env.COFFER_VAULT_ETCD_COMPACT_INTERVAL_MS) ?? f.etcd?.compactIntervalMs ?? 5000;
  if (!Number.isInteger(compactIntervalMs) || compactIntervalMs < 0 || compactIntervalMs > 3_600_000) throw new ConfigError(`etcd.compactIntervalMs: must be 0..3600000, got ${compactIntervalMs}`);
  const prefix = env.COFFER_VAULT_ETCD_PREFIX || f.etcd?.prefix || 'coffer/vault/';
  const file = (envName: string, v: string | undefined): string | undefined => {
    const p = env[envName] || v;
    return p ? abs(p) : undefined;
  };
  const caFile = file('COFFER_VAULT_ETCD_CA_FILE', f.etcd?.caFile);
  const certFile = file('COFFER_VAULT_ETCD_CERT_FILE', f.etcd?.certFile);
  const keyFile = file('COFFER_VAULT_ETCD_KEY_FILE', f.etcd?.keyFile);
  if (!certFile !== !keyFile) throw new ConfigError('etcd.certFile and etcd.keyFile (COFFER_VAULT_ETCD_CERT_FILE, COFFER_VAULT_ETCD_KEY_FILE) go together');
  if ((caFile || certFile) && !endpoints.every((e) => e.startsWith('https://'))) throw new ConfigError('etcd.caFile/certFile are set but not every etcd endpoint is https://');
  const user = env.COFFER_VAULT_ETCD_USER || f.etcd?.user;
  const passwordFile = file('COFFER_VAULT_ETCD_PASSWORD_FILE', f.etcd?.passwordFile);
  let password = env.COFFER_VAULT_ETCD_PASSWORD;
  if (!password && passwordFile) {
    try {
      password = readFileSync(passwordFile, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new ConfigError(`etcd.passwordFile ${passwordFile}: ${(err as Error).message}`);
    }
  }
  if (user && !password) throw new ConfigError('etcd.user is set: its password is required (etcd.passwordFile, COFFER_VAULT_ETCD_PASSWORD_FILE or COFFER_VAULT_ETCD_PASSWORD)');
  if (!user && password) throw new ConfigError('an etcd password is set without etcd.user (COFFER_VAULT_ETCD_USER)');
  return {
    store: {
      kind: 'etcd',
      endpoints,
      prefix,
      timeoutMs,
      compactIntervalMs,
      ...(caFile ? { caFile } : {}),
      ...(certFile && keyFile ? { certFile, keyFile } : {}),
      ...(user && password ? { user, password } : {}),
    },
  };
}

function fullPassConfig(env: NodeJS.ProcessEnv): { fullPassMsForTesting?: number } {
  const ms = int('COFFER_VAULT_FULL_PASS_MS_FOR_TESTING', env.COFFER_VAULT_FULL_PASS_MS_FOR_TESTING);
  if (ms === undefined) return {};
  if (ms < 1) throw new ConfigError(`COFFER_VAULT_FULL_PASS_MS_FOR_TESTING: must be ≥ 1, got ${ms}`);
  return { fullPassMsForTesting: ms };
}

function groupConfig(env: NodeJS.ProcessEnv, f: FileConfig): { groupSize?: number; logBatchMax?: number; peerUrl?: string } {
  const size = int('COFFER_VAULT_GROUP_SIZE', env.COFFER_VAULT_GROUP_SIZE) ?? f.group?.size;
  if (size !== undefined && (!Number.isInteger(size) || size < 1 || size > 15)) throw new ConfigError(`group.size: must be 1..15, got ${size}`);
  const batch = int('COFFER_VAULT_LOG_BATCH_MAX', env.COFFER_VAULT_LOG_BATCH_MAX);
  if (batch !== undefined && batch < 1) throw new ConfigError(`COFFER_VAULT_LOG_BATCH_MAX: must be ≥ 1, got ${batch}`);
  const peerUrl = env.COFFER_VAULT_GROUP_PEER_URL || f.group?.peerUrl;
  if (peerUrl !== undefined) {
    let u: URL | null;
    try {
      u = new URL(peerUrl);
    } catch {
      u = null;
    }
    if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:') || u.pathname !== '/' || u.search || u.hash || u.username) throw new ConfigError(`group.peerUrl: must be an http(s) URL with no path, e.g. http://10.0.0.2:7441, got ${JSON.stringify(peerUrl)}`);
  }
  return { ...(size !== undefined ? { groupSize: size } : {}), ...(batch !== undefined ? { logBatchMax: batch } : {}), ...(peerUrl ? { peerUrl } : {}) };
}

/** The policy settings a config file may set; anything else is refused (never silently ignored or spread). */
export const POLICY_FILE_KEYS = ['guessLimit', 'loginTtlMs', 'registrationTtlMs', 'grantTtlMs', 'freshnessWindowMs', 'loginsPerWindow', 'registerStartsPerWindow', 'registerWindowMs', 'minimumKsf'] as const;

function policyFromFile(p: Record<string, unknown> | undefined): Partial<CorePolicy> {
  if (p === undefined) return {};
  if (typeof p !== 'object' || p === null || Array.isArray(p)) throw new RangeError('must be an object');
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) {
    if (!(POLICY_FILE_KEYS as readonly string[]).includes(k)) {
      throw new RangeError(`${k}: not a policy setting (allowed: ${POLICY_FILE_KEYS.join(', ')}; the test-only weak-KSF switch is COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING=1)`);
    }
    if (k === 'minimumKsf') {
      const m = v as Record<string, unknown> | null;
      if (typeof m !== 'object' || m === null) throw new RangeError('minimumKsf: must be { memoryKiB, iterations }');
      for (const mk of Object.keys(m)) if (mk !== 'memoryKiB' && mk !== 'iterations') throw new RangeError(`minimumKsf.${mk}: not settable (memoryKiB and iterations only; lanes are not a cost to an attacker)`);
      out.minimumKsf = { ...DEFAULT_POLICY.minimumKsf, ...m };
    } else out[k] = v;
  }
  return out as Partial<CorePolicy>;
}
