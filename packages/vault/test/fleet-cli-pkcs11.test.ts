/**
 * Issue 15: the ceremony through the real `coffer-vault fleet …` commands on two SoftHSM2
 * tokens (child processes, as an operator runs them): init, node-key, export-for, join,
 * status with the tokens' key attributes, and the ceremony log.
 */
import { after, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runVaultCli } from './helpers/child-vault.js';
import { createSoftHsmToken, type SoftHsmToken } from './helpers/softhsm.js';
import { describeIf, softHsmSkip } from './helpers/requirements.js';

const skip = softHsmSkip();
const tokens: Record<string, SoftHsmToken> = {};
if (!skip) for (const n of ['a', 'b']) tokens[n] = createSoftHsmToken({ pin: `user-pin-${n}-not-in-logs` });

describeIf('coffer-vault fleet on PKCS#11 (CLI)', skip, () => {
  const root = mkdtempSync(join(tmpdir(), 'coffer-fleet-cli-pkcs11-'));
  after(() => {
    rmSync(root, { recursive: true, force: true });
    for (const t of Object.values(tokens)) t.cleanup();
  });
  const env = (n: string): Record<string, string> => ({
    ...tokens[n]!.env,
    COFFER_VAULT_DATA_DIR: join(root, n),
    COFFER_VAULT_PLATFORM: 'pkcs11',
    COFFER_VAULT_PKCS11_MODULE: tokens[n]!.module,
    COFFER_VAULT_PKCS11_TOKEN_LABEL: tokens[n]!.tokenLabel,
    COFFER_VAULT_PKCS11_PIN: tokens[n]!.pin,
  });
  const cli = (n: string, ...args: string[]) => runVaultCli(args, env(n));

  it('init, node-key, export-for, join; status shows the attributes; bundles match', () => {
    const init = cli('a', 'fleet', 'init');
    assert.equal(init.status, 0, init.stderr);
    const keyId = (JSON.parse(init.stdout) as { keys: { keyId: string }[] }).keys[0]!.keyId;
    const node = cli('b', 'fleet', 'node-key');
    assert.equal(node.status, 0, node.stderr);
    writeFileSync(join(root, 'b.node'), node.stdout);
    const pkg = cli('a', 'fleet', 'export-for', join(root, 'b.node'));
    assert.equal(pkg.status, 0, pkg.stderr);
    assert.match(pkg.stderr, /fleet keys wrapped for node/);
    writeFileSync(join(root, 'b.pkg'), pkg.stdout);
    assert.match(cli('b', 'fleet', 'join', join(root, 'b.pkg'), 'something', '--fleet-key-id', keyId).stderr, /only keep-exportable/);
    const joined = cli('b', 'fleet', 'join', join(root, 'b.pkg'), '--fleet-key-id', keyId);
    assert.equal(joined.status, 0, joined.stderr);
    assert.match(joined.stderr, /imported coffer-fleet-hpke-v1, coffer-log-mac-v1, coffer-record-seal-v1/);
    assert.equal(cli('b', 'bundle').stdout, cli('a', 'bundle').stdout);

    type Status = { tokenKeys: { label: string; extractable?: boolean; sensitive?: boolean; neverExtractable?: boolean }[] };
    const sa = JSON.parse(cli('a', 'fleet', 'status').stdout) as Status;
    const sb = JSON.parse(cli('b', 'fleet', 'status').stdout) as Status;
    const pick = (s: Status) => Object.fromEntries(s.tokenKeys.map((k) => [k.label, [k.extractable, k.sensitive, k.neverExtractable]]));
    assert.deepEqual(pick(sa), {
      'coffer-node-transport-v1': [false, true, true],
      'coffer-fleet-hpke-v1': [true, true, false],
      'coffer-log-mac-v1': [true, true, false],
      'coffer-record-seal-v1': [true, true, false],
    });
    assert.deepEqual(pick(sb), {
      'coffer-node-transport-v1': [false, true, true],
      'coffer-fleet-hpke-v1': [false, true, false],
      'coffer-log-mac-v1': [false, true, false],
      'coffer-record-seal-v1': [false, true, false],
    });
    const log = readFileSync(join(root, 'b', 'ceremony.log'), 'utf8');
    assert.match(log, /"step":"join"/);
    assert.doesNotMatch(log, new RegExp(tokens.b!.pin));
  });
});
