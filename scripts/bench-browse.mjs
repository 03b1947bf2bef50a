// `npm run bench:browse [-- --runs N]`: reading a snapshot without restoring it, coffer
// against restic on the 50,000-file tree's two snapshots that `npm run bench:backup`
// leaves in bench-work/ (tree-repo-coffer, tree-repo-restic; run it first):
//   dump   `coffer dump latest / --archive tar` / `restic dump latest /` (a tar of the tree)
//   diff   the two snapshots (`diff A B`)
//   find   `find '*.txt'` over both snapshots
//   ls     `ls -l latest`
// Output to /dev/null. Each command --runs times per tool (default 3), the tools
// alternating which goes first; medians of the wall time, the highest peak RSS. Ratios
// printed (coffer / restic), no targets (issue 13 names none for these).
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { argNumber } from './bench-args.mjs';
import { sh, timed } from './bench-timed.mjs';

const RUNS = argNumber('runs', 3);
const work = process.env.COFFER_BENCH_DIR ?? join(root, 'bench-work');
const coffer = join(root, 'packages', 'cli', 'dist', 'src', 'main.js');
const repos = { coffer: join(work, 'tree-repo-coffer'), restic: join(work, 'tree-repo-restic') };
const keyFile = join(work, 'key');
for (const p of [repos.coffer, repos.restic, keyFile]) {
  if (!existsSync(p)) throw new Error(`bench:browse: ${p} is missing: run \`npm run bench:backup\` first (it makes the tree's repositories)`);
}
mkdirSync(join(work, 'browse'), { recursive: true });
const cofferEnv = { COFFER_KEY: '', COFFER_REPOSITORY: repos.coffer };
const resticEnv = { RESTIC_PASSWORD: 'bench-password', RESTIC_CACHE_DIR: join(work, 'restic-cache'), RESTIC_REPOSITORY: repos.restic };

const ids = {
  coffer: JSON.parse(sh(process.execPath, [coffer, 'snapshots', '--json', '--key-file', keyFile], { env: { ...process.env, ...cofferEnv } })).map((s) => s.id),
  restic: JSON.parse(sh('restic', ['snapshots', '--json'], { env: { ...process.env, ...resticEnv } })).map((s) => s.id),
};
if (ids.coffer.length < 2 || ids.restic.length < 2) throw new Error('bench:browse: each tree repository needs its two snapshots (npm run bench:backup)');

const commands = {
  dump: { coffer: ['dump', 'latest', '/', '--archive', 'tar'], restic: ['dump', 'latest', '/'] },
  diff: { coffer: ['diff', ids.coffer[0], ids.coffer[1]], restic: ['diff', ids.restic[0], ids.restic[1]] },
  find: { coffer: ['find', '*.txt'], restic: ['find', '*.txt'] },
  ls: { coffer: ['ls', '-l', 'latest'], restic: ['ls', '-l', 'latest'] },
};

/** One timed run with stdout thrown away (a dump is hundreds of MB). */
function run(tool, args) {
  const [cmd, argv, env] = tool === 'coffer' ? [process.execPath, [coffer, ...args, '--key-file', keyFile, '-q'], cofferEnv] : ['restic', ['-q', ...args], resticEnv];
  return timed(join(work, 'browse'), 'sh', ['-c', 'exec "$0" "$@" > /dev/null', cmd, ...argv], env);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`bench:browse: the 50,000-file tree's two snapshots, ${RUNS} runs per tool, alternating; wall s (median), peak RSS MiB (max)`);
for (const [name, c] of Object.entries(commands)) {
  const got = { coffer: [], restic: [] };
  for (let i = 0; i < RUNS; i++) for (const tool of i % 2 === 0 ? ['coffer', 'restic'] : ['restic', 'coffer']) got[tool].push(run(tool, c[tool]));
  const w = (t) => median(got[t].map((r) => r.wall));
  const m = (t) => Math.max(...got[t].map((r) => r.rss)) / 1024;
  console.log(`${name.padEnd(5)} coffer ${w('coffer').toFixed(2)} s ${m('coffer').toFixed(0)} MiB; restic ${w('restic').toFixed(2)} s ${m('restic').toFixed(0)} MiB (runs: coffer ${got.coffer.map((r) => r.wall.toFixed(2)).join(' ')}; restic ${got.restic.map((r) => r.wall.toFixed(2)).join(' ')})`);
  console.log(`bench: browse-${name} ratio=${(w('coffer') / w('restic')).toFixed(2)} rss=${(m('coffer') / m('restic')).toFixed(2)}`);
}
