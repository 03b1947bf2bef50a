/**
 * Rollback protection (spec/vault-protocol.md §13): the store is trusted for
 * availability only.
 *
 * Every batch of record changes is committed together with one entry of a MAC-chained
 * log, in the same store transaction:
 *
 *   entry = group (16) ‖ index (u64 BE) ‖ prevMac (32) ‖ root (32) ‖ mac (32)
 *   mac   = HMAC(logMac, "coffer/vault/v1/log-entry" ‖ 0x00 ‖ group ‖ index ‖ prevMac ‖ root)
 *
 * `root` authenticates every stored record: the root of a fixed-depth (16) binary Merkle
 * tree whose leaves are buckets of (account, SHA-256(stored record bytes)). The node's
 * platform keeps a tiny trusted anchor = group ‖ index ‖ mac of the newest entry it has
 * captured; an entry is captured (anchor written) before any answer that depends on it
 * leaves. So whatever the store returns later must continue the chain from the anchor
 * and match its root — a store restored from a snapshot, an old record value written
 * back, an entry deleted or edited: each is refused (StoreRolledBackError).
 *
 * Fleet groups (§13.5–§13.9) add: the log value with change digests (`encodeLogValue`),
 * witnessing runs of entries with one anchor write (`witnessAll`), acks bound to the
 * index and entry they name (`ack`, `verifyAck`), the commit rule (`quorumIndex`),
 * answers to fresh challenges (`answerChallenge`, `verifyChallengeAnswer`) and resuming
 * from a majority's evidence instead of the anchor (`ResumeOptions.evidence`). The I/O
 * around them is server/fleet-group.ts.
 *
 * Membership (§13.11): a fleet's member list is a record under a reserved name
 * (`MEMBERS_ACCOUNT`) in the same tree, so every entry's root fixes who the members are.
 * An entry counts as committed only when a majority of the members in force before it
 * captured it (`committedBy`); a challenge answer names the member list of the entry it
 * vouches for, and evidence counts only a majority of that list (`evidenceOf`). Identities
 * outside the list — old HSMs of replaced members — count for nothing.
 *
 * Pure: everything outside comes through the Platform (mac, anchor, sha256 through the
 * protocol package's crypto provider).
 */
import { concat, cryptoProvider, equalBytes, fromHex, isAscii, LABELS, sha256, sha256IntoSync, toHex, utf8 } from '@coffer/protocol';
import { KEY_LABELS, LOG_LABELS } from './key-labels.js';
import { PlatformError, type Platform } from './platform.js';

export const GROUP_ID_LENGTH = 16;
export const MAC_LENGTH = 32;
export const LOG_ENTRY_LENGTH = GROUP_ID_LENGTH + 8 + MAC_LENGTH * 3;
export const ANCHOR_LENGTH = GROUP_ID_LENGTH + 8 + MAC_LENGTH;
/** Depth of the record tree: 2^16 buckets. */
export const TREE_DEPTH = 16;
/** The "previous MAC" of entry 1 (and the MAC of the empty genesis, index 0). */
export const GENESIS_MAC = new Uint8Array(MAC_LENGTH);

/**
 * The reserved record name of the group's member list: not an account (accounts are
 * printable ASCII), so no request can read or write it.
 */
export const MEMBERS_ACCOUNT = '\u0000members';
/** An answer's member-list digest while the group has no list yet (spec §13.11). */
export const NO_MEMBERS = new Uint8Array(32);
/** A node ID: 16 lowercase hex digits (8 bytes). */
export const NODE_ID_PATTERN = /^[0-9a-f]{16}$/;
/** The most members a list may hold. */
export const MAX_MEMBERS = 15;

/**
 * The group's member record (spec §13.11): the members, and while a change is under way
 * (joint), the list before it. With `previous` non-empty both lists must agree: a commit
 * and fresh evidence need a majority of each.
 */
export interface MemberRecord {
  readonly members: readonly string[];
  /** The list a change replaces, until the change is finished ([] when none is under way). */
  readonly previous: readonly string[];
}

function checkList(ids: readonly string[], what: string, allowEmpty: boolean): string[] {
  const sorted = [...ids].sort();
  if (sorted.length > MAX_MEMBERS || (!allowEmpty && sorted.length < 1)) throw new RangeError(`${what}: ${allowEmpty ? 0 : 1}..${MAX_MEMBERS} node IDs`);
  for (let i = 0; i < sorted.length; i++) {
    if (!NODE_ID_PATTERN.test(sorted[i]!)) throw new RangeError(`${what}: ${JSON.stringify(sorted[i])} is not a node ID (16 hex digits)`);
    if (i > 0 && sorted[i] === sorted[i - 1]) throw new RangeError(`${what}: ${sorted[i]} twice`);
  }
  return sorted;
}

/**
 * The member record's bytes (spec §13.11): label ‖ 0x00 ‖ u8 n ‖ n × node ID (8 bytes) ‖
 * u8 m ‖ m × node ID, each list sorted ascending and distinct; m = 0 when no change is
 * under way.
 * @throws RangeError for IDs that are not node IDs, repeated, too many, or a joint record whose lists are equal
 */
export function encodeMembers(ids: readonly string[], previous: readonly string[] = []): Uint8Array {
  const members = checkList(ids, 'members', false);
  const prev = checkList(previous, 'previous members', true);
  if (prev.length > 0 && prev.join() === members.join()) throw new RangeError('previous members: the same list');
  const label = utf8(LOG_LABELS.members);
  const out = new Uint8Array(label.length + 3 + 8 * (members.length + prev.length));
  out.set(label, 0);
  let at = label.length + 1;
  for (const list of [members, prev]) {
    out[at++] = list.length;
    for (const id of list) {
      out.set(fromHex(id), at);
      at += 8;
    }
  }
  return out;
}

/**
 * @throws StoreRolledBackError for bytes that are not a member record in the canonical form
 */
export function decodeMembers(bytes: Uint8Array): MemberRecord {
  const label = utf8(LOG_LABELS.members);
  const bad = (why: string): never => {
    throw new StoreRolledBackError(`group members: ${why}`);
  };
  if (bytes.length < label.length + 3 || !equalBytes(bytes.subarray(0, label.length), label) || bytes[label.length] !== 0) bad('not a member record');
  let at = label.length + 1;
  const lists: string[][] = [];
  for (let l = 0; l < 2; l++) {
    if (at >= bytes.length) bad('cut short');
    const n = bytes[at++]!;
    if (n > MAX_MEMBERS || (l === 0 && n < 1) || at + 8 * n > bytes.length) bad(`a list of ${n} members in ${bytes.length} bytes`);
    const ids: string[] = [];
    for (let i = 0; i < n; i++, at += 8) ids.push(toHex(bytes.subarray(at, at + 8)));
    for (let i = 1; i < n; i++) if (ids[i]! <= ids[i - 1]!) bad('not sorted, or a member twice');
    lists.push(ids);
  }
  if (at !== bytes.length) bad(`${bytes.length - at} bytes after the lists`);
  if (lists[1]!.length > 0 && lists[1]!.join() === lists[0]!.join()) bad('a change to the same list');
  return { members: lists[0]!, previous: lists[1]! };
}

function majorityOf(list: readonly string[], has: (id: string) => boolean): boolean {
  let count = 0;
  for (const id of list) if (has(id)) count++;
  return count >= majority(list.length);
}

/**
 * Whether an entry is committed (spec §13.7, §13.11): `captured` maps node IDs to the
 * highest index each verifiably captured (the appender's own included). With a member
 * record (the one in force BEFORE the entry), a majority of its list — and, while a
 * change is under way, also of the list before the change — must have reached `index`;
 * identities outside them count for nothing. Without one (a group that has not recorded
 * its members yet), any `floor(size/2)+1` distinct identities.
 */
export function committedBy(record: MemberRecord | null, size: number, captured: ReadonlyMap<string, number>, index: number): boolean {
  const has = (id: string) => (captured.get(id) ?? -1) >= index;
  if (record === null) {
    let count = 0;
    for (const i of captured.values()) if (i >= index) count++;
    return count >= majority(size);
  }
  return majorityOf(record.members, has) && (record.previous.length === 0 || majorityOf(record.previous, has));
}

/** One verified answer to a fresh challenge: what the responder captured, and the member record of that entry. */
export interface Answer {
  readonly index: number;
  readonly mac: Uint8Array;
  /** SHA-256 of the member record the entry's root holds (NO_MEMBERS: none yet). */
  readonly members: Uint8Array;
}

/**
 * Fresh evidence (spec §13.8, §13.11): M = the highest entry among verified answers, and
 * it counts only when the answers come from a majority of M's own member list — and of
 * the list before it while a change is under way at M (`lists` resolves a digest to the
 * record; null: not known yet) — or, before the group recorded a list, from
 * `floor(size/2)+1` distinct identities. Every committed entry was captured by a majority
 * of the record in force before it, and a change is finished (the previous list dropped)
 * only after the record naming both lists was committed by both, so such a majority
 * includes a member that captured every committed entry: M is at or above all of them.
 * The caller counts only answers on the chain the store shows (`answersOnChain`).
 * Returns 'no-majority', or { need } when M's record must be fetched first.
 */
export function evidenceOf(answers: ReadonlyMap<string, Answer>, size: number, lists: (digest: Uint8Array) => MemberRecord | null): { index: number; mac: Uint8Array } | 'no-majority' | { need: Uint8Array } {
  let best: Answer | null = null;
  for (const a of answers.values()) if (best === null || a.index > best.index) best = a;
  if (best === null) return 'no-majority';
  if (equalBytes(best.members, NO_MEMBERS)) return answers.size >= majority(size) ? { index: best.index, mac: best.mac } : 'no-majority';
  const record = lists(best.members);
  if (record === null) return { need: best.members };
  const has = (id: string) => answers.has(id);
  return majorityOf(record.members, has) && (record.previous.length === 0 || majorityOf(record.previous, has)) ? { index: best.index, mac: best.mac } : 'no-majority';
}

/**
 * The chain a run of log entries shows (review: forks): index → MAC for each entry whose
 * MAC verifies and that follows the one before it, plus the entry before the first (its
 * prevMac, authenticated by the first's MAC) and the genesis. Stops at the first entry
 * that does not continue the run.
 */
export async function chainOf(platform: Platform, group: Uint8Array, entries: readonly LogEntry[]): Promise<Map<number, Uint8Array>> {
  const out = new Map<number, Uint8Array>([[0, GENESIS_MAC]]);
  let prev: LogEntry | null = null;
  for (const e of entries) {
    if (prev !== null && (e.index !== prev.index + 1 || !equalBytes(e.prevMac, prev.mac))) break;
    if (!equalBytes(e.group, group) || !equalBytes(await RollbackGuard.entryMac(platform, group, e.index, e.prevMac, e.root), e.mac)) break;
    if (prev === null && e.index > 0) out.set(e.index - 1, e.prevMac);
    out.set(e.index, e.mac);
    prev = e;
  }
  return out;
}

/** The answers whose entry is on `chain` (chainOf): only those can vouch for an entry of it. */
export function answersOnChain(answers: ReadonlyMap<string, Answer>, chain: ReadonlyMap<number, Uint8Array>): Map<string, Answer> {
  const out = new Map<string, Answer>();
  for (const [id, a] of answers) {
    const mac = chain.get(a.index);
    if (mac && equalBytes(mac, a.mac)) out.set(id, a);
  }
  return out;
}

export interface LogEntry {
  readonly group: Uint8Array;
  readonly index: number;
  readonly prevMac: Uint8Array;
  readonly root: Uint8Array;
  readonly mac: Uint8Array;
}

/** What the node has captured: the newest entry it vouches for. */
export interface Captured {
  readonly index: number;
  readonly mac: Uint8Array;
  readonly root: Uint8Array;
}

/** How many of the newest entries' MACs a guard remembers (acks for older ones are not counted). */
const CHAIN_MEMORY = 8192;

/** One record change as a follower sees it: the new record's digest (null: deleted). */
export interface DigestChange {
  readonly account: string;
  readonly digest: Uint8Array | null;
}

/** One record change of a batch: `value` null deletes the record. */
export interface RecordChange {
  readonly account: string;
  readonly value: Uint8Array | null;
}

/**
 * The store does not continue what this node captured: it was rolled back, edited, or
 * lost entries. `account` names the record refused (null: the whole store).
 */
export class StoreRolledBackError extends Error {
  override readonly name = 'StoreRolledBackError';
  constructor(
    message: string,
    readonly account: string | null = null,
  ) {
    super(message);
  }
}

/** The node has no anchor but the store has a log: adopting it needs an explicit decision (spec §13.9). */
export class AnchorMissingError extends Error {
  override readonly name = 'AnchorMissingError';
}

function u64(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`log index: not a non-negative safe integer: ${n}`);
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

function readU64(bytes: Uint8Array, at: number): number {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new StoreRolledBackError('log: index out of range');
  return Number(v);
}

/** The bytes an entry's MAC covers (spec §13.2). */
export function entryMacInput(group: Uint8Array, index: number, prevMac: Uint8Array, root: Uint8Array): Uint8Array {
  return concat(utf8(LOG_LABELS.entry), new Uint8Array([0]), group, u64(index), prevMac, root);
}

export function encodeEntry(e: LogEntry): Uint8Array {
  return concat(e.group, u64(e.index), e.prevMac, e.root, e.mac);
}

/** @throws StoreRolledBackError for bytes that are not an entry (the store returned garbage) */
export function decodeEntry(bytes: Uint8Array): LogEntry {
  if (bytes.length !== LOG_ENTRY_LENGTH) throw new StoreRolledBackError(`log: an entry of ${bytes.length} bytes (expected ${LOG_ENTRY_LENGTH})`);
  let at = 0;
  const take = (n: number): Uint8Array => bytes.slice(at, (at += n));
  const group = take(GROUP_ID_LENGTH);
  const index = readU64(bytes, at);
  at += 8;
  return { group, index, prevMac: take(MAC_LENGTH), root: take(MAC_LENGTH), mac: take(MAC_LENGTH) };
}

export function encodeAnchor(group: Uint8Array, index: number, mac: Uint8Array): Uint8Array {
  return concat(group, u64(index), mac);
}

/**
 * Writes this node's anchor. A platform that finds it moved under this process (another
 * process writes the same anchor: a second vault on the token or key folder, serving its
 * own copy of the store) refuses with `anchor-moved`; that is a store this node cannot
 * trust any more, not a passing platform failure.
 * @throws StoreRolledBackError when the anchor moved; PlatformError otherwise
 */
async function writeAnchor(platform: Platform, group: Uint8Array, index: number, mac: Uint8Array): Promise<void> {
  try {
    await platform.writeAnchor(encodeAnchor(group, index, mac));
  } catch (err) {
    if (err instanceof PlatformError && err.code === 'anchor-moved') throw new StoreRolledBackError(`anchor: another writer moved this node's anchor (${err.message})`);
    throw err;
  }
}

export function decodeAnchor(bytes: Uint8Array): { group: Uint8Array; index: number; mac: Uint8Array } {
  if (bytes.length !== ANCHOR_LENGTH) throw new StoreRolledBackError(`anchor: ${bytes.length} bytes (expected ${ANCHOR_LENGTH})`);
  return { group: bytes.slice(0, GROUP_ID_LENGTH), index: readU64(bytes, GROUP_ID_LENGTH), mac: bytes.slice(GROUP_ID_LENGTH + 8) };
}

/** A member's statement that it captured `entryMac` at `index` (fleet, spec §13.7). */
export function ackMacInput(group: Uint8Array, nodeId: string, index: number, entryMac: Uint8Array): Uint8Array {
  const id = utf8(nodeId);
  return concat(utf8(LOG_LABELS.ack), new Uint8Array([0]), group, new Uint8Array([id.length]), id, u64(index), entryMac);
}

/**
 * This node's ID, derived inside the trust boundary from its transport key (the key
 * ceremony's node ID: hex of SHA-256("coffer/vault/v1/fleet-node-id" ‖ 0x00 ‖ public key)[0..8]).
 * Acks carry it, so one HSM cannot ack under several members' names.
 */
export async function nodeIdOf(platform: Platform): Promise<string> {
  const pub = await platform.publicKey(KEY_LABELS.nodeTransport);
  return toHex((await sha256(concat(utf8(LABELS.fleetNodeId), new Uint8Array([0]), pub))).slice(0, 8));
}

/** The tree bucket of an account: the first TREE_DEPTH bits of SHA-256(label ‖ 0x00 ‖ account). */
export async function bucketOf(account: string): Promise<number> {
  const h = await sha256(concat(utf8(LOG_LABELS.bucket), new Uint8Array([0]), utf8(account)));
  return ((h[0]! << 8) | h[1]!) >>> (16 - TREE_DEPTH);
}

/** SHA-256 of the stored record bytes: what the tree holds per account. */
export function recordDigest(bytes: Uint8Array): Promise<Uint8Array> {
  return sha256(bytes);
}

/**
 * SHA-256 through the protocol package's provider without a turn of the microtask queue
 * when the provider is synchronous (node:crypto): the record tree hashes ~16 nodes per
 * changed record, and an `await` per hash cost more than the hash.
 */
function digestNow(data: Uint8Array): Uint8Array | Promise<Uint8Array> {
  return cryptoProvider().sha256(data);
}

/** The bucket hash's input: 0x00 ‖ for each (account, digest), sorted by account: u16 len ‖ account ‖ digest. */
function bucketInput(entries: Iterable<readonly [string, Uint8Array]>): Uint8Array {
  const sorted = [...entries];
  if (sorted.length > 1) sorted.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  // Account IDs are printable ASCII (one byte per character): written straight into the
  // input, without a UTF-8 encoder call and an array per account (a root hashes every
  // changed bucket: ~30 per log entry under load). Any other account is encoded.
  const names = sorted.map(([account]) => (isAscii(account) ? account : utf8(account)));
  let length = 1;
  for (let i = 0; i < sorted.length; i++) length += 2 + names[i]!.length + sorted[i]![1].length;
  const out = new Uint8Array(length); // out[0] = 0x00
  let at = 1;
  for (let i = 0; i < sorted.length; i++) {
    const name = names[i]!;
    const n = name.length;
    out[at] = n >> 8;
    out[at + 1] = n & 0xff;
    at += 2;
    if (typeof name === 'string') for (let j = 0; j < n; j++) out[at + j] = name.charCodeAt(j);
    else out.set(name, at);
    at += n;
    const digest = sorted[i]![1];
    out.set(digest, at);
    at += digest.length;
  }
  return out;
}

/** H(0x00 ‖ for each (account, digest), sorted by account: u16 len ‖ account ‖ digest). */
export async function bucketHash(entries: Iterable<readonly [string, Uint8Array]>): Promise<Uint8Array> {
  return digestNow(bucketInput(entries));
}

/** H(0x01 ‖ left ‖ right): an inner node of the record tree. */
export async function nodeHash(left: Uint8Array, right: Uint8Array): Promise<Uint8Array> {
  return digestNow(concat(new Uint8Array([1]), left, right));
}

let emptyHashes: Promise<Uint8Array[]> | null = null;
/** EMPTY[0] = hash of an empty bucket; EMPTY[l+1] = H(0x01 ‖ EMPTY[l] ‖ EMPTY[l]); EMPTY[16] = the empty root. */
export function emptyTreeHashes(): Promise<Uint8Array[]> {
  emptyHashes ??= (async () => {
    const out = [await bucketHash([])];
    for (let l = 0; l < TREE_DEPTH; l++) out.push(await nodeHash(out[l]!, out[l]!));
    return out;
  })();
  return emptyHashes;
}

/** The authenticated map account → record digest, with its Merkle root. */
export class RecordTree {
  readonly #digests = new Map<string, Uint8Array>();
  readonly #bucketOf = new Map<string, number>();
  readonly #buckets = new Map<number, Map<string, Uint8Array>>();
  /**
   * levels[l]: node index → hash, for non-empty nodes; levels[TREE_DEPTH] holds the root.
   * Below the root each hash is this tree's own array, overwritten in place when the node
   * changes (`#keep`): a changed record then leaves no new long-lived object per level
   * (~17 per changed record, each promoted to V8's old generation and later marked and
   * swept there: most of what a recovery promoted, issue 13). The root is a fresh array
   * each time (callers keep it).
   */
  readonly #levels: Map<number, Uint8Array>[] = Array.from({ length: TREE_DEPTH + 1 }, () => new Map());
  readonly #dirty = new Set<number>();
  /** 0x01 ‖ left ‖ right, reused for every inner node (public hashes only). */
  readonly #nodeInput = (() => {
    const b = new Uint8Array(65);
    b[0] = 1;
    return b;
  })();

  private constructor(readonly empty: Uint8Array[]) {}

  static async create(): Promise<RecordTree> {
    return new RecordTree(await emptyTreeHashes());
  }

  static async of(records: Iterable<readonly [string, Uint8Array]>): Promise<RecordTree> {
    const t = await RecordTree.create();
    for (const [account, bytes] of records) await t.set(account, await recordDigest(bytes));
    return t;
  }

  get size(): number {
    return this.#digests.size;
  }

  /** The account's record digest: the tree's own array, overwritten when the record changes (compare it, do not keep it). */
  digest(account: string): Uint8Array | null {
    return this.#digests.get(account) ?? null;
  }

  async set(account: string, digest: Uint8Array | null): Promise<void> {
    if (this.setKnown(account, digest)) return;
    if (digest === null) return;
    this.#put(account, await bucketOf(account), digest);
  }

  /**
   * `set` without a wait, for an account whose bucket is known (it is in the tree) or a
   * delete: false when the account is new and `set` must place it.
   */
  setKnown(account: string, digest: Uint8Array | null): boolean {
    const b = this.#bucketOf.get(account);
    if (b === undefined) return digest === null;
    this.#put(account, b, digest);
    return true;
  }

  #put(account: string, b: number, digest: Uint8Array | null): void {
    let bucket = this.#buckets.get(b);
    if (digest === null) {
      this.#digests.delete(account);
      this.#bucketOf.delete(account);
      bucket?.delete(account);
      if (bucket?.size === 0) this.#buckets.delete(b);
    } else {
      // The tree's own copy (shared by #digests and the bucket), overwritten in place when the
      // account's record changes again: see #levels.
      const own = this.#digests.get(account);
      if (own !== undefined && own.length === digest.length) own.set(digest);
      else {
        const copy = new Uint8Array(digest);
        this.#digests.set(account, copy);
        this.#bucketOf.set(account, b);
        if (!bucket) this.#buckets.set(b, (bucket = new Map()));
        bucket.set(account, copy);
      }
    }
    this.#dirty.add(b);
  }

  /** The array of node `i` of `level` to hash into: the one already there, else a new one stored there (#levels). */
  static #own(level: Map<number, Uint8Array>, i: number): Uint8Array {
    let own = level.get(i);
    if (own === undefined) level.set(i, (own = new Uint8Array(32)));
    return own;
  }

  /** Stores `hash` at node `i` of `level`: into the array already there when there is one (#levels). */
  static #keep(level: Map<number, Uint8Array>, i: number, hash: Uint8Array): void {
    const own = level.get(i);
    if (own !== undefined) own.set(hash);
    else level.set(i, new Uint8Array(hash));
  }

  /**
   * The root after the changes since the last call: each changed bucket, then its path up
   * (a parent once per level however many of its children changed). Hashes through the
   * provider synchronously when it is synchronous; the node input is built in one
   * scratch buffer (it holds only public hashes).
   */
  async root(): Promise<Uint8Array> {
    if (this.#dirty.size === 0) return this.#levels[TREE_DEPTH]!.get(0) ?? this.empty[TREE_DEPTH]!;
    // One array for the whole walk, sorted: a sorted level's parents come out sorted, with a
    // parent of two changed children twice in a row, so each level is compacted in place
    // (no array or Set per level: ~4 KB of garbage per recovery before).
    const dirty = [...this.#dirty];
    this.#dirty.clear();
    if (dirty.length > 1) dirty.sort((a, b) => a - b);
    const level0 = this.#levels[0]!;
    // With a synchronous provider that hashes into an array, each hash goes straight into
    // the tree's own array (#keep's, or the fresh root): no result array per hash (~6 KB
    // of garbage per recovery, issue 13).
    const into = sha256IntoSync();
    for (const b of dirty) {
      const bucket = this.#buckets.get(b);
      if (!bucket) {
        level0.delete(b);
        continue;
      }
      if (into) {
        into(bucketInput(bucket), RecordTree.#own(level0, b), 0);
        continue;
      }
      let h = digestNow(bucketInput(bucket));
      if (h instanceof Promise) h = await h;
      RecordTree.#keep(level0, b, h);
    }
    const input = this.#nodeInput;
    let count = dirty.length;
    for (let l = 0; l < TREE_DEPTH; l++) {
      const level = this.#levels[l]!;
      const above = this.#levels[l + 1]!;
      let parents = 0;
      let last = -1;
      for (let k = 0; k < count; k++) {
        const p = dirty[k]! >>> 1;
        if (p === last) continue;
        last = p;
        dirty[parents++] = p; // parents <= k: read before written
        const left = level.get(2 * p);
        const right = level.get(2 * p + 1);
        if (!left && !right) {
          above.delete(p);
          continue;
        }
        input.set(left ?? this.empty[l]!, 1);
        input.set(right ?? this.empty[l]!, 33);
        if (into) {
          if (l + 1 === TREE_DEPTH) {
            const root = new Uint8Array(32);
            into(input, root, 0);
            above.set(p, root);
          } else into(input, RecordTree.#own(above, p), 0);
          continue;
        }
        let h = digestNow(input);
        if (h instanceof Promise) h = await h;
        if (l + 1 === TREE_DEPTH) above.set(p, h);
        else RecordTree.#keep(above, p, h);
      }
      count = parents;
    }
    return this.#levels[TREE_DEPTH]!.get(0) ?? this.empty[TREE_DEPTH]!;
  }
}

export interface ResumeOptions {
  /**
   * With no anchor on this platform and a non-empty log in the store: adopt the store's
   * head (verify the whole chain from entry 1 and the root) instead of refusing. An
   * explicit operator decision (spec §13.9) — it trusts the store once.
   */
  readonly adoptWithoutAnchor?: boolean;
  /**
   * Fleet (spec §13.8, §13.9): an entry that a majority of the group answered a fresh
   * challenge with (verified by the caller, `verifyChallengeAnswer`). When it is newer
   * than this node's anchor (a node that lagged past the store's kept log, or lost its
   * anchor), the chain is verified from it instead of from the anchor: the majority
   * vouches for everything up to it. Never the store's word alone.
   */
  readonly evidence?: { readonly index: number; readonly mac: Uint8Array };
  /**
   * The evidence is a majority without this node's own answer. Only then may a node whose
   * anchored entry the log no longer shows (pruned: a member far behind) resume from it.
   */
  readonly evidenceWithoutSelf?: boolean;
}

export interface ResumeResult {
  readonly guard: RollbackGuard;
  /** The anchor was missing and the store's head was adopted. */
  readonly adopted: boolean;
  /** Entries past the anchor that were valid and are now captured (a crash between append and capture). */
  readonly caughtUp: number;
  /** The chain was verified from the majority's evidence, not from this node's anchor. */
  readonly fromEvidence?: boolean;
}

/**
 * One node's view of the log: what it captured, and the record tree at that point.
 * Not re-entrant: one `append` at a time, each followed by `capture` (or by `resume`
 * again after a failure). `check` may run at any time.
 */
export class RollbackGuard {
  #captured: Captured;
  #head: LogEntry | null;
  #pending: LogEntry | null = null;
  /** The member-list digest of the captured entry, and of the appended one (null: no list). */
  #members: Uint8Array | null;
  #pendingMembers: Uint8Array | null = null;
  /** MACs of the newest entries this guard appended, captured or verified: the chain acks are checked against. */
  readonly #chain = new Map<number, Uint8Array>();

  private constructor(
    private readonly platform: Platform,
    readonly group: Uint8Array,
    private readonly tree: RecordTree,
    captured: Captured,
  ) {
    this.#captured = captured;
    this.#head = null;
    this.#members = this.#treeMembers();
  }

  #treeMembers(): Uint8Array | null {
    const d = this.tree.digest(MEMBERS_ACCOUNT);
    return d === null ? null : new Uint8Array(d);
  }

  /** SHA-256 of the member list the captured entry's root holds (null: the group has none yet). */
  get membersDigest(): Uint8Array | null {
    return this.#members;
  }

  get captured(): Captured {
    return this.#captured;
  }

  /** Computes an entry's MAC under the log key. */
  static async entryMac(platform: Platform, group: Uint8Array, index: number, prevMac: Uint8Array, root: Uint8Array): Promise<Uint8Array> {
    return platform.mac(KEY_LABELS.logMac, entryMacInput(group, index, prevMac, root));
  }

  /**
   * Rebuilds the guard from the platform's anchor and the store: `entries` are the
   * store's log entries from the anchor's index on (from index 1 if there is no anchor),
   * in the order the store returns them; `records` every stored record.
   * @throws StoreRolledBackError when the store does not continue the anchor
   * @throws AnchorMissingError with no anchor, a non-empty store and no `adoptWithoutAnchor`
   */
  static async resume(platform: Platform, group: Uint8Array, entries: readonly Uint8Array[], records: Iterable<readonly [string, Uint8Array]>, options: ResumeOptions = {}): Promise<ResumeResult> {
    if (group.length !== GROUP_ID_LENGTH) throw new RangeError(`group: ${GROUP_ID_LENGTH} bytes`);
    const raw = await platform.readAnchor();
    const anchor = raw === null ? null : decodeAnchor(raw);
    if (anchor && !equalBytes(anchor.group, group)) throw new StoreRolledBackError('anchor: this node is anchored in another group');
    const tree = await RecordTree.of(records);
    const decoded = entries.map(decodeEntry);
    let start: { index: number; mac: Uint8Array; root: Uint8Array };
    let i = 0;
    const ev = options.evidence;
    if (ev && ev.index > 0 && (anchor === null || ev.index > anchor.index)) {
      // A node never leaves what it captured (its acks counted towards commits): when the
      // log shows the anchored index, the evidenced entry must continue the anchored one
      // (verified from the anchor), never a fork beside it (review: forks).
      const at = anchor === null || anchor.index === 0 ? -1 : decoded.findIndex((e) => e.index === anchor.index);
      if (anchor !== null && anchor.index === 0 && !equalBytes(anchor.mac, GENESIS_MAC)) throw new StoreRolledBackError('anchor: genesis with a MAC');
      if (at >= 0) {
        const mine = decoded[at]!;
        if (!equalBytes(mine.mac, anchor!.mac)) throw new StoreRolledBackError(`store rolled back: the log holds another entry ${anchor!.index} than the one this node captured (a fork): this node does not move to it`);
        const r = await RollbackGuard.#finish(platform, group, tree, decoded.slice(at), { index: mine.index, mac: mine.mac, root: mine.root }, 1, anchor, true);
        const evMac = r.guard.macAt(ev.index);
        if (!evMac || !equalBytes(evMac, ev.mac)) throw new StoreRolledBackError(`store rolled back: the log from this node's anchor does not hold entry ${ev.index} that a majority of the group captured`);
        return r;
      }
      if (anchor !== null && anchor.index > 0 && (!options.evidenceWithoutSelf || (decoded[0] !== undefined && decoded[0].index <= anchor.index))) {
        throw new StoreRolledBackError(`store rolled back: the log does not show this node's captured entry ${anchor.index} under the evidenced entry ${ev.index}`);
      }
      // Majority evidence past the anchor: the chain starts at the evidenced entry.
      const first = decoded.find((e) => e.index === ev.index) ?? decoded[0];
      decoded.splice(0, decoded.indexOf(first!));
      if (!first || first.index !== ev.index || !equalBytes(first.mac, ev.mac)) {
        throw new StoreRolledBackError(`store rolled back: the log does not hold entry ${ev.index} that a majority of the group captured${first ? ` (it starts at ${first.index})` : ''}`);
      }
      if (!equalBytes(first.group, group) || !equalBytes(await RollbackGuard.entryMac(platform, group, first.index, first.prevMac, first.root), first.mac)) {
        throw new StoreRolledBackError(`store rolled back: entry ${first.index} does not authenticate`);
      }
      return RollbackGuard.#finish(platform, group, tree, decoded, { index: first.index, mac: first.mac, root: first.root }, 1, anchor, true);
    }
    if (anchor === null && decoded.length === 0 && tree.size === 0) {
      const guard = new RollbackGuard(platform, group, tree, { index: 0, mac: GENESIS_MAC, root: await tree.root() });
      return { guard, adopted: false, caughtUp: 0 };
    }
    if (anchor === null && !options.adoptWithoutAnchor) throw new AnchorMissingError('this node has no anchor but the store holds a log or records: refusing to trust it (see docs/operations.md, "A lost anchor")');
    if (anchor === null && decoded.length === 0) {
      // Adopting records with no log at all (a store written before rollback protection):
      // the caller commits an entry covering them right away (LogCommitter does).
      const guard = new RollbackGuard(platform, group, tree, { index: 0, mac: GENESIS_MAC, root: await tree.root() });
      return { guard, adopted: true, caughtUp: 0 };
    }
    if (anchor !== null && anchor.index === 0) {
      if (!equalBytes(anchor.mac, GENESIS_MAC)) throw new StoreRolledBackError('anchor: genesis with a MAC');
      start = { index: 0, mac: GENESIS_MAC, root: tree.empty[TREE_DEPTH]! };
    } else {
      // From the anchored entry; when adopting (no anchor), from the oldest entry the store kept.
      const first = decoded[0];
      if (!first || (anchor !== null && (first.index !== anchor.index || !equalBytes(first.mac, anchor.mac)))) {
        throw new StoreRolledBackError(`store rolled back: the log does not hold the captured entry ${anchor?.index ?? '(any)'}${first ? ` (it starts at ${first.index})` : ' (it holds no entry from there)'}`);
      }
      if (!equalBytes(first.group, group) || !equalBytes(await RollbackGuard.entryMac(platform, group, first.index, first.prevMac, first.root), first.mac)) {
        throw new StoreRolledBackError(`store rolled back: entry ${first.index} does not authenticate`);
      }
      start = { index: first.index, mac: first.mac, root: first.root };
      i = 1;
    }
    return RollbackGuard.#finish(platform, group, tree, decoded, start, i, anchor, false);
  }

  static async #finish(platform: Platform, group: Uint8Array, tree: RecordTree, decoded: readonly LogEntry[], start: { index: number; mac: Uint8Array; root: Uint8Array }, from: number, anchor: { index: number } | null, fromEvidence: boolean): Promise<ResumeResult> {
    let i = from;
    let prev = start;
    let root = start.root;
    for (; i < decoded.length; i++) {
      const e = decoded[i]!;
      if (e.index !== prev.index + 1 || !equalBytes(e.prevMac, prev.mac) || !equalBytes(e.group, group)) {
        throw new StoreRolledBackError(`store rolled back: log entry ${e.index} does not follow entry ${prev.index}`);
      }
      if (!equalBytes(await RollbackGuard.entryMac(platform, group, e.index, e.prevMac, e.root), e.mac)) throw new StoreRolledBackError(`store rolled back: log entry ${e.index} does not authenticate`);
      prev = { index: e.index, mac: e.mac, root: e.root };
      root = e.root;
    }
    if (!equalBytes(await tree.root(), root)) throw new StoreRolledBackError(`store rolled back: the records do not match the root of log entry ${prev.index}`);
    const guard = new RollbackGuard(platform, group, tree, { index: prev.index, mac: prev.mac, root });
    for (let j = Math.max(0, from - 1); j < decoded.length; j++) guard.#remember(decoded[j]!.index, decoded[j]!.mac);
    const caughtUp = prev.index - (anchor?.index ?? 0);
    if (anchor === null || caughtUp > 0) await writeAnchor(platform, group, prev.index, prev.mac);
    return { guard, adopted: anchor === null && !fromEvidence, caughtUp: anchor === null ? 0 : caughtUp, fromEvidence };
  }

  /**
   * Before every decision: the stored bytes of `account` (null: no record) must be what
   * the captured root says.
   * @throws StoreRolledBackError naming the account
   */
  async check(account: string, stored: Uint8Array | null): Promise<void> {
    const want = this.tree.digest(account);
    if (stored === null && want === null) return;
    if (stored !== null && want !== null) {
      let d = digestNow(stored);
      if (d instanceof Promise) d = await d;
      if (equalBytes(d, want)) return;
    }
    throw new StoreRolledBackError(
      want === null ? 'store rolled back or edited: a record exists that the log does not hold' : stored === null ? 'store rolled back or edited: the log holds a record the store lost' : 'store rolled back or edited: the record is not the one the log holds',
      account,
    );
  }

  /**
   * The entry for the next batch: applies `changes` to the tree and MACs the new root.
   * The caller commits the entry atomically with the changes, then calls `capture`; on
   * any failure in between, this guard must be discarded (resume again from the store).
   */
  async append(changes: readonly RecordChange[]): Promise<LogEntry> {
    if (this.#pending) throw new Error('RollbackGuard: an entry is appended and not captured');
    for (const c of changes) {
      let d = c.value === null ? null : digestNow(c.value);
      if (d instanceof Promise) d = await d;
      if (!this.tree.setKnown(c.account, d)) await this.tree.set(c.account, d);
    }
    const root = await this.tree.root();
    this.#pendingMembers = this.#treeMembers();
    const index = this.#captured.index + 1;
    const prevMac = this.#captured.mac;
    const mac = await RollbackGuard.entryMac(this.platform, this.group, index, prevMac, root);
    const entry = { group: this.group, index, prevMac, root, mac };
    this.#pending = entry;
    return entry;
  }

  /** After the store committed `entry`: writes the anchor (durable when this resolves). */
  async capture(entry: LogEntry): Promise<void> {
    if (this.#pending !== entry) throw new Error('RollbackGuard: capture of an entry that is not the one appended');
    await writeAnchor(this.platform, this.group, entry.index, entry.mac);
    this.#captured = { index: entry.index, mac: entry.mac, root: entry.root };
    this.#members = this.#pendingMembers;
    this.#head = entry;
    this.#pending = null;
    this.#remember(entry.index, entry.mac);
  }

  #remember(index: number, mac: Uint8Array): void {
    this.#chain.set(index, mac);
    if (this.#chain.size > CHAIN_MEMORY) this.#chain.delete(this.#chain.keys().next().value!);
  }

  /** The MAC of entry `index` of this node's chain, if it is among the newest it knows (null: unknown). */
  macAt(index: number): Uint8Array | null {
    if (index === 0) return GENESIS_MAC;
    return this.#chain.get(index) ?? null;
  }

  /**
   * Witnessing a run of entries (fleet followers, and a leader catching up): each must be
   * the next in order, authentic, and its digest changes must give its root; ONE anchor
   * write for the whole run (batched capture, spec §13.7). Entries at or below the
   * captured index are skipped (the one at the captured index must be the captured one).
   * On a StoreRolledBackError the guard is unusable: resume again.
   * @throws StoreRolledBackError for an entry out of order, not authentic, or whose changes do not give its root
   */
  async witnessAll(items: readonly { readonly entry: LogEntry; readonly changes: readonly DigestChange[] }[]): Promise<number> {
    if (this.#pending) throw new Error('RollbackGuard: witness while an entry is appended');
    let prev = this.#captured;
    let n = 0;
    for (const { entry, changes } of items) {
      if (entry.index < prev.index) continue;
      if (entry.index === prev.index) {
        if (!equalBytes(entry.mac, prev.mac)) throw new StoreRolledBackError(`log: entry ${entry.index} is not the one this node captured`);
        continue;
      }
      if (!equalBytes(entry.group, this.group) || entry.index !== prev.index + 1 || !equalBytes(entry.prevMac, prev.mac)) {
        throw new StoreRolledBackError(`log: entry ${entry.index} does not follow entry ${prev.index}`);
      }
      if (!equalBytes(await RollbackGuard.entryMac(this.platform, this.group, entry.index, entry.prevMac, entry.root), entry.mac)) throw new StoreRolledBackError(`log: entry ${entry.index} does not authenticate`);
      for (const c of changes) await this.tree.set(c.account, c.digest);
      if (!equalBytes(await this.tree.root(), entry.root)) throw new StoreRolledBackError(`log: the changes of entry ${entry.index} do not give its root`);
      prev = { index: entry.index, mac: entry.mac, root: entry.root };
      this.#remember(entry.index, entry.mac);
      n++;
    }
    if (n > 0) {
      await writeAnchor(this.platform, this.group, prev.index, prev.mac);
      this.#captured = prev;
      this.#members = this.#treeMembers();
    }
    return n;
  }

  /**
   * This node's answer to a fresh challenge (spec §13.8, §13.11): what it captured and the
   * member list of that entry, bound to the challenge and the asker.
   */
  async answerChallenge(nonce: Uint8Array, asker: string): Promise<{ index: number; mac: Uint8Array; members: Uint8Array; answer: Uint8Array }> {
    const { index, mac } = this.#captured;
    const members = this.#members ?? NO_MEMBERS;
    return { index, mac, members, answer: await this.platform.mac(KEY_LABELS.logMac, challengeMacInput(this.group, nonce, asker, await nodeIdOf(this.platform), index, mac, members)) };
  }

  /** The entry captured last by this guard (null right after resume). */
  get head(): LogEntry | null {
    return this.#head;
  }

  /**
   * Witnessing (fleet followers): captures `entry` if it is the next one in order, MAC
   * valid, and the tree after `changes` has its root; idempotent for the entry captured
   * already. Returns the ack MAC for this node.
   * @throws StoreRolledBackError for an entry out of order or not authentic
   */
  async witness(entry: LogEntry, changes: readonly RecordChange[]): Promise<Uint8Array> {
    if (entry.index === this.#captured.index && equalBytes(entry.mac, this.#captured.mac)) return this.ack();
    if (this.#pending) throw new Error('RollbackGuard: witness while an entry is appended');
    if (!equalBytes(entry.group, this.group) || entry.index !== this.#captured.index + 1 || !equalBytes(entry.prevMac, this.#captured.mac)) {
      throw new StoreRolledBackError(`log: entry ${entry.index} does not follow the captured entry ${this.#captured.index}`);
    }
    if (!equalBytes(await RollbackGuard.entryMac(this.platform, this.group, entry.index, entry.prevMac, entry.root), entry.mac)) throw new StoreRolledBackError(`log: entry ${entry.index} does not authenticate`);
    for (const c of changes) await this.tree.set(c.account, c.value === null ? null : await recordDigest(c.value));
    if (!equalBytes(await this.tree.root(), entry.root)) throw new StoreRolledBackError(`log: the changes of entry ${entry.index} do not give its root`);
    this.#pending = entry;
    this.#pendingMembers = this.#treeMembers();
    await this.capture(entry);
    return this.ack();
  }

  /** This node's ack of what it captured, under its own node ID (nodeIdOf). */
  async ack(): Promise<Uint8Array> {
    return this.platform.mac(KEY_LABELS.logMac, ackMacInput(this.group, await nodeIdOf(this.platform), this.#captured.index, this.#captured.mac));
  }
}

/**
 * Whether `entry` is committed: a majority of `members` (by node ID) acked it or a later
 * entry of the same chain (`acks`: node → {index, mac, ack}; a later index counts only if
 * the caller vouches the chain, e.g. the leader that appended both). Acks are verified.
 */
export async function committed(platform: Platform, group: Uint8Array, entry: LogEntry, acks: ReadonlyMap<string, { index: number; mac: Uint8Array; ack: Uint8Array }>, members: readonly string[], chain: (index: number) => Uint8Array | null): Promise<boolean> {
  let count = 0;
  for (const id of new Set(members)) {
    const a = acks.get(id);
    if (!a || a.index < entry.index) continue;
    const mac = chain(a.index);
    if (!mac || !equalBytes(mac, a.mac)) continue;
    if (!equalBytes(await platform.mac(KEY_LABELS.logMac, ackMacInput(group, id, a.index, a.mac)), a.ack)) continue;
    count++;
  }
  return count * 2 > new Set(members).size;
}

/** The digest form of a batch's changes (what the fleet's log value carries, spec §13.7). */
export async function digestChanges(changes: readonly RecordChange[]): Promise<DigestChange[]> {
  return Promise.all(changes.map(async (c) => ({ account: c.account, digest: c.value === null ? null : await recordDigest(c.value) })));
}

/**
 * The fleet's stored log value (spec §13.7): entry ‖ u32 count ‖ per change: u16 len ‖
 * account ‖ u8 (0: deleted, 1: digest follows) ‖ [digest]. A bare entry (the one-node
 * format) decodes with `changes` null.
 */
export function encodeLogValue(entry: LogEntry, changes: readonly DigestChange[]): Uint8Array {
  const parts: Uint8Array[] = [encodeEntry(entry), new Uint8Array(4)];
  new DataView(parts[1]!.buffer).setUint32(0, changes.length);
  for (const c of changes) {
    const a = utf8(c.account);
    if (a.length > 0xffff) throw new RangeError('account: too long');
    parts.push(new Uint8Array([a.length >> 8, a.length & 0xff]), a, new Uint8Array([c.digest ? 1 : 0]));
    if (c.digest) parts.push(c.digest);
  }
  return concat(...parts);
}

/** @throws StoreRolledBackError for bytes that are not a log value */
export function decodeLogValue(bytes: Uint8Array): { entry: LogEntry; changes: DigestChange[] | null } {
  const entry = decodeEntry(bytes.subarray(0, Math.min(bytes.length, LOG_ENTRY_LENGTH)));
  if (bytes.length === LOG_ENTRY_LENGTH) return { entry, changes: null };
  const bad = (): never => {
    throw new StoreRolledBackError(`log: entry ${entry.index}: a malformed change list`);
  };
  if (bytes.length < LOG_ENTRY_LENGTH + 4) bad();
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = view.getUint32(LOG_ENTRY_LENGTH);
  let at = LOG_ENTRY_LENGTH + 4;
  const changes: DigestChange[] = [];
  const dec = new TextDecoder('utf-8', { fatal: true });
  for (let i = 0; i < count; i++) {
    if (at + 3 > bytes.length) bad();
    const len = view.getUint16(at);
    at += 2;
    if (at + len + 1 > bytes.length) bad();
    let account = '';
    try {
      account = dec.decode(bytes.subarray(at, at + len));
    } catch {
      bad();
    }
    at += len;
    const flag = bytes[at++];
    if (flag === 0) changes.push({ account, digest: null });
    else if (flag === 1 && at + 32 <= bytes.length) {
      changes.push({ account, digest: bytes.slice(at, at + 32) });
      at += 32;
    } else bad();
  }
  if (at !== bytes.length) bad();
  return { entry, changes };
}

/** The bytes a challenge answer's MAC covers (spec §13.8, §13.11): `members` is the member-list digest of the entry (NO_MEMBERS: none). */
export function challengeMacInput(group: Uint8Array, nonce: Uint8Array, asker: string, responder: string, index: number, entryMac: Uint8Array, members: Uint8Array): Uint8Array {
  const a = utf8(asker);
  const r = utf8(responder);
  if (members.length !== 32) throw new RangeError('members: a 32-byte digest');
  return concat(utf8(LOG_LABELS.challenge), new Uint8Array([0]), group, nonce, new Uint8Array([a.length]), a, new Uint8Array([r.length]), r, u64(index), entryMac, members);
}

/** Whether `answer` is `responder`'s answer to `nonce` asked by `asker`, for (index, entryMac, members). */
export async function verifyChallengeAnswer(platform: Platform, group: Uint8Array, nonce: Uint8Array, asker: string, responder: string, index: number, entryMac: Uint8Array, members: Uint8Array, answer: Uint8Array): Promise<boolean> {
  return equalBytes(await platform.mac(KEY_LABELS.logMac, challengeMacInput(group, nonce, asker, responder, index, entryMac, members)), answer);
}

/** Whether `ack` is `nodeId`'s statement that it captured (index, entryMac). */
export async function verifyAck(platform: Platform, group: Uint8Array, nodeId: string, index: number, entryMac: Uint8Array, ack: Uint8Array): Promise<boolean> {
  return equalBytes(await platform.mac(KEY_LABELS.logMac, ackMacInput(group, nodeId, index, entryMac)), ack);
}

/** A strict majority of a group of `size` members. */
export function majority(size: number): number {
  return Math.floor(size / 2) + 1;
}

/**
 * The commit rule (spec §13.7): the highest index that a majority of distinct members
 * captured, given each member's highest verified capture (the appender's own included).
 * 0 when fewer than a majority have spoken.
 */
export function quorumIndex(captured: ReadonlyMap<string, number>, size: number): number {
  const sorted = [...captured.values()].sort((a, b) => b - a);
  const m = majority(size);
  return sorted.length >= m ? sorted[m - 1]! : 0;
}
