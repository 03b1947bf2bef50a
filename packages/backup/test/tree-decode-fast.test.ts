/**
 * Tree decoding without the allocations it made per entry (session 15): validPathBytes
 * as one pass over the bytes, chunk IDs checked without a regex, `path` taken from the
 * line when well-formed, and TreeValidator holding the current parent's last child
 * outside its map. Each must accept and refuse exactly what the old form did.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CofferError } from '../src/errors.js';
import { decodeEntry, decodeListing, encodeEntry, validPathBytes, type TreeEntry } from '../src/repository/tree.js';

/** The form validPathBytes had before (segments of the latin1 text). */
function oldValidPath(p: Buffer, max = 4096): boolean {
  if (p.length === 0 || p.length > max || p.includes(0)) return false;
  for (const s of p.toString('latin1').split('/')) if (s === '' || s === '.' || s === '..') return false;
  return true;
}

test('validPathBytes: the same answers as the segment-splitting form, on every short path of a small alphabet and on random bytes', () => {
  const alphabet = [0x2f, 0x2e, 0x61, 0x00, 0xff];
  let n = 0;
  const walk = (prefix: number[]) => {
    const b = Buffer.from(prefix);
    assert.equal(validPathBytes(b), oldValidPath(b), JSON.stringify(prefix));
    n++;
    if (prefix.length < 6) for (const c of alphabet) walk([...prefix, c]);
  };
  walk([]);
  assert.ok(n > 5000);
  let seed = 7;
  const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8;
  for (let i = 0; i < 20_000; i++) {
    const b = Buffer.alloc(1 + (rnd() % 12));
    for (let k = 0; k < b.length; k++) b[k] = [0x2f, 0x2e, 0x61, 0x00][rnd() % 4]!;
    assert.equal(validPathBytes(b), oldValidPath(b), b.toString('hex'));
  }
  for (const max of [0, 1, 3, 4, 5]) for (const t of ['abcd', 'a/b', 'a/..', '....']) assert.equal(validPathBytes(Buffer.from(t), max), oldValidPath(Buffer.from(t), max), `${t} ${max}`);
  assert.equal(validPathBytes(Buffer.alloc(4097, 0x61)), false);
  assert.equal(validPathBytes(Buffer.alloc(4096, 0x61)), true);
});

const line = (o: Record<string, unknown>) => JSON.stringify(o);
const base = { path: 'r/a', type: 'file', mode: 420, mtime: 1, mtimeNs: 2, size: 0, chunks: [] as unknown[] };
const corrupt = (l: string, why: RegExp) => assert.throws(() => decodeEntry(l, 'w'), (e: unknown) => CofferError.is(e, 'corrupt') && why.test((e as Error).message));

test('chunk lists: 64 lowercase hex digits each, anything else refused as before', () => {
  const id = 'a'.repeat(63) + 'f';
  assert.deepEqual((decodeEntry(line({ ...base, chunks: [id, '0123456789abcdef'.repeat(4)] }), 'w') as { chunks: string[] }).chunks, [id, '0123456789abcdef'.repeat(4)]);
  for (const bad of ['A'.repeat(64), 'a'.repeat(63), 'a'.repeat(65), 'g' + 'a'.repeat(63), 'a'.repeat(63) + '/', 'a'.repeat(63) + ':', 'a'.repeat(63) + '`', 64, null, ['a'.repeat(64)]]) {
    corrupt(line({ ...base, chunks: [id, bad] }), /bad chunk list/);
  }
  corrupt(line({ ...base, chunks: 'a'.repeat(64) }), /bad chunk list/);
  corrupt(line({ ...base, chunks: { 0: 'a'.repeat(64), length: 1 } }), /bad chunk list/);
});

test('path text: the line\'s string when well-formed, else its bytes decoded (a lone surrogate shows as U+FFFD)', () => {
  const e = decodeEntry(line({ ...base, path: 'r/é😀' }), 'w');
  assert.equal(e.path, 'r/é😀');
  assert.deepEqual(e.rawPath, Buffer.from('r/é😀'));
  const lone = decodeEntry('{"path":"r/x\\ud800y","type":"dir","mode":493,"mtime":1,"mtimeNs":0}', 'w');
  assert.deepEqual(lone.rawPath, Buffer.from('r/x\ud800y', 'utf8'));
  assert.equal(lone.path, 'r/x\ufffdy');
  assert.equal(lone.path, lone.rawPath.toString('utf8'));
  const owned = decodeEntry(line({ ...base, uid: 1, gid: 2, group: 'g' }), 'w');
  assert.deepEqual(owned.owner, { uid: 1, gid: 2, group: 'g' });
  assert.deepEqual(Object.keys(owned.owner!), ['uid', 'gid', 'group']);
});

const common = (p: string) => ({ path: p, rawPath: Buffer.from(p), mode: 0o755, mtimeNs: 0n });
const dir = (p: string): TreeEntry => ({ ...common(p), type: 'dir' });
const file = (p: string): TreeEntry => ({ ...common(p), type: 'file', size: 0, chunks: [], inode: '', ctime: '' });
const listing = (...es: TreeEntry[]) => Buffer.from(es.map((e) => encodeEntry(e)).join(''), 'utf8');

test('sibling order is still checked when a parent\'s children are interrupted by a subtree, and back', () => {
  assert.equal(decodeListing(listing(dir('r'), dir('r/b'), file('r/b/x'), dir('r/b/y'), file('r/b/y/z'), file('r/b/yy'), file('r/c'), dir('r/d'), file('r/d/a'), file('r/e')), 2).length, 10);
  const bad = (es: TreeEntry[], why: RegExp) => assert.throws(() => decodeListing(listing(...es), 2), (e: unknown) => CofferError.is(e, 'corrupt') && why.test((e as Error).message));
  // Back under r after r/b's children: r/a sorts before r/b.
  bad([dir('r'), dir('r/b'), file('r/b/x'), file('r/a')], /siblings out of order/);
  bad([dir('r'), dir('r/b'), file('r/b/x'), file('r/b')], /path appears twice/);
  // Back under r/b after r/b/y's children: r/b/x sorts before r/b/y.
  bad([dir('r'), dir('r/b'), dir('r/b/y'), file('r/b/y/z'), file('r/b/x')], /siblings out of order/);
  bad([dir('r'), dir('r/b'), file('r/b/x'), file('r/b/x')], /path appears twice/);
  bad([dir('r'), file('r/b'), file('r/b/x')], /its parent is not an earlier dir entry/);
  bad([dir('r'), dir('r/b'), file('r/c'), file('r/d/x')], /its parent is not an earlier dir entry/);
  // A second root after the first's subtree, and the first root's order kept.
  assert.equal(decodeListing(listing(dir('r'), file('r/a'), dir('s'), file('s/a')), 2).length, 4);
  bad([dir('s'), file('s/a'), dir('r')], /siblings out of order/);
});
