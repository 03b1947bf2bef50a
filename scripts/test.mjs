// `npm test`: the one test command (README, .ci/run). Builds, lints, then runs every
// compiled test file with node's test runner, whose summary CI reads.
//   npm test                 all tests
//   npm test -- backup       only test files whose path contains "backup"
// Two test files run at a time (COFFER_TEST_CONCURRENCY=N to change it): many tests wait
// on child processes, timers, etcd and SoftHSM2, so on the 2-core machine the suite takes
// ~11 minutes at 2 against ~15 at node's default of one file at a time (cores - 1). Every
// test makes its own directories, ports (0), etcd members and SoftHSM2 tokens, so files
// never share state.
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';
import { ensureSetup, root } from './ensure-setup.mjs';

ensureSetup();
const lint = spawnSync('npx', ['eslint', '.'], { cwd: root, stdio: 'inherit' });
if (lint.status !== 0) process.exit(lint.status ?? 1);

function collect(dir, out) {
  let entries;
  try { entries = readdirSync(dir); } catch { return out; }
  for (const name of entries) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) collect(p, out);
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const filters = process.argv.slice(2);
const files = [];
for (const pkg of readdirSync(join(root, 'packages'))) collect(join(root, 'packages', pkg, 'dist', 'test'), files);
const chosen = files.filter((f) => filters.length === 0 || filters.some((s) => f.includes(s))).sort();
if (chosen.length === 0) {
  process.stderr.write('coffer: error: no test files found\n');
  process.exit(1);
}
process.stderr.write(`running ${chosen.length} test files\n`);
const concurrency = process.env.COFFER_TEST_CONCURRENCY ?? '2';
if (!/^[1-9][0-9]?$/.test(concurrency)) {
  process.stderr.write(`coffer: error: COFFER_TEST_CONCURRENCY must be 1-99, not ${JSON.stringify(concurrency)}\n`);
  process.exit(2);
}
const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...chosen.map((f) => relative(root, f))], {
  cwd: root,
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
