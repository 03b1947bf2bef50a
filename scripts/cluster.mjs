/* global setInterval */
// `npm run cluster`: three "data centres" on 127.0.0.1, 127.0.0.2, 127.0.0.3, each with
// an etcd member, a coffer-vault node (etcd store) and a front end (coffer-relay) that
// knows all three vault nodes. The vault nodes share the fleet keys through the key
// ceremony (fleet init / node-key / export-for / join); relays and vaults share one link
// key (created here, mode 0600); each relay serves the fleet bundle at
// GET /v1/fleet-bundle. Prints the endpoints and the COFFER_SERVER hint; Ctrl-C stops
// every process it started (by PID).
//   npm run cluster [-- --dir DIR] [-- --fresh] [-- --platform software|pkcs11]
// State lives in .coffer-data/cluster/ (etcd data, node key files, relay data, logs)
// unless --dir.
//
// --platform pkcs11: each data centre's vault node keeps its keys on its own SoftHSM2
// token (coffer-dc1..3, made here in DIR/softhsm; user PIN in DIR/dcN/hsm-user.pin, SO
// PIN in DIR/softhsm/dcN-so.pin), and the key ceremony moves the fleet keys between the
// tokens with C_WrapKey/C_UnwrapKey (docs/pkcs11.md). The default is the software
// platform.
//
// etcd runs with mutual TLS for clients and peers and with RBAC (auth enabled): a CA
// and certificates are made with openssl in DIR/pki; a root user (password in
// DIR/pki/root.password, used only to set up) and a coffer-vault user whose role can
// read and write coffer/vault/ and nothing else (DIR/pki/vault.password). The vault
// nodes connect with the client certificate DIR/pki/client-vault.pem and that user;
// anything without both is refused (docs/operations.md §2, "Securing etcd").
//
// The three relays share their accounts through one PostgreSQL server (started here in a
// temporary directory: a throwaway development server, trust auth on 127.0.0.1, fsync
// off, removed when the cluster stops; falls back to one
// shared SQLite file when PostgreSQL is not installed), so an account made through one
// DC's relay signs in through another's and is limited consistently; and one blob
// directory under DIR/relay-shared. A real multi-site deployment runs its own PostgreSQL
// and S3-compatible blob storage (docs/relay.md).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { root } from './ensure-setup.mjs';

const argv = process.argv.slice(2);
const dirArg = argv.indexOf('--dir');
const dir = resolve(dirArg >= 0 ? argv[dirArg + 1] : join(root, '.coffer-data', 'cluster'));
const platformArg = argv.indexOf('--platform');
const platform = platformArg >= 0 ? argv[platformArg + 1] : 'software';
if (platform !== 'software' && platform !== 'pkcs11') {
  process.stderr.write(`cluster: --platform must be software or pkcs11, got ${platform}\n`);
  process.exit(2);
}
if (argv.includes('--fresh') && existsSync(dir)) rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true, mode: 0o700 });

const RELAY_PORT = 27450;
const RELAY_MAIN = join(root, 'packages', 'relay', 'dist', 'src', 'main.js');
const linkKeyFile = join(dir, 'link.key');
if (!existsSync(linkKeyFile)) writeFileSync(linkKeyFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
const bundleFile = join(dir, 'fleet-bundle.json');

const { startCluster, DEFAULT_CLUSTER_PORTS } = await import(join(root, 'packages', 'vault', 'dist', 'src', 'server', 'cluster-support.js'));
process.stderr.write(`cluster: starting 3 data centres in ${dir} (platform ${platform}) …\n`);
let cluster;
const relays = [];
let stopping = false;

async function stop(code = 0) {
  if (stopping) return;
  stopping = true;
  process.stderr.write('cluster: stopping …\n');
  await Promise.all(
    relays.map(
      ({ child }) =>
        new Promise((done) => {
          if (child.exitCode !== null || child.signalCode !== null) return done();
          const t = setTimeout(() => process.kill(child.pid, 'SIGKILL'), 5000);
          child.once('exit', () => {
            clearTimeout(t);
            done();
          });
          process.kill(child.pid, 'SIGTERM');
        }),
    ),
  );
  await cluster?.stop();
  await accountStore?.stop();
  process.exit(code);
}
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());

try {
  cluster = await startCluster({ dir, dcs: 3, ports: DEFAULT_CLUSTER_PORTS, secure: true, platform, vaultEnv: { COFFER_VAULT_LINK_KEY_FILE: linkKeyFile } });
} catch (err) {
  process.stderr.write(`cluster: error: ${err.message}\n`);
  process.exit(1);
}
writeFileSync(bundleFile, cluster.bundleJson);

const haveRelay = existsSync(RELAY_MAIN);
let accountStore = null;
if (haveRelay) {
  const shared = join(dir, 'relay-shared');
  mkdirSync(shared, { recursive: true, mode: 0o700 });
  // The relays share their accounts through PostgreSQL (docs/relay.md), so a device signs
  // in through any relay and is limited consistently. Without PostgreSQL installed, they
  // share one SQLite file instead (works on one machine only).
  const { startPostgres, postgresMissing } = await import(join(root, 'packages', 'relay', 'dist', 'src', 'dev-postgres.js'));
  const missing = postgresMissing();
  let pgUrl = null;
  if (missing) process.stderr.write(`cluster: warning: ${missing}; the relays share one SQLite account store instead\n`);
  else {
    // A throwaway server in a temporary directory (PostgreSQL refuses to run as root, so
    // as root it runs as the postgres user, which must be able to reach its data
    // directory): the cluster's accounts last until it stops.
    try {
      accountStore = await startPostgres();
      pgUrl = await accountStore.database('coffer_relay');
    } catch (err) {
      process.stderr.write(`cluster: error: PostgreSQL for the relays' accounts: ${err.message}\n`);
      await stop(1);
    }
  }
  const vaultNodes = cluster.dcs.map((d) => d.vaultUrl);
  for (const dc of cluster.dcs) {
    // This DC's vault node first; the others are the failover.
    const nodes = [dc.vaultUrl, ...vaultNodes.filter((u) => u !== dc.vaultUrl)].join(',');
    const url = `http://${dc.host}:${RELAY_PORT}`;
    const log = openSync(join(dc.dir, 'relay.log'), 'a');
    const child = spawn(process.execPath, [RELAY_MAIN, 'serve'], {
      cwd: dc.dir,
      stdio: ['ignore', log, log],
      env: {
        ...process.env,
        COFFER_RELAY_HOST: dc.host,
        COFFER_RELAY_PORT: String(RELAY_PORT),
        COFFER_RELAY_DATA_DIR: join(dc.dir, 'relay'),
        ...(pgUrl ? { COFFER_RELAY_ACCOUNT_STORE: 'postgres', COFFER_RELAY_PG_URL: pgUrl } : { COFFER_RELAY_DB_PATH: join(shared, 'relay.db') }),
        COFFER_RELAY_BLOB_DIR: join(shared, 'blobs'),
        COFFER_RELAY_VAULT_NODES: nodes,
        COFFER_RELAY_LINK_KEY_FILE: linkKeyFile,
        COFFER_RELAY_FLEET_BUNDLE_FILE: bundleFile,
        COFFER_RELAY_LOG_LEVEL: process.env.COFFER_RELAY_LOG_LEVEL ?? 'warn',
      },
    });
    child.on('exit', (code, signal) => {
      if (!stopping) process.stderr.write(`cluster: ${dc.name} relay (pid ${child.pid}) exited (${signal ?? `exit ${code}`}); see ${join(dc.dir, 'relay.log')}\n`);
    });
    relays.push({ dc, url, child });
  }
  const deadline = Date.now() + 30_000;
  for (const r of relays) {
    for (;;) {
      if (r.child.exitCode !== null || r.child.signalCode !== null) {
        process.stderr.write(`cluster: error: the ${r.dc.name} relay exited; see ${join(r.dc.dir, 'relay.log')}\n`);
        await stop(1);
      }
      const ok = await fetch(`${r.url}/healthz`, { signal: AbortSignal.timeout(1000) }).then((res) => res.ok, () => false);
      if (ok) break;
      if (Date.now() > deadline) {
        process.stderr.write(`cluster: error: the ${r.dc.name} relay did not answer ${r.url}/healthz within 30 s\n`);
        await stop(1);
      }
      await new Promise((done) => setTimeout(done, 200));
    }
  }
}

for (const dc of cluster.dcs) {
  const r = relays.find((x) => x.dc === dc);
  process.stdout.write(
    `${dc.name}  etcd ${dc.etcdUrl} (pid ${dc.etcdPid()})  vault ${dc.vaultUrl} (pid ${dc.vaultPid()}, metrics ${dc.adminUrl}/metrics)` +
      (r ? `  relay ${r.url} (pid ${r.child.pid})` : '') +
      (cluster.tokens ? `  HSM token ${cluster.tokens[dc.index].tokenLabel}` : '') +
      `  logs ${dc.dir}\n`,
  );
}
process.stdout.write(`\nvault endpoints: ${cluster.dcs.map((d) => d.vaultUrl).join(',')}\n`);
if (accountStore) process.stdout.write(`relay accounts: PostgreSQL ${accountStore.url} (pid ${accountStore.pid}; a throwaway server, removed when the cluster stops)\n`);
process.stdout.write(`etcd endpoints: ${cluster.dcs.map((d) => d.etcdUrl).join(',')}\n`);
if (cluster.pki) {
  const p = cluster.pki;
  process.stdout.write(
    `etcd security: mutual TLS (clients and peers), auth enabled; CA ${p.caFile}\n` +
      `  vault nodes: client cert ${p.vaultCertFile}, user coffer-vault (role: readwrite on coffer/vault/ only), password ${cluster.vaultPasswordFile}\n` +
      `  etcdctl as admin: ETCDCTL_API=3 etcdctl --endpoints=${cluster.dcs[0].etcdUrl} --cacert=${p.caFile} --cert=${p.adminCertFile} --key=${p.adminKeyFile} --user=root:$(cat ${join(p.dir, 'root.password')}) endpoint status\n`,
  );
}
if (cluster.tokens) {
  process.stdout.write(
    `vault keys: PKCS#11 (SoftHSM2, ${cluster.softhsmConf}); fleet keys moved between the tokens by the key ceremony (C_WrapKey/C_UnwrapKey); ceremony log in each DC's vault/ceremony.log\n` +
      `  user PINs: ${cluster.tokens.map((t) => t.pinFile).join(', ')}\n  SO PINs: ${cluster.tokens.map((t) => t.soPinFile).join(', ')}\n`,
  );
} else {
  process.stdout.write('vault keys: software platform (key files, not an HSM; --platform pkcs11 for SoftHSM2 tokens)\n');
}
process.stdout.write(`rollback protection: on (a group of ${cluster.dcs.length}, spec/vault-protocol.md §13.5–§13.10): one vault node leads and answers, the others say 503 not-leader and the relays move on; a majority of the nodes' anchors capture every change before its answer leaves\n`);
process.stdout.write(`link key (vaults and relays): ${linkKeyFile}\nfleet key bundle (served by every relay at /v1/fleet-bundle): ${bundleFile}\n`);
if (haveRelay) {
  process.stdout.write(`\nfront ends: ${relays.map((r) => r.url).join('  ')}\n`);
  process.stdout.write(`point coffer at one of them, with the fleet bundle from this machine (needed for every backup-password step):\n  export COFFER_SERVER=${relays[0].url}\n  export COFFER_FLEET_BUNDLE=${bundleFile}\n  (any DC's relay works for the same account: they share ${accountStore ? 'one PostgreSQL account store' : 'one SQLite account file'} and the blobs in ${join(dir, 'relay-shared')})\n`);
} else {
  process.stdout.write('\nnote: coffer-relay is not built (packages/relay), so no front ends were started: point relays at the vault endpoints above\n');
}
process.stdout.write('\nCtrl-C stops the cluster.\n');
setInterval(() => {}, 1 << 30);
