// Rollback protection in the core (spec §13): the entry format and its MAC, the record
// tree, resume/check/append/capture/witness, and a model test (fast-check) over the
// guard with an adversarial store that can return ANY earlier state, lose writes, and be
// restored from any snapshot: never more than the limit of guesses answered per account.
// COFFER_WRITE_VECTORS=1 rewrites spec/vectors/vault/log-*.json from this implementation.
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { concat, cryptoProvider, fromHex, sha256, toHex, useCryptoProvider, utf8 } from '@coffer/protocol';
import type { Platform } from '../src/core/platform.js';
import { nodeCryptoProvider } from '../src/server/node-crypto.js';
import {
  AnchorMissingError,
  bucketHash,
  bucketOf,
  committed,
  decodeEntry,
  emptyTreeHashes,
  encodeEntry,
  entryMacInput,
  GENESIS_MAC,
  RecordTree,
  recordDigest,
  nodeIdOf,
  quorumIndex,
  majority,
  ackMacInput,
  challengeMacInput,
  verifyAck,
  verifyChallengeAnswer,
  decodeLogValue,
  encodeLogValue,
  digestChanges,
  type DigestChange,
  RollbackGuard,
  StoreRolledBackError,
  type LogEntry,
  committedBy,
  decodeMembers,
  encodeMembers,
  evidenceOf,
  chainOf,
  answersOnChain,
  MEMBERS_ACCOUNT,
  NO_MEMBERS,
  type Answer,
  type MemberRecord,
} from '../src/core/rollback.js';

const LOG_KEY = new Uint8Array(32).fill(0x42);
const GROUP = fromHex('000102030405060708090a0b0c0d0e0f');

/** A platform with a known log-MAC key and an in-memory anchor (only what the guard uses). */
function fakePlatform(key = LOG_KEY, transportKey = new Uint8Array(65).fill(4)): Platform & { anchor: Uint8Array | null; anchorWrites: number } {
  const p = {
    name: 'fake',
    anchor: null as Uint8Array | null,
    anchorWrites: 0,
    now: () => Date.now(),
    randomBytes: (n: number) => new Uint8Array(n),
    seal: () => Promise.reject(new Error('unused')),
    unseal: () => Promise.reject(new Error('unused')),
    ecdh: () => Promise.reject(new Error('unused')),
    publicKey: async (label: string) => {
      assert.equal(label, 'coffer-node-transport-v1');
      return transportKey;
    },
    async mac(label: string, data: Uint8Array) {
      assert.equal(label, 'coffer-log-mac-v1');
      return new Uint8Array(createHmac('sha256', key).update(data).digest());
    },
    async readAnchor() {
      return p.anchor?.slice() ?? null;
    },
    async writeAnchor(v: Uint8Array) {
      p.anchor = v.slice();
      p.anchorWrites++;
    },
  };
  return p;
}

const VECTORS = new URL('../../../../spec/vectors/vault-log/log-entry.json', import.meta.url);
const TREE_VECTORS = new URL('../../../../spec/vectors/vault-log/log-tree.json', import.meta.url);

describe('log entry and tree (spec §13.2, §13.3) against the vectors', () => {
  it('entry MAC input, MAC, encoding', async () => {
    const p = fakePlatform();
    const root1 = await sha256(utf8('root 1'));
    const mac1 = await RollbackGuard.entryMac(p, GROUP, 1, GENESIS_MAC, root1);
    const e1: LogEntry = { group: GROUP, index: 1, prevMac: GENESIS_MAC, root: root1, mac: mac1 };
    const root2 = await sha256(utf8('root 2'));
    const mac2 = await RollbackGuard.entryMac(p, GROUP, 2, mac1, root2);
    const e2: LogEntry = { group: GROUP, index: 2, prevMac: mac1, root: root2, mac: mac2 };
    const got = {
      description: 'spec/vault-protocol.md §13.2: log entries. mac = HMAC-SHA256(logMacKey, macInput); entry = group ‖ index (u64 BE) ‖ prevMac ‖ root ‖ mac',
      logMacKey: toHex(LOG_KEY),
      group: toHex(GROUP),
      entries: [e1, e2].map((e) => ({ index: e.index, prevMac: toHex(e.prevMac), root: toHex(e.root), macInput: toHex(entryMacInput(e.group, e.index, e.prevMac, e.root)), mac: toHex(e.mac), entry: toHex(encodeEntry(e)) })),
    };
    if (process.env.COFFER_WRITE_VECTORS === '1') writeFileSync(VECTORS, `${JSON.stringify(got, null, 2)}\n`);
    assert.deepEqual(got, JSON.parse(readFileSync(VECTORS, 'utf8')));
    assert.deepEqual(decodeEntry(encodeEntry(e2)), e2);
    assert.throws(() => decodeEntry(encodeEntry(e2).subarray(1)), StoreRolledBackError);
  });

  it('buckets, empty hashes and roots', async () => {
    const empty = await emptyTreeHashes();
    const records: Array<[string, Uint8Array]> = [
      ['alice', utf8('sealed record of alice')],
      ['bob', utf8('sealed record of bob')],
      ['carol', utf8('sealed record of carol')],
    ];
    const tree = await RecordTree.create();
    const roots: string[] = [toHex(await tree.root())];
    for (const [a, v] of records) {
      await tree.set(a, await recordDigest(v));
      roots.push(toHex(await tree.root()));
    }
    await tree.set('bob', null);
    roots.push(toHex(await tree.root()));
    const got = {
      description: 'spec/vault-protocol.md §13.3: the record tree. bucket = first 16 bits of SHA-256("coffer/vault/v1/log-bucket" ‖ 0x00 ‖ account); digest = SHA-256(record bytes); bucket hash = SHA-256(0x00 ‖ sorted (u16 len ‖ account ‖ digest)…); node = SHA-256(0x01 ‖ left ‖ right); roots after inserting alice, bob, carol, then deleting bob',
      emptyBucket: toHex(empty[0]!),
      emptyRoot: toHex(empty[16]!),
      records: await Promise.all(records.map(async ([a, v]) => ({ account: a, record: toHex(v), bucket: await bucketOf(a), digest: toHex(await recordDigest(v)), bucketHash: toHex(await bucketHash([[a, await recordDigest(v)]])) }))),
      roots,
    };
    if (process.env.COFFER_WRITE_VECTORS === '1') writeFileSync(TREE_VECTORS, `${JSON.stringify(got, null, 2)}\n`);
    assert.deepEqual(got, JSON.parse(readFileSync(TREE_VECTORS, 'utf8')));
    // Order of insertion does not matter; deleting bob gives the tree without bob.
    const other = await RecordTree.of([records[2]!, records[0]!]);
    assert.equal(toHex(await other.root()), roots[4]);
  });

  it('a root after many changes at once (shared paths, same buckets, deletes) is the root of the final map, computed afresh', async () => {
    const empty = await emptyTreeHashes();
    // The tree by definition: every non-empty bucket, then each level from the nodes present.
    const reference = async (map: ReadonlyMap<string, Uint8Array>): Promise<string> => {
      const buckets = new Map<number, Array<[string, Uint8Array]>>();
      for (const [a, d] of map) {
        const b = await bucketOf(a);
        buckets.set(b, [...(buckets.get(b) ?? []), [a, d]]);
      }
      let level = new Map<number, Uint8Array>();
      for (const [b, entries] of buckets) level.set(b, await bucketHash(entries));
      for (let l = 0; l < 16; l++) {
        const up = new Map<number, Uint8Array>();
        for (const i of level.keys()) {
          const p = i >>> 1;
          if (up.has(p)) continue;
          up.set(p, await sha256(concat(new Uint8Array([1]), level.get(2 * p) ?? empty[l]!, level.get(2 * p + 1) ?? empty[l]!)));
        }
        level = up;
      }
      return toHex(level.get(0) ?? empty[16]!);
    };
    // Accounts from a small alphabet: batches share upper paths, and over 300 accounts
    // some share a bucket.
    const account = fc.integer({ min: 0, max: 399 }).map((i) => `acct-${i}`);
    const change = fc.tuple(account, fc.option(fc.integer({ min: 0, max: 1e6 }), { nil: null }));
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(change, { minLength: 1, maxLength: 60 }), { minLength: 1, maxLength: 6 }), async (batches) => {
        const tree = await RecordTree.create();
        const map = new Map<string, Uint8Array>();
        for (const batch of batches) {
          for (const [a, v] of batch) {
            const d = v === null ? null : await sha256(utf8(`record ${v}`));
            if (d) map.set(a, d);
            else map.delete(a);
            await tree.set(a, d);
          }
          assert.equal(toHex(await tree.root()), await reference(map));
        }
      }),
      { numRuns: 25 },
    );
  });

  it('a root hashes each changed bucket and each node above the changes once, however the changes are ordered', async () => {
    const tree = await RecordTree.create();
    const accounts = Array.from({ length: 400 }, (_, i) => `acct-${i}`);
    for (const a of accounts) await tree.set(a, await sha256(utf8(`record ${a}`)));
    await tree.root();
    const changed = accounts.filter((_, i) => i % 3 === 0);
    // The nodes a root must recompute: the changed buckets, then their distinct ancestors per level.
    let level = new Set<number>();
    for (const a of changed) level.add(await bucketOf(a));
    let want = level.size;
    for (let l = 0; l < 16; l++) {
      level = new Set([...level].map((i) => i >>> 1));
      want += level.size;
    }
    for (const a of changed) await tree.set(a, await sha256(utf8(`record ${a} again`)));
    const provider = cryptoProvider();
    let hashes = 0;
    useCryptoProvider({ ...provider, sha256: (data) => (hashes++, provider.sha256(data)) });
    try {
      await tree.root();
    } finally {
      useCryptoProvider(provider);
    }
    assert.equal(hashes, want);
  });

  it('keeps its own copies: a digest changed by its caller afterwards, and a root returned earlier, stay as they were', async () => {
    // The tree overwrites its inner hashes and digests in place when records change (issue 13);
    // neither the caller's digest nor a root already handed out may be one of those arrays.
    const tree = await RecordTree.create();
    const reference = await RecordTree.create();
    const accounts = Array.from({ length: 40 }, (_, i) => `acct-${i}`);
    for (const a of accounts) {
      const d = await sha256(utf8(`record of ${a}`));
      await tree.set(a, d);
      await reference.set(a, await sha256(utf8(`record of ${a}`)));
      d.fill(0); // the caller reuses its array
    }
    const first = await tree.root();
    const firstHex = toHex(first);
    assert.equal(firstHex, toHex(await reference.root()));
    for (const a of accounts.slice(0, 20)) {
      await tree.set(a, await sha256(utf8(`next record of ${a}`)));
      await reference.set(a, await sha256(utf8(`next record of ${a}`)));
    }
    const second = await tree.root();
    assert.equal(toHex(first), firstHex, 'a root returned before the changes is unchanged');
    assert.notEqual(toHex(second), firstHex);
    assert.equal(toHex(second), toHex(await reference.root()));
    assert.equal(toHex(tree.digest('acct-3')!), toHex(await sha256(utf8('next record of acct-3'))));
  });

  it('with node:crypto (sha256Into: each hash written into the tree\'s own array) the roots are the same, each node is hashed once, and a root handed out is not overwritten', async () => {
    const before = cryptoProvider();
    let into = 0;
    let plain = 0;
    useCryptoProvider({
      ...nodeCryptoProvider,
      sha256: (data) => (plain++, nodeCryptoProvider.sha256(data)),
      sha256Into: (data, out, at) => (into++, nodeCryptoProvider.sha256Into!(data, out, at)),
    });
    try {
      const tree = await RecordTree.create();
      const accounts = Array.from({ length: 400 }, (_, i) => `acct-${i}`);
      const roots = async (version: string, subset: (i: number) => boolean) => {
        const reference = new Map<string, Uint8Array>();
        for (const [i, a] of accounts.entries()) {
          const d = new Uint8Array(createHash('sha256').update(`record ${a} ${subset(i) ? version : 'v0'}`).digest());
          reference.set(a, d);
          if (version === 'v0' || subset(i)) await tree.set(a, d);
        }
        // The tree by definition, with node's createHash.
        let level = new Map<number, Uint8Array>();
        const buckets = new Map<number, Array<[string, Uint8Array]>>();
        for (const [a, d] of reference) {
          const b = await bucketOf(a);
          buckets.set(b, [...(buckets.get(b) ?? []), [a, d]]);
        }
        for (const [b, entries] of buckets) level.set(b, await bucketHash(entries));
        const empty = await emptyTreeHashes();
        for (let l = 0; l < 16; l++) {
          const up = new Map<number, Uint8Array>();
          for (const i of level.keys()) {
            const p = i >>> 1;
            if (!up.has(p)) up.set(p, new Uint8Array(createHash('sha256').update(new Uint8Array([1])).update(level.get(2 * p) ?? empty[l]!).update(level.get(2 * p + 1) ?? empty[l]!).digest()));
          }
          level = up;
        }
        return toHex(level.get(0)!);
      };
      const want0 = await roots('v0', () => true);
      const first = await tree.root();
      assert.equal(toHex(first), want0);
      const changed = (i: number) => i % 3 === 0;
      const want1 = await roots('v1', changed);
      let nodes = new Set<number>();
      for (const [i, a] of accounts.entries()) if (changed(i)) nodes.add(await bucketOf(a));
      let count = nodes.size;
      for (let l = 0; l < 16; l++) count += (nodes = new Set([...nodes].map((i) => i >>> 1))).size;
      into = 0;
      plain = 0;
      const second = await tree.root();
      assert.equal(toHex(second), want1);
      assert.equal(into, count, 'each changed bucket and each node above it hashed once, into an array');
      assert.equal(plain, 0, 'no hash through sha256 (a result array per hash)');
      assert.equal(toHex(first), want0, 'a root returned before the changes is unchanged');
    } finally {
      useCryptoProvider(before);
    }
  });
});

const FLEET_VECTORS = new URL('../../../../spec/vectors/vault-log/log-fleet.json', import.meta.url);

describe('fleet statements (spec §13.5, §13.7, §13.8) against the vectors', () => {
  it('ack, challenge answer, log value, commit rule', async () => {
    const p = fakePlatform();
    const hmac = (data: Uint8Array) => toHex(new Uint8Array(createHmac('sha256', LOG_KEY).update(data).digest()));
    const root1 = await sha256(utf8('root 1'));
    const mac1 = await RollbackGuard.entryMac(p, GROUP, 1, GENESIS_MAC, root1);
    const entry: LogEntry = { group: GROUP, index: 1, prevMac: GENESIS_MAC, root: root1, mac: mac1 };
    const changes = await digestChanges([{ account: 'alice', value: utf8('sealed record of alice') }, { account: 'bob', value: null }]);
    const nonce = fromHex('0f'.repeat(32));
    const ackIn = ackMacInput(GROUP, '00112233aabbccdd', 1, mac1);
    const members = encodeMembers(['8899aabbccddeeff', '00112233aabbccdd', '0123456789abcdef']);
    const membersDigest = await sha256(members);
    const joint = encodeMembers(['8899aabbccddeeff', '00112233aabbccdd', 'fedcba9876543210'], ['8899aabbccddeeff', '00112233aabbccdd', '0123456789abcdef']);
    const ansIn = challengeMacInput(GROUP, nonce, '00112233aabbccdd', '8899aabbccddeeff', 1, mac1, membersDigest);
    const got = {
      description: 'spec/vault-protocol.md §13.5 log value = entry ‖ u32 count ‖ (u16 len ‖ account ‖ u8 flag ‖ [digest]); §13.7 ack = HMAC(logMacKey, ackInput); §13.8, §13.11 answer = HMAC(logMacKey, answerInput) with the member-record digest; commit index = the (floor(N/2)+1)-th highest captured index; §13.11 the member record (plain, and joint: a change under way) and committedBy (a majority of the members in force and, while a change is under way, of the previous list too; identities outside not counted; null: no record yet, any floor(size/2)+1)',
      logMacKey: toHex(LOG_KEY),
      group: toHex(GROUP),
      entry: toHex(encodeEntry(entry)),
      changes: changes.map((c) => ({ account: c.account, digest: c.digest ? toHex(c.digest) : null })),
      logValue: toHex(encodeLogValue(entry, changes)),
      ack: { node: '00112233aabbccdd', index: 1, entryMac: toHex(mac1), input: toHex(ackIn), mac: hmac(ackIn) },
      members: { account: toHex(utf8(MEMBERS_ACCOUNT)), record: decodeMembers(members), bytes: toHex(members), digest: toHex(membersDigest) },
      jointMembers: { record: decodeMembers(joint), bytes: toHex(joint), digest: toHex(await sha256(joint)) },
      answer: { nonce: toHex(nonce), asker: '00112233aabbccdd', responder: '8899aabbccddeeff', index: 1, entryMac: toHex(mac1), members: toHex(membersDigest), input: toHex(ansIn), mac: hmac(ansIn) },
      commitIndex: [
        { size: 3, captured: [7, 5, 3], commit: 5 },
        { size: 3, captured: [7], commit: 0 },
        { size: 5, captured: [9, 9, 2, 1], commit: 2 },
        { size: 1, captured: [4], commit: 4 },
      ],
      committedBy: [
        { record: { members: ['0000000000000001', '0000000000000002', '0000000000000003'], previous: [] }, captured: { '0000000000000001': 5, '0000000000000002': 5, '0000000000000009': 9 }, index: 5, committed: true },
        { record: { members: ['0000000000000001', '0000000000000002', '0000000000000003'], previous: [] }, captured: { '0000000000000001': 5, '0000000000000008': 9, '0000000000000009': 9 }, index: 5, committed: false },
        { record: { members: ['0000000000000001', '0000000000000002', '0000000000000004'], previous: ['0000000000000001', '0000000000000002', '0000000000000003'] }, captured: { '0000000000000001': 5, '0000000000000004': 5 }, index: 5, committed: false },
        { record: { members: ['0000000000000001', '0000000000000002', '0000000000000004'], previous: ['0000000000000001', '0000000000000002', '0000000000000003'] }, captured: { '0000000000000001': 5, '0000000000000004': 5, '0000000000000003': 5 }, index: 5, committed: true },
        { record: null, size: 3, captured: { '0000000000000001': 5, '0000000000000008': 9 }, index: 5, committed: true },
      ],
    };
    if (process.env.COFFER_WRITE_VECTORS === '1') writeFileSync(FLEET_VECTORS, `${JSON.stringify(got, null, 2)}\n`);
    assert.deepEqual(got, JSON.parse(readFileSync(FLEET_VECTORS, 'utf8')));
    for (const v of got.commitIndex) assert.equal(quorumIndex(new Map(v.captured.map((c, i) => [`n${i}`, c])), v.size), v.commit);
    for (const v of got.committedBy) assert.equal(committedBy(v.record, v.size ?? 3, new Map(Object.entries(v.captured)), v.index), v.committed);
    const back = decodeLogValue(encodeLogValue(entry, changes));
    assert.deepEqual(back.entry, entry);
    assert.deepEqual(back.changes, changes);
    assert.equal(decodeLogValue(encodeEntry(entry)).changes, null, 'a bare entry is the one-node format');
    const value = encodeLogValue(entry, changes);
    for (const bad of [value.subarray(0, value.length - 1), concat(value, new Uint8Array([0]))]) assert.throws(() => decodeLogValue(bad), StoreRolledBackError);
    assert.equal(await verifyAck(p, GROUP, '00112233aabbccdd', 1, mac1, fromHex(got.ack.mac)), true);
    assert.equal(await verifyAck(p, GROUP, '8899aabbccddeeff', 1, mac1, fromHex(got.ack.mac)), false, 'under another member\'s name');
    assert.equal(await verifyAck(p, GROUP, '00112233aabbccdd', 2, mac1, fromHex(got.ack.mac)), false, 'for another index');
    assert.equal(await verifyChallengeAnswer(p, GROUP, nonce, '00112233aabbccdd', '8899aabbccddeeff', 1, mac1, membersDigest, fromHex(got.answer.mac)), true);
    assert.equal(await verifyChallengeAnswer(p, GROUP, new Uint8Array(32), '00112233aabbccdd', '8899aabbccddeeff', 1, mac1, membersDigest, fromHex(got.answer.mac)), false, 'an answer to an older challenge');
    assert.equal(await verifyChallengeAnswer(p, GROUP, nonce, '00112233aabbccdd', '8899aabbccddeeff', 1, mac1, NO_MEMBERS, fromHex(got.answer.mac)), false, 'under another member list');
  });
});

/** A guard over an in-memory "store" that the tests then damage. */
async function scenario() {
  const p = fakePlatform();
  const store = { records: new Map<string, Uint8Array>(), log: [] as Uint8Array[] };
  const { guard } = await RollbackGuard.resume(p, GROUP, [], []);
  const commit = async (g: RollbackGuard, account: string, value: Uint8Array | null) => {
    const e = await g.append([{ account, value }]);
    if (value) store.records.set(account, value);
    else store.records.delete(account);
    store.log.push(encodeEntry(e));
    await g.capture(e);
    return e;
  };
  const resume = (s = store, options = {}) => {
    const from = p.anchor ? Number(new DataView(p.anchor.buffer, 16, 8).getBigUint64(0)) : 0;
    return RollbackGuard.resume(p, GROUP, s.log.filter((b) => decodeEntry(b).index >= from), [...s.records], options);
  };
  const snapshot = () => ({ records: new Map(store.records), log: [...store.log] });
  return { p, store, guard, commit, resume, snapshot };
}

describe('RollbackGuard', () => {
  it('check: the captured record passes; an older value, a lost or an extra record is refused naming the account', async () => {
    const s = await scenario();
    await s.commit(s.guard, 'alice', utf8('v1'));
    await s.commit(s.guard, 'alice', utf8('v2'));
    await s.guard.check('alice', utf8('v2'));
    await s.guard.check('nobody', null);
    for (const [account, bytes] of [['alice', utf8('v1')], ['alice', null], ['nobody', utf8('v1')]] as const) {
      await assert.rejects(s.guard.check(account, bytes), (e: unknown) => e instanceof StoreRolledBackError && e.account === account);
    }
  });

  it('resume: the same store resumes; a crash between append and capture is caught up', async () => {
    const s = await scenario();
    await s.commit(s.guard, 'alice', utf8('v1'));
    const r = await s.resume();
    assert.equal(r.guard.captured.index, 1);
    await r.guard.check('alice', utf8('v1'));
    // Appended and committed, never captured (the node died before the anchor write).
    const e = await r.guard.append([{ account: 'alice', value: utf8('v2') }]);
    s.store.records.set('alice', utf8('v2'));
    s.store.log.push(encodeEntry(e));
    const r2 = await s.resume();
    assert.equal(r2.caughtUp, 1);
    assert.equal(r2.guard.captured.index, 2);
    await r2.guard.check('alice', utf8('v2'));
  });

  it('resume refuses a snapshot, a truncated log, an edited or reordered entry, records not matching the root', async () => {
    const s = await scenario();
    await s.commit(s.guard, 'alice', utf8('v1'));
    const old = s.snapshot();
    await s.commit(s.guard, 'alice', utf8('v2'));
    await s.commit(s.guard, 'bob', utf8('b1'));
    const good = s.snapshot();
    const cases: Array<[string, { records: Map<string, Uint8Array>; log: Uint8Array[] }]> = [
      ['snapshot restored', old],
      ['log truncated', { records: good.records, log: good.log.slice(0, 2) }],
      ['log emptied', { records: good.records, log: [] }],
      ['record written back', { records: new Map([...good.records, ['alice', utf8('v1')]]), log: good.log }],
      ['record deleted', { records: new Map([['bob', utf8('b1')]]), log: good.log }],
      ['entry edited', { records: good.records, log: [...good.log.slice(0, 2), good.log[2]!.map((b, i) => (i === 60 ? b ^ 1 : b))] }],
    ];
    for (const [what, store] of cases) await assert.rejects(s.resume(store), StoreRolledBackError, what);
    // An entry deleted from the middle when the anchor is behind (resume from index 1).
    s.p.anchor = null; // a lost anchor
    await assert.rejects(s.resume({ records: good.records, log: [good.log[0]!, good.log[2]!] }), AnchorMissingError, 'no anchor: refused without adopt');
    await assert.rejects(s.resume({ records: good.records, log: [good.log[0]!, good.log[2]!] }, { adoptWithoutAnchor: true }), StoreRolledBackError, 'a gap');
    await assert.rejects(s.resume({ records: good.records, log: [good.log[0]!, good.log[2]!, good.log[1]!] }, { adoptWithoutAnchor: true }), StoreRolledBackError, 'reordered');
    const adopted = await s.resume(good, { adoptWithoutAnchor: true });
    assert.equal(adopted.adopted, true);
    assert.equal(adopted.guard.captured.index, 3);
  });

  it('an entry MACed under another key (another fleet) is refused', async () => {
    const s = await scenario();
    await s.commit(s.guard, 'alice', utf8('v1'));
    const foreign = fakePlatform(new Uint8Array(32).fill(7));
    foreign.anchor = s.p.anchor;
    await assert.rejects(RollbackGuard.resume(foreign, GROUP, s.store.log, [...s.store.records]), StoreRolledBackError);
  });

  it('witness: a follower captures in order only, idempotently; acks (under each HSM\'s own node ID) count toward a majority', async () => {
    const leader = await scenario();
    const follower = fakePlatform(LOG_KEY, new Uint8Array(65).fill(5));
    const [a, b] = [await nodeIdOf(leader.p), await nodeIdOf(follower)];
    assert.notEqual(a, b);
    const { guard: f } = await RollbackGuard.resume(follower, GROUP, [], []);
    const e1 = await leader.commit(leader.guard, 'alice', utf8('v1'));
    const e2 = await leader.commit(leader.guard, 'alice', utf8('v2'));
    await assert.rejects(f.witness(e2, [{ account: 'alice', value: utf8('v2') }]), StoreRolledBackError, 'out of order');
    const ack1 = await f.witness(e1, [{ account: 'alice', value: utf8('v1') }]);
    assert.deepEqual(await f.witness(e1, []), ack1, 'idempotent');
    await assert.rejects(f.witness({ ...e2, root: e1.root }, []), StoreRolledBackError, 'edited entry');
    await assert.rejects(f.witness(e2, [{ account: 'alice', value: utf8('v3') }]), StoreRolledBackError, 'changes that do not give the root');
    const { guard: f2 } = await RollbackGuard.resume(fakePlatform(LOG_KEY, new Uint8Array(65).fill(5)), GROUP, [], []);
    await f2.witness(e1, [{ account: 'alice', value: utf8('v1') }]);
    const ack2 = await f2.witness(e2, [{ account: 'alice', value: utf8('v2') }]);
    const chain = (i: number) => (i === 1 ? e1.mac : i === 2 ? e2.mac : null);
    const leaderAck = await leader.guard.ack();
    const members = [a, b, 'ffffffffffffffff'];
    const acks = new Map([
      [a, { index: 2, mac: e2.mac, ack: leaderAck }],
      [b, { index: 2, mac: e2.mac, ack: ack2 }],
    ]);
    assert.equal(await committed(leader.p, GROUP, e2, acks, members, chain), true);
    assert.equal(await committed(leader.p, GROUP, e1, acks, members, chain), true, 'a later entry of the chain counts');
    assert.equal(await committed(leader.p, GROUP, e2, new Map([[a, acks.get(a)!]]), members, chain), false, 'one of three');
    assert.equal(await committed(leader.p, GROUP, e2, new Map([[a, acks.get(a)!], [b, { ...acks.get(b)!, ack: ack1 }]]), members, chain), false, "b's ack is for another entry");
    assert.equal(await committed(leader.p, GROUP, e2, new Map([[a, acks.get(a)!], ['ffffffffffffffff', { ...acks.get(a)! }]]), members, chain), false, "a's ack under another member's name");
  });
});

/**
 * The model: each account's record is (guesses used, nonce). A guess reads the record
 * from whatever state the adversary picks, is checked, counted, committed on top of the
 * store's current state (fenced on its log head like the real stores), captured, and
 * only then answered. The adversary may also lose a commit (crash before capture),
 * restart the node from any state, and restore the store to any earlier snapshot.
 */
type Cmd =
  | { kind: 'guess'; account: number; readFrom: number; crash: boolean }
  | { kind: 'restart'; from: number }
  | { kind: 'rollback'; to: number };

const LIMIT = 3;
const ACCOUNTS = ['a', 'b', 'c'];

async function runModel(cmds: readonly Cmd[], protect: boolean): Promise<Map<string, number>> {
  const p = fakePlatform();
  type State = { records: Map<string, Uint8Array>; log: Uint8Array[] };
  const history: State[] = [{ records: new Map(), log: [] }];
  let current = 0;
  let guard: RollbackGuard | null = (await RollbackGuard.resume(p, GROUP, [], [])).guard;
  const answered = new Map<string, number>();
  let nonce = 0;
  const pick = (n: number) => history[n % history.length]!;
  const resumeFrom = async (s: State) => {
    try {
      const from = p.anchor ? Number(new DataView(p.anchor.buffer, 16, 8).getBigUint64(0)) : 0;
      guard = (await RollbackGuard.resume(p, GROUP, s.log.filter((b) => decodeEntry(b).index >= from), [...s.records])).guard;
    } catch (err) {
      assert.ok(err instanceof StoreRolledBackError || err instanceof AnchorMissingError, String(err));
      guard = null;
    }
  };
  for (const c of cmds) {
    if (c.kind === 'rollback') {
      current = c.to % history.length;
      continue;
    }
    if (c.kind === 'restart') {
      if (protect) await resumeFrom(pick(c.from));
      continue;
    }
    const account = ACCOUNTS[c.account % ACCOUNTS.length]!;
    const read = pick(c.readFrom).records.get(account) ?? null;
    if (protect) {
      if (!guard) continue; // refusing everything until a resume succeeds
      try {
        await guard.check(account, read);
      } catch (err) {
        assert.ok(err instanceof StoreRolledBackError);
        continue;
      }
    }
    const used = read ? read[0]! : 0;
    if (used >= LIMIT) continue; // locked
    const value = new Uint8Array([used + 1, nonce++ & 0xff, nonce >> 8]);
    const base = history[current]!;
    const next: State = { records: new Map([...base.records, [account, value]]), log: base.log };
    if (protect) {
      const g: RollbackGuard = guard!;
      const e = await g.append([{ account, value }]);
      const head = base.log.length ? decodeEntry(base.log.at(-1)!).index : 0;
      if (head !== e.index - 1) {
        guard = null; // LogConflictError: resumed before the next request
        continue;
      }
      next.log = [...base.log, encodeEntry(e)];
      history.push(next);
      current = history.length - 1;
      if (c.crash) {
        guard = null; // died between append and capture: nothing answered
        continue;
      }
      await g.capture(e);
    } else {
      history.push(next);
      current = history.length - 1;
      if (c.crash) continue;
    }
    answered.set(account, (answered.get(account) ?? 0) + 1);
  }
  return answered;
}

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('guess' as const), account: fc.nat(1), readFrom: fc.nat(), crash: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('restart' as const), from: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('rollback' as const), to: fc.nat() }) },
);

describe('model: an adversarial store that returns any earlier state', () => {
  it('never answers more than the limit of guesses for any account (with the guard)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(cmdArb, { maxLength: 60 }), async (cmds) => {
        const answered = await runModel(cmds, true);
        for (const [account, n] of answered) assert.ok(n <= LIMIT, `${account}: ${n} guesses answered`);
      }),
      { numRuns: Number(process.env.COFFER_FUZZ_RUNS ?? 300) },
    );
  });

  it('without the guard the same adversary gets more (the model has teeth)', async () => {
    const found = await fc.check(
      fc.asyncProperty(fc.array(cmdArb, { maxLength: 60 }), async (cmds) => {
        const answered = await runModel(cmds, false);
        for (const n of answered.values()) if (n > LIMIT) return false;
        return true;
      }),
      { numRuns: 300 },
    );
    assert.equal(found.failed, true);
  });
});

/**
 * The fleet model (spec §13.6–§13.9): three members, each with its own anchor and node
 * ID, over one adversarial store. The adversary (the operator of etcd) may restore the
 * store to ANY earlier state, hand the leader a record from any earlier state, replay any
 * ack a member ever published, withhold challenge answers, crash the leader between
 * append and commit, restart members, make any member leader, and wipe ONE member's
 * anchor at a time (a new machine; a majority lost for good is the documented disaster).
 * Members follow the log strictly in order (witnessAll), publish acks, answer
 * challenges; the leader releases a guess only when a majority acked its entry
 * (quorumIndex over verified, chain-matched acks) and serves only after a fresh
 * challenge showed it the majority's newest capture. Asserted: never more than the limit
 * of guesses answered for any account.
 */
type FleetCmd =
  | { kind: 'guess'; account: number; readFrom: number }
  | { kind: 'follow'; node: number }
  | { kind: 'release' }
  | { kind: 'crash' }
  | { kind: 'elect'; node: number; answering: number }
  | { kind: 'restart'; node: number; answering: number }
  | { kind: 'lose-anchor'; node: number }
  | { kind: 'rollback'; to: number }
  | { kind: 'replay-ack'; node: number; which: number }
  | { kind: 'replace'; node: number }
  /** The adversary notes the store as it is now (slot), and restores that copy later (review: forks). */
  | { kind: 'mark'; slot: number }
  | { kind: 'restore'; slot: number }
  /**
   * Review 2. A key ceremony (the operator's): a new identity holding the log key, shown an
   * empty etcd first (so it starts at genesis without evidence) and then whatever copy the
   * adversary restores: it follows that copy from entry 1.
   */
  | { kind: 'ceremony' }
  /** Review 2. The adversary deletes log entries below the head (etcd's pruning, or its own deleterange): `keep` newest stay. */
  | { kind: 'prune'; keep: number }
  /** Review 2. With `lateBootstrap`: the leader records the group's list (spec §13.11 "Bootstrap") when N identities follow its term. */
  | { kind: 'bootstrap' }
  /**
   * Review 2 (fuzz reach): a guess, a member change step or a bootstrap step, then the
   * nodes in `followers` (bitmask) follow and the leader counts acks. Without these the
   * fuzzer seldom made a change commit (it did not find review 1's finding 2 in 3000 runs).
   */
  | { kind: 'round'; what: 'guess' | 'replace' | 'bootstrap'; account: number; node: number; followers: number };

const N = 3;
/** Nodes the model may create: N first members and, per replacement, a new one (the old HSM stays, the adversary's). */
const MAX_NODES = 9;

interface FleetModelOptions {
  /**
   * Review 2: the group starts with no member list (a new fleet before its bootstrap, or
   * one upgraded from before §13.11); `bootstrap` records it. Records are then
   * registrations: a guess on an account whose record is absent registers it only the
   * first time (a later registration is the attacker's own password, not the user's).
   */
  readonly lateBootstrap?: boolean;
  /** Review 2: the behaviour before the fix: accounts are written (and answered) before the group recorded its list. */
  readonly accountsBeforeList?: boolean;
}

/**
 * `membership`: the member list counts (spec §13.11); false: any N identities holding the
 * log key count, as before members were bound (the model then shows the attack).
 */
async function runFleetModel(cmds: readonly FleetCmd[], commitRule: boolean, membership = true, opts: FleetModelOptions = {}): Promise<Map<string, number>> {
  type Log = Map<number, Uint8Array>;
  type State = { records: Map<string, Uint8Array>; log: Log; head: number };
  const platforms = Array.from({ length: N }, (_, i) => fakePlatform(LOG_KEY, new Uint8Array(65).fill(10 + i)));
  const ids = await Promise.all(platforms.map((p) => nodeIdOf(p)));
  const guards: Array<RollbackGuard | null> = await Promise.all(platforms.map(async (p) => (await RollbackGuard.resume(p, GROUP, [], [])).guard));
  /** Every member list ever written, by digest (etcd's group/members/). */
  const lists = new Map<string, MemberRecord>();
  const listOf = (d: Uint8Array | null) => (d === null ? null : (lists.get(toHex(d)) ?? null));
  // The group records its first members (what the leader does once all N follow).
  const first = encodeMembers(ids);
  lists.set(toHex(await sha256(first)), decodeMembers(first));
  /** The leader's knowledge (reset when another is elected): a joint record it saw committed; an entry of its term committed. */
  let jointCommitted: string | null = null;
  let termCommitted = false;
  /** The leader's captured index when it took over (bootstrap counts acks of later entries only). */
  let termStart = 0;
  /** Accounts ever registered (lateBootstrap): a record absent later is not registered again with the user's password. */
  const registered = new Set<string>();
  const history: State[] = [];
  if (opts.lateBootstrap) history.push({ records: new Map(), log: new Map(), head: 0 });
  else {
    const e1 = await guards[0]!.append([{ account: MEMBERS_ACCOUNT, value: first }]);
    await guards[0]!.capture(e1);
    const v1 = encodeLogValue(e1, await digestChanges([{ account: MEMBERS_ACCOUNT, value: first }]));
    for (const g of guards.slice(1)) await g!.witnessAll([{ entry: e1, changes: decodeLogValue(v1).changes! }]);
    history.push({ records: new Map([[MEMBERS_ACCOUNT, first]]), log: new Map([[1, v1]]), head: 1 });
  }
  let current = 0;
  const board = new Map<string, Uint8Array[]>(); // node → [index, mac, ack] as published, newest last
  const published = new Map<string, Array<{ index: number; mac: Uint8Array; ack: Uint8Array }>>();
  let leader: number | null = null;
  let pending: Array<{ index: number; account: string | null; members: MemberRecord | null; membersHex?: string | null; joint?: string }> = [];
  const answered = new Map<string, number>();
  let nonce = 0;
  const store = () => history[current]!;
  const entriesFrom = (s: State, from: number) => [...s.log.entries()].filter(([i]) => i >= from).sort(([a], [b]) => a - b).map(([, v]) => v);
  const anchorIndex = (p: Platform & { anchor: Uint8Array | null }) => (p.anchor ? Number(new DataView(p.anchor.buffer, 16, 8).getBigUint64(0)) : null);

  const publishAck = async (n: number) => {
    const g = guards[n]!;
    const a = { index: g.captured.index, mac: g.captured.mac, ack: await g.ack() };
    const list = published.get(ids[n]!) ?? [];
    list.push(a);
    published.set(ids[n]!, list);
    board.set(ids[n]!, [new Uint8Array([0]), a.mac, a.ack, new Uint8Array([a.index])]);
  };
  const boardAck = (id: string) => {
    const list = published.get(id);
    const b = board.get(id);
    if (!list || !b) return null;
    return list.find((a) => a.ack === b[2]) ?? null;
  };
  /** A fresh challenge by `asker`, answered by the nodes in `answering` (bitmask) that have a guard. */
  const evidence = async (asker: number, answering: number, countSelf: boolean) => {
    const challenge = platforms[asker]!.randomBytes(32);
    challenge[0] = nonce++ & 0xff;
    const found = new Map<string, Answer>();
    const g0 = guards[asker];
    if (countSelf && g0) found.set(ids[asker]!, { index: g0.captured.index, mac: g0.captured.mac, members: g0.membersDigest ?? NO_MEMBERS });
    for (let n = 0; n < platforms.length; n++) {
      if (n === asker || !guards[n] || !(answering & (1 << n))) continue;
      const a = await guards[n]!.answerChallenge(challenge, ids[asker]!);
      if (await verifyChallengeAnswer(platforms[asker]!, GROUP, challenge, ids[asker]!, ids[n]!, a.index, a.mac, a.members, a.answer)) found.set(ids[n]!, { index: a.index, mac: a.mac, members: a.members });
    }
    if (!membership) return found.size < majority(N) ? null : [...found.values()].reduce((a, b) => (b.index > a.index ? b : a));
    // Only answers on the chain the store shows count (review: forks).
    const chain = await chainOf(platforms[asker]!, GROUP, entriesFrom(store(), 1).map((v) => decodeLogValue(v).entry));
    const ev = evidenceOf(answersOnChain(found, chain), N, listOf);
    return typeof ev === 'object' && 'index' in ev ? ev : null;
  };
  const follow = async (n: number) => {
    const g = guards[n];
    if (!g) return;
    const s = store();
    const at = g.captured.index;
    const values = entriesFrom(s, Math.max(at, 1));
    try {
      if (at > 0 && (values.length === 0 || decodeLogValue(values[0]!).entry.index !== at)) throw new StoreRolledBackError('captured entry gone');
      await g.witnessAll(values.map((v) => { const d = decodeLogValue(v); return { entry: d.entry, changes: d.changes ?? [] }; }));
      await publishAck(n);
    } catch (err) {
      assert.ok(err instanceof StoreRolledBackError, String(err));
      guards[n] = null;
    }
  };
  const resume = async (n: number, answering: number) => {
    const p = platforms[n]!;
    const s = store();
    const from = anchorIndex(p) ?? 0;
    try {
      guards[n] = (await RollbackGuard.resume(p, GROUP, entriesFrom(s, from).map((v) => decodeLogValue(v).entry).map(encodeEntry), [...s.records])).guard;
      return;
    } catch (err) {
      assert.ok(err instanceof StoreRolledBackError || err instanceof AnchorMissingError, String(err));
    }
    const ev = await evidence(n, answering, anchorIndex(p) !== null);
    if (!ev) return;
    try {
      guards[n] = (await RollbackGuard.resume(p, GROUP, entriesFrom(s, Math.min(ev.index, anchorIndex(p) ?? ev.index)).map((v) => decodeLogValue(v).entry).map(encodeEntry), [...s.records], { evidence: ev, evidenceWithoutSelf: true })).guard;
    } catch (err) {
      assert.ok(err instanceof StoreRolledBackError, String(err));
    }
  };
  /** The leader appends `changes` over the current store; false when the store's head moved (it steps down). */
  const append = async (g: RollbackGuard, changes: Array<{ account: string; value: Uint8Array }>): Promise<{ index: number; members: MemberRecord | null; membersHex: string | null } | null> => {
    const base = store();
    const members = listOf(g.membersDigest);
    const membersHex = g.membersDigest === null ? null : toHex(g.membersDigest);
    const e = await g.append(changes);
    if (base.head !== e.index - 1 || (e.index > 1 && !base.log.has(e.index - 1))) {
      guards[leader!] = null; // LogConflictError: steps down
      leader = null;
      pending = [];
      return null;
    }
    const digests: DigestChange[] = await digestChanges(changes);
    const next: State = { records: new Map([...base.records, ...changes.map((c) => [c.account, c.value] as const)]), log: new Map([...base.log, [e.index, encodeLogValue(e, digests)]]), head: e.index };
    history.push(next);
    current = history.length - 1;
    await g.capture(e);
    return { index: e.index, members, membersHex };
  };

  const marks = new Map<number, number>();
  const expanded = cmds.flatMap((c): FleetCmd[] => {
    if (c.kind !== 'round') return [c];
    const first: FleetCmd = c.what === 'guess' ? { kind: 'guess', account: c.account, readFrom: -1 } : c.what === 'replace' ? { kind: 'replace', node: c.node } : { kind: 'bootstrap' };
    const follows: FleetCmd[] = [];
    for (let n = 0; n < MAX_NODES; n++) if (c.followers & (1 << n)) follows.push({ kind: 'follow', node: n });
    return [first, ...follows, { kind: 'release' }];
  });
  for (const c of expanded) {
    const K = platforms.length;
    switch (c.kind) {
      case 'mark':
        marks.set(c.slot % 4, current);
        break;
      case 'restore':
        current = marks.get(c.slot % 4) ?? current;
        break;
      case 'rollback':
        current = c.to % history.length;
        break;
      case 'replay-ack': {
        const id = ids[c.node % K]!;
        const list = published.get(id);
        if (list?.length) {
          const a = list[c.which % list.length]!;
          board.set(id, [new Uint8Array([0]), a.mac, a.ack, new Uint8Array([a.index])]);
        }
        break;
      }
      case 'follow':
        if (c.node % K !== leader) await follow(c.node % K);
        break;
      case 'crash':
        if (leader !== null) guards[leader] = null;
        leader = null;
        pending = [];
        break;
      case 'lose-anchor': {
        const n = c.node % K;
        // One anchor lost at a time: the others hold theirs (a majority lost is the disaster of §13.9).
        if (platforms.some((p, i) => i !== n && p.anchor === null)) break;
        if (guards.some((g, i) => i !== n && g === null)) break;
        platforms[n]!.anchor = null;
        guards[n] = null;
        if (leader === n) {
          leader = null;
          pending = [];
        }
        break;
      }
      case 'restart': {
        const n = c.node % K;
        if (leader === n) {
          leader = null;
          pending = [];
        }
        guards[n] = null;
        await resume(n, c.answering);
        break;
      }
      case 'elect': {
        // Any node, a replaced member's old HSM too (safety must not rest on who campaigns).
        const n = c.node % K;
        if (leader !== null) {
          guards[leader] = null; // the old leader's lease is gone; it resumes later
          pending = [];
        }
        leader = null;
        if (!guards[n]) break;
        const ev = await evidence(n, c.answering, true);
        if (!ev) break;
        await follow(n);
        const g = guards[n];
        if (!g || g.captured.index < ev.index) break;
        const mine = g.macAt(ev.index);
        if (mine && !equalBytesT(mine, ev.mac)) break;
        leader = n;
        jointCommitted = null;
        termCommitted = false;
        termStart = g.captured.index;
        break;
      }
      case 'replace': {
        // The operator replaces one member through the ceremony: a new identity with the log
        // key joins (rejoins from evidence), the leader commits the joint record (both lists),
        // then the new list alone; the old HSM is kept and stays in the model, the adversary's
        // to run. A change under way is finished (or committed again first) by this command too.
        if (leader === null || !guards[leader]) break;
        if (pending.some((p) => p.account === null)) break; // one change at a time
        const g = guards[leader]!;
        const record = listOf(g.membersDigest);
        if (!record) break;
        let next: MemberRecord;
        if (record.previous.length > 0) {
          next = jointCommitted === toHex(g.membersDigest!) ? { members: record.members, previous: [] } : record;
        } else {
          const old = ids[c.node % K]!;
          if (!termCommitted || platforms.length >= MAX_NODES || !record.members.includes(old)) break;
          const fresh = fakePlatform(LOG_KEY, new Uint8Array(65).fill(10 + platforms.length));
          platforms.push(fresh);
          ids.push(await nodeIdOf(fresh));
          guards.push(null);
          await resume(platforms.length - 1, 0x7f);
          next = { members: [...record.members.filter((id) => id !== old), ids.at(-1)!].sort(), previous: record.members };
        }
        const bytes = encodeMembers(next.members, next.previous);
        const digest = toHex(await sha256(bytes));
        lists.set(digest, next);
        const r = await append(g, [{ account: MEMBERS_ACCOUNT, value: bytes }]);
        if (r) pending.push({ index: r.index, account: null, members: r.members, membersHex: r.membersHex, ...(next.previous.length > 0 ? { joint: digest } : {}) });
        break;
      }
      case 'ceremony': {
        if (platforms.length >= MAX_NODES) break;
        const fresh = fakePlatform(LOG_KEY, new Uint8Array(65).fill(10 + platforms.length));
        platforms.push(fresh);
        ids.push(await nodeIdOf(fresh));
        // Shown an empty etcd: no anchor, no log, no records: the genesis, without evidence.
        guards.push((await RollbackGuard.resume(fresh, GROUP, [], [])).guard);
        await follow(platforms.length - 1);
        break;
      }
      case 'prune': {
        const s = store();
        const keepFrom = s.head - (c.keep % 4);
        if (keepFrom <= 1) break;
        history.push({ records: s.records, log: new Map([...s.log].filter(([i]) => i >= keepFrom)), head: s.head });
        current = history.length - 1;
        break;
      }
      case 'bootstrap': {
        // fleet-group.ts #manageMembers with no record: the leader and the identities whose
        // verified acks name an entry of its term; exactly N of them: recorded. With the
        // review 2 fix, a leader with no entry of its term appends an empty one first.
        if (leader === null || !guards[leader] || !membership) break;
        const g = guards[leader]!;
        if (g.membersDigest !== null || pending.some((p) => p.account === null)) break;
        const following = new Set([ids[leader]!]);
        for (let n = 0; n < K; n++) {
          const a = n === leader ? null : boardAck(ids[n]!);
          if (!a || a.index <= termStart) continue;
          const chain = g.macAt(a.index);
          if (chain && equalBytesT(chain, a.mac) && (await verifyAck(platforms[leader]!, GROUP, ids[n]!, a.index, a.mac, a.ack))) following.add(ids[n]!);
        }
        let changes: Array<{ account: string; value: Uint8Array }>;
        if (following.size === N) {
          const bytes = encodeMembers([...following]);
          lists.set(toHex(await sha256(bytes)), decodeMembers(bytes));
          changes = [{ account: MEMBERS_ACCOUNT, value: bytes }];
        } else if (following.size < N && !opts.accountsBeforeList && g.captured.index === termStart) changes = [];
        else break;
        const r = await append(g, changes);
        if (r) pending.push({ index: r.index, account: null, members: r.members, membersHex: r.membersHex });
        break;
      }
      case 'guess': {
        if (leader === null || !guards[leader]) break;
        const g = guards[leader]!;
        const account = ACCOUNTS[c.account % ACCOUNTS.length]!;
        if (pending.some((p) => p.account === account)) break; // the per-account queue
        const read = (c.readFrom < 0 ? store() : history[c.readFrom % history.length]!).records.get(account) ?? null;
        try {
          await g.check(account, read);
        } catch (err) {
          assert.ok(err instanceof StoreRolledBackError);
          break;
        }
        // Review 2 fix (fleet-group.ts commit): no account is written before the group recorded its list.
        if (membership && !opts.accountsBeforeList && g.membersDigest === null) break;
        if (opts.lateBootstrap && read === null) {
          if (registered.has(account)) break; // not-registered: a new registration would be the attacker's own password
          registered.add(account);
        }
        const used = read ? read[0]! : 0;
        if (used >= LIMIT) break;
        const value = new Uint8Array([used + 1, nonce & 0xff, (nonce++ >> 8) & 0xff]);
        const r = await append(g, [{ account, value }]);
        if (!r) break;
        if (commitRule) pending.push({ index: r.index, account, members: r.members, membersHex: r.membersHex });
        else answered.set(account, (answered.get(account) ?? 0) + 1);
        break;
      }
      case 'release': {
        if (leader === null || !guards[leader]) break;
        const g = guards[leader]!;
        const captured = new Map<string, number>([[ids[leader]!, g.captured.index]]);
        for (let n = 0; n < K; n++) {
          if (n === leader) continue;
          const a = boardAck(ids[n]!);
          if (!a) continue;
          const chain = g.macAt(a.index);
          if (!chain || !equalBytesT(chain, a.mac)) continue;
          if (!(await verifyAck(platforms[leader]!, GROUP, ids[n]!, a.index, a.mac, a.ack))) continue;
          captured.set(ids[n]!, a.index);
        }
        // In order, each entry by a majority of the members in force before it.
        while (pending.length > 0 && committedBy(membership ? pending[0]!.members : null, N, captured, pending[0]!.index)) {
          const p = pending.shift()!;
          termCommitted = true;
          if (p.joint) jointCommitted = p.joint;
          // fleet-group.ts #release: any entry committed under a joint record lets the change finish.
          if (p.members && p.members.previous.length > 0 && p.membersHex) jointCommitted = p.membersHex;
          if (p.account !== null) answered.set(p.account, (answered.get(p.account) ?? 0) + 1);
        }
        break;
      }
    }
  }
  return answered;
}

function equalBytesT(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

const fleetCmdArb: fc.Arbitrary<FleetCmd> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ kind: fc.constant('guess' as const), account: fc.nat(1), readFrom: fc.oneof(fc.constant(-1), fc.nat()) }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('follow' as const), node: fc.nat(8) }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('release' as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('crash' as const) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('elect' as const), node: fc.nat(8), answering: fc.nat(511) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('restart' as const), node: fc.nat(8), answering: fc.nat(511) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('lose-anchor' as const), node: fc.nat(8) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('rollback' as const), to: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('replay-ack' as const), node: fc.nat(8), which: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('replace' as const), node: fc.nat(8) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('mark' as const), slot: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('restore' as const), slot: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('ceremony' as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('prune' as const), keep: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('bootstrap' as const) }) },
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('round' as const), what: fc.constantFrom('guess' as const, 'guess' as const, 'replace' as const, 'bootstrap' as const), account: fc.nat(1), node: fc.nat(8), followers: fc.nat(511) }) },
);

/**
 * Review 2: phases — (a copy restored, nodes restarted,) a leader elected, a few rounds
 * (each a guess, a member change step or a bootstrap step, followed by some nodes and
 * counted), a copy noted, a few commands of any kind. Flat random commands seldom reach
 * a change under way across a leader change on two copies; phases do.
 */
const phaseArb: fc.Arbitrary<FleetCmd[]> = fc
  .record({
    restore: fc.option(fc.nat(3), { freq: 1 }),
    restarts: fc.array(fc.record({ node: fc.nat(8), answering: fc.nat(511) }), { maxLength: 2 }),
    elect: fc.record({ node: fc.nat(8), answering: fc.nat(511) }),
    rounds: fc.array(fc.record({ what: fc.constantFrom('guess' as const, 'guess' as const, 'replace' as const, 'bootstrap' as const), account: fc.nat(1), node: fc.nat(8), followers: fc.nat(511), mark: fc.option(fc.nat(3), { freq: 2 }) }), { minLength: 1, maxLength: 4 }),
    mark: fc.option(fc.nat(3)),
    extra: fc.array(fleetCmdArb, { maxLength: 3 }),
  })
  .map((ph): FleetCmd[] => [
    ...(ph.restore === null ? [] : [{ kind: 'restore' as const, slot: ph.restore }]),
    ...ph.restarts.map((r) => ({ kind: 'restart' as const, ...r })),
    { kind: 'elect', ...ph.elect },
    ...ph.rounds.flatMap(({ mark, ...r }): FleetCmd[] => [{ kind: 'round', ...r }, ...(mark === null ? [] : [{ kind: 'mark' as const, slot: mark }])]),
    ...(ph.mark === null ? [] : [{ kind: 'mark' as const, slot: ph.mark }]),
    ...ph.extra,
  ]);
const phasesArb = fc.array(phaseArb, { minLength: 1, maxLength: 10 }).map((p) => p.flat());

describe('fleet model: three members, leader changes, rollbacks, replayed acks (spec §13.6–§13.9)', () => {
  it('never answers more than the limit of guesses for any account (phases: leader changes between the steps of a member change, copies of each step)', async () => {
    await fc.assert(
      fc.asyncProperty(phasesArb, async (cmds) => {
        const answered = await runFleetModel(cmds, true);
        for (const [account, n] of answered) assert.ok(n <= LIMIT, `${account}: ${n} guesses answered`);
      }),
      { numRuns: Number(process.env.COFFER_FUZZ_RUNS ?? 200) },
    );
  });

  it('never answers more than the limit of guesses for any account', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fleetCmdArb, { maxLength: 80 }), async (cmds) => {
        const answered = await runFleetModel(cmds, true);
        for (const [account, n] of answered) assert.ok(n <= LIMIT, `${account}: ${n} guesses answered`);
      }),
      { numRuns: Number(process.env.COFFER_FUZZ_RUNS ?? 200) },
    );
  });

  it('the attack the commit rule stops: guesses answered on the leader alone, the store rolled back, another leader elected', async () => {
    const attack: FleetCmd[] = [
      { kind: 'elect', node: 0, answering: 7 },
      ...Array.from({ length: LIMIT }, () => ({ kind: 'guess' as const, account: 0, readFrom: -1 })),
      { kind: 'rollback', to: 0 },
      { kind: 'elect', node: 1, answering: 4 },
      ...Array.from({ length: LIMIT }, () => ({ kind: 'guess' as const, account: 0, readFrom: -1 })),
    ];
    assert.equal((await runFleetModel(attack, false)).get('a'), 2 * LIMIT, 'without the commit rule');
    const withRule = await runFleetModel(attack.flatMap((c): FleetCmd[] => (c.kind === 'guess' ? [c, { kind: 'follow', node: 1 }, { kind: 'follow', node: 2 }, { kind: 'release' }] : [c])), true);
    assert.ok((withRule.get('a') ?? 0) <= LIMIT, `with it: ${withRule.get('a')}`);
  });

  it('the attack the member list stops: two members replaced, their old HSMs kept, the store rolled back, an old HSM elected with the other\'s answer (spec §13.11)', async () => {
    const guessed = (followers: number[]): FleetCmd[] => [{ kind: 'guess', account: 0, readFrom: -1 }, ...followers.map((node) => ({ kind: 'follow' as const, node })), { kind: 'release' }];
    const attack: FleetCmd[] = [
      { kind: 'elect', node: 0, answering: 7 },
      ...guessed([1, 2]), // entry 2: one guess, every member captured it
      { kind: 'replace', node: 1 }, // entry 3: node 1 (off from now on) replaced by node 3, both lists
      { kind: 'follow', node: 2 },
      { kind: 'follow', node: 3 },
      { kind: 'release' },
      { kind: 'replace', node: 1 }, // entry 4: the change finished (the new list alone)
      { kind: 'follow', node: 2 },
      { kind: 'follow', node: 3 },
      { kind: 'release' },
      { kind: 'replace', node: 2 }, // entry 5: node 2 (off from now on) replaced by node 4, both lists
      { kind: 'follow', node: 3 },
      { kind: 'follow', node: 4 },
      { kind: 'release' },
      { kind: 'replace', node: 2 }, // entry 6: finished
      { kind: 'follow', node: 3 },
      { kind: 'follow', node: 4 },
      { kind: 'release' },
      ...Array.from({ length: LIMIT - 2 }, () => guessed([3, 4])).flat(),
      { kind: 'rollback', to: 5 }, // etcd as it was after the replacements
      { kind: 'elect', node: 1, answering: 0b110 }, // the two old HSMs
      ...Array.from({ length: LIMIT }, () => guessed([2, 1])).flat(),
      { kind: 'elect', node: 2, answering: 0b110 },
      ...Array.from({ length: LIMIT }, () => guessed([1, 2])).flat(),
    ];
    const before = (await runFleetModel(attack, true, false)).get('a') ?? 0;
    assert.ok(before > LIMIT, `without the member list: ${before} answered (the model has teeth)`);
    const after = (await runFleetModel(attack, true, true)).get('a') ?? 0;
    assert.equal(after, LIMIT - 1, 'with it: only the guesses the real members committed');
  });
});

describe('review: forks and member changes (spec §13.8, §13.9, §13.11)', () => {
  const guessed = (account: number, followers: number[]): FleetCmd[] => [{ kind: 'guess', account, readFrom: -1 }, ...followers.map((node) => ({ kind: 'follow' as const, node })), { kind: 'release' }];

  it('a member that captured committed entries does not move to a longer fork on another member\'s evidence (rejoin)', async () => {
    // Each round: the leader (0) appends two entries nobody else sees (accounts b, c: never
    // answered); the store is put back; node 1 leads with node 2 and answers one guess for
    // `a` (committed by 1 and 2); the store is put back to the longer fork; node 0 leads
    // again on its own fork (its answer is the highest) and nodes 1, 2 rejoin from evidence
    // naming the fork's head. Each round's answered guess for `a` is lost.
    const round: FleetCmd[] = [
      { kind: 'mark', slot: 0 },
      { kind: 'guess', account: 1, readFrom: -1 },
      { kind: 'guess', account: 2, readFrom: -1 },
      { kind: 'mark', slot: 1 },
      { kind: 'restore', slot: 0 },
      { kind: 'elect', node: 1, answering: 0b110 },
      ...guessed(0, [2]),
      { kind: 'restore', slot: 1 },
      { kind: 'restart', node: 0, answering: 0 },
      { kind: 'elect', node: 0, answering: 0b100 }, // node 2 answers from the committed branch; node 0's fork is longer
      { kind: 'restart', node: 1, answering: 0b101 }, // node 1 had captured the committed entry: it jumps to the fork
      { kind: 'follow', node: 2 },
      { kind: 'restart', node: 2, answering: 0b011 },
    ];
    const attack: FleetCmd[] = [
      { kind: 'elect', node: 0, answering: 7 },
      ...Array.from({ length: LIMIT }, () => round).flat(),
      ...Array.from({ length: LIMIT }, () => guessed(0, [1, 2])).flat(),
    ];
    const answered = (await runFleetModel(attack, true)).get('a') ?? 0;
    assert.ok(answered <= LIMIT, `${answered} guesses answered for one account (limit ${LIMIT})`);
  });

  it('a member change appended but not committed, then a leader change: the new list\'s majority (old leader + new node) is disjoint from the old list\'s', async () => {
    const attack: FleetCmd[] = [
      { kind: 'elect', node: 0, answering: 7 },
      ...guessed(1, [1, 2]), // an entry of this term committed: the leader may change members
      { kind: 'mark', slot: 0 },
      { kind: 'replace', node: 2 }, // node 3 joins; entry 3 = joint {0, 1, 3} after {0, 1, 2}, captured by 0 (and 3), not by 1, 2
      { kind: 'follow', node: 3 },
      { kind: 'mark', slot: 1 },
      { kind: 'restore', slot: 0 },
      { kind: 'elect', node: 1, answering: 0b110 }, // the old list's majority {1, 2}
      ...Array.from({ length: LIMIT }, () => guessed(0, [2])).flat(),
      { kind: 'restore', slot: 1 },
      { kind: 'restart', node: 0, answering: 0 },
      { kind: 'elect', node: 0, answering: 0b1000 }, // the new list's majority {0, 3}
      ...Array.from({ length: LIMIT }, () => guessed(0, [3])).flat(),
    ];
    const answered = (await runFleetModel(attack, true)).get('a') ?? 0;
    assert.ok(answered <= LIMIT, `${answered} guesses answered for one account (limit ${LIMIT})`);
  });
});

describe('review 2: the member list before and after it is recorded, pruned anchors, fresh identities (spec §13.9, §13.11)', () => {
  const guessed = (account: number, followers: number[]): FleetCmd[] => [{ kind: 'guess', account, readFrom: -1 }, ...followers.map((node) => ({ kind: 'follow' as const, node })), { kind: 'release' }];
  const bootstrapped = (followers: number[]): FleetCmd[] => [{ kind: 'bootstrap' }, ...followers.map((node) => ({ kind: 'follow' as const, node })), { kind: 'release' }];

  it('fleet model, a group that records its list late (bootstrap), with fresh identities and pruning: never more than the limit per registration', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.array(fleetCmdArb, { maxLength: 80 }), phasesArb), async (cmds) => {
        const answered = await runFleetModel(cmds, true, true, { lateBootstrap: true });
        for (const [account, n] of answered) assert.ok(n <= LIMIT, `${account}: ${n} guesses answered`);
      }),
      { numRuns: Number(process.env.COFFER_FUZZ_RUNS ?? 200) },
    );
  });

  it('an etcd copy from before the list was recorded, and identities from new key ceremonies walked onto it from an empty etcd: the pre-list rule (any two identities) comes back for every account written before the list', async () => {
    const attack: FleetCmd[] = [
      { kind: 'elect', node: 0, answering: 0b110 }, // no list yet: any two identities
      ...bootstrapped([1, 2]), // fixed: an empty entry of this term first (before: nothing, 1 identity follows)
      ...guessed(0, [1, 2]), // before: `a` written (and one guess answered) with no list; fixed: refused
      { kind: 'mark', slot: 0 }, // the adversary's copy of etcd, before the list
      ...bootstrapped([1, 2]), // the list {0, 1, 2}
      ...bootstrapped([1, 2]),
      ...Array.from({ length: LIMIT }, () => guessed(0, [1, 2])).flat(), // `a` registered (fixed) and its guesses spent
      { kind: 'restore', slot: 0 }, // etcd put back to the copy
      { kind: 'ceremony' }, // node 3, 4, 5: new identities with the log key, started on an empty etcd, then shown the copy
      { kind: 'ceremony' },
      { kind: 'ceremony' },
      { kind: 'elect', node: 3, answering: 0b110000 },
      ...bootstrapped([4, 5]),
      ...bootstrapped([4, 5]),
      ...Array.from({ length: LIMIT }, () => guessed(0, [4, 5])).flat(),
    ];
    const before = (await runFleetModel(attack, true, true, { lateBootstrap: true, accountsBeforeList: true })).get('a') ?? 0;
    assert.ok(before > LIMIT, `before the fix: ${before} answered (the model has teeth)`);
    const after = (await runFleetModel(attack, true, true, { lateBootstrap: true })).get('a') ?? 0;
    assert.ok(after <= LIMIT, `${after} guesses answered for one registration (limit ${LIMIT})`);
  });
});

describe('group members (spec §13.11)', () => {
  const A = '0000000000000001';
  const B = '0000000000000002';
  const C = '0000000000000003';
  const X = '00000000000000ff';
  it('the record codec: canonical (sorted, distinct lists; a joint record\'s lists differ) or refused', () => {
    const bytes = encodeMembers([C, A, B]);
    assert.deepEqual(decodeMembers(bytes), { members: [A, B, C], previous: [] });
    const joint = encodeMembers([A, B, X], [C, B, A]);
    assert.deepEqual(decodeMembers(joint), { members: [A, B, X], previous: [A, B, C] });
    for (const bad of [[], [A, A], ['nothex'], ['00000000000000011'], Array.from({ length: 16 }, (_, i) => i.toString(16).padStart(16, '0'))]) assert.throws(() => encodeMembers(bad), RangeError);
    assert.throws(() => encodeMembers([A, B], [B, A]), RangeError, 'a change to the same list');
    assert.throws(() => encodeMembers([A, B], [A, A]), RangeError);
    const label = utf8('coffer/vault/v1/group-members').length;
    // Plain: label ‖ 0 ‖ n ‖ ids ‖ 0. The last two IDs swapped; n = 0; the previous count past the end.
    const swapped = bytes.slice();
    swapped.set(bytes.subarray(label + 2 + 16, label + 2 + 24), label + 2 + 8);
    swapped.set(bytes.subarray(label + 2 + 8, label + 2 + 16), label + 2 + 16);
    const zero = bytes.slice();
    zero[label + 1] = 0;
    const prevTooMany = bytes.slice();
    prevTooMany[bytes.length - 1] = 1;
    const sameLists = concat(bytes.subarray(0, bytes.length - 1), new Uint8Array([3]), bytes.subarray(label + 2, label + 2 + 24));
    const otherLabel = bytes.slice();
    otherLabel[0] = otherLabel[0]! ^ 1;
    for (const bad of [new Uint8Array(0), bytes.subarray(0, bytes.length - 1), concat(bytes, new Uint8Array(1)), swapped, zero, prevTooMany, sameLists, otherLabel, joint.subarray(0, joint.length - 3), encodeMembers([A]).fill(0xff)]) assert.throws(() => decodeMembers(bad), StoreRolledBackError);
  });
  it('evidence counts only a majority of the newest answer\'s own record (both lists while a change is under way); a record not known yet is asked for', () => {
    const L = createHash('sha256').update(encodeMembers([A, B, C])).digest();
    const J = createHash('sha256').update(encodeMembers([A, B, X], [A, B, C])).digest();
    const lists = (d: Uint8Array): MemberRecord | null => (toHex(d) === toHex(L) ? { members: [A, B, C], previous: [] } : toHex(d) === toHex(J) ? { members: [A, B, X], previous: [A, B, C] } : null);
    const mac = new Uint8Array(32);
    const ans = (index: number, members: Uint8Array = L): Answer => ({ index, mac, members });
    assert.equal(evidenceOf(new Map([[A, ans(5)]]), 3, lists), 'no-majority');
    assert.deepEqual(evidenceOf(new Map([[A, ans(5)], [B, ans(4)]]), 3, lists), { index: 5, mac });
    assert.equal(evidenceOf(new Map([[A, ans(5)], [X, ans(6)]]), 3, lists), 'no-majority', 'an identity outside the list');
    assert.equal(evidenceOf(new Map([[A, ans(6, J)], [X, ans(6, J)]]), 3, lists), 'no-majority', 'a change under way: a majority of the new list alone is not enough');
    assert.equal(evidenceOf(new Map([[A, ans(6, J)], [C, ans(5)]]), 3, lists), 'no-majority', '… nor of the old list alone');
    assert.deepEqual(evidenceOf(new Map([[A, ans(6, J)], [B, ans(5)]]), 3, lists), { index: 6, mac }, 'a member of both lists counts in each');
    assert.deepEqual(evidenceOf(new Map([[A, ans(6, J)], [C, ans(5)], [X, ans(6, J)]]), 3, lists), { index: 6, mac });
    const unknown = new Uint8Array(32).fill(9);
    assert.deepEqual(evidenceOf(new Map([[A, ans(5)], [B, ans(7, unknown)]]), 3, lists), { need: unknown });
    assert.deepEqual(evidenceOf(new Map([[A, ans(2, NO_MEMBERS)], [X, ans(1, NO_MEMBERS)]]), 3, lists), { index: 2, mac }, 'no list yet: any two identities (before the group records its members)');
    assert.equal(evidenceOf(new Map(), 3, lists), 'no-majority');
  });
  it('a guard names the list of the entry it captured in its answers, and keeps it across resume', async () => {
    const p = fakePlatform();
    const g = (await RollbackGuard.resume(p, GROUP, [], [])).guard;
    assert.equal(g.membersDigest, null);
    const L = encodeMembers([A, B, C]);
    const e = await g.append([{ account: MEMBERS_ACCOUNT, value: L }]);
    assert.equal(g.membersDigest, null, 'not before the entry is captured');
    await g.capture(e);
    assert.equal(toHex(g.membersDigest!), toHex(await sha256(L)));
    const a = await g.answerChallenge(new Uint8Array(32), B);
    assert.equal(toHex(a.members), toHex(await sha256(L)));
    const again = (await RollbackGuard.resume(p, GROUP, [encodeEntry(e)], [[MEMBERS_ACCOUNT, L]])).guard;
    assert.equal(toHex(again.membersDigest!), toHex(await sha256(L)));
  });
});
