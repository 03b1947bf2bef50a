/**
 * coffer-relay configuration: defaults, then a JSON file (`--config FILE` or
 * COFFER_RELAY_CONFIG), then COFFER_RELAY_* environment variables. With nothing set the
 * relay runs the embedded default: built-in accounts on, JWT off, blobs under
 * ./.coffer-data/relay/blobs, accounts in ./.coffer-data/relay/relay.db, one vault node
 * at http://127.0.0.1:7441, link key ./.coffer-data/link.key, on 127.0.0.1:7440.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { DEFAULT_LIMITS, DEFAULT_MAX_IN_FLIGHT_BYTES, DEFAULT_MAX_OBJECT_BYTES, type RateLimits } from './app.js';
import type { JwtConfig } from './auth/jwt.js';
import { DEFAULT_SESSION_CACHE_MS } from './auth/session-cache.js';
import type { S3Config } from './blobs/s3.js';
import type { BucketRule } from './rate-limit.js';
import { DEFAULT_MAX_CONNECTIONS_PER_ADDRESS } from './connection-cap.js';

export const DEFAULT_PORT = 7440;
export const DEFAULT_DATA_DIR = '.coffer-data/relay';
export const DEFAULT_LINK_KEY_FILE = '.coffer-data/link.key';
export const DEFAULT_VAULT_NODES = ['http://127.0.0.1:7441'];
export const DEFAULT_ADMIN_PORT = 7443;

/** The PostgreSQL account store (auth/pg-store.ts). */
export interface PostgresConfig {
  /** libpq-style URL, e.g. postgres://coffer@db.internal:5432/coffer (password from PGPASSWORD or the URL). */
  readonly url: string;
  readonly poolSize: number;
  /** Per-statement timeout (ms). */
  readonly statementTimeoutMs: number;
  readonly connectTimeoutMs: number;
}

export interface RelayConfig {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly dbPath: string;
  readonly linkKeyFile: string;
  readonly vault: { readonly nodes: readonly string[]; readonly attemptTimeoutMs: number; readonly deadlineMs: number };
  readonly accounts: boolean;
  /** Where built-in accounts live: the SQLite file `dbPath` (default) or PostgreSQL. */
  readonly accountStore: { readonly backend: 'sqlite' } | ({ readonly backend: 'postgres' } & PostgresConfig);
  readonly sessionTtlMs: number;
  /** How long this relay believes a verified session without asking the store (ms); 0 = always ask (auth/session-cache.ts). */
  readonly sessionCacheMs: number;
  readonly jwt: JwtConfig | null;
  readonly blobs: ({ readonly backend: 'local'; readonly dir: string } | ({ readonly backend: 's3' } & S3Config)) & { readonly maxObjectBytes: number; readonly quotaBytes: number; readonly maxInFlightBytes: number; readonly maxInFlightBytesPerAccount: number; readonly bodyIdleTimeoutMs: number };
  /** Proxies whose X-Forwarded-For is believed: a hop count or addresses/CIDRs; null = none. */
  readonly trustProxy: number | readonly string[] | null;
  /** The admin listener (/metrics, /healthz); null = off. */
  readonly admin: { readonly host: string; readonly port: number } | null;
  readonly limits: RateLimits;
  readonly tls: { readonly cert: string; readonly key: string } | null;
  readonly requestTimeoutMs: number;
  /** Open connections per client address (connection-cap.ts); 0 = no cap. */
  readonly maxConnectionsPerAddress: number;
  readonly logLevel: string;
  /** The vault fleet's key bundle JSON served at GET /v1/fleet-bundle (spec/relay-api.md §5); null = 404. */
  readonly fleetBundleFile: string | null;
}

interface FileConfig {
  listen?: { host?: string; port?: number };
  dataDir?: string;
  dbPath?: string;
  linkKeyFile?: string;
  vault?: { nodes?: string[]; attemptTimeoutMs?: number; deadlineMs?: number };
  auth?: { accounts?: boolean; sessionTtlMs?: number; sessionCacheMs?: number; jwt?: Partial<JwtConfig> | null; store?: { backend?: 'sqlite' | 'postgres'; postgres?: Partial<PostgresConfig> } };
  blobs?: { backend?: 'local' | 's3'; dir?: string; s3?: Partial<S3Config>; maxObjectBytes?: number; quotaBytes?: number; maxInFlightBytes?: number; maxInFlightBytesPerAccount?: number; bodyIdleTimeoutMs?: number };
  trustProxy?: number | string[] | null;
  admin?: { host?: string; port?: number } | null;
  limits?: Partial<RateLimits>;
  tls?: { cert?: string; key?: string } | null;
  requestTimeoutMs?: number;
  maxConnectionsPerAddress?: number;
  logLevel?: string;
  fleetBundleFile?: string;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

function int(name: string, text: string | undefined): number | undefined {
  if (text === undefined || text === '') return undefined;
  if (!/^\d+$/.test(text)) throw new ConfigError(`${name}: expected an integer, got "${text}"`);
  return Number(text);
}

function flag(name: string, text: string | undefined): boolean | undefined {
  if (text === undefined || text === '') return undefined;
  if (text === '1' || text === 'true') return true;
  if (text === '0' || text === 'false') return false;
  throw new ConfigError(`${name}: expected 1 or 0, got "${text}"`);
}

function positive(name: string, n: number | undefined, dflt: number): number {
  const v = n ?? dflt;
  if (!Number.isFinite(v) || v < 0) throw new ConfigError(`${name}: must be a non-negative number, got ${v}`);
  return v;
}

/** A revocation through another relay is believed here this long at most: kept short. */
const MAX_SESSION_CACHE_MS = 60_000;

/**
 * On by default for PostgreSQL (a round trip per check saved: relay CPU per forwarded
 * message -38%, bench:relay-overhead); off for SQLite, whose check is a local statement
 * and gained nothing measurable.
 */
function sessionCache(n: number | undefined, backend: 'sqlite' | 'postgres'): number {
  const v = positive('auth.sessionCacheMs', n, backend === 'postgres' ? DEFAULT_SESSION_CACHE_MS : 0);
  if (v > MAX_SESSION_CACHE_MS) throw new ConfigError(`auth.sessionCacheMs: at most ${MAX_SESSION_CACHE_MS} ms (a session revoked through another relay is believed here that long), got ${v}`);
  return v;
}

function rule(name: string, r: Partial<BucketRule> | undefined, dflt: BucketRule): BucketRule {
  const perSecond = r?.perSecond ?? dflt.perSecond;
  const burst = r?.burst ?? dflt.burst;
  if (!(perSecond > 0) || !(burst >= 1)) throw new ConfigError(`limits.${name}: perSecond must be > 0 and burst ≥ 1`);
  return { perSecond, burst };
}

/** @throws ConfigError naming the setting */
export function loadConfig(options: { file?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): RelayConfig {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const path = options.file ?? env.COFFER_RELAY_CONFIG;
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
  const dataDir = abs(env.COFFER_RELAY_DATA_DIR || f.dataDir || DEFAULT_DATA_DIR);

  const port = int('COFFER_RELAY_PORT', env.COFFER_RELAY_PORT) ?? f.listen?.port ?? DEFAULT_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError(`listen.port: must be 0..65535, got ${port}`);

  const nodes = env.COFFER_RELAY_VAULT_NODES ? env.COFFER_RELAY_VAULT_NODES.split(',').map((s) => s.trim()).filter(Boolean) : (f.vault?.nodes ?? DEFAULT_VAULT_NODES);
  if (!Array.isArray(nodes) || nodes.length === 0) throw new ConfigError('vault.nodes: at least one vault node URL is required');
  for (const n of nodes) if (typeof n !== 'string' || !/^https?:\/\/[^/]+\/?$/.test(n)) throw new ConfigError(`vault.nodes: "${String(n)}" is not an http(s)://host:port URL`);

  const jwtFile = env.COFFER_RELAY_JWT_JWKS_FILE || f.auth?.jwt?.jwksFile;
  const jwtUrl = env.COFFER_RELAY_JWT_JWKS_URL || f.auth?.jwt?.jwksUrl;
  let jwt: JwtConfig | null = null;
  if (jwtFile || jwtUrl) {
    const issuer = env.COFFER_RELAY_JWT_ISSUER || f.auth?.jwt?.issuer;
    const audience = env.COFFER_RELAY_JWT_AUDIENCE || f.auth?.jwt?.audience;
    if (!issuer) throw new ConfigError('auth.jwt.issuer (or COFFER_RELAY_JWT_ISSUER) is required with a JWKS');
    if (!audience) throw new ConfigError('auth.jwt.audience (or COFFER_RELAY_JWT_AUDIENCE) is required with a JWKS');
    const algorithms: unknown = f.auth?.jwt?.algorithms;
    if (algorithms !== undefined) {
      if (!Array.isArray(algorithms) || algorithms.length === 0 || !algorithms.every((a) => typeof a === 'string')) throw new ConfigError('auth.jwt.algorithms: a non-empty array of JWS algorithm names');
      // Symmetric (HS*) keys in a JWKS would let anyone holding the JWKS mint tokens, and
      // "none" is no signature at all.
      for (const a of algorithms as string[]) if (/^hs/i.test(a) || a.toLowerCase() === 'none') throw new ConfigError(`auth.jwt.algorithms: "${a}" is not allowed (asymmetric algorithms only: RS*, PS*, ES*, EdDSA)`);
    }
    const maxTokenAgeSeconds = positive('auth.jwt.maxTokenAgeSeconds', int('COFFER_RELAY_JWT_MAX_AGE_SECONDS', env.COFFER_RELAY_JWT_MAX_AGE_SECONDS) ?? f.auth?.jwt?.maxTokenAgeSeconds, 24 * 3600);
    if (maxTokenAgeSeconds < 1) throw new ConfigError('auth.jwt.maxTokenAgeSeconds: must be at least 1');
    jwt = { issuer, audience, maxTokenAgeSeconds, ...(jwtFile ? { jwksFile: abs(jwtFile) } : { jwksUrl: jwtUrl! }), ...(algorithms !== undefined ? { algorithms: algorithms as string[] } : {}) };
  }
  const accounts = flag('COFFER_RELAY_ACCOUNTS', env.COFFER_RELAY_ACCOUNTS) ?? f.auth?.accounts ?? true;
  if (!accounts && !jwt) throw new ConfigError('auth: neither built-in accounts nor JWT are enabled: no client could sign in');

  const maxObjectBytes = positive('blobs.maxObjectBytes', int('COFFER_RELAY_MAX_OBJECT_BYTES', env.COFFER_RELAY_MAX_OBJECT_BYTES) ?? f.blobs?.maxObjectBytes, DEFAULT_MAX_OBJECT_BYTES);
  const quotaBytes = positive('blobs.quotaBytes', int('COFFER_RELAY_QUOTA_BYTES', env.COFFER_RELAY_QUOTA_BYTES) ?? f.blobs?.quotaBytes, 0);
  const maxInFlightBytes = positive('blobs.maxInFlightBytes', int('COFFER_RELAY_MAX_IN_FLIGHT_BYTES', env.COFFER_RELAY_MAX_IN_FLIGHT_BYTES) ?? f.blobs?.maxInFlightBytes, Math.max(DEFAULT_MAX_IN_FLIGHT_BYTES, maxObjectBytes));
  if (maxInFlightBytes < maxObjectBytes) throw new ConfigError(`blobs.maxInFlightBytes (${maxInFlightBytes}) must be at least blobs.maxObjectBytes (${maxObjectBytes})`);
  const maxInFlightBytesPerAccount = positive('blobs.maxInFlightBytesPerAccount', int('COFFER_RELAY_MAX_IN_FLIGHT_BYTES_PER_ACCOUNT', env.COFFER_RELAY_MAX_IN_FLIGHT_BYTES_PER_ACCOUNT) ?? f.blobs?.maxInFlightBytesPerAccount, maxObjectBytes);
  if (maxInFlightBytesPerAccount < maxObjectBytes || maxInFlightBytesPerAccount > maxInFlightBytes) throw new ConfigError(`blobs.maxInFlightBytesPerAccount (${maxInFlightBytesPerAccount}) must be between blobs.maxObjectBytes and blobs.maxInFlightBytes`);
  const bodyIdleTimeoutMs = positive('blobs.bodyIdleTimeoutMs', int('COFFER_RELAY_BODY_IDLE_TIMEOUT_MS', env.COFFER_RELAY_BODY_IDLE_TIMEOUT_MS) ?? f.blobs?.bodyIdleTimeoutMs, 15_000);
  const sizes = { maxObjectBytes, quotaBytes, maxInFlightBytes, maxInFlightBytesPerAccount, bodyIdleTimeoutMs };
  const backend = env.COFFER_RELAY_BLOB_BACKEND || f.blobs?.backend || 'local';
  let blobs: RelayConfig['blobs'];
  if (backend === 'local') {
    blobs = { backend, dir: abs(env.COFFER_RELAY_BLOB_DIR || f.blobs?.dir || join(dataDir, 'blobs')), ...sizes };
  } else if (backend === 's3') {
    const s3 = f.blobs?.s3 ?? {};
    const bucket = env.COFFER_RELAY_S3_BUCKET || s3.bucket;
    if (!bucket) throw new ConfigError('blobs.s3.bucket (or COFFER_RELAY_S3_BUCKET) is required for backend "s3"');
    const endpoint = env.COFFER_RELAY_S3_ENDPOINT || s3.endpoint;
    const region = env.COFFER_RELAY_S3_REGION || s3.region;
    const prefix = env.COFFER_RELAY_S3_PREFIX || s3.prefix;
    const accessKeyId = env.COFFER_RELAY_S3_ACCESS_KEY_ID || s3.accessKeyId;
    const secretAccessKey = env.COFFER_RELAY_S3_SECRET_ACCESS_KEY || s3.secretAccessKey;
    blobs = {
      backend,
      bucket,
      ...(endpoint ? { endpoint } : {}),
      ...(region ? { region } : {}),
      ...(prefix ? { prefix } : {}),
      ...(accessKeyId ? { accessKeyId } : {}),
      ...(secretAccessKey ? { secretAccessKey } : {}),
      forcePathStyle: s3.forcePathStyle ?? true,
      ...sizes,
    };
  } else {
    throw new ConfigError(`blobs.backend: must be "local" or "s3", got "${backend}"`);
  }

  const cert = env.COFFER_RELAY_TLS_CERT || f.tls?.cert;
  const key = env.COFFER_RELAY_TLS_KEY || f.tls?.key;
  if (!!cert !== !!key) throw new ConfigError('tls: both cert and key are needed');

  let trustProxy: number | string[] | null = f.trustProxy ?? null;
  if (env.COFFER_RELAY_TRUST_PROXY) trustProxy = /^\d+$/.test(env.COFFER_RELAY_TRUST_PROXY) ? Number(env.COFFER_RELAY_TRUST_PROXY) : env.COFFER_RELAY_TRUST_PROXY.split(',').map((x) => x.trim()).filter(Boolean);
  if (trustProxy !== null && !(typeof trustProxy === 'number' && Number.isInteger(trustProxy) && trustProxy >= 0) && !(Array.isArray(trustProxy) && trustProxy.every((x) => typeof x === 'string' && /^[0-9a-fA-F.:/]+$/.test(x)))) {
    throw new ConfigError('trustProxy: a number of proxy hops, or a list of proxy addresses/CIDRs');
  }

  // Default: 7443 on the listen host when that is loopback (so relays on 127.0.0.1/.2/.3
  // don't collide), else on 127.0.0.1; any free port when the relay's own port is 0.
  const adminPort = int('COFFER_RELAY_ADMIN_PORT', env.COFFER_RELAY_ADMIN_PORT) ?? f.admin?.port ?? (port === 0 ? 0 : DEFAULT_ADMIN_PORT);
  if (!Number.isInteger(adminPort) || adminPort < 0 || adminPort > 65535) throw new ConfigError(`admin.port: must be 0..65535, got ${adminPort}`);
  const adminOff = f.admin === null || env.COFFER_RELAY_ADMIN === '0';
  const listenHost = env.COFFER_RELAY_HOST || f.listen?.host || '127.0.0.1';
  const loopbackListen = /^127\.\d+\.\d+\.\d+$/.test(listenHost) || listenHost === '::1' || listenHost === 'localhost';
  const admin = adminOff ? null : { host: env.COFFER_RELAY_ADMIN_HOST || f.admin?.host || (loopbackListen ? listenHost : '127.0.0.1'), port: adminPort };

  const storeBackend = env.COFFER_RELAY_ACCOUNT_STORE || f.auth?.store?.backend || 'sqlite';
  let accountStore: RelayConfig['accountStore'];
  if (storeBackend === 'sqlite') accountStore = { backend: 'sqlite' };
  else if (storeBackend === 'postgres') {
    const pg = f.auth?.store?.postgres ?? {};
    const url = env.COFFER_RELAY_PG_URL || pg.url;
    if (!url || !/^postgres(ql)?:\/\//.test(url)) throw new ConfigError('auth.store.postgres.url (or COFFER_RELAY_PG_URL): a postgres:// URL is required for the "postgres" account store');
    accountStore = {
      backend: 'postgres',
      url,
      poolSize: positive('auth.store.postgres.poolSize', int('COFFER_RELAY_PG_POOL_SIZE', env.COFFER_RELAY_PG_POOL_SIZE) ?? pg.poolSize, 10),
      statementTimeoutMs: positive('auth.store.postgres.statementTimeoutMs', pg.statementTimeoutMs, 5000),
      connectTimeoutMs: positive('auth.store.postgres.connectTimeoutMs', pg.connectTimeoutMs, 5000),
    };
  } else throw new ConfigError(`auth.store.backend: must be "sqlite" or "postgres", got "${storeBackend}"`);

  const l = f.limits ?? {};
  const pow = { ...DEFAULT_LIMITS.passwordPow, ...(l.passwordPow ?? {}) };
  if (!Number.isInteger(pow.baseBits) || !Number.isInteger(pow.maxBits) || pow.baseBits < 0 || pow.maxBits < pow.baseBits || pow.maxBits > 32) throw new ConfigError('limits.passwordPow: integers with 0 ≤ baseBits ≤ maxBits ≤ 32');
  return {
    trustProxy,
    admin,
    accountStore,
    host: env.COFFER_RELAY_HOST || f.listen?.host || '127.0.0.1',
    port,
    dataDir,
    dbPath: abs(env.COFFER_RELAY_DB_PATH || f.dbPath || join(dataDir, 'relay.db')),
    linkKeyFile: abs(env.COFFER_RELAY_LINK_KEY_FILE || f.linkKeyFile || DEFAULT_LINK_KEY_FILE),
    vault: {
      nodes,
      attemptTimeoutMs: positive('vault.attemptTimeoutMs', int('COFFER_RELAY_VAULT_ATTEMPT_TIMEOUT_MS', env.COFFER_RELAY_VAULT_ATTEMPT_TIMEOUT_MS) ?? f.vault?.attemptTimeoutMs, 5000),
      deadlineMs: positive('vault.deadlineMs', int('COFFER_RELAY_VAULT_DEADLINE_MS', env.COFFER_RELAY_VAULT_DEADLINE_MS) ?? f.vault?.deadlineMs, 12_000),
    },
    accounts,
    sessionTtlMs: positive('auth.sessionTtlMs', f.auth?.sessionTtlMs, 24 * 3_600_000),
    sessionCacheMs: sessionCache(int('COFFER_RELAY_SESSION_CACHE_MS', env.COFFER_RELAY_SESSION_CACHE_MS) ?? f.auth?.sessionCacheMs, accountStore.backend),
    jwt,
    blobs,
    limits: {
      perAddress: rule('perAddress', l.perAddress, DEFAULT_LIMITS.perAddress),
      perAccount: rule('perAccount', l.perAccount, DEFAULT_LIMITS.perAccount),
      accountCreation: rule('accountCreation', l.accountCreation, DEFAULT_LIMITS.accountCreation),
      signInByAddress: rule('signInByAddress', l.signInByAddress, DEFAULT_LIMITS.signInByAddress),
      signInByAccountAddress: rule('signInByAccountAddress', l.signInByAccountAddress, DEFAULT_LIMITS.signInByAccountAddress),
      signInByAccount: rule('signInByAccount', l.signInByAccount, DEFAULT_LIMITS.signInByAccount),
      passwordSignInByAccountAddress: rule('passwordSignInByAccountAddress', l.passwordSignInByAccountAddress, DEFAULT_LIMITS.passwordSignInByAccountAddress),
      passwordSignInByAccount: rule('passwordSignInByAccount', l.passwordSignInByAccount, DEFAULT_LIMITS.passwordSignInByAccount),
      passwordPow: pow,
    },
    tls: cert && key ? { cert: abs(cert), key: abs(key) } : null,
    requestTimeoutMs: positive('requestTimeoutMs', int('COFFER_RELAY_REQUEST_TIMEOUT_MS', env.COFFER_RELAY_REQUEST_TIMEOUT_MS) ?? f.requestTimeoutMs, 120_000),
    maxConnectionsPerAddress: positive('maxConnectionsPerAddress', int('COFFER_RELAY_MAX_CONNECTIONS_PER_ADDRESS', env.COFFER_RELAY_MAX_CONNECTIONS_PER_ADDRESS) ?? f.maxConnectionsPerAddress, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
    logLevel: env.COFFER_RELAY_LOG_LEVEL || f.logLevel || 'info',
    fleetBundleFile: env.COFFER_RELAY_FLEET_BUNDLE_FILE || f.fleetBundleFile ? abs((env.COFFER_RELAY_FLEET_BUNDLE_FILE || f.fleetBundleFile)!) : null,
  };
}
