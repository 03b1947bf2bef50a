#!/usr/bin/env node
/**
 * `coffer backup --stdin` keeps memory flat (issue 12): pipes a small stream (the
 * baseline, 16 MiB) and a large one (default 400 MiB) of incompressible bytes into the
 * real CLI, samples the child's RSS from /proc every 50 ms, and prints each run's peak
 * (VmHWM) and the ratio large/small. Flat memory means a ratio near 1, whatever the
 * size. Not a test (timing and memory depend on the machine's load).
 *
 *   npm run bench:stdin [-- MIB]
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const bigMiB = Number(process.argv[2] ?? 400);
const bin = join(root, 'packages', 'cli', 'dist', 'src', 'main.js');
const dir = mkdtempSync(join(tmpdir(), 'coffer-bench-stdin-'));

function status(pid, field) {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

async function run(mib, env) {
  const child = spawn(process.execPath, [bin, 'backup', '--stdin', '--stdin-filename', `dump-${mib}.bin`, '-q'], { env, stdio: ['pipe', 'ignore', 'inherit'] });
  let peak = 0;
  const samples = [];
  const timer = setInterval(() => {
    const rss = status(child.pid, 'VmRSS');
    const hwm = status(child.pid, 'VmHWM');
    if (hwm > peak) peak = hwm;
    if (rss) samples.push(rss);
  }, 50);
  const started = Date.now();
  const piece = 1 << 20;
  for (let i = 0; i < mib; i++) {
    if (!child.stdin.write(randomBytes(piece))) await new Promise((r) => child.stdin.once('drain', r));
  }
  child.stdin.end();
  const code = await new Promise((r) => child.on('close', r));
  clearInterval(timer);
  if (code !== 0) throw new Error(`backup --stdin exited ${code}`);
  const secs = (Date.now() - started) / 1000;
  const late = samples.slice(Math.floor(samples.length / 2));
  return { mib, peak, lateMax: Math.max(...late, 0), secs };
}

try {
  const key = execFileSync(process.execPath, [bin, 'key', 'generate', '-q']).toString().trim();
  const env = { ...process.env, COFFER_REPOSITORY: join(dir, 'repo'), COFFER_KEY: key, XDG_CONFIG_HOME: join(dir, 'config') };
  execFileSync(process.execPath, [bin, 'init', '-q'], { env });
  console.log(`load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const small = await run(16, env);
  const big = await run(bigMiB, env);
  const mb = (n) => (n / 1024 / 1024).toFixed(1);
  for (const r of [small, big]) console.log(`${String(r.mib).padStart(5)} MiB piped: peak RSS ${mb(r.peak)} MiB, max RSS in the second half ${mb(r.lateMax)} MiB, ${r.secs.toFixed(1)} s (${(r.mib / r.secs).toFixed(1)} MiB/s)`);
  console.log(`peak RSS ratio ${bigMiB} MiB / 16 MiB: ${(big.peak / small.peak).toFixed(2)} (input ratio ${(bigMiB / 16).toFixed(1)})`);
  console.log(`load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
