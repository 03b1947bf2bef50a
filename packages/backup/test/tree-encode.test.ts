/**
 * encodeEntry builds its JSON line as text, member by member: it must equal what
 * JSON.stringify writes for the entry's object (the form spec §9.2 describes), byte for
 * byte, for every kind of entry and awkward values (names that are not UTF-8, quotes,
 * control characters and non-ASCII text, times before 1970, owners with and without
 * names, xattrs, sparse files, devices). The reference below is the object form.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { LineBuffer, decodeEntry, encodeEntry, encodeEntryInto, encodeFileLineParts, isUtf8, matchFileLine, type FileEntry, type TreeEntry } from '../src/repository/tree.js';

const NS = 1_000_000_000n;
function reference(e: TreeEntry): string {
  const o: Record<string, unknown> = {};
  const put = (key: string, b: Buffer) => {
    if (isUtf8(b)) o[key] = b.toString('utf8');
    else o[`${key}64`] = b.toString('base64');
  };
  put('path', e.rawPath);
  o.type = e.type;
  o.mode = e.mode;
  const sec = e.mtimeNs >= 0n ? e.mtimeNs / NS : -((-e.mtimeNs + NS - 1n) / NS);
  o.mtime = Number(sec);
  o.mtimeNs = Number(e.mtimeNs - sec * NS);
  if (e.owner) {
    o.uid = e.owner.uid;
    o.gid = e.owner.gid;
    if (e.owner.user !== undefined) o.user = e.owner.user;
    if (e.owner.group !== undefined) o.group = e.owner.group;
  }
  if (e.xattrs && e.xattrs.length > 0) o.xattrs = e.xattrs.map((x) => [x.name, x.value.toString('base64')]);
  if (e.type === 'file') {
    o.size = e.size;
    o.chunks = e.chunks;
    if (e.sparse) o.sparse = true;
    o.inode = e.inode;
    o.ctime = e.ctime;
  } else if (e.type === 'symlink') put('target', e.target);
  else if (e.type === 'hardlink') put('link', e.link);
  else if (e.type === 'chardev' || e.type === 'blockdev') {
    o.major = e.major;
    o.minor = e.minor;
  }
  return JSON.stringify(o) + '\n';
}

const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
const names = [Buffer.from(Array.from({ length: 31 }, (_, i) => i + 1)).toString('latin1') + 'x\u007f', 'a', 'dir/file.txt', 'quote"back\\slash', 'tab\there', 'nl\nline', 'ctl\u0001\u001f', 'été/日本語/😀', '\u2028sep\u2029', 'sp ace'];
function name(): Buffer {
  const r = Math.random();
  if (r < 0.2) return Buffer.concat([Buffer.from('bad-'), Buffer.from([0xff, 0xfe, 0x80]), randomBytes(3).map((b) => (b === 0 || b === 0x2f ? 0x41 : b))]);
  return Buffer.from(pick(names));
}

test('encodeEntry and encodeEntryInto equal JSON.stringify of the entry object, byte for byte, and decode back', () => {
  const out = new LineBuffer();
  const expected: Buffer[] = [];
  for (let i = 0; i < 5000; i++) {
    const rawPath = name();
    const mtimeNs = BigInt(Math.floor((Math.random() - 0.3) * 4e9)) * NS + BigInt(Math.floor(Math.random() * 1e9));
    const common = {
      path: rawPath.toString('utf8'),
      rawPath,
      mode: Math.floor(Math.random() * 0o7777),
      mtimeNs,
      ...(Math.random() < 0.8 ? { owner: { uid: Math.floor(Math.random() * 70000), gid: 0, ...(Math.random() < 0.5 ? { user: pick(names) } : {}), ...(Math.random() < 0.5 ? { group: 'wheel' } : {}) } } : {}),
      ...(Math.random() < 0.2 ? { xattrs: [{ name: 'user."q"', value: Buffer.alloc(0) }, { name: 'user.x', value: randomBytes(5) }] } : {}),
    };
    const kind = pick(['file', 'file', 'dir', 'symlink', 'hardlink', 'fifo', 'socket', 'chardev', 'blockdev'] as const);
    let e: TreeEntry;
    if (kind === 'file') {
      const n = Math.floor(Math.random() * 4);
      e = { ...common, type: 'file', size: n * 1000, chunks: Array.from({ length: n }, () => randomBytes(32).toString('hex')), inode: String(Math.floor(Math.random() * 1e12)), ctime: String(mtimeNs), ...(Math.random() < 0.2 ? { sparse: true } : {}) };
    } else if (kind === 'symlink') e = { ...common, type: 'symlink', target: name() };
    else if (kind === 'hardlink') e = { ...common, type: 'hardlink', link: name() };
    else if (kind === 'chardev' || kind === 'blockdev') e = { ...common, type: kind, major: 8, minor: Math.floor(Math.random() * 256) };
    else e = { ...common, type: kind };
    const line = encodeEntry(e);
    assert.equal(line, reference(e), `entry ${i} (${kind})`);
    const before = out.used;
    encodeEntryInto(out, e);
    assert.deepEqual(out.buf.subarray(before, out.used), Buffer.from(line, 'utf8'), `entry ${i} (${kind}) as bytes`);
    expected.push(Buffer.from(line, 'utf8'));
    if (kind !== 'hardlink' && !rawPath.includes(0x2f) && common.path.length > 0) {
      const back = decodeEntry(line.slice(0, -1), 'test');
      assert.deepEqual(back.rawPath, rawPath);
    }
  }
  // The buffer grew many times over: everything written is still there, in order.
  assert.deepEqual(out.buf.subarray(0, out.used), Buffer.concat(expected));
});

/**
 * An unchanged file's line is recognised from its bytes (backup's parent listing): it
 * matches exactly when it is the line encodeEntryInto writes for the file as stat and
 * the owner names give it, with the parent's chunks, every one of them in the index.
 */
test('matchFileLine: the line of exactly this file with these chunks, every chunk in the index; nothing else', () => {
  const head = new LineBuffer(16);
  const tail = new LineBuffer(16);
  const id = Buffer.alloc(32);
  for (let i = 0; i < 2000; i++) {
    let rawPath = name();
    if (!isUtf8(rawPath)) rawPath = Buffer.from('plain/name');
    const mtimeNs = BigInt(Math.floor((Math.random() - 0.3) * 4e9)) * NS + BigInt(Math.floor(Math.random() * 1e9));
    const owner = { uid: Math.floor(Math.random() * 70000), gid: 7, user: Math.random() < 0.5 ? pick(names) : undefined, group: Math.random() < 0.5 ? 'wheel' : undefined };
    const n = Math.floor(Math.random() * 4);
    const f: FileEntry = {
      path: rawPath.toString('utf8'),
      rawPath,
      type: 'file',
      mode: Math.floor(Math.random() * 0o7777),
      mtimeNs,
      owner: { uid: owner.uid, gid: owner.gid, ...(owner.user !== undefined ? { user: owner.user } : {}), ...(owner.group !== undefined ? { group: owner.group } : {}) },
      size: Math.floor(Math.random() * 1e9),
      chunks: Array.from({ length: n }, () => randomBytes(32).toString('hex')),
      inode: String(Math.floor(Math.random() * 1e12)),
      ctime: String(mtimeNs + 5n),
      ...(Math.random() < 0.2 ? { sparse: true } : {}),
    };
    const line = Buffer.from(encodeEntry(f), 'utf8');
    const parts = (g: FileEntry, o = owner) => encodeFileLineParts(head, tail, g.rawPath, g.mode, g.mtimeNs, o, g.size, g.sparse === true, g.inode, g.ctime);
    const seen: string[] = [];
    parts(f);
    assert.equal(matchFileLine(line, head, tail, id, (c) => (seen.push(c.toString('hex')), true)), true, `entry ${i}: ${line.toString()}`);
    assert.deepEqual(seen, f.chunks, 'every chunk ID, in order, decoded from its hex');
    if (n > 0) {
      const missing = pick(f.chunks);
      assert.equal(matchFileLine(line, head, tail, id, (c) => c.toString('hex') !== missing), false, 'a chunk not in the index');
    }
    // Any one field different: no match.
    const changed: FileEntry[] = [
      { ...f, mode: f.mode ^ 1 },
      { ...f, mtimeNs: f.mtimeNs + 1n },
      { ...f, size: f.size + 1 },
      { ...f, inode: f.inode + '1' },
      { ...f, ctime: String(BigInt(f.ctime) - 1n) },
      { ...f, sparse: f.sparse ? undefined : true },
      { ...f, rawPath: Buffer.concat([f.rawPath, Buffer.from('x')]) },
    ];
    for (const g of changed) {
      parts(g);
      assert.equal(matchFileLine(line, head, tail, id, () => true), false, `a changed field matched: ${line.toString()}`);
    }
    parts(f, { ...owner, uid: owner.uid + 1 });
    assert.equal(matchFileLine(line, head, tail, id, () => true), false, 'another owner');
    parts(f, { ...owner, user: owner.user === undefined ? 'someone' : undefined });
    assert.equal(matchFileLine(line, head, tail, id, () => true), false, 'another owner name');
    // The same entry in another form JSON allows (not what is written now): decoded instead.
    parts(f);
    const text = line.toString('utf8');
    const variants = [
      text.replace('"chunks":[', '"chunks": ['),
      text.replace(/"chunks":\["[0-9a-f]{64}/, (m) => '"chunks":["' + m.slice(11).toUpperCase()),
      text.replace(/("[0-9a-f]{64}")\]/, '$1,]'),
      text.replace('"chunks":[]', '"chunks":[,]'),
      text.replace('}\n', ' }\n'),
    ].filter((v) => v !== text);
    for (const v of variants) assert.equal(matchFileLine(Buffer.from(v, 'utf8'), head, tail, id, () => true), false, `another form matched: ${v}`);
    // A line cut short anywhere: no match, no read past its end.
    const cut = line.subarray(0, Math.floor(Math.random() * line.length));
    assert.equal(matchFileLine(cut, head, tail, id, () => true), false);
  }
});

/**
 * A file's chunk list and inode/ctime are copied byte by byte when they are 64 lowercase
 * hex digits and decimal digits; anything else must still come out as JSON.stringify
 * writes it (nothing of an abandoned fast copy left in the line), mid-buffer and when
 * the buffer must grow.
 */
test('encodeEntryInto: chunk IDs that are not 64 lowercase hex digits, inode and ctime that are not digits, as JSON.stringify writes them', () => {
  const hex = randomBytes(32).toString('hex');
  const lists: unknown[][] = [[], [hex], [hex, hex], [hex.toUpperCase()], [hex, hex.slice(0, 63)], [hex, `${hex.slice(0, 63)}g`], [hex, `${hex}0`], [hex, 'q"\\\n'], [hex, 'é'.repeat(64)]];
  const texts = ['', '0', '123456789012345678901', '-1', '1.5', 'x"y', '१२', ' 1'];
  for (const initial of [16, 64 * 1024]) {
    const out = new LineBuffer(initial);
    const expected: Buffer[] = [];
    for (const chunks of lists) {
      for (const inode of texts) {
        for (const ctime of [texts[texts.length - 1 - texts.indexOf(inode)]!, '17']) {
          const rawPath = Buffer.from('d/f');
          const e = { path: 'd/f', rawPath, type: 'file', mode: 0o644, mtimeNs: 5n, owner: { uid: 1, gid: 2 }, size: 3, chunks, inode, ctime } as FileEntry;
          const before = out.used;
          encodeEntryInto(out, e);
          const want = Buffer.from(reference(e), 'utf8');
          assert.deepEqual(out.buf.subarray(before, out.used), want, `chunks ${JSON.stringify(chunks)}, inode ${JSON.stringify(inode)}, ctime ${JSON.stringify(ctime)}`);
          expected.push(want);
        }
      }
    }
    assert.deepEqual(out.buf.subarray(0, out.used), Buffer.concat(expected));
  }
});
