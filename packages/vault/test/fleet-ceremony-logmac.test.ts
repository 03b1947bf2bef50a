/**
 * Issue 9/15: the fleet's log MAC key (coffer-log-mac-v1) travels in the software key
 * ceremony like the other fleet keys, so every node computes the same log MACs; an older
 * fleet without it gets it on the source at the next export-for.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toHex } from '@coffer/protocol';
import { KEY_LABELS } from '../src/core/key-labels.js';
import { openPlatform } from '../src/platform/index.js';
import { loadConfig } from '../src/server/config.js';
import { exportFor, fleetInit, join as joinFleet, nodeKey } from '../src/server/fleet-ceremony.js';

describe('log MAC key in the software ceremony', () => {
  it('is created by fleet init, transferred by export-for/join, and gives the same MAC on both nodes', async (t) => {
    const root = mkdtempSync(join(tmpdir(), 'coffer-logmac-'));
    t.after(() => rmSync(root, { recursive: true, force: true }));
    const cfg = (n: string) => loadConfig({ env: { COFFER_VAULT_DATA_DIR: join(root, n) } });
    const a = cfg('a');
    const b = cfg('b');
    const keyId = toHex((await fleetInit(a)).bundle.keys[0]!.keyId);
    const keysOf = (n: string) => (JSON.parse(readFileSync(join(root, n, 'software-keys.json'), 'utf8')) as { keys: Record<string, { type: string; key?: string }> }).keys;
    assert.equal(keysOf('a')[KEY_LABELS.logMac]?.type, 'hmac-sha256');

    const node = await nodeKey(b);
    const pkg = await exportFor(a, Buffer.from(node.publicKey, 'hex'));
    assert.ok(!JSON.stringify(pkg).includes(keysOf('a')[KEY_LABELS.logMac]!.key!), 'not in the clear');
    const r = await joinFleet(b, JSON.stringify(pkg), keyId);
    assert.ok(r.imported.includes(KEY_LABELS.logMac));

    const data = new TextEncoder().encode('log entry');
    const macs: string[] = [];
    for (const c of [a, b]) {
      const p = await openPlatform(c.platform);
      try {
        macs.push(toHex(await p.platform.mac(KEY_LABELS.logMac, data)));
      } finally {
        await p.close();
      }
    }
    assert.equal(macs[0], macs[1]);
  });

  it('an older fleet without the key gets it on the source at export-for, and the joining node with it', async (t) => {
    const root = mkdtempSync(join(tmpdir(), 'coffer-logmac-old-'));
    t.after(() => rmSync(root, { recursive: true, force: true }));
    const cfg = (n: string) => loadConfig({ env: { COFFER_VAULT_DATA_DIR: join(root, n) } });
    const a = cfg('a');
    const keyId = toHex((await fleetInit(a)).bundle.keys[0]!.keyId);
    const file = join(root, 'a', 'software-keys.json');
    const json = JSON.parse(readFileSync(file, 'utf8')) as { keys: Record<string, unknown> };
    delete json.keys[KEY_LABELS.logMac];
    writeFileSync(file, JSON.stringify(json), { mode: 0o600 });
    const b = cfg('b');
    const pkg = await exportFor(a, Buffer.from((await nodeKey(b)).publicKey, 'hex'));
    assert.ok((JSON.parse(readFileSync(file, 'utf8')) as { keys: Record<string, unknown> }).keys[KEY_LABELS.logMac]);
    assert.ok((await joinFleet(b, JSON.stringify(pkg), keyId)).imported.includes(KEY_LABELS.logMac));
  });
});
