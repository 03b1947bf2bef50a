/**
 * kill -9 at random moments during backup and prune (TESTING.md, "Sealed objects and
 * repositories"): a child process (fixtures/crash-child.ts) runs the operation and
 * SIGKILLs itself at a random storage operation (before, during or after it), or at each
 * prune step. Afterwards every earlier snapshot restores byte-identical, `check` passes
 * (unindexed packs allowed), and the next backup (and prune) succeeds. Kill points are
 * counted in storage operations, not milliseconds, so they fall inside the operation on a
 * loaded machine as on an idle one; they are seeded per run and printed, so a failure can
 * be replayed with COFFER_CRASH_SEED.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { LOCK_EXPIRY_MS, applyPolicy, backup, check, forgetSnapshots, hex, prune, restore, type Repository } from '../src/index.js';
import { assertSameTree, dir, file, newRepo, prng, tempDir, writeTree, type TestRepo } from './fixtures/trees.js';

const CHILD = fileURLToPath(new URL('./fixtures/crash-child.js', import.meta.url));
const ROUNDS = 6; // kills per random-kill test
const WHEN = ['before', 'during', 'after'] as const;

/** A small seeded generator (mulberry32), so a failing run can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

interface ChildResult {
  killed: boolean;
  finished: boolean;
  /** Storage operations a finished child made. */
  ops: number;
  stderr: string;
}

interface KillPoint {
  op: number;
  when: (typeof WHEN)[number];
}

/** Runs the child; it kills itself at storage operation `kill.op` (never, when undefined). */
function runChild(tr: TestRepo, env: Record<string, string>, kill?: KillPoint): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD], {
      env: {
        ...process.env,
        COFFER_TEST_REPO: tr.dir,
        COFFER_TEST_KEY: tr.key.toDigits(),
        ...(kill ? { COFFER_TEST_KILL_AT_OP: String(kill.op), COFFER_TEST_KILL_WHEN: kill.when } : {}),
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (signal !== 'SIGKILL' && code !== 0) reject(new Error(`child failed (${code}): ${err}`));
      else resolve({ killed: signal === 'SIGKILL', finished: out.includes('done\n'), ops: Number(/ops (\d+)/.exec(out)?.[1] ?? 0), stderr: err });
    });
  });
}

/** Every snapshot the repository has restores to the tree recorded for it. */
async function assertAllRestore(t: TestContext, repo: Repository, expected: Map<string, string>): Promise<void> {
  const snaps = await repo.snapshots();
  for (const s of snaps) {
    const copy = expected.get(hex(s.id));
    if (!copy) continue; // made by a child that finished before the kill: checked by `check`
    const target = await tempDir(undefined, 'dst');
    try {
      await restore(repo, s, { target });
      await assertSameTree(copy, join(target, 'd'), { dirTimes: false });
    } finally {
      await fs.rm(target, { recursive: true, force: true });
    }
  }
  for (const id of expected.keys()) assert.ok(snaps.some((s) => hex(s.id) === id), `snapshot ${id.slice(0, 8)} still exists`);
  void t;
}

async function assertCheckClean(tr: TestRepo, readData = false): Promise<void> {
  const r = await check(await tr.reopen(), { readData });
  assert.deepEqual(r.problems, [], 'check finds no problems');
}

/** Backs up `src` in this process and records a copy of what it held. */
async function parentBackup(t: TestContext, tr: TestRepo, src: string, expected: Map<string, string>, now?: Date): Promise<string> {
  const r = await backup(await tr.reopen(), { paths: [src], now: now ? () => now : undefined });
  const copy = join(await tempDir(t, 'copy'), 'd');
  await fs.cp(src, copy, { recursive: true, preserveTimestamps: true });
  expected.set(hex(r.id), copy);
  return hex(r.id);
}

test('kill -9 at random moments during a backup: earlier snapshots restore, check passes, the next backup succeeds', async (t) => {
  const seed = Number(process.env.COFFER_CRASH_SEED ?? Date.now() % 1e9);
  t.diagnostic(`seed ${seed}`);
  const rand = rng(seed);
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'd');
  await writeTree(src, dir({ 'base.bin': file(prng(seed, 1_000_000)), 'small.txt': file('hello') }));
  const expected = new Map<string, string>();
  await parentBackup(t, tr, src, expected);

  // How many storage operations does an uninterrupted child backup of a round's new data make?
  await writeTree(join(src, 'calib.bin'), file(prng(seed + 1, 1_500_000)));
  const calib = await runChild(tr, { COFFER_TEST_MODE: 'backup', COFFER_TEST_SRC: src });
  assert.ok(calib.finished && calib.ops > 1, `calibration: ${calib.ops} storage operations`);
  t.diagnostic(`uninterrupted child backup: ${calib.ops} storage operations`);

  let kills = 0;
  for (let i = 0; i < ROUNDS; i++) {
    // New data each round (at least the calibration's, so there is something to write), and a file removed.
    await writeTree(join(src, `new${i}.bin`), file(prng(seed + 100 + i, 1_500_000 + Math.floor(rand() * 500_000))));
    if (i > 1) await fs.rm(join(src, `new${i - 2}.bin`));
    const kill = { op: 1 + Math.floor(rand() * calib.ops), when: WHEN[Math.floor(rand() * 3)]! };
    const r = await runChild(tr, { COFFER_TEST_MODE: 'backup', COFFER_TEST_SRC: src }, kill);
    t.diagnostic(`round ${i}: kill at op ${kill.op} (${kill.when}): ${r.killed ? 'killed' : `finished after ${r.ops} ops`}`);
    if (r.killed) kills++;
    await assertCheckClean(tr);
    await assertAllRestore(t, await tr.reopen(), expected);
    // The next backup succeeds and restores.
    await parentBackup(t, tr, src, expected);
  }
  t.diagnostic(`${kills} kills in ${ROUNDS} rounds`);
  assert.ok(kills >= ROUNDS / 2, `most children were killed mid-way (${kills} of ${ROUNDS})`);
  await assertCheckClean(tr, true);
  await assertAllRestore(t, await tr.reopen(), expected);
});

/** A repository where a prune has work: forgetting the older snapshot frees part of a pack. */
async function pruneFixture(t: TestContext, tr: TestRepo, src: string, expected: Map<string, string>, round: number): Promise<void> {
  await writeTree(join(src, `gone${round}.bin`), file(prng(1000 + round, 300_000)));
  await writeTree(join(src, `kept${round}.bin`), file(prng(2000 + round, 300_000)));
  const older = await parentBackup(t, tr, src, expected, new Date(Date.UTC(2024, 0, 1, round, 0)));
  await fs.rm(join(src, `gone${round}.bin`));
  await parentBackup(t, tr, src, expected, new Date(Date.UTC(2024, 0, 1, round, 30)));
  const repo = await tr.reopen();
  const victim = (await repo.snapshots()).filter((s) => hex(s.id) === older);
  await forgetSnapshots(repo, victim);
  expected.delete(older);
  assert.ok((await prune(repo, { dryRun: true })).bytesFreed > 0, 'prune has work to do');
}

async function afterPruneCrash(t: TestContext, tr: TestRepo, src: string, expected: Map<string, string>, what: string): Promise<void> {
  await assertCheckClean(tr).catch((e: unknown) => {
    throw new Error(`after ${what}: ${String(e)}`);
  });
  await assertAllRestore(t, await tr.reopen(), expected);
  await parentBackup(t, tr, src, expected);
}

test('kill -9 at each prune step: every kept snapshot restores, check passes, the next backup and prune succeed', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'd');
  await writeTree(src, dir({ 'base.bin': file(prng(1, 500_000)) }));
  const expected = new Map<string, string>();
  await parentBackup(t, tr, src, expected);
  let round = 0;
  for (const step of ['dropped', 'repacked', 'index-written', 'repacked-deleted', 'old-index-deleted']) {
    await pruneFixture(t, tr, src, expected, round++);
    const r = await runChild(tr, { COFFER_TEST_MODE: 'prune', COFFER_TEST_STOP_AT: step });
    assert.ok(r.killed && !r.finished, `the child died at ${step}`);
    await afterPruneCrash(t, tr, src, expected, `a kill at ${step}`);
  }
  // A full prune now finishes what the killed ones left, and everything is still whole.
  // (Packs a killed prune wrote but never indexed are left alone until they are older
  // than the lock expiry: the clock moves past it. Every blob in them is indexed
  // elsewhere, so they go.)
  await prune(await tr.reopen(), { now: () => Date.now() + LOCK_EXPIRY_MS + 1000 });
  await assertCheckClean(tr, true);
  const c = await check(await tr.reopen());
  assert.equal(c.unreferencedPacks, 0);
  await assertAllRestore(t, await tr.reopen(), expected);
});

test('kill -9 at random moments during a prune', async (t) => {
  const seed = Number(process.env.COFFER_CRASH_SEED ?? Date.now() % 1e9);
  t.diagnostic(`seed ${seed}`);
  const rand = rng(seed);
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'd');
  await writeTree(src, dir({ 'base.bin': file(prng(seed, 500_000)) }));
  const expected = new Map<string, string>();
  await parentBackup(t, tr, src, expected);
  // How many storage operations does an uninterrupted prune of such a fixture make?
  await pruneFixture(t, tr, src, expected, 0);
  const calib = await runChild(tr, { COFFER_TEST_MODE: 'prune' });
  assert.ok(calib.finished && calib.ops > 1, `calibration: ${calib.ops} storage operations`);
  t.diagnostic(`uninterrupted child prune: ${calib.ops} storage operations`);
  let kills = 0;
  for (let round = 1; round <= ROUNDS; round++) {
    await pruneFixture(t, tr, src, expected, round);
    const kill = { op: 1 + Math.floor(rand() * calib.ops), when: WHEN[Math.floor(rand() * 3)]! };
    const r = await runChild(tr, { COFFER_TEST_MODE: 'prune' }, kill);
    t.diagnostic(`round ${round}: kill at op ${kill.op} (${kill.when}): ${r.killed ? 'killed' : `finished after ${r.ops} ops`}`);
    if (r.killed) kills++;
    await afterPruneCrash(t, tr, src, expected, `a kill at op ${kill.op} ${kill.when} it (round ${round})`);
  }
  t.diagnostic(`${kills} kills in ${ROUNDS} rounds`);
  assert.ok(kills >= ROUNDS / 2, `most prunes were killed mid-way (${kills} of ${ROUNDS})`);
  await prune(await tr.reopen(), { now: () => Date.now() + LOCK_EXPIRY_MS + 1000 });
  await assertCheckClean(tr, true);
  await assertAllRestore(t, await tr.reopen(), expected);
  // The policy machinery agrees with what is left.
  const left = await (await tr.reopen()).snapshots();
  assert.equal(applyPolicy(left, { last: left.length }).remove.length, 0);
});
