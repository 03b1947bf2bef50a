/**
 * A local multi-data-centre vault fleet with real processes: data centre i lives on
 * 127.0.0.i with one etcd member and one coffer-vault node (etcd store), all sharing the
 * fleet keys through the key ceremony (fleet init / node-key / export-for / join).
 * Used by `npm run cluster`, the fleet fault tests and `npm run bench:fleet`.
 *
 * With `platform: 'pkcs11'` every data centre's vault node has its own SoftHSM2 token
 * (`coffer-dcN`, created here under DIR/softhsm with random PINs: the user PIN in
 * DIR/dcN/hsm-user.pin, the SO PIN in DIR/softhsm/dcN-so.pin, both 0600), and the
 * ceremony moves the fleet keys between the tokens with C_WrapKey/C_UnwrapKey. The
 * ceremony runs in this process, so SOFTHSM2_CONF is set here before the module is
 * first loaded: a process that already opened another SoftHSM2 configuration cannot
 * start a PKCS#11 cluster.
 *
 * Ports are the same on every address (each DC has its own IP): etcd client
 * `ports.etcdClient`, peer `ports.etcdPeer`, vault `ports.vault`, the vault's admin
 * listener (metrics) `ports.vault + 1`.
 */
import { once } from 'node:events';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseFleetKeyBundle, type FleetKey } from '@coffer/protocol';
import { fileURLToPath } from 'node:url';
import { loadConfig } from './config.js';
import { exportFor, fleetInit, join as joinFleet, nodeKey } from './fleet-ceremony.js';
import { bundleToJson } from '@coffer/protocol';
import { connect } from 'node:net';
import { etcdPost, etcdTlsArgs, makeEtcdPki, passwordFile, setupEtcdAuth, type EtcdPki } from './cluster-etcd-pki.js';

/** The coffer-vault entry point (this directory's main.js). */
const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

export const ETCD_VAULT_USER = 'coffer-vault';
export const ETCD_VAULT_PREFIX = 'coffer/vault/';

/** Whether something accepts TCP connections on host:port. */
function portBusy(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    const done = (busy: boolean): void => {
      sock.destroy();
      resolve(busy);
    };
    sock.setTimeout(500, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

export interface ClusterPorts {
  readonly etcdClient: number;
  readonly etcdPeer: number;
  readonly vault: number;
}

export interface ClusterOptions {
  /** Working directory: dc1/, dc2/, … with etcd data, vault keys and logs. */
  readonly dir: string;
  readonly dcs?: number;
  readonly ports?: ClusterPorts;
  /** Extra COFFER_VAULT_* environment for every vault node. */
  readonly vaultEnv?: Record<string, string>;
  /** Accept the fast test KSF (tests and the benchmark only). */
  readonly insecureFastKsf?: boolean;
  readonly etcdTimeoutMs?: number;
  /**
   * etcd with mutual TLS (clients and peers) and RBAC: a CA and certificates in
   * DIR/pki (openssl), a root user and a `coffer-vault` user whose role reaches only
   * `coffer/vault/` (passwords in DIR/pki/*.password, 0600). Vault nodes connect with
   * their client certificate and the vault user. Used by `npm run cluster`.
   */
  readonly secure?: boolean;
  /** The vault nodes' platform (default `software`). */
  readonly platform?: 'software' | 'pkcs11';
}

/** One data centre's token with `platform: 'pkcs11'`. */
export interface ClusterToken {
  readonly tokenLabel: string;
  readonly pinFile: string;
  readonly soPinFile: string;
}

export const SOFTHSM_MODULE = process.env.COFFER_SOFTHSM_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';
const SOFTHSM_UTIL = process.env.COFFER_SOFTHSM_UTIL ?? 'softhsm2-util';

function secretFile(file: string): string {
  if (!existsSync(file)) writeFileSync(file, randomBytes(12).toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
  return readFileSync(file, 'utf8').trim();
}

/**
 * DIR/softhsm/softhsm2.conf and one initialized token per data centre (kept when they
 * exist: restarting a cluster in its directory keeps its HSMs).
 */
function prepareSoftHsm(dir: string, n: number): { conf: string; tokens: ClusterToken[] } {
  if (!existsSync(SOFTHSM_MODULE)) throw new Error(`--platform pkcs11 needs SoftHSM2 (${SOFTHSM_MODULE}; apt-get install softhsm2, or set COFFER_SOFTHSM_MODULE)`);
  const hsmDir = join(dir, 'softhsm');
  const tokenDir = join(hsmDir, 'tokens');
  mkdirSync(tokenDir, { recursive: true, mode: 0o700 });
  const conf = join(hsmDir, 'softhsm2.conf');
  if (!existsSync(conf)) writeFileSync(conf, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`, { mode: 0o600 });
  const env = { ...process.env, SOFTHSM2_CONF: conf };
  const present = execFileSync(SOFTHSM_UTIL, ['--show-slots'], { env, encoding: 'utf8' });
  const tokens: ClusterToken[] = [];
  for (let i = 0; i < n; i++) {
    const tokenLabel = `coffer-dc${i + 1}`;
    mkdirSync(join(dir, `dc${i + 1}`), { recursive: true });
    const pinFile = join(dir, `dc${i + 1}`, 'hsm-user.pin');
    const soPinFile = join(hsmDir, `dc${i + 1}-so.pin`);
    const exists = new RegExp(`Label:\\s+${tokenLabel}\\s*$`, 'm').test(present);
    if (!exists && (existsSync(pinFile) || existsSync(soPinFile))) throw new Error(`${pinFile} exists but token ${tokenLabel} does not: start with --fresh`);
    const pin = secretFile(pinFile);
    const soPin = secretFile(soPinFile);
    if (!exists) execFileSync(SOFTHSM_UTIL, ['--init-token', '--free', '--label', tokenLabel, '--pin', pin, '--so-pin', soPin], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    tokens.push({ tokenLabel, pinFile, soPinFile });
  }
  return { conf, tokens };
}

export interface DataCentre {
  readonly index: number;
  readonly name: string;
  readonly host: string;
  readonly etcdUrl: string;
  readonly peerUrl: string;
  readonly vaultUrl: string;
  /** The vault node's admin listener (/metrics). */
  readonly adminUrl: string;
  readonly dir: string;
  etcdPid(): number | null;
  vaultPid(): number | null;
  /** kill -9 the etcd member and the vault node. */
  kill(): Promise<void>;
  killEtcd(): Promise<void>;
  killVault(): Promise<void>;
  startEtcd(): Promise<void>;
  /** The COFFER_VAULT_* environment the node runs with (plus `env`): for `coffer-vault` commands on its machine. */
  vaultEnv(env?: Record<string, string>): Record<string, string>;
  /** Starts the vault node; `env` adds COFFER_VAULT_* settings for this start only (e.g. a test's crash switch). */
  startVault(env?: Record<string, string>): Promise<void>;
  /** Both back (etcd first); waits until the vault answers /healthz. */
  restart(): Promise<void>;
  /** SIGSTOP / SIGCONT the etcd member (a slow or hung member). */
  pauseEtcd(): void;
  resumeEtcd(): void;
}

export interface Cluster {
  readonly dcs: readonly DataCentre[];
  /** With `secure`: the PKI and the vault user's password file. */
  readonly pki: EtcdPki | null;
  readonly vaultPasswordFile: string | null;
  /** A JSON call to an etcd member as its administrator (root, admin client certificate when secure). */
  etcd(url: string, path: string, body: unknown, timeoutMs?: number): Promise<unknown>;
  readonly bundleJson: string;
  readonly fleetKey: FleetKey;
  /** Index (0-based) of the DC whose etcd member leads, or null when none answers. */
  leader(): Promise<number | null>;
  stop(): Promise<void>;
  /** With `platform: 'pkcs11'`: each DC's token (index = DC index) and the SoftHSM2 configuration. */
  readonly tokens: readonly ClusterToken[] | null;
  readonly softhsmConf: string | null;
}

export const DEFAULT_CLUSTER_PORTS: ClusterPorts = { etcdClient: 23790, etcdPeer: 23800, vault: 27440 };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function postJson(url: string, body: unknown, timeoutMs = 1000): Promise<unknown> {
  const res = await fetch(url, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(timeoutMs) });
  if (res.status !== 200) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

/** Polls `check` every 100 ms until it is true (errors count as not yet), or throws after `deadlineMs`. */
export async function until(what: string, deadlineMs: number, check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      /* not yet */
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function killHard(child: ChildProcess | null): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  try {
    process.kill(child.pid!, 'SIGCONT');
  } catch {
    /* gone */
  }
  child.kill('SIGKILL');
  await exited;
}

/** Whether the etcd binary (COFFER_ETCD_BIN, default `etcd`) runs. */
export function etcdInstalled(): boolean {
  return spawnSync(process.env.COFFER_ETCD_BIN ?? 'etcd', ['--version'], { stdio: 'ignore' }).status === 0;
}

export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  // Without this, a missing etcd shows up 30 s later as "timed out waiting for etcd quorum".
  if (!etcdInstalled()) throw new Error('etcd not installed (apt-get install etcd-server): the cluster starts real etcd members');
  const n = options.dcs ?? 3;
  const ports = options.ports ?? DEFAULT_CLUSTER_PORTS;
  const token = `coffer-${randomBytes(4).toString('hex')}`;
  const hosts = Array.from({ length: n }, (_, i) => `127.0.0.${i + 1}`);
  const secure = options.secure === true;
  const scheme = secure ? 'https' : 'http';
  const initialCluster = hosts.map((h, i) => `dc${i + 1}=${scheme}://${h}:${ports.etcdPeer}`).join(',');
  const etcdUrls = hosts.map((h) => `${scheme}://${h}:${ports.etcdClient}`);
  const children = new Set<ChildProcess>();
  mkdirSync(options.dir, { recursive: true, mode: 0o700 });
  const hsm = options.platform === 'pkcs11' ? prepareSoftHsm(options.dir, n) : null;
  // The in-process ceremony opens the tokens: the module must read this configuration.
  if (hsm) process.env.SOFTHSM2_CONF = hsm.conf;
  /** COFFER_VAULT_* (and SOFTHSM2_CONF) that put DC i's node on its own token. */
  const platformEnv = (i: number): Record<string, string> => {
    if (!hsm) return {};
    const t = hsm.tokens[i]!;
    return {
      SOFTHSM2_CONF: hsm.conf,
      COFFER_VAULT_PLATFORM: 'pkcs11',
      COFFER_VAULT_PKCS11_MODULE: SOFTHSM_MODULE,
      COFFER_VAULT_PKCS11_TOKEN_LABEL: t.tokenLabel,
      COFFER_VAULT_PKCS11_PIN: readFileSync(t.pinFile, 'utf8').trim(),
    };
  };
  const pki = secure ? makeEtcdPki(options.dir, hosts) : null;
  const rootPassword = pki ? passwordFile(join(pki.dir, 'root.password')) : '';
  const vaultPasswordFile = pki ? join(pki.dir, 'vault.password') : null;
  const vaultPassword = vaultPasswordFile ? passwordFile(vaultPasswordFile) : '';
  const adminTokens = new Map<string, string>();
  /** An administrator's call: plain JSON, or over mTLS as root when secure. */
  const etcdCall = async (url: string, path: string, body: unknown, timeoutMs = 1000): Promise<unknown> => {
    if (!pki) return postJson(`${url}${path}`, body, timeoutMs);
    const admin = { ca: pki.caFile, cert: pki.adminCertFile, key: pki.adminKeyFile };
    let r = await etcdPost(url, path, body, admin, adminTokens.get(url), timeoutMs);
    if (r.status === 401 || r.status === 403) {
      const login = await etcdPost(url, '/v3/auth/authenticate', { name: 'root', password: rootPassword }, admin, undefined, timeoutMs);
      if (login.status === 200 && typeof login.json.token === 'string') {
        adminTokens.set(url, login.json.token);
        r = await etcdPost(url, path, body, admin, login.json.token, timeoutMs);
      }
    }
    if (r.status !== 200) throw new Error(`${url}${path}: HTTP ${r.status} ${JSON.stringify(r.json).slice(0, 200)}`);
    return r.json;
  };

  const dcs: DataCentre[] = [];
  const vaultDirs: string[] = [];
  for (let i = 0; i < n; i++) {
    const host = hosts[i]!;
    const name = `dc${i + 1}`;
    const dir = join(options.dir, name);
    mkdirSync(dir, { recursive: true });
    vaultDirs.push(join(dir, 'vault'));
    const etcdUrl = etcdUrls[i]!;
    const peerUrl = `${scheme}://${host}:${ports.etcdPeer}`;
    const vaultUrl = `http://${host}:${ports.vault}`;
    const adminUrl = `http://${host}:${ports.vault + 1}`;
    let etcd: ChildProcess | null = null;
    let vault: ChildProcess | null = null;
    const spawnLogged = (cmd: string, args: string[], log: string, env?: NodeJS.ProcessEnv): ChildProcess => {
      const fd = openSync(join(dir, log), 'a');
      const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: env ?? process.env });
      closeSync(fd);
      children.add(child);
      child.once('exit', () => children.delete(child));
      return child;
    };
    const dc: DataCentre = {
      index: i,
      name,
      host,
      etcdUrl,
      peerUrl,
      vaultUrl,
      adminUrl,
      dir,
      etcdPid: () => (etcd && etcd.exitCode === null && etcd.signalCode === null ? etcd.pid! : null),
      vaultPid: () => (vault && vault.exitCode === null && vault.signalCode === null ? vault.pid! : null),
      async killEtcd() {
        await killHard(etcd);
      },
      async killVault() {
        await killHard(vault);
      },
      async kill() {
        await Promise.all([killHard(etcd), killHard(vault)]);
      },
      async startEtcd() {
        if (dc.etcdPid()) return;
        etcd = spawnLogged(process.env.COFFER_ETCD_BIN ?? 'etcd', [
          '--name', name,
          '--data-dir', join(dir, 'etcd'),
          '--listen-client-urls', etcdUrl,
          '--advertise-client-urls', etcdUrl,
          '--listen-peer-urls', peerUrl,
          '--initial-advertise-peer-urls', peerUrl,
          '--initial-cluster', initialCluster,
          '--initial-cluster-token', token,
          '--initial-cluster-state', 'new',
          '--logger', 'zap',
          '--log-outputs', 'stderr',
          '--log-level', 'warn',
          ...(pki ? etcdTlsArgs(pki, host) : []),
        ], 'etcd.log');
      },
      vaultEnv(extraEnv?: Record<string, string>): Record<string, string> {
        // The local member first: a node reads and writes through its own DC while it can.
        const endpoints = [etcdUrl, ...etcdUrls.filter((u) => u !== etcdUrl)].join(',');
        return {
          COFFER_VAULT_DATA_DIR: join(dir, 'vault'),
          COFFER_VAULT_HOST: host,
          COFFER_VAULT_PORT: String(ports.vault),
          COFFER_VAULT_ADMIN_HOST: host,
          COFFER_VAULT_ADMIN_PORT: String(ports.vault + 1),
          COFFER_VAULT_STORE: 'etcd',
          COFFER_VAULT_ETCD_ENDPOINTS: endpoints,
          COFFER_VAULT_ETCD_TIMEOUT_MS: String(options.etcdTimeoutMs ?? 1500),
          COFFER_VAULT_LOG_LEVEL: 'warn',
          // Followers send acks straight to the leader's request listener (spec §13.7).
          COFFER_VAULT_GROUP_PEER_URL: vaultUrl,
          ...platformEnv(i),
          ...(options.insecureFastKsf ? { COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1' } : {}),
          ...(pki
            ? {
                COFFER_VAULT_ETCD_CA_FILE: pki.caFile,
                COFFER_VAULT_ETCD_CERT_FILE: pki.vaultCertFile,
                COFFER_VAULT_ETCD_KEY_FILE: pki.vaultKeyFile,
                COFFER_VAULT_ETCD_USER: ETCD_VAULT_USER,
                COFFER_VAULT_ETCD_PASSWORD_FILE: vaultPasswordFile!,
                COFFER_VAULT_ETCD_PREFIX: ETCD_VAULT_PREFIX,
              }
            : {}),
          // Tests and the benchmark talk to the nodes directly; scripts/cluster.mjs puts
          // relays in front and passes COFFER_VAULT_LINK_KEY_FILE.
          ...(options.vaultEnv?.COFFER_VAULT_LINK_KEY_FILE ? {} : { COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING: '1' }),
          ...options.vaultEnv,
          ...extraEnv,
        };
      },
      async startVault(extraEnv?: Record<string, string>) {
        if (dc.vaultPid()) return;
        vault = spawnLogged(process.execPath, [MAIN, 'serve'], 'vault.log', { ...process.env, ...dc.vaultEnv(extraEnv) });
        const child = vault;
        await until(`${name} vault on ${vaultUrl}`, 20_000, async () => {
          if (child.exitCode !== null || child.signalCode !== null) throw new Error('exited');
          const ok = (await fetch(`${vaultUrl}/healthz`, { signal: AbortSignal.timeout(1000) })).status === 200;
          return ok && /listening on/.test(readFileSync(join(dir, 'vault.log'), 'utf8'));
        }).catch((err: Error) => {
          let log = '';
          try {
            log = readFileSync(join(dir, 'vault.log'), 'utf8').slice(-2000);
          } catch {
            /* none */
          }
          throw new Error(`${err.message}\n${log}`, { cause: err });
        });
      },
      async restart() {
        await dc.startEtcd();
        await dc.startVault();
      },
      pauseEtcd() {
        if (etcd?.pid) process.kill(etcd.pid, 'SIGSTOP');
      },
      resumeEtcd() {
        if (etcd?.pid) process.kill(etcd.pid, 'SIGCONT');
      },
    };
    dcs.push(dc);
  }

  const cluster: Cluster = {
    dcs,
    pki,
    tokens: hsm?.tokens ?? null,
    softhsmConf: hsm?.conf ?? null,
    vaultPasswordFile,
    etcd: etcdCall,
    bundleJson: '',
    fleetKey: undefined as unknown as FleetKey,
    async leader() {
      for (const dc of dcs) {
        if (!dc.etcdPid()) continue;
        try {
          const s = (await etcdCall(dc.etcdUrl, '/v3/maintenance/status', {}, 500)) as { header?: { member_id?: string }; leader?: string };
          if (s.leader && s.leader !== '0') {
            for (const other of dcs) {
              if (!other.etcdPid()) continue;
              const o = (await etcdCall(other.etcdUrl, '/v3/maintenance/status', {}, 500).catch(() => null)) as { header?: { member_id?: string } } | null;
              if (o?.header?.member_id === s.leader) return other.index;
            }
          }
        } catch {
          /* try the next */
        }
      }
      return null;
    },
    async stop() {
      await Promise.all([...children].map((c) => killHard(c)));
    },
  };

  // Something left listening on these ports would silently stand in for a member.
  for (const dc of dcs) {
    for (const url of [dc.etcdUrl, dc.peerUrl, dc.vaultUrl, dc.adminUrl]) {
      const u = new URL(url);
      if (await portBusy(u.hostname, Number(u.port))) throw new Error(`${url} is already in use: stop what listens there or pick other ports`);
    }
  }
  try {
    // 1. etcd members, all at once (each waits for its peers to form the cluster).
    for (const dc of dcs) await dc.startEtcd();
    await until('etcd quorum', 30_000, async () => {
      for (const dc of dcs) {
        if (pki) {
          const st = (await etcdCall(dc.etcdUrl, '/v3/maintenance/status', {}, 1000)) as { leader?: string };
          if (!st.leader || st.leader === '0') return false;
          continue;
        }
        const h = (await (await fetch(`${dc.etcdUrl}/health`, { signal: AbortSignal.timeout(1000) })).json()) as { health?: string };
        if (h.health !== 'true') return false;
      }
      return true;
    });
    // Users and roles, then auth on (idempotent when restarting in the same directory).
    if (pki) await setupEtcdAuth(dcs[0]!.etcdUrl, pki, { rootPassword, vaultUser: ETCD_VAULT_USER, vaultPassword }, ETCD_VAULT_PREFIX);

    // 2. The key ceremony: DC 1 creates the fleet keys, every other DC's node makes its
    // transport key and joins with a package wrapped to it.
    const config = (d: string) => loadConfig({ env: { COFFER_VAULT_DATA_DIR: d, ...platformEnv(vaultDirs.indexOf(d)) } });
    const first = config(vaultDirs[0]!);
    let bundleJson: string;
    try {
      bundleJson = bundleToJson((await fleetInit(first)).bundle);
    } catch {
      // Restarting a cluster in an existing directory: the fleet exists already.
      const { ensureFleetFile } = await import('./fleet.js');
      const { openPlatform } = await import('../platform/index.js');
      const p = await openPlatform(first.platform);
      try {
        const { fleetBundle } = await import('./fleet.js');
        bundleJson = bundleToJson(fleetBundle((await ensureFleetFile(p.platform, first.fleetFile)).fleet.fleetKey));
      } finally {
        await p.close();
      }
    }
    const bundle = await parseFleetKeyBundle(bundleJson);
    const keyId = Buffer.from(bundle.keys[0]!.keyId).toString('hex');
    for (const d of vaultDirs.slice(1)) {
      const c = config(d);
      const node = await nodeKey(c);
      const pkg = await exportFor(first, Buffer.from(node.publicKey, 'hex'));
      await joinFleet(c, JSON.stringify(pkg), keyId);
    }
    Object.assign(cluster, { bundleJson, fleetKey: bundle.keys[0]! });

    // 3. Vault nodes.
    await Promise.all(dcs.map((dc) => dc.startVault()));
    return cluster;
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}

/** Runs `coffer-vault ARGS` on a DC's machine (its environment): exit code, stdout, stderr. */
export function vaultCommand(dc: DataCentre, args: readonly string[], timeoutMs = 90_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, ...dc.vaultEnv() }, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
