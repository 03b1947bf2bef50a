/**
 * Issue 13: a `coffer backup` process keeps V8's young generation at its starting size
 * (heap.ts). Starting a worker thread sets --semi-space-growth-factor back to 2 for the
 * whole process, so the policy must be set again once each worker is up. Each case runs
 * in a child process (the flags are process-wide) and reports the main thread's new
 * space after allocating enough, with enough survivors, to make V8's default policy grow
 * it to its maximum.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const HEAP = fileURLToPath(new URL('../src/heap.js', import.meta.url));
const BIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const MiB = 1024 * 1024;

// Allocation with survivors: under V8's default policy the new space grows to its
// maximum (2 × 16 MiB committed on 64-bit).
const CHURN = `
let keep = [];
for (let i = 0; i < 6e5; i++) { keep.push({ a: i }); if (keep.length > 200000) keep = []; }
`;
const NEW_SPACE = `(await import('node:v8')).getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size`;

function runScript(body: string, env: Record<string, string> = {}): Promise<number> {
  return new Promise((done, fail) => {
    execFile(process.execPath, ['--input-type=module', '-e', body], { env: { PATH: process.env.PATH ?? '', ...env } }, (err, stdout, stderr) => {
      if (err) return fail(new Error(`${err.message}\n${stderr}`));
      done(Number(stdout.trim()));
    });
  });
}

const withWorker = (tune: boolean) => `
${tune ? `(await import(${JSON.stringify(HEAP)})).tuneHeapEarly();` : ''}
const { Worker } = await import('node:worker_threads');
const w = new Worker('setTimeout(() => {}, 60000)', { eval: true });
await new Promise((r) => w.once('online', r));
${CHURN}
console.log(${NEW_SPACE});
await w.terminate();
`;

test('the heap policy outlives a worker thread start: the young generation stays small', async () => {
  const tuned = await runScript(withWorker(true));
  assert.ok(tuned <= 4 * MiB, `new space ${tuned / MiB} MiB with the backup's policy after a worker started`);
  // Without it (what happened before: the flag set once, then a worker started) the same
  // allocation grows the new space well past that: the check above can fail.
  const untuned = await runScript(withWorker(false));
  assert.ok(untuned >= 16 * MiB, `new space ${untuned / MiB} MiB under V8's defaults`);
});

test('COFFER_V8_DEFAULT_HEAP=1 keeps V8 defaults', async () => {
  const size = await runScript(withWorker(true), { COFFER_V8_DEFAULT_HEAP: '1' });
  assert.ok(size >= 16 * MiB, `new space ${size / MiB} MiB`);
});

test('`coffer backup` sets its policy before its work; other repository commands only the old generation\'s growth', async () => {
  const dir = await fs.mkdtemp(join(tmpdir(), 'coffer-heap-'));
  try {
    // A preload that reports, at exit, the new space and whether the policy was set.
    const hook = join(dir, 'hook.mjs');
    await fs.writeFile(
      hook,
      `import v8 from 'node:v8';
import { writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
const seen = [];
const orig = v8.setFlagsFromString;
v8.setFlagsFromString = (f) => { seen.push(f); return orig(f); };
syncBuiltinESMExports();
process.on('exit', () => writeFileSync(process.env.HEAP_OUT, JSON.stringify(seen)));
`,
    );
    const run = (args: string[]) =>
      new Promise<string[]>((done) => {
        const out = join(dir, `flags-${args[0]}.json`);
        execFile(process.execPath, ['--import', hook, BIN, ...args], { env: { PATH: process.env.PATH ?? '', HOME: dir, HEAP_OUT: out } }, async () => {
          done(JSON.parse(await fs.readFile(out, 'utf8')) as string[]);
        });
      });
    // backup with a missing repository: fails early, after the policy was set at start.
    const backup = await run(['backup', '--repo', join(dir, 'none'), '--key-file', join(dir, 'none'), dir]);
    assert.ok(backup.includes('--semi-space-growth-factor=1'), `backup set: ${backup.join(' ')}`);
    // A reading command (snapshots, check, diff, …): the old generation grows by 20% at a time, nothing else.
    const ls = await run(['snapshots', '--repo', join(dir, 'none'), '--key-file', join(dir, 'none')]);
    assert.deepEqual(ls, ['--heap-growing-percent=20']);
    const check = await run(['check', '--repo', join(dir, 'none'), '--key-file', join(dir, 'none')]);
    assert.deepEqual(check, ['--heap-growing-percent=20']);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

// The same with a turn of the event loop every 1,000 objects, as a restore's work comes
// (the policy acts in a collection observer, which runs between turns).
const ASYNC_CHURN = `
let keep = [];
for (let i = 0; i < 6e5; i++) { keep.push({ a: i }); if (keep.length > 200000) keep = []; if (i % 1000 === 0) await new Promise((r) => setImmediate(r)); }
`;

test('a restore\'s young generation grows to RESTORE_NEW_SPACE_BYTES and no further', async () => {
  const { RESTORE_NEW_SPACE_BYTES } = await import('../src/heap.js');
  const body = (tune: boolean) => `
${tune ? `(await import(${JSON.stringify(HEAP)})).tuneHeapForRestore();` : ''}
${ASYNC_CHURN}
console.log(${NEW_SPACE});
`;
  const held = await runScript(body(true));
  assert.ok(held <= RESTORE_NEW_SPACE_BYTES, `new space ${held / MiB} MiB with the restore's policy`);
  // The same allocation under V8's defaults grows past it: the check above can fail.
  const free = await runScript(body(false));
  assert.ok(free > RESTORE_NEW_SPACE_BYTES, `new space ${free / MiB} MiB under V8's defaults`);
});

test('a restore\'s young generation stays held when a worker starts after it reached RESTORE_NEW_SPACE_BYTES (restore\'s writer thread)', async () => {
  const { RESTORE_NEW_SPACE_BYTES } = await import('../src/heap.js');
  // Grow to the hold, then start a worker (which sets the growth factor back to 2), then allocate on.
  const body = `
(await import(${JSON.stringify(HEAP)})).tuneHeapForRestore();
{ ${ASYNC_CHURN} }
const { Worker } = await import('node:worker_threads');
const w = new Worker('setTimeout(() => {}, 60000)', { eval: true });
await new Promise((r) => w.once('online', r));
{ ${ASYNC_CHURN} }
{ ${ASYNC_CHURN} }
console.log(${NEW_SPACE});
await w.terminate();
`;
  const held = await runScript(body);
  // At most one growth step past the hold: a collection here in the moment the worker's
  // isolate resets the process-wide growth factor, before it is set again, can take one
  // (heap.ts; seen once in ~10 CI runs). Without the setting again it reaches V8's 32 MiB.
  assert.ok(held <= 2 * RESTORE_NEW_SPACE_BYTES, `new space ${held / MiB} MiB with the restore's policy after a worker started`);
});
