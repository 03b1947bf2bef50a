// `npm start`: the whole system on embedded defaults, on loopback, no external service:
// the Backup Key Vault (software platform — not an HSM — and SQLite under
// ./.coffer-data/vault). Installs and builds on first run. Ctrl-C stops it.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ensureSetup, root } from './ensure-setup.mjs';

ensureSetup();
const vault = spawn(process.execPath, [join(root, 'packages/vault/dist/src/server/main.js'), 'serve'], {
  cwd: root,
  stdio: ['ignore', 'ignore', 'inherit'],
  env: { ...process.env, COFFER_VAULT_LOG_LEVEL: process.env.COFFER_VAULT_LOG_LEVEL ?? 'warn' },
});
process.stderr.write(`
Coffer is running on embedded defaults (data in ${join(root, '.coffer-data')}).

Back up a folder with the coffer command (key mode):
  npx coffer init --repo .coffer-data/repo > my-backup-key.txt
  npx coffer backup --repo .coffer-data/repo --key-file my-backup-key.txt ~/Documents
  npx coffer snapshots --repo .coffer-data/repo --key-file my-backup-key.txt
  npx coffer restore latest --target /tmp/restored --repo .coffer-data/repo --key-file my-backup-key.txt

The Backup Key Vault listens on http://127.0.0.1:7441 (internal: the front end talks to it).
Stop with Ctrl-C.
`);
const stop = () => vault.kill('SIGTERM');
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
vault.on('exit', (code, signal) => {
  process.exitCode = signal === 'SIGTERM' ? 0 : (code ?? 1);
});
