/**
 * `coffer-vault fleet …`: the key ceremony's commands (fleet-ceremony.ts). stdout carries
 * data only (the bundle, the node identity, the transfer package); notes go to stderr.
 */
import { readFileSync } from 'node:fs';
import { bundleToJson } from '@coffer/protocol';
import type { VaultConfig } from './config.js';
import { activate, CeremonyError, exportFor, fleetInit, join, keyAttributes, leave, nodeKey, parseRecipient, rotate } from './fleet-ceremony.js';
import { readFleetFile, recordKeyring } from './fleet.js';
import { decodeMembers, MEMBERS_ACCOUNT, NODE_ID_PATTERN } from '../core/rollback.js';
import type { EtcdRecordStore } from '../store/etcd.js';
import { openEtcdStore } from './start.js';

export const FLEET_USAGE = `       coffer-vault fleet init                     create the fleet keys once, on the first node; prints the bundle
       coffer-vault fleet node-key                 this node's transport key (created if missing): {"nodeId","publicKey"}
       coffer-vault fleet export-for KEY|FILE      the fleet keys wrapped to that node's transport key (JSON on stdout)
       coffer-vault fleet join FILE --fleet-key-id ID   import a transfer package (ID: the pinned bundle's keyId)
       coffer-vault fleet join FILE keep-exportable --fleet-key-id ID
                                                   PKCS#11: keep the received keys exportable (a second ceremony token)
       coffer-vault fleet rotate                   stage a new record-sealing key (then export-for/join it to every node)
       coffer-vault fleet activate LABEL           seal new records under LABEL (after every node holds it)
       coffer-vault fleet status                   this node's fleet key ID, record keys, node ID
                                                   (PKCS#11: and each key's CKA_EXTRACTABLE, CKA_SENSITIVE, …)
       coffer-vault fleet leave                    retire this node: drop the fleet keys and fleet.json
       coffer-vault fleet members                  the group's member list as etcd holds it (etcd group only)
       coffer-vault fleet replace OLD NEW          replace member OLD by node NEW (a node that already follows
                                                   the log, after fleet join); waits until the group committed it
`;

function readArg(arg: string | undefined, what: string): string {
  if (!arg) throw new CeremonyError(`${what} is required`);
  if (arg === '-') return readFileSync(0, 'utf8');
  if (/^04[0-9a-f]{128}$/.test(arg)) return arg;
  try {
    return readFileSync(arg, 'utf8');
  } catch (err) {
    throw new CeremonyError(`${what} ${arg}: ${(err as Error).message}`);
  }
}

export async function fleetCommand(config: VaultConfig, args: readonly string[], options: { fleetKeyId?: string }, out: (s: string) => void, note: (s: string) => void): Promise<boolean> {
  const [sub, arg, extra] = args;
  switch (sub) {
    case 'init': {
      const { bundle, node } = await fleetInit(config);
      note(`fleet created: key ID ${bundle.keys[0] ? Buffer.from(bundle.keys[0].keyId).toString('hex') : '?'}, first node ${node.nodeId}; fleet file ${config.fleetFile}`);
      out(bundleToJson(bundle) + '\n');
      return true;
    }
    case 'node-key':
      out(JSON.stringify(await nodeKey(config)) + '\n');
      return true;
    case 'export-for': {
      const pkg = await exportFor(config, parseRecipient(readArg(arg, 'the node public key (or a file holding it)')));
      note(`fleet keys wrapped for node ${pkg.to.nodeId}; carry this package to it and run: coffer-vault fleet join FILE --fleet-key-id ${pkg.fleetKeyId}`);
      out(JSON.stringify(pkg, null, 2) + '\n');
      return true;
    }
    case 'join': {
      if (!options.fleetKeyId) throw new CeremonyError('fleet join needs --fleet-key-id (the keyId of the bundle clients pin)');
      if (extra !== undefined && extra !== 'keep-exportable') throw new CeremonyError(`fleet join: unexpected ${extra} (only keep-exportable may follow the file)`);
      const r = await join(config, readArg(arg, 'the transfer package file'), options.fleetKeyId, { exportable: extra === 'keep-exportable' });
      note(`joined fleet ${r.fleetKeyId}: ${r.imported.length ? `imported ${r.imported.join(', ')}` : 'keys already held'}`);
      return true;
    }
    case 'rotate': {
      const label = await rotate(config);
      note(`staged record key ${label}: hand it to every node (export-for/join), then run \`coffer-vault fleet activate ${label}\` on each and restart it`);
      out(label + '\n');
      return true;
    }
    case 'activate':
      if (!arg) throw new CeremonyError('fleet activate needs a record key label');
      await activate(config, arg);
      note(`new records will be sealed under ${arg} once this node restarts`);
      return true;
    case 'status': {
      const file = readFleetFile(config.fleetFile);
      const node = await nodeKey(config);
      const keys = await keyAttributes(config);
      out(JSON.stringify({ fleetKeyId: file.keyId, node, recordKeys: recordKeyring(file), ...(keys ? { tokenKeys: keys } : {}) }, null, 2) + '\n');
      return true;
    }
    case 'leave': {
      const removed = await leave(config);
      note(`left the fleet: removed ${removed.join(', ') || 'no keys'}; remove this node from the front ends and its etcd member (etcdctl member remove)`);
      return true;
    }
    case 'members': {
      const store = etcdOf(config);
      try {
        out(JSON.stringify(await readMembers(store), null, 2) + '\n');
      } finally {
        await store.close();
      }
      return true;
    }
    case 'replace': {
      if (!arg || !extra || !NODE_ID_PATTERN.test(arg) || !NODE_ID_PATTERN.test(extra) || arg === extra) throw new CeremonyError('fleet replace needs two different node IDs (16 hex digits): the member leaving and the node taking its place');
      const store = etcdOf(config);
      try {
        const now = await readMembers(store);
        if (now.members === null) throw new CeremonyError('the group has not recorded its members yet (its leader does once every member follows the log): nothing to replace');
        if (now.previous.length > 0 && !(now.members.includes(extra) && now.previous.includes(arg))) throw new CeremonyError(`another member change is under way (from ${now.previous.join(', ')} to ${now.members.join(', ')}): wait until it is finished (fleet members shows "previous": [])`);
        // Review 2: run again after the change finished (the first run timed out, or the
        // leader finished it meanwhile): report it, as the documented retry expects.
        const finished = now.previous.length === 0 && now.members.includes(extra) && !now.members.includes(arg);
        if (finished) note(`the change from ${arg} to ${extra} is finished already`);
        else if (now.previous.length === 0) {
          if (!now.members.includes(arg)) throw new CeremonyError(`${arg} is not a member (members: ${now.members.join(', ')})`);
          if (now.members.includes(extra)) throw new CeremonyError(`${extra} is a member already`);
          await store.groupPut('proposal', new TextEncoder().encode(`replace ${arg} ${extra}`));
          note(`proposed: replace ${arg} by ${extra}; waiting for the group's leader to commit it (it waits until ${extra} follows the log)`);
        } else note(`the change from ${arg} to ${extra} is under way; waiting for the group's leader to finish it`);
        const end = Date.now() + REPLACE_WAIT_MS;
        for (;;) {
          const m = await readMembers(store);
          if (m.members && m.members.includes(extra) && !m.members.includes(arg) && m.previous.length === 0) {
            note(`committed: the members are ${m.members.join(', ')}. Retire ${arg}: \`coffer-vault fleet leave\` on it (or destroy its token); its acks and answers count for nothing now`);
            out(JSON.stringify(m, null, 2) + '\n');
            return true;
          }
          if (Date.now() > end) throw new CeremonyError(`not committed within ${REPLACE_WAIT_MS / 1000} s: is ${extra} running and following the log (it must have joined with fleet join and started)? The proposal stays in etcd (group/proposal); the leader takes it when it can`);
          await new Promise((r) => setTimeout(r, 250));
        }
      } finally {
        await store.close();
      }
    }
    default:
      return false;
  }
}

const REPLACE_WAIT_MS = 60_000;

function etcdOf(config: VaultConfig): EtcdRecordStore {
  if (config.store?.kind !== 'etcd') throw new CeremonyError('this node\'s store is not etcd: only an etcd fleet group has members');
  return openEtcdStore(config.store);
}

/**
 * The member list as etcd's `records/` holds it (etcd's word, decoded: what an operator
 * reads; the members themselves check it against their captured root).
 */
async function readMembers(store: EtcdRecordStore): Promise<{ members: readonly string[] | null; previous: readonly string[]; proposal: string | null }> {
  const [stored, proposal] = await Promise.all([store.get(MEMBERS_ACCOUNT), store.groupRange('proposal')]);
  let members: readonly string[] | null = null;
  let previous: readonly string[] = [];
  if (stored) {
    try {
      ({ members, previous } = decodeMembers(stored.value));
    } catch (err) {
      throw new CeremonyError(`the member list in etcd does not decode: ${(err as Error).message}`);
    }
  }
  const p = proposal.find((kv) => kv.key === 'proposal');
  return { members, previous, proposal: p ? new TextDecoder().decode(p.value) : null };
}
