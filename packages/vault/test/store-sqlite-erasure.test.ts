// Issue 8 §5 (SQLite): after an erasure, none of the account's earlier sealed records
// (each holds the wrapped key) is left in the database file or its WAL: secure_delete
// zeroes replaced content and the WAL is checkpointed and truncated after the erasure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSECURE_FAST_KSF_FOR_TESTING, parseRequest, VaultClient } from '@coffer/protocol';
import { startHarness, KEY_K, type Harness } from './helpers/vault-harness.js';
import { SqliteRecordStore } from '../src/store/sqlite.js';

/** Where `needle` occurs in the database or WAL file (empty: nowhere). */
function foundIn(dbPath: string, needle: Uint8Array): string[] {
  const where: string[] = [];
  for (const f of [dbPath, `${dbPath}-wal`]) {
    if (existsSync(f) && readFileSync(f).includes(Buffer.from(needle))) where.push(f);
  }
  return where;
}

/** Every sealed value the account's record has had, read after each exchange. */
function recordingClient(h: Harness, account: string, seen: Uint8Array[], dropFinish = false): VaultClient {
  return new VaultClient({
    fleetKey: h.vault.fleet.fleetKey,
    account,
    ksf: INSECURE_FAST_KSF_FOR_TESTING,
    transport: async (bytes) => {
      if (dropFinish && parseRequest(bytes).op === 'login-finish') throw new Error('never sent');
      const res = await h.post(account, bytes);
      assert.equal(res.status, 200);
      const stored = await h.stored(account);
      if (stored && !seen.some((s) => Buffer.from(s).equals(Buffer.from(stored)))) seen.push(stored);
      return new Uint8Array(res.body);
    },
  });
}

test('an erasure by a wrong last guess leaves no earlier sealed record in the SQLite file or WAL', async (t) => {
  const h = await startHarness({ policy: { guessLimit: 3 } });
  t.after(() => h.close());
  const db = h.config.storePath;
  const account = 'local:victim';
  const seen: Uint8Array[] = [];
  const c = recordingClient(h, account, seen);
  assert.equal((await c.register('correct horse battery', KEY_K)).outcome, 'ok');
  assert.equal((await c.recover('correct horse battery')).outcome, 'ok');
  // Other accounts' traffic around it, so the pages are shared and reused.
  for (let i = 0; i < 5; i++) assert.equal((await recordingClient(h, `local:other-${i}`, []).register('pw', KEY_K)).outcome, 'ok');
  assert.equal((await c.recover('wrong 1')).outcome, 'wrong-password');
  assert.ok(seen.length >= 5, `${seen.length} sealed versions`);
  // Control: before the erasure the sealed records are there to be found.
  assert.ok(seen.some((s) => foundIn(db, s).length > 0), 'the search finds live sealed records');

  assert.equal((await c.recover('wrong 2')).outcome, 'wrong-password');
  assert.equal((await c.recover('wrong 3')).outcome, 'locked');
  const tombstone = (await h.stored(account))!;
  for (const s of seen) {
    if (Buffer.from(s).equals(Buffer.from(tombstone))) continue;
    assert.deepEqual(foundIn(db, s), [], 'an earlier sealed record survived the erasure');
  }
  assert.equal(statSync(`${db}-wal`).size, 0, 'the WAL was checkpointed and truncated');
  // Other accounts are intact.
  assert.equal((await recordingClient(h, 'local:other-0', []).recover('pw')).outcome, 'ok');
});

test('an erasure by the sweeper (abandoned last login) leaves no earlier sealed record either', async (t) => {
  const h = await startHarness({ policy: { guessLimit: 2, loginTtlMs: 1000 } });
  t.after(() => h.close());
  const db = h.config.storePath;
  const account = 'local:victim';
  const seen: Uint8Array[] = [];
  assert.equal((await recordingClient(h, account, seen).register('correct horse battery', KEY_K)).outcome, 'ok');
  const attacker = recordingClient(h, account, seen, true);
  for (let i = 0; i < 2; i++) await assert.rejects(attacker.recover(`guess ${i}`), /never sent/);
  // Polled (the erasure, not its timing, is the point here: vault-sweep.test bounds the
  // timing): 15 s, not 4, for the 1 s login lifetime and 1 s sweeps on a loaded machine.
  const end = Date.now() + 15_000;
  while ((await h.metric('coffer_vault_sweeps_total')) < 1) {
    if (Date.now() > end) assert.fail('not swept');
    await new Promise((r) => setTimeout(r, 50));
  }
  const tombstone = (await h.stored(account))!;
  for (const s of seen) {
    if (Buffer.from(s).equals(Buffer.from(tombstone))) continue;
    assert.deepEqual(foundIn(db, s), []);
  }
});

test('compareAndDelete is an erasure too; a plain put is not (no checkpoint owed)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-sqlite-erase-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'r.sqlite');
  const s = new SqliteRecordStore(path);
  t.after(() => s.close());
  const secret = new Uint8Array(200).map((_, i) => (i * 37 + 11) & 0xff);
  const v = await s.compareAndPut('a', secret, null);
  assert.ok(v.ok);
  const v2 = await s.compareAndPut('b', new Uint8Array(50).fill(7), null);
  assert.ok(v2.ok);
  assert.equal(s.checkpointOwed, false);
  assert.deepEqual(foundIn(path, secret), [`${path}-wal`]);
  assert.equal(await s.compareAndDelete('a', v.version), true);
  assert.equal(s.checkpointOwed, false);
  assert.deepEqual(foundIn(path, secret), []);
  assert.equal(statSync(`${path}-wal`).size, 0);
});
