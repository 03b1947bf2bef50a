/**
 * TESTING.md "Fleet": the etcd leader killed under concurrent wrong guesses for one
 * account through all three vault nodes (never more than the limit counted), and two of
 * three data centres down (a clean 503 store-unavailable, never an answer from a
 * minority), then service back once a second member returns.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSECURE_FAST_KSF_FOR_TESTING, VaultClient } from '@coffer/protocol';
import { etcdSkip, describeIf } from './helpers/requirements.js';
import { fleetClient, fleetMetric, fleetTransport, startCluster, waitCaughtUp, type Cluster } from './helpers/cluster.js';

const LIMIT = 10;
const K = new Uint8Array(32).fill(9);

describeIf('fleet: quorum', etcdSkip(), () => {
  let cluster: Cluster;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coffer-fleet-quorum-'));
    cluster = await startCluster({ dir, insecureFastKsf: true, etcdTimeoutMs: 1000, ports: { etcdClient: 24290, etcdPeer: 24291, vault: 24292 }, vaultEnv: { COFFER_VAULT_GUESS_LIMIT: String(LIMIT), COFFER_VAULT_LOGINS_PER_WINDOW: '64' } });
  });
  after(async () => {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the etcd leader killed under 60 concurrent wrong guesses for one account through every node: at most the limit counted', async () => {
    assert.equal((await fleetClient(cluster, 'target').register('right', K)).outcome, 'ok');
    const leader = await cluster.leader();
    assert.notEqual(leader, null);
    let wrong = 0;
    let released = 0;
    // The kill happens once KILL_AFTER answers have arrived (not at a fixed time, which a
    // loaded machine can make before the first or after the last answer). Every 4th
    // attempt holds its login-finish until the kill is done, so those logins are in
    // flight across it by construction: login-start before, login-finish after.
    const KILL_AFTER = 8;
    let answered = 0;
    let reachedKillPoint!: () => void;
    const killPoint = new Promise<void>((r) => (reachedKillPoint = r));
    let killDone!: () => void;
    const afterKill = new Promise<void>((r) => (killDone = r));
    let acrossKill = 0;
    const attempts = Array.from({ length: 60 }, (_, i) => async () => {
      const transport = fleetTransport(cluster, 'target', { prefer: i % 3 });
      let sent = 0;
      const client = new VaultClient({
        fleetKey: cluster.fleetKey,
        account: 'target',
        ksf: INSECURE_FAST_KSF_FOR_TESTING,
        transport: async (bytes) => {
          if (i % 4 === 0 && sent++ === 1) {
            acrossKill++;
            await afterKill;
          }
          return transport(bytes);
        },
      });
      const r = await client.recover(`guess ${i}`);
      if (r.outcome === 'wrong-password') wrong++;
      if (r.outcome === 'ok') released++;
      else assert.ok(['wrong-password', 'locked', 'stale', 'superseded', 'rate-limited'].includes(r.outcome), r.outcome);
      if (++answered === KILL_AFTER) reachedKillPoint();
    });
    const running = attempts.map(async (run, i) => {
      await new Promise((r) => setTimeout(r, i * 15));
      await run();
    });
    await killPoint;
    const answeredBeforeKill = answered;
    await cluster.dcs[leader!]!.killEtcd();
    killDone();
    await Promise.all(running);
    assert.ok(answeredBeforeKill >= KILL_AFTER && answeredBeforeKill < attempts.length, `${answeredBeforeKill} answers before the kill`);
    assert.ok(acrossKill >= 1, 'some logins were in flight across the kill (login-start before it, login-finish after)');
    assert.equal(released, 0, 'a wrong password never releases the key');
    assert.ok(wrong <= LIMIT, `${wrong} wrong guesses answered, limit ${LIMIT}`);
    // Counted commits across the nodes (none restarted, so their counters are complete).
    const counted = await fleetMetric(cluster, 'coffer_vault_guesses_counted_total');
    assert.ok(counted <= LIMIT, `${counted} guesses counted, limit ${LIMIT}`);
    assert.equal((await fleetClient(cluster, 'target').recover('right')).outcome, 'locked');
    await cluster.dcs[leader!]!.startEtcd();
    await waitCaughtUp(cluster);
  });

  it('two of three data centres down: 503 store-unavailable from the survivor, then service once one returns', async () => {
    assert.equal((await fleetClient(cluster, 'quorum-user').register('pw', K)).outcome, 'ok');
    await Promise.all([cluster.dcs[1]!.kill(), cluster.dcs[2]!.kill()]);
    const statuses: (number | null)[] = [];
    // The client gives up after its deadline (generous: each refusal waits out the
    // survivor's 1 s etcd timeout, longer on a loaded machine); what it saw is the point.
    const refused = await fleetClient(cluster, 'quorum-user', { prefer: 0, deadlineMs: 10_000, onAttempt: ({ status }) => statuses.push(status) })
      .recover('pw')
      .then(() => 'answered', (err: Error) => err.message);
    assert.match(refused, /fleet unavailable/);
    assert.ok(statuses.includes(503), `the survivor answered ${statuses.join(',')}`);

    // The raw answer: a clean, retryable error code, and no record changed behind it.
    const started = Date.now();
    const res = await fetch(`${cluster.dcs[0]!.vaultUrl}/v1/request`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'coffer-account': 'quorum-user' }, body: await sealedStatus(cluster) });
    assert.equal(res.status, 503);
    const body = (await res.json()) as { error: { code: string; retry: boolean } };
    assert.equal(body.error.code, 'store-unavailable');
    assert.equal(body.error.retry, true);
    assert.ok(Date.now() - started < 30_000, 'refused within the deadlines, no hang');

    await cluster.dcs[1]!.restart();
    const r = await fleetClient(cluster, 'quorum-user', { prefer: 0, deadlineMs: 30_000 }).recover('pw');
    assert.equal(r.outcome, 'ok');
    await cluster.dcs[2]!.restart();
    await waitCaughtUp(cluster);
    assert.equal((await fleetClient(cluster, 'quorum-user', { prefer: 2 }).recover('pw')).outcome, 'ok');
  });
});

/** One sealed `status` request's bytes, captured from a client. */
async function sealedStatus(cluster: Cluster): Promise<Uint8Array> {
  let captured: Uint8Array | null = null;
  const c = new VaultClient({
    fleetKey: cluster.fleetKey,
    account: 'quorum-user',
    ksf: INSECURE_FAST_KSF_FOR_TESTING,
    transport: async (bytes) => {
      captured = bytes;
      throw new Error('captured');
    },
  });
  await c.status().catch(() => undefined);
  return captured!;
}
