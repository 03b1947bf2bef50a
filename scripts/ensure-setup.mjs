// Makes a fresh clone runnable: installs npm dependencies when they are missing and
// compiles the TypeScript. Used by `npm start` and `npm test` so that a newcomer needs
// exactly those two commands.
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    process.stderr.write(`coffer: error: \`${cmd} ${args.join(' ')}\` failed (exit ${r.status})\n`);
    process.exit(r.status ?? 1);
  }
}

export function ensureSetup({ quiet = false } = {}) {
  if (!existsSync(join(root, 'node_modules', '.package-lock.json'))) {
    if (!quiet) process.stderr.write('coffer: installing npm dependencies (first run)…\n');
    run('npm', ['ci', '--no-audit', '--no-fund']);
  }
  // The workspace bins (packages/*/bin/*.js) are committed, so npm ci linked them into
  // node_modules/.bin before dist/ existed; they run the code built here.
  run('npx', ['tsc', '-b']);
}
