// Issue 13: the software platform's anchor file — two slots written in place (software-anchor.ts).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ANCHOR_MAX_BYTES } from '../src/core/platform.js';
import { openSoftwarePlatform, provisionSoftwareKeys } from '../src/platform/software.js';
import { rejectsWithCode } from './helpers/platform-conformance.js';

function fresh(): { dir: string; keyFile: string; anchorFile: string } {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-sw-anchor-'));
  const keyFile = join(dir, 'keys.json');
  provisionSoftwareKeys(keyFile, { seal: ['s'] });
  return { dir, keyFile, anchorFile: `${keyFile}.anchor` };
}

describe('software anchor file', () => {
  it('is null before the first write, round-trips every length up to 256 bytes, and survives reopening', async () => {
    const f = fresh();
    const p = openSoftwarePlatform(f.keyFile);
    assert.equal(await p.readAnchor(), null);
    for (const n of [0, 1, 100, ANCHOR_MAX_BYTES]) {
      const v = Uint8Array.from({ length: n }, (_, i) => (i * 7 + n) & 0xff);
      await p.writeAnchor(v);
      assert.deepEqual(await p.readAnchor(), v);
    }
    await rejectsWithCode(p.writeAnchor(new Uint8Array(ANCHOR_MAX_BYTES + 1)), 'bad-argument');
    const last = new Uint8Array([1, 2, 3]);
    await p.writeAnchor(last);
    last[0] = 9; // the platform kept a copy
    await p.writeAnchor(new Uint8Array([4, 5, 6]));
    await p.close();
    assert.equal(statSync(f.anchorFile).size, 1024, 'the file never changes size');
    assert.equal(statSync(f.anchorFile).mode & 0o777, 0o600);
    const q = openSoftwarePlatform(f.keyFile);
    assert.deepEqual(await q.readAnchor(), new Uint8Array([4, 5, 6]));
    await q.writeAnchor(new Uint8Array([7]));
    assert.deepEqual(await q.readAnchor(), new Uint8Array([7]));
    await q.close();
    rmSync(f.dir, { recursive: true, force: true });
  });

  it('a torn newest slot (crash mid-write) reads as the previous anchor; two torn slots are an error, never "no anchor"', async () => {
    const f = fresh();
    const p = openSoftwarePlatform(f.keyFile);
    await p.writeAnchor(new Uint8Array([1])); // generation 1: slot 1 (of a fresh file)
    await p.writeAnchor(new Uint8Array([2])); // generation 2: slot 0
    await p.writeAnchor(new Uint8Array([3])); // generation 3: slot 1
    await p.close();
    const bytes = readFileSync(f.anchorFile);
    // Tear the newest slot (generation 3, slot 1): one byte of its value changed.
    const torn = Buffer.from(bytes);
    torn[512 + 18]! ^= 0xff;
    writeFileSync(f.anchorFile, torn);
    let q = openSoftwarePlatform(f.keyFile);
    assert.deepEqual(await q.readAnchor(), new Uint8Array([2]), 'the previous generation');
    await q.writeAnchor(new Uint8Array([4])); // continues from generation 2: overwrites the torn slot
    assert.deepEqual(await q.readAnchor(), new Uint8Array([4]));
    await q.close();
    // Both slots torn: refused (hsm-failure), not read as "no anchor" (which would let a
    // damaged file pass for a fresh node).
    const both = readFileSync(f.anchorFile);
    both[18]! ^= 0xff;
    both[512 + 18]! ^= 0xff;
    writeFileSync(f.anchorFile, both);
    q = openSoftwarePlatform(f.keyFile);
    await rejectsWithCode(q.readAnchor(), 'hsm-failure');
    await q.close();
    writeFileSync(f.anchorFile, Buffer.alloc(700));
    q = openSoftwarePlatform(f.keyFile);
    await rejectsWithCode(q.readAnchor(), 'hsm-failure');
    await q.close();
    rmSync(f.dir, { recursive: true, force: true });
  });

  it('reads an anchor file of the earlier format (the bare value) and replaces it on the next write', async () => {
    const f = fresh();
    const old = Uint8Array.from({ length: 56 }, (_, i) => i);
    writeFileSync(f.anchorFile, old, { mode: 0o600 });
    const p = openSoftwarePlatform(f.keyFile);
    assert.deepEqual(await p.readAnchor(), old);
    await p.writeAnchor(new Uint8Array([8, 8]));
    assert.equal(statSync(f.anchorFile).size, 1024);
    assert.deepEqual(await p.readAnchor(), new Uint8Array([8, 8]));
    // A torn first in-place write still leaves the first slotted anchor.
    await p.writeAnchor(new Uint8Array([9, 9]));
    await p.close();
    const b = readFileSync(f.anchorFile);
    b[18]! ^= 0xff; // generation 2, slot 0
    writeFileSync(f.anchorFile, b);
    const q = openSoftwarePlatform(f.keyFile);
    assert.deepEqual(await q.readAnchor(), new Uint8Array([8, 8]));
    await q.close();
    await p.close();
    rmSync(f.dir, { recursive: true, force: true });
  });

  it('concurrent writes are stored one after another; the last one called wins', async () => {
    const f = fresh();
    const p = openSoftwarePlatform(f.keyFile);
    await Promise.all(Array.from({ length: 10 }, (_, i) => p.writeAnchor(new Uint8Array([i]))));
    assert.deepEqual(await p.readAnchor(), new Uint8Array([9]));
    await p.close();
    rmSync(f.dir, { recursive: true, force: true });
  });
});
