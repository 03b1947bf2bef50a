/**
 * The key ID a user sees per repository (issue 10, format version 3, spec §3.2): two
 * repositories of one key show unrelated key IDs, `coffer key show --repo` prints the
 * one of that repository, and a damaged repository ID is "corrupt" (exit 12), never
 * "wrong key" (exit 11). Transcripts of the real binary.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as nodeFs from 'node:fs';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const HOME = await fs.mkdtemp(join(tmpdir(), 'coffer-keyid-'));
process.on('exit', () => nodeFs.rmSync(HOME, { recursive: true, force: true }));

function coffer(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const base: NodeJS.ProcessEnv = { ...process.env, XDG_CONFIG_HOME: HOME };
  delete base.COFFER_KEY;
  delete base.COFFER_REPOSITORY;
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...base, ...env } }, (err, stdout, stderr) => {
      assert.doesNotMatch(stderr, /internal error|\n {4}at /);
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

test('repositories of one key show different key IDs; key show --repo prints each; a damaged repository ID is corrupt, not a wrong key', async () => {
  const key = (await coffer(['key', 'generate', '-q'])).stdout.trim();
  const env = { COFFER_KEY: key };
  const ids: string[] = [];
  for (const name of ['a', 'b']) {
    const init = await coffer(['init', '--repo', join(HOME, name), '--json'], env);
    assert.equal(init.code, 0, init.stderr);
    ids.push((JSON.parse(init.stdout) as { keyId: string }).keyId);
  }
  assert.notEqual(ids[0], ids[1], 'unlinkable');
  const show = await coffer(['key', 'show', '--json'], env);
  const global = (JSON.parse(show.stdout) as { keyId: string }).keyId;
  assert.ok(!ids.includes(global), 'neither repository stores the global key ID');
  for (const [i, name] of ['a', 'b'].entries()) {
    const r = await coffer(['key', 'show', '--repo', join(HOME, name)], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^key ID in .*/${name} ${ids[i]}$`, 'm'));
    const raw = nodeFs.readFileSync(join(HOME, name, 'config'));
    assert.equal(raw.length, 120);
    assert.equal(raw.indexOf(Buffer.from(global, 'hex')), -1);
  }
  const other = (await coffer(['key', 'generate', '-q'])).stdout.trim();
  const wrong = await coffer(['snapshots', '--repo', join(HOME, 'a')], { COFFER_KEY: other });
  assert.equal(wrong.code, 11);
  assert.match(wrong.stderr, new RegExp(`wrong key: .* belongs to another key \\(key ID ${ids[0]} in this repository`));
  // One repository ID byte damaged: the key check still proves the key right.
  const cfg = join(HOME, 'b', 'config');
  const raw = nodeFs.readFileSync(cfg);
  raw[12]! ^= 0x10;
  nodeFs.writeFileSync(cfg, raw);
  const damaged = await coffer(['snapshots', '--repo', join(HOME, 'b')], env);
  assert.equal(damaged.code, 12, damaged.stderr);
  assert.match(damaged.stderr, /config of .* is corrupt \(its repository ID or key ID is damaged; the key is right\)/);
  assert.equal((await coffer(['snapshots', '--repo', join(HOME, 'b')], { COFFER_KEY: other })).code, 11, 'a wrong key is still a wrong key');
});
