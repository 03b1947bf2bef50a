/**
 * Issue 13 ("flat memory"): decoded tree entries share one V8 hidden class per type.
 * Built with `{ ...common, … }`, every entry had its own map and descriptor array
 * (~17 MiB for a 50,000-file restore). Checked with V8's %HaveSameMap in a child process
 * (the natives syntax flag is not something to turn on in the test runner itself).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const TREE = fileURLToPath(new URL('../src/repository/tree.js', import.meta.url));

test('decoded file entries (with and without owner, xattrs, sparse) share one hidden class per kind', () => {
  const code = `
    const { decodeEntry } = await import(${JSON.stringify(TREE)});
    const line = (i, extra) => JSON.stringify({ type: 'file', path: 'd/f' + i, mode: 420, mtime: 1700000000 + i, mtimeNs: i * 7, uid: 1000, gid: 1000, size: i, chunks: [], inode: String(i), ctime: '1', ...extra });
    const kinds = { plain: {}, sparse: { sparse: true }, xattrs: { xattrs: [['user.k', 'dg==']] } };
    const out = {};
    for (const [kind, extra] of Object.entries(kinds)) {
      const es = Array.from({ length: 500 }, (_, i) => decodeEntry(line(i, extra), 'x'));
      out[kind] = es.filter((e) => !%HaveSameMap(es[0], e)).length;
    }
    const dirs = Array.from({ length: 200 }, (_, i) => decodeEntry(JSON.stringify({ type: 'dir', path: 'd' + i, mode: 493, mtime: 1, mtimeNs: 0, uid: 0, gid: 0 }), 'x'));
    out.dir = dirs.filter((e) => !%HaveSameMap(dirs[0], e)).length;
    console.log(JSON.stringify(out));
  `;
  const r = spawnSync(process.execPath, ['--allow-natives-syntax', '--input-type=module', '-e', code], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { plain: 0, sparse: 0, xattrs: 0, dir: 0 }, 'entries whose hidden class differs from the first of their kind');
});
