/**
 * The listing's structure rules (spec §9.3) as TreeValidator checks them while a listing
 * is read entry by entry. Since issue 13 it keeps no copy of every file's path (a hash
 * of it) nor of any entry's buffer (the last sibling's name as latin1 text): the rules
 * it enforces must be exactly those it enforced with the paths themselves.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CofferError } from '../src/errors.js';
import { decodeListing, encodeEntry, type TreeEntry } from '../src/repository/tree.js';

const common = (raw: Buffer) => ({ path: raw.toString('utf8'), rawPath: raw, mode: 0o644, mtimeNs: 1_700_000_000_000_000_000n, owner: { uid: 1000, gid: 1000 } });
const dir = (p: string | Buffer): TreeEntry => ({ ...common(Buffer.from(p)), type: 'dir', mode: 0o755 });
const file = (p: string | Buffer): TreeEntry => ({ ...common(Buffer.from(p)), type: 'file', size: 0, chunks: [], inode: '', ctime: '' });
const link = (p: string | Buffer, to: string | Buffer): TreeEntry => ({ ...common(Buffer.from(p)), type: 'hardlink', link: Buffer.from(to) });
const listing = (...es: TreeEntry[]) => Buffer.from(es.map((e) => encodeEntry(e)).join(''), 'utf8');
const invalid = (es: TreeEntry[], why: RegExp) =>
  assert.throws(
    () => decodeListing(listing(...es), 2),
    (e: unknown) => CofferError.is(e, 'corrupt') && why.test((e as Error).message),
  );

test('a hard link must name an earlier file entry: not a later one, a directory, a link or a path never listed', () => {
  assert.equal(decodeListing(listing(dir('r'), file('r/a'), link('r/b', 'r/a')), 2).length, 3);
  invalid([dir('r'), link('r/a', 'r/b'), file('r/b')], /hard link to no earlier file entry/);
  invalid([dir('r'), dir('r/d'), link('r/e', 'r/d')], /hard link to no earlier file entry/);
  invalid([dir('r'), file('r/a'), link('r/b', 'r/a'), link('r/c', 'r/b')], /hard link to no earlier file entry/);
  invalid([dir('r'), file('r/a'), link('r/b', 'r/ab')], /hard link to no earlier file entry/);
  invalid([dir('r'), file('r/a'), link('r/b', 'x/a')], /hard link to no earlier file entry/);
  // Many files: each one's own path is found, and none of a thousand near-misses is.
  const many: TreeEntry[] = [dir('r')];
  for (let i = 0; i < 1000; i++) many.push(file(`r/f${String(i).padStart(4, '0')}`));
  for (let i = 0; i < 1000; i++) many.push(link(`r/l${String(i).padStart(4, '0')}`, `r/f${String(i).padStart(4, '0')}`));
  assert.equal(decodeListing(listing(...many), 2).length, 2001);
  for (const miss of ['r/f1000', 'r/f', 'r/f00000', 'r/F0001', 'f0001']) invalid([...many.slice(0, 1001), link('r/z', miss)], /hard link to no earlier file entry/);
});

test('siblings in strictly increasing byte order, non-UTF-8 names included; a repeated path is named as such', () => {
  // 0x7f < 0x80 < 0xc3 < 0xff as bytes (not as decoded UTF-8, where invalid bytes all become U+FFFD).
  const names = [Buffer.from('r/a'), Buffer.from([0x72, 0x2f, 0x7f]), Buffer.from([0x72, 0x2f, 0x80]), Buffer.from('r/é'), Buffer.from([0x72, 0x2f, 0xff])];
  assert.equal(decodeListing(listing(dir('r'), ...names.map((n) => file(n))), 2).length, 6);
  invalid([dir('r'), file(names[3]!), file(names[2]!)], /siblings out of order/);
  invalid([dir('r'), file(names[2]!), file(names[2]!)], /path appears twice/);
  // A name that is a prefix of its next sibling sorts first.
  assert.equal(decodeListing(listing(dir('r'), file('r/ab'), file('r/abc')), 2).length, 3);
  invalid([dir('r'), file('r/abc'), file('r/ab')], /siblings out of order/);
  // Order is per directory: a deeper entry does not reset its parent's last child.
  assert.equal(decodeListing(listing(dir('r'), dir('r/b'), file('r/b/z'), file('r/c')), 2).length, 4);
  invalid([dir('r'), dir('r/b'), file('r/b/z'), file('r/a')], /siblings out of order/);
  invalid([dir('r'), file('r/x/y')], /its parent is not an earlier dir entry/);
});
