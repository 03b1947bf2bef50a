// Rollback protection over a real etcd (spec §13, one-node group: this vault is the only
// writer of its prefix, COFFER_VAULT_ROLLBACK_PROTECTION=1): records, log entry and log
// head are committed in one etcd txn; old revisions written back (what restoring an etcd
// snapshot does), an old record put back, the newest entry deleted — all refused with
// store-rolled-back and never answered with fresh guesses; restarts resume and serve.
// Fleet groups with quorum commit (spec §13.5) are tested in fleet-rollback*.test.ts.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { KEY_K, startHarness, type Harness } from './helpers/vault-harness.js';

const HOST = '127.0.0.1';
const CLIENT_PORT = 25890;
const URL_ = `http://${HOST}:${CLIENT_PORT}`;
const PREFIX = 'coffer/vault/';
const ROLLED_BACK = /HTTP 500.*store-rolled-back/;
const b64 = (s: string | Uint8Array): string => Buffer.from(s).toString('base64');

async function etcd<T = Record<string, unknown>>(path: string, body: unknown): Promise<T> {
  const res = await fetch(`${URL_}${path}`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
  return (await res.json()) as T;
}

type Kv = { key: string; value?: string };
async function all(revision?: number): Promise<{ kvs: Kv[]; revision: number }> {
  const r = await etcd<{ kvs?: Kv[]; header: { revision: string } }>('/v3/kv/range', { key: b64(PREFIX), range_end: b64(PREFIX.slice(0, -1) + '0'), ...(revision ? { revision: String(revision) } : {}) });
  return { kvs: r.kvs ?? [], revision: Number(r.header.revision) };
}

/** Puts every key of the prefix back to what it was at `revision` (a snapshot restore, key by key). */
async function writeBack(revision: number): Promise<void> {
  const old = await all(revision);
  const now = await all();
  const keep = new Set(old.kvs.map((k) => k.key));
  for (const k of now.kvs) if (!keep.has(k.key)) await etcd('/v3/kv/deleterange', { key: k.key });
  for (const k of old.kvs) await etcd('/v3/kv/put', { key: k.key, value: k.value ?? '' });
}

describe('rollback protection on etcd, one-node group (real etcd)', { timeout: 180_000 }, () => {
  let dir: string;
  let proc: ChildProcess | null = null;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coffer-vault-rollback-etcd-'));
    const peer = `http://${HOST}:${CLIENT_PORT + 1}`;
    const log = openSync(join(dir, 'etcd.log'), 'a');
    proc = spawn('etcd', ['--name', 'm1', '--data-dir', join(dir, 'etcd'), '--listen-client-urls', URL_, '--advertise-client-urls', URL_, '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `m1=${peer}`, '--logger', 'zap', '--log-outputs', 'stderr', '--log-level', 'warn'], { stdio: ['ignore', log, log] });
    closeSync(log);
    // Polled up to 60 s (as store-etcd.test), not ~100 tries: etcd's start on a loaded machine.
    for (const end = Date.now() + 60_000; ; ) {
      try {
        await etcd('/v3/kv/range', { key: b64('x') });
        break;
      } catch (err) {
        if (Date.now() > end) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });
  after(async () => {
    if (proc) {
      proc.kill('SIGKILL');
      await once(proc, 'exit').catch(() => undefined);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const start = (logLines?: string[]): Promise<Harness> =>
    startHarness({ dir: join(dir, 'vault'), ...(logLines ? { logLines } : {}), config: { store: { kind: 'etcd', endpoints: [URL_], prefix: PREFIX, timeoutMs: 2000 }, rollbackProtection: true } });

  it('old revisions written back after 5 wrong guesses are refused, never 10 fresh guesses; the real state serves again', async () => {
    let h = await start();
    assert.ok(h.vault.committer, 'rollback protection is on');
    assert.equal((await h.client('alice').register('right', KEY_K)).outcome, 'ok');
    const snap = (await all()).revision;
    for (let i = 0; i < 5; i++) assert.equal((await h.client('alice').recover(`wrong ${i}`)).outcome, 'wrong-password');
    const good = (await all()).revision;
    const head = await etcd<{ kvs?: Kv[] }>('/v3/kv/range', { key: b64(`${PREFIX}loghead`) });
    assert.ok(Number(Buffer.from(head.kvs![0]!.value!, 'base64').toString()) >= 11, 'one entry per write (register ×2, login ×10)');

    // Live: the old record alone put back.
    const oldRecord = (await all(snap)).kvs.find((k) => Buffer.from(k.key, 'base64').toString() === `${PREFIX}records/alice`)!;
    await etcd('/v3/kv/put', { key: oldRecord.key, value: oldRecord.value });
    await assert.rejects(h.client('alice').recover('fresh guess'), ROLLED_BACK);
    await h.close();

    // The whole prefix put back to the snapshot's revision, then a restart.
    await writeBack(snap);
    const logLines: string[] = [];
    h = await start(logLines);
    for (let i = 0; i < 10; i++) await assert.rejects(h.client('alice').recover(`fresh ${i}`), ROLLED_BACK);
    assert.equal(await h.metric('coffer_vault_guesses_counted_total'), 0);
    assert.ok((await h.metric('coffer_vault_rollbacks_detected_total')) >= 10);
    assert.ok(logLines.some((l) => /ALARM/.test(l)));
    await h.close();

    await writeBack(good);
    h = await start();
    const s = await h.client('alice').status(KEY_K);
    assert.ok(s.outcome === 'ok' && s.guessesRemaining === 5, JSON.stringify(s));
    assert.equal((await h.client('alice').recover('right')).outcome, 'ok');
    await h.close();
  });

  it('the newest log entry deleted (log truncated) is refused; restarts otherwise resume and serve', async () => {
    let h = await start();
    assert.equal((await h.client('bob').register('right', KEY_K)).outcome, 'ok');
    await h.close();
    const good = (await all()).revision;
    const headKv = (await etcd<{ kvs?: Kv[] }>('/v3/kv/range', { key: b64(`${PREFIX}loghead`) })).kvs![0]!;
    const index = Number(Buffer.from(headKv.value!, 'base64').toString());
    await etcd('/v3/kv/deleterange', { key: b64(`${PREFIX}log/${String(index).padStart(20, '0')}`) });
    await etcd('/v3/kv/put', { key: headKv.key, value: b64(String(index - 1)) });
    h = await start();
    await assert.rejects(h.client('bob').status(KEY_K), ROLLED_BACK);
    await h.close();
    await writeBack(good);
    h = await start();
    assert.equal((await h.client('bob').recover('right')).outcome, 'ok');
    await h.close();
  });

  it('a second writer on the same prefix fails its commit on the head compare (fencing), nothing answered from it', async () => {
    const h = await start();
    assert.equal((await h.client('carol').register('right', KEY_K)).outcome, 'ok');
    // Someone else advances the head (as a second vault would).
    const headKv = (await etcd<{ kvs?: Kv[] }>('/v3/kv/range', { key: b64(`${PREFIX}loghead`) })).kvs![0]!;
    const index = Number(Buffer.from(headKv.value!, 'base64').toString());
    await etcd('/v3/kv/put', { key: headKv.key, value: b64(String(index + 1)) });
    await assert.rejects(h.client('carol').recover('wrong'), /HTTP 5\d\d/);
    await etcd('/v3/kv/put', { key: headKv.key, value: b64(String(index)) });
    const s = await h.client('carol').status(KEY_K);
    assert.ok(s.outcome === 'ok' && s.guessesRemaining === 10, `the refused guess was not counted: ${JSON.stringify(s)}`);
    await h.close();
  });

  it('a lagging member\'s serializable read (an older genuine record) is read again linearizably: right answer, one guess counted, no ALARM', async () => {
    const logLines: string[] = [];
    const h = await start(logLines);
    assert.equal((await h.client('dave').register('right', KEY_K)).outcome, 'ok');
    const old = await h.stored('dave');
    assert.ok(old);
    for (let i = 0; i < 2; i++) assert.equal((await h.client('dave').recover(`wrong ${i}`)).outcome, 'wrong-password');
    const store = h.vault.store as { getMaybeStale?: (a: string) => Promise<{ value: Uint8Array; version: string } | null> };
    const fast = store.getMaybeStale!.bind(store);
    let quick = 0;
    let stale = 0;
    // As one member behind the others answers a serializable range: the record as it was.
    store.getMaybeStale = async (a) => {
      if (a === 'dave') {
        stale++;
        return { value: old, version: '1' };
      }
      quick++;
      return fast(a);
    };
    assert.equal((await h.client('dave').recover('wrong 2')).outcome, 'wrong-password');
    // The login's start reads through the possibly stale path first; its finish is decided
    // on the record the start committed, which the root vouches for (no read at all).
    assert.equal(stale, 1, 'the start read through the possibly stale path first');
    const s = await h.client('dave').status(KEY_K);
    assert.ok(s.outcome === 'ok' && s.guessesRemaining === 7, JSON.stringify(s));
    assert.equal(await h.metric('coffer_vault_rollbacks_detected_total'), 0);
    assert.ok(!logLines.some((l) => /ALARM/.test(l)), 'a stale read is not an alarm');
    // An account the stale member has right is served from that read alone.
    assert.equal((await h.client('erin').register('right', KEY_K)).outcome, 'ok');
    assert.ok(quick > 0);
    await h.close();
  });

  it('a login\'s finish uses the record its start committed (no store read) while the root vouches for it; an old record written back in between changes no count', async () => {
    const h = await start();
    assert.equal((await h.client('fred').register('right', KEY_K)).outcome, 'ok');
    const old = await h.stored('fred');
    assert.ok(old);
    const store = h.vault.store as { get: (a: string) => Promise<unknown>; getMaybeStale?: (a: string) => Promise<unknown> };
    const committer = h.vault.committer as unknown as { commit: (...a: unknown[]) => Promise<unknown> };
    const realGet = store.get.bind(store);
    const realQuick = store.getMaybeStale!.bind(store);
    const realCommit = committer.commit.bind(committer);
    let reads = 0;
    store.get = (a) => (a === 'fred' && reads++, realGet(a));
    store.getMaybeStale = (a) => (a === 'fred' && reads++, realQuick(a));
    // After the start's commit (the guess counted), the operator puts the record as it
    // was at registration back into etcd, before the finish arrives.
    let commits = 0;
    committer.commit = async (...a: unknown[]) => {
      const r = await realCommit(...a);
      if (commits++ === 0) await etcd('/v3/kv/put', { key: b64(`${PREFIX}records/fred`), value: b64(old) });
      return r;
    };
    assert.equal((await h.client('fred').recover('wrong')).outcome, 'wrong-password');
    assert.equal(reads, 1, 'one store read for the whole login: its start');
    committer.commit = realCommit;
    // Never 10 fresh guesses: either the finish's write healed the record (9 left), or the
    // next read finds the old one and refuses (store-rolled-back).
    const s = await h.client('fred').status(KEY_K).catch((e: Error) => e);
    if (s instanceof Error) assert.match(s.message, ROLLED_BACK);
    else assert.ok(s.outcome === 'ok' && s.guessesRemaining === 9, JSON.stringify(s));
    await h.close();
  });
});
