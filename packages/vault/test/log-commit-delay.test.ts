// The one-node group commit's commit delay (issue 13): a batch waits for requests that
// announced a commit (expect()) and are still deciding, so one log entry covers them;
// with nobody deciding it does not wait at all; a request that gives up or a delay that
// ends lets the batch go. Real SQLite store; a platform with an in-memory anchor.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fromHex } from '@coffer/protocol';
import type { Platform } from '../src/core/platform.js';
import { LogCommitter } from '../src/server/log-commit.js';
import { createMetrics } from '../src/server/metrics.js';
import { SqliteRecordStore } from '../src/store/sqlite.js';

const GROUP = fromHex('000102030405060708090a0b0c0d0e0f');

function platform(): Platform {
  let anchor: Uint8Array | null = null;
  const unused = (): Promise<never> => Promise.reject(new Error('unused'));
  return {
    name: 'test',
    now: () => Date.now(),
    randomBytes: (n: number) => new Uint8Array(n),
    seal: unused,
    unseal: unused,
    ecdh: unused,
    publicKey: async () => new Uint8Array(65).fill(4),
    mac: async (_label: string, data: Uint8Array) => new Uint8Array(createHmac('sha256', new Uint8Array(32).fill(0x42)).update(data).digest()),
    readAnchor: async () => anchor?.slice() ?? null,
    writeAnchor: async (v: Uint8Array) => {
      anchor = v.slice();
    },
  } as unknown as Platform;
}

describe('group commit: commit delay', () => {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  async function open(commitDelayMs: number) {
    const dir = mkdtempSync(join(tmpdir(), 'coffer-vault-commit-delay-'));
    dirs.push(dir);
    const store = new SqliteRecordStore(join(dir, 'records.sqlite'), { exclusive: true });
    const metrics = createMetrics();
    const committer = new LogCommitter({ platform: platform(), store, group: GROUP, metrics, commitDelayMs });
    await committer.ready();
    const entries = async () => (await metrics.registry.getSingleMetric('coffer_vault_log_entries_total')!.get()).values[0]!.value;
    const expired = async () => (await metrics.registry.getSingleMetric('coffer_vault_commit_delay_expired_total')!.get()).values[0]!.value;
    return { store, committer, entries, expired };
  }
  const put = (account: string) => [{ account, value: new Uint8Array([1, 2, 3]), erasure: false }];

  it('with nobody else deciding, a commit does not wait for the delay', async () => {
    const { store, committer, entries, expired } = await open(600_000); // a wait would outlast the test's timeout
    const versions = await committer.commit(put('alone'));
    assert.ok(versions.has('alone'));
    assert.equal(await entries(), 1);
    assert.equal(await expired(), 0);
    assert.deepEqual((await store.get('alone'))?.value, new Uint8Array([1, 2, 3]));
    await store.close();
  });

  it('a request still deciding joins the batch: two commits, one log entry', async () => {
    const { store, committer, entries } = await open(600_000);
    const releaseA = committer.expect();
    const releaseB = committer.expect();
    const a = committer.commit(put('a'));
    releaseA();
    // The batch is held for B (it would wait 10 minutes if B's release did not wake it).
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(await entries(), 0, 'the batch waits for the request still deciding');
    const b = committer.commit(put('b'));
    releaseB();
    releaseB(); // a second call is harmless
    const [va, vb] = await Promise.all([a, b]);
    assert.ok(va.has('a') && va.has('b') && vb.has('b'));
    assert.equal(await entries(), 1);
    await store.close();
  });

  it('a request that gives up (no commit) releases the batch', async () => {
    const { store, committer, entries } = await open(600_000);
    const releaseOther = committer.expect();
    const a = committer.commit(put('a'));
    setTimeout(releaseOther, 20);
    assert.ok((await a).has('a'));
    assert.equal(await entries(), 1);
    await store.close();
  });

  it('the delay ends: a request that never commits holds the batch no longer than the delay', async () => {
    const { store, committer, entries, expired } = await open(5);
    committer.expect(); // never released
    assert.ok((await committer.commit(put('a'))).has('a'));
    assert.ok((await committer.commit(put('b'))).has('b'));
    assert.equal(await entries(), 2);
    assert.equal(await expired(), 2, 'each batch waited the whole delay: counted');
    await store.close();
  });

  it('no delay configured (0): a batch never waits', async () => {
    const { store, committer, entries } = await open(0);
    committer.expect();
    assert.ok((await committer.commit(put('a'))).has('a'));
    assert.equal(await entries(), 1);
    await store.close();
  });
});
