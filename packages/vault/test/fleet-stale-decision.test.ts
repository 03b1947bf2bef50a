/**
 * A fleet leader appends a decision only onto the record it was decided on (spec §13.7).
 *
 * A node checks an account's record against its root, decides (a login-start: guesses
 * + 1) and only then queues the write. If, in between, it stopped leading, another node
 * led and committed a newer record for the account (another counted guess), and this
 * node won the leader key again, the decision's write used to be appended onto the new
 * root as it was: the other node's count overwritten (two guesses answered, one
 * counted). The operator causes the leader changes at will (deleting `group/leader`,
 * delaying the deciding node's etcd calls). Here one node plays both terms: the write
 * committed in between stands for the other leader's.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { etcdSkip, describeIf } from './helpers/requirements.js';
import { installNodeCrypto } from '../src/server/node-crypto.js';
import { openSoftwarePlatform, provisionSoftwareKeys, type SoftwarePlatform } from '../src/platform/software.js';
import { KEY_LABELS } from '../src/core/key-labels.js';
import { EtcdRecordStore } from '../src/store/etcd.js';
import { FleetCommitter } from '../src/server/fleet-group.js';
import { createMetrics } from '../src/server/metrics.js';

const HOST = '127.0.0.61';
const URL_ = `http://${HOST}:25690`;

describeIf('fleet leader: a decision is appended only onto the record it was decided on', etcdSkip(), () => {
  let dir: string;
  let proc: ChildProcess;
  let platform: SoftwarePlatform;
  let store: EtcdRecordStore;
  let fleet: FleetCommitter;

  before(async () => {
    installNodeCrypto();
    dir = mkdtempSync(join(tmpdir(), 'coffer-fleet-stale-decision-'));
    const peer = `http://${HOST}:25691`;
    const log = openSync(join(dir, 'etcd.log'), 'a');
    proc = spawn('etcd', ['--name', 'm1', '--data-dir', join(dir, 'etcd'), '--listen-client-urls', URL_, '--advertise-client-urls', URL_, '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `m1=${peer}`, '--logger', 'zap', '--log-outputs', 'stderr', '--log-level', 'warn'], { stdio: ['ignore', log, log] });
    const keyFile = join(dir, 'keys.json');
    provisionSoftwareKeys(keyFile, { mac: [KEY_LABELS.logMac], ecdh: [KEY_LABELS.nodeTransport] });
    platform = openSoftwarePlatform(keyFile);
    store = new EtcdRecordStore({ endpoints: [URL_], prefix: 'coffer/vault/', timeoutMs: 2000 });
    const end = Date.now() + 60_000;
    for (;;) {
      try {
        await store.logHead();
        break;
      } catch (err) {
        if (Date.now() > end) throw err;
        await sleep(200);
      }
    }
    fleet = new FleetCommitter({ platform, store, group: new Uint8Array(16).fill(9), groupSize: 1, metrics: createMetrics() });
    await fleet.start();
    const until = Date.now() + 20_000;
    for (;;) {
      try {
        await fleet.ready();
        break;
      } catch (err) {
        if (Date.now() > until) throw err;
        await sleep(100);
      }
    }
  });
  after(async () => {
    await fleet?.close();
    await store?.close();
    await platform?.close();
    proc?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('a write decided on a record the root no longer gives is refused, never appended; one decided on the current record commits', async () => {
    const v1 = new Uint8Array(64).fill(1);
    await fleet.commit([{ account: 'x', value: v1 }], { prior: null });
    await fleet.check('x', v1); // the decision's basis
    // Meanwhile (another term, another leader): the record moves on.
    const v2 = new Uint8Array(64).fill(2);
    await fleet.commit([{ account: 'x', value: v2 }], { prior: v1 });
    // The decision made on v1 arrives now.
    const stale = new Uint8Array(64).fill(3);
    await assert.rejects(fleet.commit([{ account: 'x', value: stale }], { countsGuess: true, prior: v1 }), /changed since/);
    await fleet.check('x', v2);
    assert.deepEqual((await store.get('x'))?.value, v2, 'the newer record stands');
    // A decision on the current record commits as before.
    const v4 = new Uint8Array(64).fill(4);
    await fleet.commit([{ account: 'x', value: v4 }], { countsGuess: true, prior: v2 });
    await fleet.check('x', v4);
  });
});
