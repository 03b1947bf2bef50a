// `npm start`: the whole system on embedded defaults, on loopback, no external service:
// the Backup Key Vault (software platform — not an HSM — and SQLite under
// ./.coffer-data/vault) and the front end, coffer-relay (built-in accounts, blobs under
// ./.coffer-data/relay), which shares the link key ./.coffer-data/link.key with the
// vault. Installs and builds on first run. Ctrl-C stops both.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureSetup, root } from './ensure-setup.mjs';

ensureSetup();
const RELAY_URL = 'http://127.0.0.1:7440';
const VAULT_URL = 'http://127.0.0.1:7441';
const VAULT_METRICS_URL = 'http://127.0.0.1:7442/metrics';

const children = new Map();
let stopping = false;

// Each service's JSON log (stdout) goes to .coffer-data/logs/<name>.log (appended, mode
// 0600); its diagnostics (stderr) to this terminal. `tail -f` the files to follow them.
const LOG_DIR = join(root, '.coffer-data', 'logs');
mkdirSync(LOG_DIR, { recursive: true, mode: 0o700 });

function start(name, main, env) {
  const log = openSync(join(LOG_DIR, `${name}.log`), 'a', 0o600);
  const child = spawn(process.execPath, [main, 'serve'], { cwd: root, stdio: ['ignore', log, 'inherit'], env: { ...process.env, ...env } });
  children.set(name, child);
  child.on('exit', (code, signal) => {
    children.delete(name);
    if (!stopping) {
      process.stderr.write(`coffer: ${name} stopped unexpectedly (${signal ?? `exit ${code}`}); stopping the rest\n`);
      process.exitCode = 1;
      stop();
    } else if (children.size === 0) {
      process.exit(process.exitCode ?? 0);
    }
  });
  return child;
}

function stop() {
  stopping = true;
  if (children.size === 0) process.exit(process.exitCode ?? 0);
  for (const child of children.values()) child.kill('SIGTERM');
  // Never hang on a child that does not stop.
  setTimeout(() => {
    for (const child of children.values()) child.kill('SIGKILL');
    process.exit(process.exitCode ?? 1);
  }, 10_000).unref();
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);

async function healthy(url, name) {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (stopping) return false;
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
      if (res.ok) return true;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  process.stderr.write(`coffer: ${name} did not become healthy at ${url}/healthz within 60 s\n`);
  process.exitCode = 1;
  stop();
  return false;
}

const VAULT_MAIN = join(root, 'packages/vault/dist/src/server/main.js');
// The relay serves the fleet's key bundle at GET /v1/fleet-bundle (clients pin it, unverified,
// for recovery); setting a password needs the file itself (COFFER_FLEET_BUNDLE).
const BUNDLE_FILE = join(root, '.coffer-data', 'fleet-bundle.json');
start('coffer-vault', VAULT_MAIN, { COFFER_VAULT_LOG_LEVEL: process.env.COFFER_VAULT_LOG_LEVEL ?? 'info' });
let up = await healthy(VAULT_URL, 'coffer-vault');
if (up) {
  const bundle = spawnSync(process.execPath, [VAULT_MAIN, 'bundle'], { cwd: root, encoding: 'utf8' });
  if (bundle.status === 0) writeFileSync(BUNDLE_FILE, bundle.stdout);
  else process.stderr.write(`coffer: could not read the fleet bundle: ${bundle.stderr}\n`);
  start('coffer-relay', join(root, 'packages/relay/dist/src/main.js'), { COFFER_RELAY_LOG_LEVEL: process.env.COFFER_RELAY_LOG_LEVEL ?? 'info', COFFER_RELAY_FLEET_BUNDLE_FILE: BUNDLE_FILE });
  up = await healthy(RELAY_URL, 'coffer-relay');
}
if (up) {
  process.stderr.write(`
Coffer is running on embedded defaults (data in ${join(root, '.coffer-data')}).

Point the coffer command at the front end, and give it the vault fleet's key bundle
from this machine (not from the front end) — every backup-password step needs it:
  export COFFER_SERVER=${RELAY_URL}        (or pass --server ${RELAY_URL})
  export COFFER_FLEET_BUNDLE=${BUNDLE_FILE}

Back up a folder with the coffer command (key mode):
  (umask 077; npx coffer init --repo .coffer-data/repo > my-backup-key.txt)
  npx coffer backup --repo .coffer-data/repo --key-file my-backup-key.txt ~/Documents
  npx coffer snapshots --repo .coffer-data/repo --key-file my-backup-key.txt
  npx coffer restore latest --target /tmp/restored --repo .coffer-data/repo --key-file my-backup-key.txt

The front end (coffer-relay) listens on ${RELAY_URL}: accounts, vault messages, blob API.
The Backup Key Vault listens on ${VAULT_URL} (internal: only the front end talks to it,
authenticated with the link key .coffer-data/link.key); its metrics are on a separate
admin listener, ${VAULT_METRICS_URL} (not reachable through the front end); the front
end's are on http://127.0.0.1:7443/metrics.
Logs (JSON, one line per event): ${join(LOG_DIR, 'coffer-relay.log')} and
${join(LOG_DIR, 'coffer-vault.log')} — follow them with tail -f.
Stop with Ctrl-C.
`);
}
