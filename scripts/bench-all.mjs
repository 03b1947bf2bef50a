#!/usr/bin/env node
/**
 * `npm run bench:all`: every benchmark issue 13 names, one after the other in one run, then
 * one table of every ratio against its target (issue 13, "Done when"):
 *
 *   bench-backup.mjs --all   the 1 GiB chat set and the 50,000-file tree against restic,
 *                            the cp -r floor, backup to the relay's blob API
 *   bench-relay.mjs          recoveries through the relay against straight to the vault
 *   bench-vault.mjs          vault CPU per recovery against bare OPAQUE
 *
 * Each runs as a child in its own process group under a watchdog (COFFER_BENCH_TIMEOUT_S,
 * default 1800 s each): one that hangs is killed with everything it started, and the run
 * says which benchmark hung and the last thing it printed, then goes on with the next.
 * Extra arguments go to bench-backup.mjs (e.g. `-- --tree-growth 200000`).
 * Exit code: 0 when every benchmark finished, 1 otherwise (a missed target is reported, not
 * an error: these are measurements).
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const timeoutS = Number(process.env.COFFER_BENCH_TIMEOUT_S ?? 1800);
/** Ratios where more is better (a rate against a baseline); the others are costs (less is better). */
const HIGHER_IS_BETTER = new Set(['blob-backup', 'relay-blob-backup', 'relay-recover', 'relay-recover-postgres', 'vault-software', 'vault-pkcs11']);

const runs = [
  { name: 'backup', args: [join(here, 'bench-backup.mjs'), '--all', ...process.argv.slice(2)] },
  { name: 'relay', args: [join(here, 'bench-relay.mjs')] },
  { name: 'vault', args: [join(here, 'bench-vault.mjs')] },
];

/** Runs one benchmark, echoing its output; resolves with its `bench:` lines and how it ended. */
function runOne({ name, args }) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const lines = [];
    let last = '';
    let pending = '';
    child.stdout.on('data', (d) => {
      process.stdout.write(d);
      pending += d;
      const parts = pending.split('\n');
      pending = parts.pop();
      for (const l of parts) {
        if (l.trim()) last = l;
        if (l.startsWith('bench: ')) lines.push(l);
      }
    });
    child.stderr.on('data', (d) => {
      process.stderr.write(d);
      const t = String(d).trim().split('\n').pop();
      if (t) last = t;
    });
    let hung = false;
    const watchdog = setTimeout(() => {
      hung = true;
      try {
        process.kill(-child.pid, 'SIGKILL'); // the whole group: servers it started too
      } catch {
        // already gone
      }
    }, timeoutS * 1000);
    child.on('exit', (code, signal) => {
      clearTimeout(watchdog);
      const s = ((Date.now() - started) / 1000).toFixed(0);
      const how = hung ? `hung: killed after ${s} s (COFFER_BENCH_TIMEOUT_S=${timeoutS}); its last output: ${last}` : code === 0 ? `finished in ${s} s` : `failed (${signal ?? `exit ${code}`}) after ${s} s; its last output: ${last}`;
      resolve({ name, lines, ok: !hung && code === 0, how });
    });
  });
}

const results = [];
for (const r of runs) {
  console.log(`\n=== bench:all: ${r.name} (${r.args.slice(1).join(' ') || 'defaults'}) ===`);
  results.push(await runOne(r));
}

console.log('\n=== bench:all: every ratio, this run ===');
console.log('figure                   ratio   target  met');
for (const r of results) {
  for (const l of r.lines) {
    const m = /^bench: (\S+) ratio=([\d.]+)(?: target=([\d.]+))?/.exec(l);
    if (!m) continue;
    const [, fig, ratio, target] = m;
    const higher = HIGHER_IS_BETTER.has(fig);
    const met = target === undefined ? '(printed)' : (higher ? Number(ratio) >= Number(target) : Number(ratio) <= Number(target)) ? 'yes' : 'no';
    console.log(`${fig.padEnd(24)} ${ratio.padStart(6)}  ${target === undefined ? '      ' : `${higher ? '>=' : '<='}${target.padStart(4)}`}  ${met}`);
  }
}
for (const r of results) console.log(`bench:all: ${r.name} ${r.how}`);
process.exitCode = results.every((r) => r.ok) ? 0 : 1;
