/**
 * Rollback protection for an etcd fleet (spec §13.6–§13.9): a group of N vault nodes
 * over one etcd prefix, the store trusted for availability only.
 *
 * - Leader (§13.6). One node appends: it holds `group/leader` under an etcd lease, and
 *   every append txn compares that key's create_revision (its term) and the log head.
 *   Others answer 503 `not-leader`.
 * - Witnesses and acks (§13.7). Every node follows the log in etcd, verifies each entry
 *   strictly in order (MAC chain, root over the change digests it carries), captures the
 *   run in its anchor with one write, and publishes `group/acks/<node>` = index ‖ mac ‖
 *   ack (a MAC under the log key over group, node, index, mac). Acks in etcd are
 *   untrusted: the leader counts a node only for the index its ack names, and only if
 *   that is the MAC of its own chain at that index, so an ack replayed by the operator
 *   can only be older (delay), never make an uncaptured entry count.
 * - Commit before answer (§13.7). The leader resolves a batch's requests only once a
 *   majority (itself included) captured an index ≥ the batch's entry. Batches pipeline:
 *   the next batch is appended while the previous one waits for its acks.
 * - Takeover (§13.8). A new leader writes a fresh random challenge; members answer with
 *   a MAC over (challenge, asker, responder, captured index, mac). With a majority of
 *   answers it knows an index M ≥ every committed entry; it must have followed the log
 *   in etcd to at least M, on M's MAC, before it serves — else it refuses (the store
 *   hides committed entries: deny service, never serve older state).
 * - Rejoin (§13.9). A node whose anchor is gone (new machine, after the key ceremony) or
 *   behind the log etcd still keeps resumes from the same kind of majority evidence
 *   (without counting itself when it has no anchor), never from etcd's word alone.
 * - Members (§13.11). The group's member list is a record in the tree. The leader
 *   records it once all N identities follow (bootstrap), and changes it one member at a
 *   time on the operator's proposal (`group/proposal`, `coffer-vault fleet replace`),
 *   only to a node that already follows its chain. Commits and evidence count members
 *   only: an old HSM kept after a replacement counts for nothing.
 */
import { sha256, toHex } from '@coffer/protocol';
import * as http from 'node:http';
import * as https from 'node:https';
import type { Platform } from '../core/platform.js';
import {
  AnchorMissingError,
  committedBy,
  chainOf,
  answersOnChain,
  decodeAnchor,
  decodeEntry,
  decodeLogValue,
  decodeMembers,
  digestChanges,
  encodeEntry,
  encodeLogValue,
  encodeMembers,
  evidenceOf,
  majority,
  MEMBERS_ACCOUNT,
  NODE_ID_PATTERN,
  NO_MEMBERS,
  nodeIdOf,
  RollbackGuard,
  StoreRolledBackError,
  verifyAck,
  verifyChallengeAnswer,
  ackMacInput,
  MAC_LENGTH,
  type Answer,
  type MemberRecord,
  type DigestChange,
  type LogEntry,
} from '../core/rollback.js';
import { KEY_LABELS } from '../core/key-labels.js';
import type { EtcdRecordStore, GroupEvent } from '../store/etcd.js';
import { LogConflictError, StoreError, type BatchChange, type RecordVersion } from '../store/store.js';
import { checkRecord, recordMatches, type CommitOptions, type Committer } from './log-commit.js';
import type { VaultMetrics } from './metrics.js';
import type { ServiceLog } from './vault-service.js';

/** This node does not append for the group now: 503 `not-leader`, the front end tries another node. */
export class NotLeaderError extends Error {
  override readonly name = 'NotLeaderError';
  constructor(
    message: string,
    readonly leader: string | null,
  ) {
    super(message);
  }
}

export interface FleetCommitterOptions {
  readonly platform: Platform;
  readonly store: EtcdRecordStore;
  readonly group: Uint8Array;
  /** Members of the group (N): a batch commits when floor(N/2)+1 of them captured it. */
  readonly groupSize: number;
  readonly metrics: VaultMetrics;
  readonly log?: ServiceLog;
  /** The leader key's lease (seconds; default 2). */
  readonly leaseSeconds?: number;
  /** At most this many requests per log entry (default: the store's limit); 1 measures what batching buys. */
  readonly maxBatchRequests?: number;
  /**
   * Upgrading a fleet whose etcd holds records but NO log (written before rollback
   * protection): with no anchor, take the records as they are (an operator decision,
   * COFFER_VAULT_ADOPT_LOG_HEAD=1 on every node for that one start). Never used once a
   * log exists: a member with a lost anchor rejoins from the group's evidence (§13.9).
   */
  readonly adoptUnloggedStore?: boolean;
  /**
   * Where the other members reach this node's request listener (config `group.peerUrl`),
   * published as `group/peers/<node>`: followers then send their acks straight to the
   * leader (`POST /v1/group/ack`) and put them in etcd at most every ACK_STORE_MS
   * (spec §13.7). Without it, acks go through etcd only.
   */
  readonly peerUrl?: string;
  /** TEST ONLY: SIGKILL after a guess-counting batch commits in etcd, before this leader's anchor write and any ack. */
  readonly insecureCrashBeforeCaptureForTesting?: boolean;
  /**
   * TEST ONLY: after a batch commits in etcd, the leader waits (up to 3 s) until a
   * majority's acks of its entry are in etcd before its own anchor write, so followers'
   * acks always arrive before the leader captured what they ack.
   */
  readonly acksBeforeCaptureForTesting?: boolean;
  /** TEST ONLY: one interval (ms) for every full pass, busy or quiet (default: FULL_PASS_MS / FULL_PASS_BUSY_MS). */
  readonly fullPassMsForTesting?: number;
}

interface Waiting {
  readonly changes: readonly BatchChange[];
  /** The stored bytes the decision was made on (undefined: not given). */
  readonly prior: Uint8Array | null | undefined;
  readonly crashBeforeCapture: boolean;
  readonly resolve: (versions: Map<string, RecordVersion>) => void;
  readonly reject: (err: Error) => void;
}

interface Pending {
  readonly index: number;
  /** The member list in force before this entry (null: none recorded yet): who commits it. */
  readonly members: MemberRecord | null;
  /** Hex of that record's digest (null: none). */
  readonly membersHex: string | null;
  readonly since: number;
  readonly versions: Map<string, RecordVersion>;
  readonly batch: readonly Waiting[];
}

type Role = 'follower' | 'preparing' | 'leader';

/**
 * A batch not confirmed by a majority within this long is failed (503, nothing answered;
 * its entry may still commit later, counting the guess): members refusing the store, or down.
 */
const COMMIT_TIMEOUT_MS = 5000;
/** How long a request waits for this node to finish taking over before `not-leader`. */
const TAKEOVER_WAIT_MS = 4000;
/**
 * A full pass (read the group's keys and the log from etcd) every FULL_PASS_MS while
 * either watch stream was quiet for FULL_PASS_BUSY_MS (idle, or a stalled watch on a
 * hung member), else every FULL_PASS_BUSY_MS. Between full passes the watch's events
 * drive the common case (§13.7: a follower witnesses the entries the events carry, the
 * leader counts the acks they carry). Anything else in the events (the leader key, a
 * challenge, a gap in the log) asks for a full pass at once.
 */
const FULL_PASS_MS = 100;
const FULL_PASS_BUSY_MS = 1000;

function u64(n: number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}
function readU64(b: Uint8Array): number {
  return Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0));
}
/** index (u64) ‖ mac (32) ‖ proof (32): an ack or a challenge answer as stored in etcd. */
function encodeStatement(index: number, mac: Uint8Array, proof: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + MAC_LENGTH * 2);
  out.set(u64(index), 0);
  out.set(mac, 8);
  out.set(proof, 8 + MAC_LENGTH);
  return out;
}
function decodeStatement(b: Uint8Array): { index: number; mac: Uint8Array; proof: Uint8Array } | null {
  if (b.length !== 8 + MAC_LENGTH * 2) return null;
  const index = readU64(b);
  if (!Number.isSafeInteger(index)) return null;
  return { index, mac: b.slice(8, 8 + MAC_LENGTH), proof: b.slice(8 + MAC_LENGTH) };
}
/** A challenge answer as stored: index (u64) ‖ mac (32) ‖ members digest (32) ‖ proof (32) (spec §13.11). */
function encodeAnswer(index: number, mac: Uint8Array, members: Uint8Array, proof: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + MAC_LENGTH * 3);
  out.set(u64(index), 0);
  out.set(mac, 8);
  out.set(members, 8 + MAC_LENGTH);
  out.set(proof, 8 + MAC_LENGTH * 2);
  return out;
}
function decodeAnswer(b: Uint8Array): { index: number; mac: Uint8Array; members: Uint8Array; proof: Uint8Array } | null {
  if (b.length !== 8 + MAC_LENGTH * 3) return null;
  const index = readU64(b);
  if (!Number.isSafeInteger(index)) return null;
  return { index, mac: b.slice(8, 8 + MAC_LENGTH), members: b.slice(8 + MAC_LENGTH, 8 + MAC_LENGTH * 2), proof: b.slice(8 + MAC_LENGTH * 2) };
}

/**
 * The operator's request to change one member (`group/proposal`, written by
 * `coffer-vault fleet replace OLD NEW`): "replace <old> <new>" in ASCII. etcd's word:
 * the leader checks it against the list its tree holds, and takes it only for a node that
 * already follows its chain (a verified ack), so it cannot be used to name an identity
 * that does not hold the log key; whoever writes etcd is the operator, who may replace
 * members anyway (spec §13.11).
 */
export function parseProposal(value: Uint8Array): { old: string; new: string } | null {
  const m = /^replace ([0-9a-f]{16}) ([0-9a-f]{16})$/.exec(new TextDecoder().decode(value));
  return m && m[1] !== m[2] ? { old: m[1]!, new: m[2]! } : null;
}

export class FleetCommitter implements Committer {
  #me = '';
  #guard: RollbackGuard | null = null;
  #role: Role = 'follower';
  #term: string | null = null;
  #lease: string | null = null;
  #leader: string | null = null;
  #failure: Error | null = null;
  /** The last etcd failure of the follow loop (cleared by a good pass): what a node without a guard reports. */
  #storeError: StoreError | null = null;
  /** This node's open challenge (takeover or rejoin) and the answers' required count. */
  #challenge: { nonce: Uint8Array; purpose: 'takeover' | 'rejoin'; countSelf: boolean } | null = null;
  #answered = new Map<string, string>();
  #acked = new Map<string, number>();
  /**
   * Acks of entries this leader appended but has not captured yet (a follower witnessed
   * the entry from etcd before the leader's own anchor write finished): checked again
   * right after the capture, not dropped until the next full pass. One per member, at
   * most MAX_EARLY_ACKS members (etcd may hold any number of forged ack keys).
   */
  #early = new Map<string, Uint8Array>();
  #lastAckPut = -1;
  /** When this node last put its ack in etcd (direct acks are put there at most every ACK_STORE_MS). */
  #lastAckStored = 0;
  #directBusy = false;
  #directNext: { url: string; statement: Uint8Array; onNotTaken: (() => void) | null } | null = null;
  /** Members' peer URLs as etcd shows them (`group/peers/<node>`; untrusted: a wrong one only delays). */
  #peerUrls = new Map<string, string>();
  /** Member lists seen, by hex SHA-256 of their bytes (verified against the digest before kept). */
  #lists = new Map<string, MemberRecord>();
  /** etcd's `group/members/<digest>` values as the last full pass read them (untrusted). */
  #etcdLists = new Map<string, Uint8Array>();
  /** The captured index when this node began leading: bootstrap counts only acks of later entries. */
  #termStart = 0;
  /** The digest of a joint member record this leader knows committed (it may finish that change). */
  #jointCommitted: string | null = null;
  /** An entry of this leader's term was committed (a new member change waits for one). */
  #termCommitted = false;
  /** A member-list change appended and not yet committed (one at a time). */
  #memberChange = false;
  /** Whether the last evidence counted this node's own answer. */
  #evidenceWithSelf = false;
  /** What this node's guard last captured, with its member list (a rejoin counts its own anchor only with it). */
  #lastSelf: Answer | null = null;
  /** Alarms said once: a proposal refused, more identities than N at bootstrap, not a member. */
  #said = new Set<string>();
  #queue: Waiting[] = [];
  #pending: Pending[] = [];
  #appending = false;
  #closed = false;
  #wakeFlag = false;
  /** What the watch delivered since the last pass (dropped by a full pass, which reads everything). */
  #events: GroupEvent[] = [];
  /** The watch may have missed something, or an event needs the full pass. */
  #resync = true;
  #lastFullPass = 0;
  /** When each watch stream (log/, group/) last delivered events. */
  #lastLogEvent = 0;
  #lastGroupEvent = 0;
  #wakeResolve: (() => void) | null = null;
  #loop: Promise<void> | null = null;
  #keepAlive: NodeJS.Timeout | null = null;
  #watch: { close(): void } | null = null;
  #servingWaiters: Array<() => void> = [];
  /** Resolves after the first pass of the loop (resumed, or failed with the reason requests then get). */
  #firstPass: Promise<void> = Promise.resolve();
  #firstPassDone: (() => void) | null = null;

  constructor(private readonly o: FleetCommitterOptions) {
    if (!Number.isInteger(o.groupSize) || o.groupSize < 1) throw new RangeError('groupSize: a positive integer');
  }

  /** The node ID acks and answers carry (derived from this node's transport key). */
  get nodeId(): string {
    return this.#me;
  }

  get role(): Role {
    return this.#role;
  }

  get captured(): number {
    return this.#guard?.captured.index ?? -1;
  }

  /** Starts following, acking, answering challenges and campaigning. */
  async start(): Promise<void> {
    try {
      this.#me = await nodeIdOf(this.o.platform);
    } catch (err) {
      throw new Error(`fleet group: this node has no transport key (${KEY_LABELS.nodeTransport}), so it cannot ack or answer challenges under its own node ID: set it up through the key ceremony (\`coffer-vault fleet node-key\`, \`fleet join\`), or run a one-node group (group.size 1). ${(err as Error).message}`, { cause: err });
    }
    this.#firstPass = new Promise((r) => (this.#firstPassDone = r));
    this.#watch = this.o.store.watchGroup((events) => {
      if (events === null) this.#resync = true;
      else {
        const now = Date.now();
        for (const e of events) {
          this.#events.push(e);
          if (e.key.startsWith('log/')) this.#lastLogEvent = now;
          else this.#lastGroupEvent = now;
        }
      }
      this.#wake();
    });
    this.#loop = this.#run();
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#wake();
    this.#watch?.close();
    if (this.#keepAlive) clearInterval(this.#keepAlive);
    this.#stepDown('this vault node is shutting down');
    await this.#loop;
    if (this.#lease) await this.o.store.revoke(this.#lease).catch(() => undefined);
  }

  #wake(): void {
    this.#wakeFlag = true;
    this.#wakeResolve?.();
  }

  async #sleep(ms: number): Promise<void> {
    if (this.#wakeFlag) {
      this.#wakeFlag = false;
      return;
    }
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.#wakeResolve = () => {
        clearTimeout(t);
        resolve();
      };
    });
    this.#wakeResolve = null;
    this.#wakeFlag = false;
  }

  async #run(): Promise<void> {
    while (!this.#closed) {
      const full = this.#resync || !this.#guard || this.#role === 'preparing' || this.#challenge !== null || this.#fullPassDue() <= 0;
      const events = this.#events.splice(0);
      try {
        if (full) {
          // Reads everything: the events queued so far are covered (etcd reads are linearizable).
          this.#resync = false;
          this.#lastFullPass = Date.now();
          await this.#step();
        } else if (events.length > 0) await this.#fast(events);
        this.#storeError = null;
      } catch (err) {
        if (err instanceof StoreError) this.#storeError = err;
        this.#fail(err as Error);
        this.#firstPassDone?.();
        await new Promise((r) => setTimeout(r, 300));
      }
      this.#firstPassDone?.();
      this.#firstPassDone = null;
      // An event that asked for a full pass (a challenge, the leader key) gets it at once.
      if (!this.#resync) await this.#sleep(Math.max(1, Math.min(FULL_PASS_MS, this.#fullPassDue())));
    }
  }

  /** ms until the next full pass is due (≤ 0: now). */
  #fullPassDue(): number {
    const now = Date.now();
    const forced = this.o.fullPassMsForTesting;
    if (forced !== undefined) return this.#lastFullPass + forced - now;
    const busy = now - this.#lastLogEvent < FULL_PASS_BUSY_MS && now - this.#lastGroupEvent < FULL_PASS_BUSY_MS;
    return this.#lastFullPass + (busy ? FULL_PASS_BUSY_MS : FULL_PASS_MS) - now;
  }

  #fail(err: Error): void {
    const rolledBack = err instanceof StoreRolledBackError || err instanceof AnchorMissingError;
    if (rolledBack) {
      if (this.#failure?.message !== err.message) {
        this.o.metrics.rollbacksDetected.inc();
        this.o.log?.error({ err: err.message, node: this.#me }, 'ALARM: rollback protection refuses the store; this node serves nothing until it is restored (docs/operations.md, "Store rolled back")');
      }
      this.#failure = err;
      this.#guard = null;
      this.#stepDown(err.message);
    } else if (!(err instanceof StoreError)) {
      this.o.log?.error({ err: err.message }, 'fleet group: unexpected failure; retrying');
      this.#guard = null;
      this.#stepDown(err.message);
    }
    // A StoreError (etcd unreachable for a moment): the lease decides whether we still lead.
  }

  /** One pass: resume or follow, answer challenges, ack, campaign or lead. */
  async #step(): Promise<void> {
    const group = await this.o.store.groupRange('');
    const byKey = new Map(group.map((kv) => [kv.key, kv]));
    const leaderKv = byKey.get('leader');
    this.#leader = leaderKv ? new TextDecoder().decode(leaderKv.value) : null;
    this.#peerUrls.clear();
    for (const [key, kv] of byKey) if (key.startsWith('peers/')) this.#peerUrls.set(key.slice('peers/'.length), new TextDecoder().decode(kv.value));
    if (this.o.peerUrl && this.#peerUrls.get(this.#me) !== this.o.peerUrl) await this.o.store.groupPut(`peers/${this.#me}`, new TextEncoder().encode(this.o.peerUrl));
    this.#etcdLists = new Map([...byKey].filter(([key]) => key.startsWith('members/')).map(([key, kv]) => [key.slice('members/'.length), kv.value]));
    if (this.#role !== 'follower' && (!leaderKv || leaderKv.createRevision !== this.#term)) this.#stepDown('lost the leader key (lease expired or deleted)');

    // Review 2: an open challenge etcd no longer shows (a copy restored, a key deleted) is
    // asked again under a new nonce: the members answer each nonce once, and the asker
    // would wait for good (a rejoining node; a new leader holding the leader key).
    const open = this.#challenge;
    if (open) {
      const shown = byKey.get(`challenge/${this.#me}`)?.value;
      if (!shown || toHex(shown) !== toHex(open.nonce)) {
        this.#challenge = { ...open, nonce: this.o.platform.randomBytes(32) };
        await this.o.store.groupPut(`challenge/${this.#me}`, this.#challenge.nonce);
      }
    }
    if (!this.#guard) await this.#resume(byKey);
    if (!this.#guard) return;
    if (this.#role !== 'leader') await this.#follow();
    const g = this.#guard;
    if (g) this.#lastSelf = { index: g.captured.index, mac: g.captured.mac, members: g.membersDigest ?? NO_MEMBERS };
    await this.#answerChallenges(group);
    if (this.#role !== 'leader') {
      // Publish (again) when we captured more, or when what etcd shows is not our latest
      // ack (an operator replaying an older one only delays until this pass).
      const g = this.#guard;
      const shown = byKey.get(`acks/${this.#me}`)?.value;
      const shownIndex = shown && shown.length === 8 + MAC_LENGTH * 2 ? readU64(shown) : -1;
      await this.#publishAck(g, shownIndex !== g.captured.index);
    }
    if (!leaderKv && this.#role === 'follower' && (await this.#isMember())) await this.#campaign();
    if (this.#role === 'preparing') await this.#prepare(group);
    if (this.#role === 'leader') await this.#countAcks(group);
    // A leader the list no longer holds (it was replaced) steps aside for a member.
    if (this.#role === 'leader' && !this.#memberChange && !(await this.#isMember())) this.#stepDown('this node is no longer a member of the group');
    if (this.#role === 'leader') await this.#manageMembers(byKey.get('proposal')?.value ?? null);
  }

  /**
   * The member record with this digest (from this node's own tree or a MACed answer): one
   * known already, else etcd's `group/members/<digest>` or `records/`, whichever has these
   * bytes (etcd's word, kept only when the digest matches and the record decodes). null:
   * not known (etcd lost it). Only digests asked for are kept: whatever else etcd holds
   * under `group/members/` costs nothing.
   */
  async #list(digest: Uint8Array | null): Promise<MemberRecord | null> {
    if (digest === null) return null;
    const hex = toHex(digest);
    const known = this.#lists.get(hex);
    if (known) return known;
    const fromGroup = this.#etcdLists.get(hex);
    const candidates = fromGroup ? [fromGroup] : [];
    if (!fromGroup) {
      const stored = await this.o.store.get(MEMBERS_ACCOUNT);
      if (stored) candidates.push(stored.value);
    }
    for (const bytes of candidates) {
      if (toHex(await sha256(bytes)) !== hex) continue;
      try {
        const record = decodeMembers(bytes);
        this.#lists.set(hex, record);
        return record;
      } catch {
        return null;
      }
    }
    return null;
  }

  #sayOnce(key: string, say: () => void): void {
    if (this.#said.has(key)) return;
    if (this.#said.size >= 256) this.#said.clear(); // etcd's keys choose these: bounded
    this.#said.add(key);
    say();
  }

  /**
   * The leader's part of membership (spec §13.11), one change in flight at a time:
   * - no record yet: record the list once every one of the N identities follows this chain;
   * - a change under way (joint: both lists): finish it — drop the previous list — once
   *   this leader knows the joint record was committed by both lists (it committed it, or
   *   committed the same record again in its own term: a commit under both lists, so the
   *   old list's majority had captured the change); before that, commit it again;
   * - else the operator's proposal to replace one member, when the new node follows this
   *   chain and this leader committed an entry of its own term: the joint record.
   */
  async #manageMembers(proposal: Uint8Array | null): Promise<void> {
    const guard = this.#guard;
    if (!guard || this.#memberChange) return;
    const current = guard.membersDigest;
    let next: MemberRecord;
    let why: string;
    let prior: Uint8Array | null = null;
    let joint: string | null = null;
    let finish = false;
    if (current === null) {
      // Identities that acked an entry of this term: alive and following now (an ack key a
      // dead identity left in etcd names an older entry).
      const following = new Set([this.#me, ...[...this.#acked].filter(([, i]) => i > this.#termStart).map(([id]) => id)]);
      if (following.size < this.o.groupSize) {
        // Review 2: no account is written before the list (#appendLoop), so no request brings
        // the entry of this term the members' acks must name: an empty one (as Raft's leaders
        // append a no-op), once per term.
        if (guard.captured.index !== this.#termStart || this.#pending.length > 0 || this.#appending) return;
        this.#memberChange = true;
        this.commit([]).then(
          () => {
            this.#memberChange = false;
            this.#resync = true; // the list is recorded in a full pass: at once, not at the next due one
            this.#wake();
          },
          (err: Error) => {
            this.#memberChange = false;
            this.o.log?.warn({ err: err.message }, 'fleet group: the empty entry before recording the members did not commit; it is tried again');
          },
        );
        return;
      }
      if (following.size > this.o.groupSize) {
        this.#sayOnce(`bootstrap:${[...following].sort().join(',')}`, () => this.o.log?.error({ identities: [...following].sort(), size: this.o.groupSize }, `ALARM: fleet group: more identities than the group's ${this.o.groupSize} members follow its log; the member list is not recorded until the extra ones leave (coffer-vault fleet leave on them; spec §13.11)`));
        return;
      }
      next = { members: [...following].sort(), previous: [] };
      why = 'recording the group\'s members (every one of them follows the log)';
    } else {
      const record = await this.#list(current);
      if (record === null) return;
      prior = encodeMembers(record.members, record.previous);
      if (record.previous.length > 0) {
        if (this.#jointCommitted === toHex(current)) {
          next = { members: record.members, previous: [] };
          finish = true;
          why = `finishing the member change (the list before it, ${record.previous.join(', ')}, dropped)`;
        } else {
          next = record;
          joint = toHex(current);
          why = 'committing the member change under way again in this term (both lists), before finishing it';
        }
      } else {
        if (proposal === null) return;
        const list = record.members;
        const p = parseProposal(proposal);
        const refuse = (reason: string): void => this.#sayOnce(`proposal:${toHex(proposal)}`, () => this.o.log?.error({ proposal: new TextDecoder().decode(proposal).slice(0, 80), reason }, 'fleet group: refusing the member change proposed in etcd (group/proposal)'));
        if (p === null) return refuse('not "replace OLD NEW" with two different node IDs');
        if (!list.includes(p.old)) {
          if (list.includes(p.new)) await this.o.store.groupDelete('proposal'); // done already
          else refuse(`${p.old} is not a member`);
          return;
        }
        if (list.includes(p.new)) return refuse(`${p.new} is a member already`);
        if (!this.#acked.has(p.new)) {
          this.#sayOnce(`waiting:${p.new}`, () => this.o.log?.warn({ node: p.new }, 'fleet group: the proposed new member does not follow the log yet (no verified ack on this chain); waiting'));
          return;
        }
        if (!this.#termCommitted) {
          // An entry of this term committed first (as Raft's leaders before a change): with
          // no requests coming, the same record again.
          next = record;
          why = 'committing an entry of this term before the member change';
        } else {
          next = { members: [...list.filter((id) => id !== p.old), p.new].sort(), previous: list };
          why = `replacing member ${p.old} by ${p.new} (both lists until it is finished)`;
        }
      }
    }
    const bytes = encodeMembers(next.members, next.previous);
    const digest = toHex(await sha256(bytes));
    this.#lists.set(digest, next);
    // Kept by digest for nodes that must resolve an older record from an answer (§13.11).
    await this.o.store.groupPut(`members/${digest}`, bytes);
    this.#memberChange = true;
    this.o.log?.warn({ members: next.members, previous: next.previous }, `fleet group: ${why}`);
    this.commit([{ account: MEMBERS_ACCOUNT, value: bytes }], { prior }).then(
      async () => {
        this.#memberChange = false;
        // A joint record committed in this term (from the plain list: by the old list's
        // majority; again: by both): the change can be finished.
        if (next.previous.length > 0) this.#jointCommitted = joint ?? digest;
        this.o.log?.warn({ members: next.members, previous: next.previous }, 'fleet group: member record committed');
        if (finish) await this.o.store.groupDelete('proposal').catch(() => undefined);
        this.#wake();
      },
      (err: Error) => {
        this.#memberChange = false;
        this.o.log?.warn({ err: err.message }, 'fleet group: the member change did not commit; it is tried again');
      },
    );
  }

  /**
   * Between full passes, from the watch's events alone (the common case under load): a
   * follower witnesses the log entries they carry and acks; the leader counts the acks
   * they carry. The same checks as the full pass (witnessAll, #countAcks); whatever is
   * not the plain next step (a gap, an entry that does not decode, the leader key, a
   * challenge) is left to a full pass, at once.
   */
  async #fast(events: readonly GroupEvent[]): Promise<void> {
    const guard = this.#guard!;
    const acks: GroupEvent[] = [];
    const entries = new Map<number, { entry: LogEntry; changes: DigestChange[] }>();
    for (const e of events) {
      if (e.key.startsWith('log/')) {
        // Deletions are the leader's pruning (a full pass checks what the log still holds);
        // the leader's own entries it knows.
        if (e.value === null || this.#role === 'leader') continue;
        let item: ReturnType<typeof decodeLogValue>;
        try {
          item = decodeLogValue(e.value);
        } catch {
          this.#resync = true;
          continue;
        }
        if (item.changes === null) this.#resync = true;
        else if (item.entry.index > guard.captured.index) entries.set(item.entry.index, { entry: item.entry, changes: item.changes });
      } else if (e.key.startsWith('group/acks/')) {
        if (this.#role === 'leader') acks.push({ key: e.key.slice('group/'.length), value: e.value });
        // A follower's own ack shown older than it put (a replay): repaired by the full pass.
      } else this.#resync = true;
    }
    if (this.#role === 'leader') {
      if (acks.length > 0) await this.#countAcks(acks);
      else this.#release();
      return;
    }
    if (this.#role !== 'follower' || entries.size === 0) return;
    const run: Array<{ entry: LogEntry; changes: DigestChange[] }> = [];
    for (let i = guard.captured.index + 1; entries.has(i); i++) run.push(entries.get(i)!);
    // A gap (events missed, or the store skipping an index): the full pass reads the log.
    if (run.length < entries.size) this.#resync = true;
    if (run.length === 0) return;
    try {
      await guard.witnessAll(run);
    } catch (err) {
      this.#guard = null;
      throw err;
    }
    await this.#publishAck(guard);
  }

  /**
   * Publishes this node's ack of what it captured (when it captured more than it last
   * published). With the leader's peer URL known, the ack goes straight to the leader and
   * into etcd at most every ACK_STORE_MS (or at once if the leader did not take it): one
   * raft write per log entry instead of one per member. etcd's copy is what a full pass,
   * a new leader or a leader without a direct path counts (spec §13.7).
   */
  async #publishAck(guard: RollbackGuard, force = false): Promise<void> {
    if (!force && guard.captured.index === this.#lastAckPut) return;
    const { index, mac } = guard.captured;
    const ack = await guard.ack();
    const statement = encodeStatement(index, mac, ack);
    this.#lastAckPut = index;
    const url = this.#role === 'follower' && this.#leader && this.#leader !== this.#me ? this.#peerUrls.get(this.#leader) : undefined;
    const store = async () => {
      this.#lastAckStored = Date.now();
      await this.o.store.groupPut(`acks/${this.#me}`, statement);
    };
    if (!url) return store();
    const throttled = !force && Date.now() - this.#lastAckStored < ACK_STORE_MS;
    // A throttled ack the leader does not take goes to etcd after all (a failed put: the
    // next full pass puts it again).
    this.#sendDirect(url, statement, throttled ? () => void store().catch(() => undefined) : null);
    if (!throttled) await store();
  }

  /**
   * One direct ack in flight at a time; while it is, only the newest next one waits (an
   * ack supersedes every older one), so a leader URL that never answers (etcd's word,
   * the operator's to set) costs one socket and one pending ack, not a queue.
   */
  #sendDirect(url: string, statement: Uint8Array, onNotTaken: (() => void) | null): void {
    if (this.#directBusy) {
      this.#directNext = { url, statement, onNotTaken };
      return;
    }
    this.#directBusy = true;
    void sendAck(url, this.#me, statement).then((taken) => {
      this.#directBusy = false;
      if (!taken) onNotTaken?.();
      const next = this.#directNext;
      this.#directNext = null;
      if (next) this.#sendDirect(next.url, next.statement, next.onNotTaken);
    });
  }

  /**
   * An ack a member sent straight to this node (POST /v1/group/ack: node ID ‖ statement).
   * Counted only while leading, with every check an ack from etcd gets (#countAcks): the
   * MAC of our chain at its index and the member's ack MAC. false: not leading (the
   * member then puts it in etcd).
   */
  /** POST /v1/group/ack's exact body length. */
  readonly ackBodyLength = ACK_BODY_LENGTH;

  async receiveAck(body: Uint8Array): Promise<boolean> {
    if (body.length !== ACK_BODY_LENGTH) throw new RangeError(`an ack is ${ACK_BODY_LENGTH} bytes`);
    if (this.#role !== 'leader' || !this.#guard) return false;
    await this.#countAcks([{ key: `acks/${toHex(body.subarray(0, 8))}`, value: body.slice(8) }]);
    return true;
  }

  /** Resume from the anchor and etcd; else from a majority's fresh evidence (§13.9). */
  async #resume(byKey: Map<string, { value: Uint8Array }>): Promise<void> {
    const p = this.o.platform;
    const raw = await p.readAnchor();
    const anchor = raw === null ? null : decodeAnchor(raw);
    if (!this.#challenge || this.#challenge.purpose !== 'rejoin') {
      try {
        const [entries, records] = await Promise.all([this.o.store.readLog(anchor?.index ?? 0), this.o.store.listRecords()]);
        const adopt = this.o.adoptUnloggedStore === true && anchor === null && entries.length === 0;
        const r = await RollbackGuard.resume(p, this.o.group, entries, records, { adoptWithoutAnchor: adopt });
        if (r.adopted) this.o.log?.warn({ records: records.length }, 'rollback protection: this node had no anchor and ADOPTED the records of a store with no log (upgrade to a protected fleet; operator decision: adoptLogHead)');
        this.#installGuard(r.guard, `resumed from the anchor at ${r.guard.captured.index}`);
        return;
      } catch (err) {
        if (!(err instanceof StoreRolledBackError || err instanceof AnchorMissingError)) throw err;
        if (this.o.groupSize === 1) throw err;
        this.o.log?.warn({ err: err.message, anchorIndex: anchor?.index ?? null }, 'fleet group: cannot resume from this node\'s anchor; asking the group for fresh evidence (spec §13.9)');
        // Until the evidence says otherwise, requests are refused with this error (a store
        // that does not continue the anchor is treated as rolled back).
        if (err instanceof StoreRolledBackError) this.#fail(err);
        this.#challenge = { nonce: p.randomBytes(32), purpose: 'rejoin', countSelf: anchor !== null };
        await this.o.store.groupPut(`challenge/${this.#me}`, this.#challenge.nonce);
        return;
      }
    }
    // Collect answers to our rejoin challenge.
    const c = this.#challenge;
    // Its own anchor counts only with the member list of that entry, known from this
    // process's last guard at exactly that entry (§13.11); else the others must suffice.
    const self = this.#lastSelf;
    const own = c.countSelf && anchor && self && self.index === anchor.index && toHex(self.mac) === toHex(anchor.mac) ? self : null;
    const ev = await this.#evidence(byKey, c.nonce, own);
    if (!ev) return; // not yet a majority: the next pass looks again
    // From the anchor (when etcd still shows it): the evidenced entry must continue it.
    const withSelf = this.#evidenceWithSelf;
    const [entries, records] = await Promise.all([this.o.store.readLog(anchor ? anchor.index : ev.index), this.o.store.listRecords()]);
    const r = await RollbackGuard.resume(p, this.o.group, entries, records, { evidence: ev, evidenceWithoutSelf: !withSelf });
    this.#challenge = null;
    await this.o.store.groupDelete(`challenge/${this.#me}`).catch(() => undefined);
    this.o.log?.warn({ index: r.guard.captured.index, evidence: ev.index, hadAnchor: anchor !== null }, 'fleet group: this node caught up from a majority\'s fresh evidence (rejoin, spec §13.9)');
    this.#installGuard(r.guard, 'rejoined');
  }

  #installGuard(guard: RollbackGuard, how: string): void {
    this.#guard = guard;
    this.#failure = null;
    this.#lastAckPut = -1;
    this.o.log?.info({ index: guard.captured.index, node: this.#me }, `rollback protection: on (fleet group of ${this.o.groupSize}); ${how}`);
  }

  /**
   * The highest (index, mac) among fresh answers of a majority (distinct members, MACs
   * verified), this node's own captured state counted when `self` is given. null: not yet.
   */
  async #evidence(byKey: Map<string, { value: Uint8Array }>, nonce: Uint8Array, self: Answer | null): Promise<{ index: number; mac: Uint8Array } | null> {
    const prefix = `answers/${this.#me}/`;
    const found = new Map<string, Answer>();
    if (self) found.set(this.#me, self);
    for (const [key, kv] of byKey) {
      if (!key.startsWith(prefix)) continue;
      const responder = key.slice(prefix.length);
      if (responder === this.#me || !NODE_ID_PATTERN.test(responder)) continue;
      const st = decodeAnswer(kv.value);
      if (!st) continue;
      if (!(await verifyChallengeAnswer(this.o.platform, this.o.group, nonce, this.#me, responder, st.index, st.mac, st.members, st.proof))) continue;
      found.set(responder, { index: st.index, mac: st.mac, members: st.members });
    }
    // Only answers naming an entry of the chain etcd shows count (review: forks): an answer
    // from a fork beside it (a member that captured another history) vouches for nothing here.
    let lowest = Infinity;
    for (const a of found.values()) lowest = Math.min(lowest, a.index);
    if (found.size > 0) {
      const chain = await chainOf(this.o.platform, this.o.group, (await this.o.store.readLog(Math.max(1, lowest))).map(decodeEntry));
      const on = answersOnChain(found, chain);
      found.clear();
      for (const [id, a] of on) found.set(id, a);
    }
    this.#evidenceWithSelf = found.has(this.#me);
    // M's own member list decides whose answers count (§13.11): fetched when not known yet.
    let ev = evidenceOf(found, this.o.groupSize, (d) => this.#lists.get(toHex(d)) ?? null);
    if (typeof ev === 'object' && 'need' in ev) {
      const need = ev.need;
      if ((await this.#list(need)) === null) {
        this.#sayOnce(`list:${toHex(need)}`, () => this.o.log?.warn({ members: toHex(need) }, 'fleet group: the member list of the newest answer is not in etcd (group/members/); waiting'));
        return null;
      }
      ev = evidenceOf(found, this.o.groupSize, (d) => this.#lists.get(toHex(d)) ?? null);
    }
    return typeof ev === 'object' && 'index' in ev ? ev : null;
  }

  /** Follow the log from the captured entry (which etcd must still hold) to its head. */
  async #follow(): Promise<void> {
    const guard = this.#guard!;
    for (;;) {
      const at = guard.captured.index;
      const values = await this.o.store.readLogValues(Math.max(at, 1), 256);
      const items = values.map(decodeLogValue);
      // The store's answer must be the captured entry and then consecutive entries: an
      // older entry written back under a newer key, a gap or a missing entry is refused.
      items.forEach((it, k) => {
        const want = (at > 0 ? at : 1) + k;
        if (it.entry.index !== want && (at > 0 || k > 0 || it.entry.index < 1)) {
          this.#guard = null;
          throw new StoreRolledBackError(`store rolled back or edited: the log holds entry ${it.entry.index} where entry ${want} belongs`);
        }
      });
      if (at > 0) {
        const first = items[0];
        if (!first || first.entry.index > at) {
          // The captured entry is gone: truncated/rolled back (empty or starts later).
          this.#guard = null;
          throw new StoreRolledBackError(`store rolled back: the log no longer holds entry ${at} that this node captured${first ? ` (it starts at ${first.entry.index})` : ''}`);
        }
      }
      const run = items.filter((i) => i.entry.index > at);
      if (run.some((i) => i.changes === null)) throw new StoreRolledBackError('log: a fleet entry without its change list');
      try {
        await guard.witnessAll([...items.filter((i) => i.entry.index === at), ...run].map((i) => ({ entry: i.entry, changes: i.changes ?? [] })));
      } catch (err) {
        this.#guard = null;
        throw err;
      }
      if (values.length < 256) return;
    }
  }

  async #answerChallenges(group: ReadonlyArray<{ key: string; value: Uint8Array }>): Promise<void> {
    const guard = this.#guard!;
    for (const kv of group) {
      if (!kv.key.startsWith('challenge/')) continue;
      const asker = kv.key.slice('challenge/'.length);
      if (asker === this.#me || !NODE_ID_PATTERN.test(asker) || kv.value.length !== 32) continue;
      // Once per challenge: any answer a majority gives after the nonce was written is
      // fresh enough (the asker takes the highest); a challenge left by a dead asker costs nothing more.
      const tag = toHex(kv.value);
      // Answered already, and etcd still shows the answer (review 2: one lost with a
      // restored copy is given again).
      if (this.#answered.get(asker) === tag && group.some((g) => g.key === `answers/${asker}/${this.#me}`)) continue;
      const a = await guard.answerChallenge(kv.value, asker);
      await this.o.store.groupPut(`answers/${asker}/${this.#me}`, encodeAnswer(a.index, a.mac, a.members, a.answer));
      this.#answered.set(asker, tag);
    }
  }

  /**
   * Whether this node may lead: a member of the list its captured entry holds (or the
   * group has no list yet). A replaced member keeps following, never campaigns.
   */
  async #isMember(): Promise<boolean> {
    const digest = this.#guard?.membersDigest ?? null;
    if (digest === null) return true;
    const record = await this.#list(digest);
    if (record === null || record.members.includes(this.#me) || record.previous.includes(this.#me)) return record !== null;
    this.#sayOnce(`not-member:${toHex(digest)}`, () => this.o.log?.warn({ node: this.#me, members: record.members }, 'fleet group: this node is not a member of the group (replaced); it follows the log but does not lead, and its acks and answers count for nothing (coffer-vault fleet leave retires it)'));
    return false;
  }

  async #campaign(): Promise<void> {
    const won = await this.o.store.campaign(this.#me, this.o.leaseSeconds ?? 2);
    if (!won || won.leader !== this.#me) return;
    this.#term = won.term;
    this.#lease = won.lease;
    this.#role = 'preparing';
    this.#acked.clear();
    this.#early.clear();
    this.#challenge = { nonce: this.o.platform.randomBytes(32), purpose: 'takeover', countSelf: true };
    await this.o.store.groupPut(`challenge/${this.#me}`, this.#challenge.nonce);
    const lease = won.lease;
    this.#keepAlive = setInterval(() => {
      this.o.store.keepAlive(lease).then(
        (alive) => {
          if (!alive && this.#lease === lease) this.#stepDown('the leader lease expired');
        },
        () => undefined,
      );
    }, Math.max(200, ((this.o.leaseSeconds ?? 2) * 1000) / 4));
    this.#keepAlive.unref();
    this.o.log?.info({ node: this.#me, term: won.term }, 'fleet group: won the leader key; collecting fresh evidence before serving (spec §13.8)');
    this.#wake();
  }

  /** Takeover: serve only once the log reaches what a majority captured (fresh answers). */
  async #prepare(group: ReadonlyArray<{ key: string; value: Uint8Array }>): Promise<void> {
    const c = this.#challenge;
    const guard = this.#guard!;
    if (!c || c.purpose !== 'takeover') return;
    const ev = await this.#evidence(new Map(group.map((kv) => [kv.key, kv])), c.nonce, { index: guard.captured.index, mac: guard.captured.mac, members: guard.membersDigest ?? NO_MEMBERS });
    if (!ev) return;
    const head = await this.o.store.logHead();
    if (head < ev.index) {
      throw new StoreRolledBackError(`store rolled back: a majority of the group captured entry ${ev.index}, the log in etcd reaches ${Math.max(head, guard.captured.index)} (etcd hides committed entries; refusing to serve)`);
    }
    if (guard.captured.index < ev.index) return; // more to follow first
    const mine = guard.macAt(ev.index);
    if (mine && toHex(mine) !== toHex(ev.mac)) throw new StoreRolledBackError(`store rolled back: entry ${ev.index} in etcd is not the one a majority captured`);
    if (head !== guard.captured.index) return; // more to follow first
    // The commit rule needs the list the head holds; a node the list leaves out steps aside.
    if (guard.membersDigest !== null && (await this.#list(guard.membersDigest)) === null) return;
    if (!(await this.#isMember())) {
      this.#stepDown('this node is not a member of the group');
      return;
    }
    this.#challenge = null;
    await this.o.store.groupDelete(`challenge/${this.#me}`).catch(() => undefined);
    this.#role = 'leader';
    this.#termStart = guard.captured.index;
    this.#termCommitted = false;
    this.#jointCommitted = null;
    this.o.log?.info({ node: this.#me, term: this.#term, index: guard.captured.index, evidence: ev.index }, 'fleet group: leading (spec §13.8)');
    for (const w of this.#servingWaiters.splice(0)) w();
    if (this.#queue.length > 0 && !this.#appending) void this.#appendLoop();
  }

  /** Verified acks → the commit index → release the batches it covers. */
  async #countAcks(group: Iterable<{ readonly key: string; readonly value: Uint8Array | null }>): Promise<void> {
    const guard = this.#guard!;
    for (const kv of group) {
      if (!kv.key.startsWith('acks/')) continue;
      const node = kv.key.slice('acks/'.length);
      if (node === this.#me || !/^[0-9a-f]{16}$/.test(node)) continue;
      const st = kv.value && decodeStatement(kv.value);
      if (!st || st.index <= (this.#acked.get(node) ?? -1)) continue;
      const chain = guard.macAt(st.index);
      if (!chain && st.index > guard.captured.index) {
        // Ahead of what this leader captured: its own anchor write is still under way.
        if (this.#early.has(node) || this.#early.size < MAX_EARLY_ACKS) this.#early.set(node, kv.value!);
        continue;
      }
      if (!chain || toHex(chain) !== toHex(st.mac)) continue; // not our chain (or too old to tell): not counted
      if (!(await verifyAck(this.o.platform, this.o.group, node, st.index, st.mac, st.proof))) continue;
      this.#acked.set(node, Math.max(st.index, this.#acked.get(node) ?? -1));
    }
    // Review 2: no account is served before the list; once all N follow this term, record
    // it in a full pass at once (not at the next due one: up to a second under load).
    if (this.#role === 'leader' && this.o.groupSize > 1 && guard.membersDigest === null && !this.#memberChange) {
      let following = 1;
      for (const [id, i] of this.#acked) if (id !== this.#me && i > this.#termStart) following++;
      if (following >= this.o.groupSize) {
        this.#resync = true;
        this.#wake();
      }
    }
    this.#release();
  }

  #release(): void {
    const guard = this.#guard;
    if (!guard || this.#role !== 'leader') return;
    const captured = new Map(this.#acked);
    captured.set(this.#me, guard.captured.index);
    // In order: each entry by a majority of the members in force before it (§13.11).
    while (this.#pending.length > 0 && committedBy(this.#pending[0]!.members, this.o.groupSize, captured, this.#pending[0]!.index)) {
      const p = this.#pending.shift()!;
      this.#termCommitted = true;
      // Committed under a joint record (a majority of both lists captured it, and so the
      // entry that began the change): the change may be finished.
      if (p.members !== null && p.members.previous.length > 0) this.#jointCommitted = p.membersHex;
      for (const w of p.batch) w.resolve(p.versions);
    }
    const now = Date.now();
    while (this.#pending.length > 0 && now - this.#pending[0]!.since > COMMIT_TIMEOUT_MS) {
      const p = this.#pending.shift()!;
      const err = new StoreError(`no majority of the group confirmed log entry ${p.index} within ${COMMIT_TIMEOUT_MS} ms (members down, or refusing the store)`);
      for (const w of p.batch) w.reject(err);
    }
  }

  #stepDown(why: string): void {
    if (this.#role !== 'follower') this.o.log?.warn({ node: this.#me, why }, 'fleet group: no longer leading');
    const wasLeader = this.#role !== 'follower';
    this.#role = 'follower';
    this.#term = null;
    if (this.#keepAlive) clearInterval(this.#keepAlive);
    this.#keepAlive = null;
    if (wasLeader && this.#lease) {
      const lease = this.#lease;
      void this.o.store.revoke(lease).catch(() => undefined);
    }
    this.#lease = null;
    if (this.#challenge?.purpose === 'takeover') this.#challenge = null;
    const err = new NotLeaderError(`not the leader: ${why}`, this.#leader === this.#me ? null : this.#leader);
    // Appended but not committed: never answered (the entry may still commit later: the guess counts, unanswered).
    for (const p of this.#pending.splice(0)) for (const w of p.batch) w.reject(err);
    for (const w of this.#queue.splice(0)) w.reject(err);
  }

  refuseEarly(): Error | null {
    if (this.#role !== 'follower' || this.#firstPassDone || this.#storeError || (this.#failure && !this.#guard)) return null; // ready() says why
    return new NotLeaderError(this.#leader ? `the group's leader is ${this.#leader}` : 'the group has no leader yet', this.#leader === this.#me ? null : this.#leader);
  }

  /** The guard, when this node leads and serves; waits briefly while it takes over. */
  async ready(): Promise<RollbackGuard> {
    await this.#firstPass;
    if (this.#role === 'preparing') {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, TAKEOVER_WAIT_MS);
        this.#servingWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    if (this.#failure && !this.#guard) {
      this.o.metrics.rollbacksDetected.inc();
      throw this.#failure;
    }
    // etcd unreachable (the last pass failed on it): that, not leadership, is the answer.
    if (this.#storeError) throw this.#storeError;
    if (this.#role !== 'leader' || !this.#guard) throw new NotLeaderError(this.#leader ? `the group's leader is ${this.#leader}` : 'the group has no leader yet', this.#leader === this.#me ? null : this.#leader);
    return this.#guard;
  }

  async check(account: string, stored: Uint8Array | null): Promise<void> {
    await checkRecord(await this.ready(), account, stored, this.o.metrics, this.o.log);
  }

  async matches(account: string, stored: Uint8Array | null): Promise<boolean> {
    return recordMatches(await this.ready(), account, stored);
  }

  commit(changes: readonly BatchChange[], options: CommitOptions = {}): Promise<Map<string, RecordVersion>> {
    if (this.#role !== 'leader') return Promise.reject(new NotLeaderError('not the leader', this.#leader));
    return new Promise((resolve, reject) => {
      this.#queue.push({ changes, prior: options.prior, crashBeforeCapture: options.countsGuess === true, resolve, reject });
      if (!this.#appending) void this.#appendLoop();
    });
  }

  async #awaitAcksForTesting(index: number): Promise<void> {
    const end = Date.now() + 3000;
    while (Date.now() < end) {
      const acks = await this.o.store.groupRange('acks/');
      const seen = new Set(acks.filter((kv) => kv.key !== `acks/${this.#me}` && (decodeStatement(kv.value)?.index ?? -1) >= index).map((kv) => kv.key.slice('acks/'.length)));
      for (const [node, value] of this.#early) if ((decodeStatement(value)?.index ?? -1) >= index) seen.add(node);
      const n = seen.size;
      if (n + 1 >= majority(this.o.groupSize)) return;
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Group commit: one entry per batch, fenced on the head and this leader's term; released by #release. */
  async #appendLoop(): Promise<void> {
    this.#appending = true;
    try {
      while (this.#queue.length > 0 && this.#role === 'leader') {
        await new Promise((r) => setImmediate(r));
        const max = this.o.store.maxBatchChanges;
        const maxReq = this.o.maxBatchRequests ?? Infinity;
        let n = 0;
        let count = 0;
        while (n < this.#queue.length && n < maxReq && (n === 0 || count + this.#queue[n]!.changes.length <= max)) count += this.#queue[n++]!.changes.length;
        const taken = this.#queue.splice(0, n);
        const guard = this.#guard;
        const term = this.#term;
        if (!guard || term === null) {
          for (const w of taken) w.reject(new NotLeaderError('not the leader', this.#leader));
          continue;
        }
        // Each write onto the record it was decided on, or not at all: between a request's
        // record check and here this node may have stopped leading, another leader may have
        // committed a newer record for the account (another counted guess), and this node
        // may lead again on a guard that holds it. Appending the old decision would overwrite
        // that count. Refused (503, nothing answered or written): the client asks again.
        const batch: Waiting[] = [];
        // Review 2 (spec §13.11, "Bootstrap"): before the group recorded its list, any
        // floor(N/2)+1 identities holding the log key commit, and every key ceremony makes
        // one. An etcd copy from that time stays usable for good (new identities started on
        // an empty etcd reach it from the genesis, without evidence): so no account is
        // written before the list, and such a copy holds none.
        const unlisted = this.o.groupSize > 1 && guard.membersDigest === null;
        for (const w of taken) {
          if (unlisted && w.changes.some((c) => c.account !== MEMBERS_ACCOUNT)) {
            w.reject(new StoreError('the group has not recorded its members yet (spec §13.11, "Bootstrap"): no account is written before; it is recorded once all members follow'));
          } else if (w.prior !== undefined && !(await Promise.all(w.changes.map((c) => recordMatches(guard, c.account, w.prior!)))).every(Boolean)) {
            w.reject(new StoreError('the record changed since this request was decided (a leader change in between); nothing was written'));
          } else batch.push(w);
        }
        if (batch.length === 0) continue;
        const changes = batch.flatMap((w) => w.changes);
        try {
          const before = guard.membersDigest;
          const members = await this.#list(before);
          if (before !== null && members === null) throw new StoreError('the group\'s member list is not known to this leader (etcd lost group/members/)');
          const entry = await guard.append(changes);
          const digests = await digestChanges(changes);
          let versions: Map<string, RecordVersion>;
          try {
            versions = await this.o.store.commitBatch(changes, entry.index, encodeEntry(entry), { logValue: encodeLogValue(entry, digests), leaderTerm: term });
            if (this.o.insecureCrashBeforeCaptureForTesting && batch.some((w) => w.crashBeforeCapture)) process.kill(process.pid, 'SIGKILL');
            if (this.o.acksBeforeCaptureForTesting) await this.#awaitAcksForTesting(entry.index);
            await guard.capture(entry);
          } catch (err) {
            this.#guard = null; // resumed (and followed) from the anchor and etcd
            if (err instanceof LogConflictError) this.#stepDown(err.message);
            throw err;
          }
          this.o.metrics.logEntries.inc();
          this.o.metrics.logBatchSize.observe(changes.length);
          this.#pending.push({ index: entry.index, members, membersHex: before === null ? null : toHex(before), since: Date.now(), versions, batch });
          if (this.#early.size > 0) {
            const early = [...this.#early].map(([node, value]) => ({ key: `acks/${node}`, value }));
            this.#early.clear();
            await this.#countAcks(early); // releases what they cover
          } else this.#release();
          this.#wake();
        } catch (err) {
          const e = err instanceof LogConflictError ? new NotLeaderError(err.message, null) : (err as Error);
          for (const w of batch) w.reject(e);
        }
      }
    } finally {
      this.#appending = false;
    }
  }
}

/** A follower with a direct path to the leader puts its ack in etcd at most this often. */
const ACK_STORE_MS = 250;
/** POST /v1/group/ack's body: node ID (8 bytes) ‖ index (u64) ‖ chain MAC ‖ ack MAC. */
const ACK_BODY_LENGTH = 8 + 8 + MAC_LENGTH * 2;
/** A direct ack not taken within this long is put in etcd instead. */
const ACK_SEND_TIMEOUT_MS = 500;
const ackAgents = { http: new http.Agent({ keepAlive: true, maxSockets: 1 }), https: new https.Agent({ keepAlive: true, maxSockets: 1 }) };

/** POSTs an ack to a member's request listener; true when it took it (204). Never rejects. */
function sendAck(peerUrl: string, node: string, statement: Uint8Array): Promise<boolean> {
  return new Promise((resolve) => {
    let url: URL;
    try {
      url = new URL('/v1/group/ack', peerUrl);
    } catch {
      return resolve(false);
    }
    const secure = url.protocol === 'https:';
    if (!secure && url.protocol !== 'http:') return resolve(false);
    const body = Buffer.concat([Buffer.from(node, 'hex'), statement]);
    const req = (secure ? https : http).request(url, { method: 'POST', agent: secure ? ackAgents.https : ackAgents.http, headers: { 'content-type': 'application/octet-stream', 'content-length': body.length }, timeout: ACK_SEND_TIMEOUT_MS }, (res) => {
      res.resume();
      resolve(res.statusCode === 204);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end(body);
  });
}

/** Members whose early acks a leader keeps (more than any group has: etcd may hold forged ack keys). */
const MAX_EARLY_ACKS = 16;

/** The ack bytes a member publishes (for tests that replay or forge them). */
export function ackStatement(index: number, mac: Uint8Array, ack: Uint8Array): Uint8Array {
  return encodeStatement(index, mac, ack);
}

/** For tests: what a member's ack MAC covers. */
export const ackInput = ackMacInput;
export const LOG_MAC_LABEL = KEY_LABELS.logMac;
