// Issue 8 §3: an attacker who takes the last KE2 and never sends login-finish must not
// leave the wrapped key in the store: the sweeper erases the record within the login
// lifetime (plus one sweep interval), with no further request — also across a vault
// restart (the sweep index is durable), and a failure to index fails the request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSECURE_FAST_KSF_FOR_TESTING, parseRequest, VaultClient } from '@coffer/protocol';
import { startHarness, KEY_K, type Harness } from './helpers/vault-harness.js';
import { unsealRecord, type AccountRecord } from '../src/core/record.js';
import { StoreError } from '../src/store/store.js';

const LOGIN_TTL_MS = 1000;
const LIMIT = 3;
const policy = { loginTtlMs: LOGIN_TTL_MS, guessLimit: LIMIT };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A client whose transport never sends login-finish: the attacker keeps every KE2. */
function kE2Taker(h: Harness, account: string, statuses: number[] = []): VaultClient {
  return new VaultClient({
    fleetKey: h.vault.fleet.fleetKey,
    account,
    ksf: INSECURE_FAST_KSF_FOR_TESTING,
    transport: async (bytes) => {
      if (parseRequest(bytes).op === 'login-finish') throw new Error('attacker: login-finish never sent');
      const res = await h.post(account, bytes);
      statuses.push(res.status);
      if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${res.body.toString()}`);
      return new Uint8Array(res.body);
    },
  });
}

async function record(h: Harness, account: string): Promise<AccountRecord | null> {
  const bytes = await h.stored(account);
  return bytes ? unsealRecord(h.vault.platform.platform, account, bytes) : null;
}

/**
 * Spends every guess through login-start only. Returns when the last KE2 was asked for
 * (`asked`: the vault's clock starts the last login no earlier) and when it came back
 * (`released`: no later).
 */
async function takeAllKe2s(h: Harness, account: string): Promise<{ asked: number; released: number }> {
  const attacker = kE2Taker(h, account);
  for (let i = 0; i < LIMIT - 1; i++) await assert.rejects(attacker.recover(`guess ${i}`), /never sent/);
  const asked = Date.now();
  await assert.rejects(attacker.recover(`guess ${LIMIT - 1}`), /never sent/);
  return { asked, released: Date.now() };
}

async function waitErased(h: Harness, account: string, deadlineMs: number): Promise<number> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const rec = await record(h, account);
    if (rec?.state === 'erased') return Date.now();
    if (Date.now() > end) assert.fail(`record still ${rec?.state} after ${deadlineMs} ms`);
    await sleep(50);
  }
}

test('the last KE2 taken and never finished: the record is erased within the login lifetime, with no further request', async (t) => {
  const h = await startHarness({ policy });
  t.after(() => h.close());
  const account = 'local:victim';
  assert.equal((await h.client(account).register('correct horse battery', KEY_K)).outcome, 'ok');
  const before = await record(h, account);
  assert.equal(before?.state, 'active');

  const lastKe2 = await takeAllKe2s(h, account);
  const exhausted = await record(h, account);
  assert.equal(exhausted?.state, 'active', 'exhausted but its last login is still open');
  assert.ok(exhausted?.state === 'active' && exhausted.guessesUsed === LIMIT && exhausted.wrappedKey.length > 0);

  const erasedAt = await waitErased(h, account, LOGIN_TTL_MS + 1000 + 2500);
  const late = erasedAt - lastKe2.released;
  t.diagnostic(`erased ${late} ms after the last KE2 (login lifetime ${LOGIN_TTL_MS} ms, sweep interval 1000 ms)`);
  // The login ends LOGIN_TTL_MS after the vault issued the last KE2, which is after it was
  // asked for: measured from there, not from when the answer came back (on a loaded
  // machine the answer can take more than 50 ms, and a sweep right at the login's end
  // then looked early though it was not).
  assert.ok(erasedAt - lastKe2.asked >= LOGIN_TTL_MS, `erased ${erasedAt - lastKe2.asked} ms after the last KE2 was asked for: before its login ended`);
  // Time is the property here: a margin for a loaded 2-core machine on top of one sweep interval.
  assert.ok(late <= LOGIN_TTL_MS + 1000 + 2500, `erased ${late} ms after the last KE2`);
  const rec = await record(h, account);
  // registerStarts: the register-start rate window's expiry times (no key material).
  assert.deepEqual(Object.keys(rec!).sort(), ['erasedAt', 'registerStarts', 'state'], 'the tombstone keeps no wrapped key, envelope or login state');
  // The sweeper clears the index entry after the tombstone's write commits (and, with
  // rollback protection, is captured): wait for that condition, rather than read it in
  // the moment between the two.
  const clearedBy = Date.now() + 5000;
  while ((await h.vault.store.dueSweeps(Date.now() + 3_600_000, 10)).length > 0 && Date.now() < clearedBy) await sleep(20);
  assert.deepEqual(await h.vault.store.dueSweeps(Date.now() + 3_600_000, 10), [], 'the sweep index entry is cleared');
  assert.equal(await h.metric('coffer_vault_records_erased_total'), 1);
  assert.equal(await h.metric('coffer_vault_sweeps_total'), 1);
});

test('the sweep index survives a vault restart: erased after the restart with no request', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-sweep-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const account = 'local:victim';
  const h1 = await startHarness({ policy, dir });
  let closed = false;
  t.after(async () => {
    if (!closed) await h1.close();
  });
  assert.equal((await h1.client(account).register('correct horse battery', KEY_K)).outcome, 'ok');
  await takeAllKe2s(h1, account);
  // Stop at once: this vault's sweeper never gets to it.
  await h1.close();
  closed = true;
  assert.equal((await (async () => {
    const { SqliteRecordStore } = await import('../src/store/sqlite.js');
    const s = new SqliteRecordStore(join(dir, 'records.sqlite'));
    try {
      return (await s.dueSweeps(Date.now() + 3_600_000, 10)).map((e) => e.account);
    } finally {
      await s.close();
    }
  })()).join(), account, 'the entry is on disk');
  await sleep(LOGIN_TTL_MS + 100); // the login ended while no vault ran

  const h2 = await startHarness({ policy, dir });
  t.after(() => h2.close());
  assert.equal((await record(h2, account))?.state, 'active', 'nothing erased it while the vault was down');
  const started = Date.now();
  await waitErased(h2, account, 3000);
  t.diagnostic(`erased ${Date.now() - started} ms after the restart`);
  // One sweep interval (1000 ms) after the restart, with a margin for a loaded 2-core
  // machine (measured 1014–1052 ms under two busy loops; 500 ms of margin was close).
  assert.ok(Date.now() - started <= 1000 + 2000, 'erased by the first sweeper passes after the restart');
});

test('a right password within the last login leaves the record alone; its index entry is dropped', async (t) => {
  const h = await startHarness({ policy });
  t.after(() => h.close());
  const account = 'local:alice';
  const alice = h.client(account);
  assert.equal((await alice.register('correct horse battery', KEY_K)).outcome, 'ok');
  const attacker = kE2Taker(h, account);
  for (let i = 0; i < LIMIT - 1; i++) await assert.rejects(attacker.recover(`guess ${i}`), /never sent/);
  assert.equal((await alice.recover('correct horse battery')).outcome, 'ok', 'the last guess, right');
  await sleep(LOGIN_TTL_MS + 1500);
  const rec = await record(h, account);
  assert.equal(rec?.state, 'active');
  assert.equal((await alice.recover('correct horse battery')).outcome, 'ok');
});

test('failing to write the sweep index entry fails the request before anything is committed or answered', async (t) => {
  const h = await startHarness({ policy });
  t.after(() => h.close());
  const account = 'local:victim';
  assert.equal((await h.client(account).register('correct horse battery', KEY_K)).outcome, 'ok');
  const statuses: number[] = [];
  const attacker = kE2Taker(h, account, statuses);
  for (let i = 0; i < LIMIT - 1; i++) await assert.rejects(attacker.recover(`guess ${i}`), /never sent/);
  const store = h.vault.store;
  const real = store.scheduleSweep.bind(store);
  store.scheduleSweep = async () => {
    throw new StoreError('injected: sweep index unavailable');
  };
  const beforeBytes = await h.stored(account);
  const counted = await h.metric('coffer_vault_guesses_counted_total');
  await assert.rejects(attacker.recover('last guess'), /HTTP 503/);
  assert.equal(statuses.at(-1), 503);
  assert.deepEqual(await h.stored(account), beforeBytes, 'the guess was not committed');
  assert.equal(await h.metric('coffer_vault_guesses_counted_total'), counted);
  store.scheduleSweep = real;
  await assert.rejects(attacker.recover('last guess, again'), /never sent/);
  await waitErased(h, account, LOGIN_TTL_MS + 3000);
});

test('sweep index entries naming no valid account (the reserved member record, control characters, overlong) are dropped unread', async (t) => {
  // The sweep index sits in the operator's store. An entry no request could have caused
  // must not make the sweeper read (or try to erase) what it names: before, the sweeper
  // opened `\x00members` as an account record, failed its authentication, logged an error
  // and kept the entry, every pass.
  const logLines: string[] = [];
  const h = await startHarness({ policy, logLines });
  t.after(() => h.close());
  const store = h.vault.store;
  const memberBytes = new TextEncoder().encode('member list, not an account record');
  assert.ok((await store.compareAndPut('\x00members', memberBytes, null)).ok);
  const bad = ['\x00members', 'with space', 'x'.repeat(129), 'tab\there'];
  for (const account of bad) await store.scheduleSweep(account, Date.now() - 1000);
  // A real exhausted account in the same passes is still erased.
  const account = 'local:victim';
  assert.equal((await h.client(account).register('correct horse battery', KEY_K)).outcome, 'ok');
  await takeAllKe2s(h, account);
  await waitErased(h, account, LOGIN_TTL_MS + 1000 + 2500);
  const end = Date.now() + 5000;
  while ((await store.dueSweeps(Date.now() + 3_600_000, 100)).length > 0 && Date.now() < end) await sleep(50);
  assert.deepEqual(await store.dueSweeps(Date.now() + 3_600_000, 100), [], 'every entry dropped or done');
  assert.deepEqual(await h.stored('\x00members'), memberBytes, 'the reserved record is untouched');
  const sweeps = await h.vault.metrics.registry.getSingleMetricAsString('coffer_vault_sweeps_total');
  assert.match(sweeps, /result="invalid"} 4/);
  assert.doesNotMatch(sweeps, /result="failed"}/);
  const warned = logLines.filter((l) => l.includes('names no valid account'));
  assert.equal(warned.length, 4);
  assert.ok(!logLines.some((l) => l.includes('failed authentication')), 'nothing was opened as a record');
});
