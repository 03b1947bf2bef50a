/**
 * Entries inside a restore target's directories are named through this process's
 * descriptor directory: /proc/<pid>/fd when /proc/self is this process (no /proc/self
 * symlink for the kernel to follow on each path), else /proc/self/fd.
 */
import assert from 'node:assert/strict';
import { existsSync, readlinkSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { procFdDir, RestoreTarget } from '../src/repository/restore-target.js';
import { tempDir } from './fixtures/trees.js';

test('directory prefixes name /proc/<pid>/fd/<fd>/ when /proc/self is this process, and reach the directory', async (t) => {
  if (!existsSync('/proc/self/fd')) return t.skip('no /proc here');
  const expected = readlinkSync('/proc/self') === String(process.pid) ? `/proc/${process.pid}/fd` : '/proc/self/fd';
  assert.equal(procFdDir(), expected);
  const root = await tempDir(t, 'coffer-proc-');
  const tgt = await RestoreTarget.open(root);
  try {
    const got = await tgt.withDir(Buffer.from('a/b'), true, async (prefix, fh) => {
      assert.equal(prefix.toString(), `${expected}/${fh.fd}/`);
      writeFileSync(Buffer.concat([prefix, Buffer.from('x')]), 'here');
      return true;
    });
    assert.equal(got, true);
  } finally {
    await tgt.close();
  }
  assert.equal(readFileSync(join(root, 'a', 'b', 'x'), 'utf8'), 'here');
});
