// Long fuzz runs of the vault protocol and core decoders (CI runs a bounded version
// inside `npm test`). Usage: node scripts/fuzz-vault.mjs [runs]   (default 200000)
import { spawnSync } from 'node:child_process';
import { ensureSetup, root } from './ensure-setup.mjs';

ensureSetup();
const runs = process.argv[2] ?? '200000';
const r = spawnSync(process.execPath, ['--test', 'packages/protocol/dist/test/fuzz-decoders.test.js', 'packages/vault/dist/test/fuzz-core.test.js'], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, COFFER_FUZZ_RUNS: runs },
});
process.exit(r.status ?? 1);
