/**
 * Running the benchmarked commands, shared by bench-backup.mjs and bench-shapes.mjs:
 * `sh` runs a command and returns its output (throws with its stderr on failure);
 * `timed` runs one under /usr/bin/time for wall seconds and peak RSS (KiB), after an
 * untimed `sync`: without it, what the step before wrote (the other tool's repository, a
 * restore's files) was written back during this one, so each tool's figure depended on
 * what ran just before it (as bench-tree-ab.mjs found for its pairs).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr?.slice(-2000)}`);
  return r.stdout;
}

/** `cmd args` under /usr/bin/time (its report in `work`/.time), with `env` added: { wall, rss }. */
export function timed(work, cmd, args, env = {}) {
  sh('sync', []);
  const t = join(work, '.time');
  sh('/usr/bin/time', ['-f', '%e %M', '-o', t, cmd, ...args], { env: { ...process.env, ...env } });
  const [wall, rss] = readFileSync(t, 'utf8').trim().split(/\s+/).map(Number);
  return { wall, rss };
}
