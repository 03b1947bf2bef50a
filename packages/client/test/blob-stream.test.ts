/**
 * Issue 13: the blob backend streams (spec/relay-api.md §3), against the real
 * coffer-relay process. A large object written piece by piece round-trips byte-exact
 * (whole, sequential pieces, random ranges); an aborted writer leaves nothing; a writer
 * cut off by the relay's body idle timeout while the engine paused still commits; a
 * refusal (exists, too large) is the StorageBackend's storage error.
 * Uploads go once through fetch and once through node:http (node-transport.ts).
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CofferError } from '@coffer/backup';
import { RelayBlobBackend } from '../src/blob-backend.js';
import { RelayHttp, type UploadTransport } from '../src/relay-http.js';
import { NodeUploadTransport } from '../src/node-transport.js';
import { RELAY_MAIN, relayBuilt, startService, type Service } from './helpers/processes.js';

let dir: string;
let relay: Service;

const MAX_OBJECT = 40 * 1024 * 1024;

/** A new built-in account on the relay, signed in: a blob backend for its namespace. */
let uploads: UploadTransport | undefined;

async function backend(): Promise<RelayBlobBackend> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url');
  const session: { token?: string } = {};
  const http = new RelayHttp({ server: relay.url, token: () => session.token, ...(uploads ? { uploads } : {}) });
  const account = await http.createAccount(raw);
  session.token = (await http.login(account, (m) => sign(null, m, privateKey))).token;
  return new RelayBlobBackend(http, { timeoutMs: 20_000 });
}

function filesUnder(d: string): string[] {
  const out: string[] = [];
  const walk = (p: string): void => {
    let entries;
    try {
      entries = readdirSync(p, { withFileTypes: true });
    } catch (e) {
      // The relay removes a directory it emptied (an aborted upload's) while this walks.
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' && p !== d) return;
      throw e;
    }
    for (const e of entries) {
      if (e.isDirectory()) walk(join(p, e.name));
      else out.push(join(p, e.name).slice(d.length));
    }
  };
  walk(d);
  return out;
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Every test once with uploads through fetch (the isomorphic path) and once through
// node:http (what the CLI uses).
for (const transport of ['fetch', 'node:http'] as const) describe(`blob backend streaming against coffer-relay (uploads through ${transport})`, { skip: !relayBuilt() && 'coffer-relay is not built' }, () => {
  before(async () => {
    uploads = transport === 'node:http' ? new NodeUploadTransport() : undefined;
    dir = mkdtempSync(join(tmpdir(), 'coffer-blob-stream-'));
    writeFileSync(join(dir, 'link.key'), 'cd'.repeat(32) + '\n', { mode: 0o600 });
    relay = await startService('coffer-relay', RELAY_MAIN, ['serve'], {
      COFFER_RELAY_DATA_DIR: join(dir, 'relay'),
      COFFER_RELAY_PORT: '0',
      COFFER_RELAY_ADMIN: '0',
      COFFER_RELAY_LINK_KEY_FILE: join(dir, 'link.key'),
      COFFER_RELAY_LOG_LEVEL: 'warn',
      COFFER_RELAY_MAX_OBJECT_BYTES: String(MAX_OBJECT),
      COFFER_RELAY_BODY_IDLE_TIMEOUT_MS: '1000',
    });
  });
  after(async () => {
    (uploads as NodeUploadTransport | undefined)?.close();
    await relay?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a large object written piece by piece round-trips byte-exact: whole, in sequential pieces, and random ranges', async () => {
    const b = await backend();
    const data = randomBytes(24 * 1024 * 1024 + 4321);
    const w = await b.create('data/ab/' + 'ab'.repeat(32));
    // Uneven pieces, several per write, as the engine hands them over.
    for (let o = 0; o < data.length; ) {
      const parts: Uint8Array[] = [];
      for (let k = 0; k < 3 && o < data.length; k++) {
        const n = 1 + ((o * 7919) % 700_000);
        parts.push(data.subarray(o, o + n));
        o += n;
      }
      await w.write(parts);
    }
    await w.commit();
    const name = 'data/ab/' + 'ab'.repeat(32);
    assert.deepEqual(await b.stat(name), { name, size: data.length });
    assert.equal(sha(await b.get(name)), sha(data));
    // As restore reads a pack: 1 MiB pieces in order, the last asking one byte more.
    const piece = 1024 * 1024;
    const got: Uint8Array[] = [];
    for (let o = 0; o < data.length; o += piece) {
      const last = o + piece >= data.length;
      const want = Math.min(piece, data.length - o);
      const p = await b.get(name, { offset: o, length: last ? want + 1 : want });
      assert.equal(p.length, want, `piece at ${o}`);
      got.push(p);
    }
    assert.equal(sha(Buffer.concat(got)), sha(data));
    for (const [offset, length] of [[0, 1], [5, 300_000], [data.length - 10, 10], [12_345_678, 2_000_000], [3, 100], [data.length - 1, 5]] as const) {
      assert.deepEqual(Buffer.from(await b.get(name, { offset, length })), data.subarray(offset, offset + length), `${offset}+${length}`);
    }
    assert.equal((await b.get(name, { offset: data.length + 5, length: 10 })).length, 0, 'past the end: nothing');
  });

  test("openReader: a pack's pieces read into the caller's one buffer, byte-exact, the last short; small ranges too; a closed reader refuses", async () => {
    const b = await backend();
    const name = 'data/a1/' + 'a1'.repeat(32);
    const data = randomBytes(5 * 1024 * 1024 + 777);
    const w = await b.create(name);
    await w.write([data]);
    await w.commit();
    const reader = await b.openReader(name);
    const piece = 1024 * 1024;
    const buf = Buffer.alloc(piece + 1);
    const got: Buffer[] = [];
    for (let o = 0; o < data.length; o += piece) {
      const last = o + piece >= data.length;
      const want = Math.min(piece, data.length - o);
      const p = await reader.read({ offset: o, length: last ? want + 1 : want }, buf);
      assert.equal(p.length, want, `piece at ${o}`);
      // Into the caller's buffer (a view of it), not a new one.
      assert.equal(p.buffer, buf.buffer, `piece at ${o}: a view of the caller's buffer`);
      assert.equal(p.byteOffset, buf.byteOffset);
      got.push(Buffer.from(p));
    }
    assert.equal(sha(Buffer.concat(got)), sha(data));
    // Without a buffer, and ranges below the read-ahead size: as get gives them.
    assert.deepEqual(Buffer.from(await reader.read({ offset: 10, length: 100 })), data.subarray(10, 110));
    assert.deepEqual(Buffer.from(await reader.read({ offset: 4_000_000, length: 5000 }, buf)), data.subarray(4_000_000, 4_005_000));
    assert.equal((await reader.read({ offset: data.length + 5, length: 10 }, buf)).length, 0, 'past the end: nothing');
    await assert.rejects(reader.read({ offset: 0, length: 100 }, Buffer.alloc(10)), RangeError);
    await reader.close();
    await assert.rejects(reader.read({ offset: 0, length: 10 }), (e: unknown) => e instanceof CofferError && e.code === 'storage' && /closed/.test(e.message));
    await assert.rejects((await b.openReader('data/a2/' + 'a2'.repeat(32))).read({ offset: 0, length: piece }, buf), (e: unknown) => e instanceof CofferError && e.code === 'missing-object');
  });

  test('an aborted writer leaves no object and no temporary file on the relay', async () => {
    const b = await backend();
    const w = await b.create('data/cd/' + 'cd'.repeat(32));
    await w.write([randomBytes(6 * 1024 * 1024)]);
    await pause(200);
    await w.abort();
    const blobs = join(dir, 'relay', 'blobs');
    // Polled: the relay (another process) removes the temporary file once it sees the
    // abort; 20 s rather than 5 for a loaded machine (the loop ends as soon as it is gone).
    const deadline = Date.now() + 20_000;
    while (filesUnder(blobs).some((f) => f.includes('.tmp-')) && Date.now() < deadline) await pause(50);
    assert.deepEqual(filesUnder(blobs).filter((f) => f.includes('.tmp-') || f.includes('cdcdcd')), []);
    assert.deepEqual(await b.list('data/'), []);
  });

  test('a writer cut off by the relay while the engine paused (body idle timeout) still commits the whole object', async () => {
    const b = await backend();
    const name = 'data/ef/' + 'ef'.repeat(32);
    const first = randomBytes(300_000);
    const second = randomBytes(500_000);
    const w = await b.create(name);
    await w.write([first]);
    await pause(2500); // longer than the relay's 1 s idle timeout: the first PUT is ended with 408
    await w.write([second]);
    await w.commit();
    assert.equal(sha(await b.get(name)), sha(Buffer.concat([first, second])));
  });

  test('refusals are storage errors naming the cause: an existing name, an object above the limit', async () => {
    const b = await backend();
    await b.put('index/1', [Buffer.from('one')]);
    const again = await b.create('index/1');
    const err1 = await (async () => {
      await again.write([Buffer.from('two')]);
      await again.commit();
    })().then(() => null, (e: unknown) => e);
    assert.ok(CofferError.is(err1, 'storage') && /already exists/.test((err1 as Error).message), String(err1));
    const big = await b.create('index/2');
    const err2 = await (async () => {
      for (let i = 0; i < 45; i++) await big.write([randomBytes(1024 * 1024)]);
      await big.commit();
    })().then(() => null, (e: unknown) => e);
    assert.ok(CofferError.is(err2, 'storage') && /size limit/.test((err2 as Error).message), String(err2));
    await big.abort();
    assert.deepEqual((await b.list('index/')).map((o) => o.name), ['index/1']);
    assert.equal(Buffer.from(await b.get('index/1')).toString(), 'one');
  });
});
