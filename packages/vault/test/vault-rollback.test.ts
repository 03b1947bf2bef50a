// Rollback protection on the embedded default (a one-node group over SQLite with the
// software platform's anchor; spec §13, issue 9): a restored snapshot, an old record
// written back, a truncated or edited log are refused (store-rolled-back, metric, alarm
// log line) and never give fresh guesses; restarts resume from the anchor; a crash
// between the log commit and the anchor write loses no guess and answers none twice; a
// lost anchor is refused until the operator adopts the store's head.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { toHex } from '@coffer/protocol';
import { PlatformError } from '../src/core/platform.js';
import { KEY_K, startHarness, type Harness, type HarnessOptions } from './helpers/vault-harness.js';
import { bundleKey, httpClient, startChildVault, type ChildVault } from './helpers/child-vault.js';

const ROLLED_BACK = /HTTP 500.*store-rolled-back/;

function dbFiles(dir: string): string[] {
  return ['records.sqlite', 'records.sqlite-wal', 'records.sqlite-shm'].map((f) => join(dir, f));
}

/** A copy of the (closed) store's files, as an operator's backup would be. */
function snapshot(dir: string, name: string): void {
  for (const f of dbFiles(dir)) if (existsSync(f)) copyFileSync(f, `${f}.${name}`);
}
function restore(dir: string, name: string): void {
  for (const f of dbFiles(dir)) {
    rmSync(f, { force: true });
    if (existsSync(`${f}.${name}`)) copyFileSync(`${f}.${name}`, f);
  }
}
function sql(dir: string, statement: string, ...params: unknown[]): void {
  const db = new Database(join(dir, 'records.sqlite'));
  try {
    db.prepare(statement).run(...params);
  } finally {
    db.close();
  }
}

async function guessesLeft(h: Harness, account: string): Promise<number | null> {
  const s = await h.client(account).status(KEY_K);
  return s.outcome === 'ok' ? s.guessesRemaining : null;
}

describe('rollback protection, one-node group on SQLite', () => {
  const dirs: string[] = [];
  const fresh = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'coffer-vault-rollback-'));
    dirs.push(d);
    return d;
  };
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  const start = (dir: string, o: HarnessOptions = {}) => startHarness({ dir, ...o });

  it('a snapshot restored after 5 wrong guesses is refused (store-rolled-back, metric, alarm), never 10 fresh guesses', async () => {
    const dir = fresh();
    let h = await start(dir);
    assert.equal((await h.client('alice').register('right', KEY_K)).outcome, 'ok');
    assert.equal((await h.client('carol').register('right', KEY_K)).outcome, 'ok');
    await h.close();
    snapshot(dir, 'before');

    h = await start(dir);
    for (let i = 0; i < 5; i++) assert.equal((await h.client('alice').recover(`wrong ${i}`)).outcome, 'wrong-password');
    assert.equal(await guessesLeft(h, 'alice'), 5);
    await h.close();
    snapshot(dir, 'after');

    restore(dir, 'before');
    const logLines: string[] = [];
    h = await start(dir, { logLines });
    for (let i = 0; i < 10; i++) await assert.rejects(h.client('alice').recover(`fresh guess ${i}`), ROLLED_BACK);
    await assert.rejects(h.client('carol').recover('right'), ROLLED_BACK, 'a rolled-back store serves nobody');
    assert.equal(await h.metric('coffer_vault_guesses_counted_total'), 0);
    assert.ok((await h.metric('coffer_vault_rollbacks_detected_total')) >= 11);
    assert.ok(logLines.some((l) => /ALARM: rollback protection refuses the store/.test(l) && /"level":50/.test(l)), 'an error-level alarm line');
    await h.close();

    // The operator puts the real store back: the vault resumes where it was.
    restore(dir, 'after');
    h = await start(dir);
    assert.equal(await guessesLeft(h, 'alice'), 5);
    assert.equal((await h.client('alice').recover('right')).outcome, 'ok');
    await h.close();
  });

  it('an old record value written back is refused, live (by the check) and at restart (by the root)', async () => {
    const dir = fresh();
    let h = await start(dir);
    assert.equal((await h.client('bob').register('right', KEY_K)).outcome, 'ok');
    const old = (await h.stored('bob'))!;
    for (let i = 0; i < 3; i++) assert.equal((await h.client('bob').recover(`wrong ${i}`)).outcome, 'wrong-password');
    const current = (await h.stored('bob'))!;
    const cur = await h.vault.store.get('bob');
    assert.ok((await h.vault.store.compareAndPut('bob', old, cur!.version)).ok);
    await assert.rejects(h.client('bob').recover('fresh guess'), ROLLED_BACK);
    await assert.rejects(h.client('bob').status(KEY_K), ROLLED_BACK);
    assert.deepEqual(await h.stored('bob'), old, 'left untouched');
    assert.ok((await h.metric('coffer_vault_rollbacks_detected_total')) >= 2);
    // Put back what the log holds: served again, with the count it had.
    const now = await h.vault.store.get('bob');
    assert.ok((await h.vault.store.compareAndPut('bob', current, now!.version)).ok);
    assert.equal(await guessesLeft(h, 'bob'), 7);
    await h.close();

    sql(dir, 'UPDATE records SET value = ? WHERE account = ?', Buffer.from(old), 'bob');
    h = await start(dir);
    await assert.rejects(h.client('bob').status(KEY_K), ROLLED_BACK);
    await h.close();
    sql(dir, 'UPDATE records SET value = ? WHERE account = ?', Buffer.from(current), 'bob');
    h = await start(dir);
    assert.equal(await guessesLeft(h, 'bob'), 7);
    await h.close();
  });

  it('a deleted record, a truncated log, an edited entry: refused', async () => {
    const dir = fresh();
    let h = await start(dir);
    assert.equal((await h.client('dave').register('right', KEY_K)).outcome, 'ok');
    assert.equal((await h.client('dave').recover('wrong')).outcome, 'wrong-password');
    await h.close();
    snapshot(dir, 'good');
    const damage: Array<[string, string]> = [
      ['the newest entry deleted (log truncated)', 'DELETE FROM log WHERE idx = (SELECT max(idx) FROM log)'],
      ['every entry deleted', 'DELETE FROM log'],
      ['an entry edited', "UPDATE log SET entry = zeroblob(120) WHERE idx = (SELECT max(idx) FROM log)"],
      ['a record deleted', "DELETE FROM records WHERE account = 'dave'"],
      ['a record added', "INSERT INTO records (account, value, revision) VALUES ('eve', x'00', 999999)"],
    ];
    for (const [what, statement] of damage) {
      restore(dir, 'good');
      sql(dir, statement);
      h = await start(dir);
      await assert.rejects(h.client('dave').status(KEY_K), ROLLED_BACK, what);
      await h.close();
    }
    restore(dir, 'good');
    h = await start(dir);
    assert.equal(await guessesLeft(h, 'dave'), 9);
    await h.close();
  });

  it('restarts resume from the anchor and serve; a failure between the log commit and the anchor write answers nothing and loses no guess', async () => {
    const dir = fresh();
    let h = await start(dir);
    assert.equal((await h.client('frank').register('right', KEY_K)).outcome, 'ok');
    const platform = h.vault.platform.platform;
    const real = platform.writeAnchor.bind(platform);
    platform.writeAnchor = async () => {
      throw new PlatformError('injected: the anchor write failed', 'hsm-failure');
    };
    try {
      await assert.rejects(h.client('frank').recover('wrong, never answered'), /HTTP 503.*platform-failure/);
    } finally {
      platform.writeAnchor = real;
    }
    assert.equal(await h.metric('coffer_vault_guesses_counted_total'), 0, 'not answered, not reported as counted');
    // The entry is in the store, past the anchor: the next request resumes, captures it.
    assert.equal(await guessesLeft(h, 'frank'), 9, 'the guess stays counted');
    assert.equal((await h.client('frank').recover('wrong')).outcome, 'wrong-password');
    await h.close();
    h = await start(dir);
    assert.equal(await guessesLeft(h, 'frank'), 8);
    assert.equal((await h.client('frank').recover('right')).outcome, 'ok');
    await h.close();
  });

  it('a lost anchor is refused until the operator adopts the store head (COFFER_VAULT_ADOPT_LOG_HEAD); counts are kept', async () => {
    const dir = fresh();
    let h = await start(dir);
    assert.equal((await h.client('gina').register('right', KEY_K)).outcome, 'ok');
    for (let i = 0; i < 4; i++) assert.equal((await h.client('gina').recover(`wrong ${i}`)).outcome, 'wrong-password');
    const anchorFile = `${h.config.platform.kind === 'software' ? h.config.platform.keyFile : ''}.anchor`;
    await h.close();
    assert.ok(existsSync(anchorFile));
    rmSync(anchorFile);
    h = await start(dir);
    await assert.rejects(h.client('gina').status(KEY_K), ROLLED_BACK);
    await h.close();
    h = await start(dir, { config: { adoptLogHead: true } });
    assert.equal(await guessesLeft(h, 'gina'), 6);
    await h.close();
    assert.ok(existsSync(anchorFile), 'adopting writes the anchor');
    h = await start(dir);
    assert.equal(await guessesLeft(h, 'gina'), 6);
    await h.close();
  });

  it('a store written without rollback protection (an upgrade) is refused until adopted once; then protected', async () => {
    const dir = fresh();
    let h = await start(dir, { config: { insecureNoRollbackProtectionForTesting: true } });
    assert.equal((await h.client('ivan').register('right', KEY_K)).outcome, 'ok');
    assert.equal((await h.client('ivan').recover('wrong')).outcome, 'wrong-password');
    await h.close();
    h = await start(dir);
    await assert.rejects(h.client('ivan').status(KEY_K), ROLLED_BACK);
    await h.close();
    h = await start(dir, { config: { adoptLogHead: true } });
    assert.equal(await guessesLeft(h, 'ivan'), 9);
    await h.close();
    snapshot(dir, 'adopted');
    h = await start(dir);
    assert.equal((await h.client('ivan').recover('wrong again')).outcome, 'wrong-password');
    await h.close();
    restore(dir, 'adopted');
    h = await start(dir);
    await assert.rejects(h.client('ivan').status(KEY_K), ROLLED_BACK, 'protected from the adoption on');
    await h.close();
  });

  it('a SQLite store is served by exactly one vault: a second one on the same file is refused at start', async () => {
    const dir = fresh();
    const h = await start(dir);
    await assert.rejects(start(dir), /in use by another process.*exactly one vault/);
    assert.equal((await h.client('hana').register('right', KEY_K)).outcome, 'ok');
    await h.close();
  });

  it('200 concurrent wrong guesses are batched into few log entries and counted exactly to the limit', async () => {
    const dir = fresh();
    const h = await start(dir, { policy: { guessLimit: 10, loginsPerWindow: 64 } });
    assert.equal((await h.client('target').register('right', KEY_K)).outcome, 'ok');
    for (let i = 0; i < 20; i++) assert.equal((await h.client(`acct-${i}`).register('right', KEY_K)).outcome, 'ok');
    const entriesBefore = await h.metric('coffer_vault_log_entries_total');
    await Promise.all(Array.from({ length: 20 }, (_, i) => h.client(`acct-${i}`).recover('wrong')));
    const entries = (await h.metric('coffer_vault_log_entries_total')) - entriesBefore;
    assert.ok(entries < 40, `40 writes (20 login-starts + 20 login-finishes) in ${entries} entries`);
    const results = await Promise.allSettled(Array.from({ length: 200 }, (_, i) => h.client('target').recover(`wrong ${i}`)));
    assert.equal(results.filter((r) => r.status === 'fulfilled' && r.value.outcome === 'ok').length, 0);
    assert.equal(await h.metric('coffer_vault_guesses_counted_total'), 20 + 10);
    await h.close();
  });
});

describe('kill -9 between the log commit and the anchor capture (child process)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-vault-rollback-crash-'));
  const env = { COFFER_VAULT_DATA_DIR: dir, COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1', COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING: '1', COFFER_VAULT_LOG_LEVEL: 'warn', COFFER_VAULT_GUESS_LIMIT: '5' };
  let vault: ChildVault | undefined;
  after(async () => {
    await vault?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the guess is counted once, never answered, and the restarted node captures the entry', async () => {
    vault = await startChildVault(env);
    const fleetKey = await bundleKey(env);
    assert.equal((await httpClient(vault.url, fleetKey, 'alice').register('right', K2)).outcome, 'ok');
    await vault.stop();

    vault = await startChildVault({ ...env, COFFER_VAULT_INSECURE_CRASH_BEFORE_CAPTURE_FOR_TESTING: '1' });
    assert.match(vault.stderr(), /before capturing it in its anchor/);
    const exited = once(vault.child, 'exit');
    await assert.rejects(httpClient(vault.url, fleetKey, 'alice').recover('wrong'), 'the connection dies without an answer');
    const [code, signal] = await exited;
    assert.equal(signal, 'SIGKILL', `exit code ${code}`);

    vault = await startChildVault(env);
    const c = httpClient(vault.url, fleetKey, 'alice');
    const s = await c.status(K2);
    assert.deepEqual(s.outcome === 'ok' && [s.guessesRemaining, s.guessLimit], [4, 5], 'counted once');
    const r = await c.recover('right');
    assert.ok(r.outcome === 'ok');
    assert.equal(toHex(r.backupKey.expose()), toHex(K2));
  });
});

const K2 = new Uint8Array(32).fill(9);
