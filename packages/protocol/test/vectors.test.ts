// One table-driven test over every known-answer vector in spec/vectors/vault/, checking
// the *kind* of failure for negative vectors (spec/vault-protocol.md §10).
import assert from 'node:assert/strict';
import { createECDH } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { nodeCryptoProvider } from '../src/node/node-crypto.js';
import {
  cryptoProvider,
  useCryptoProvider,
  webCryptoProvider,
  DecodeError,
  ownerToken,
  sha256,
  DecryptionError,
  decodeRequestBody,
  decodeResponseBody,
  fleetKeyFromPublicKey,
  fromHex,
  openRelease,
  openRequest,
  parseRequest,
  sealRelease,
  sealRequest,
  toHex,
  unwrapBackupKey,
  wrapBackupKey,
  type Operation,
} from '../src/index.js';
import { dhWith, ephemeral, toJsonable, VECTOR_DIR, type Expect, type Vector } from './vectors/fixtures.js';

async function outcome(fn: () => Promise<void>): Promise<Expect> {
  try {
    await fn();
    return 'success';
  } catch (err) {
    if (err instanceof DecodeError) return 'decode-error';
    if (err instanceof DecryptionError) return 'decryption-error';
    throw err;
  }
}

async function check(v: Vector): Promise<void> {
  switch (v.kind) {
    case 'fleet-key-id':
      assert.equal(toHex((await fleetKeyFromPublicKey(fromHex(v.publicKey))).keyId), v.keyId);
      return;
    case 'request-body':
      assert.equal(
        await outcome(async () => {
          const decoded = decodeRequestBody(v.op as Operation, fromHex(v.encoded));
          assert.deepEqual(toJsonable(decoded), v.decoded);
        }),
        v.expect,
      );
      return;
    case 'response-body':
      assert.equal(
        await outcome(async () => {
          assert.deepEqual(toJsonable(decodeResponseBody(fromHex(v.encoded))), v.decoded);
        }),
        v.expect,
      );
      return;
    case 'request': {
      const sk = Buffer.from(v.recipientPrivateKey, 'hex');
      const fleetKey = await fleetKeyFromPublicKey(fromHex(v.recipientPublicKey));
      if (v.expect === 'success') {
        const sealed = await sealRequest(fleetKey, v.account, v.op as Operation, fromHex(v.body), { ephemeral: await ephemeral(Buffer.from(v.ephemeralPrivateKey, 'hex')) });
        assert.equal(toHex(sealed.bytes), v.request, 'sealing reproduces the request');
      }
      assert.equal(
        await outcome(async () => {
          const opened = await openRequest(parseRequest(fromHex(v.request)), v.openAs?.account ?? v.account, fleetKey.publicKey, dhWith(sk));
          assert.equal(toHex(opened.paddedBody), v.body);
        }),
        v.expect,
      );
      return;
    }
    case 'response': {
      const opened = await openRequest(parseRequest(fromHex(v.request)), v.account, derivePk(v.recipientPrivateKey), dhWith(Buffer.from(v.recipientPrivateKey, 'hex')));
      assert.equal(toHex(await opened.sealResponse(fromHex(v.body), fromHex(v.responseNonce))), v.response);
      return;
    }
    case 'key-wrap':
      assert.equal(
        await outcome(async () => {
          if (v.expect === 'success') assert.equal(toHex(await wrapBackupKey(fromHex(v.exportKey), v.account, fromHex(v.backupKey), () => fromHex(v.nonce))), v.wrapped);
          assert.equal(toHex(await unwrapBackupKey(fromHex(v.exportKey), v.account, fromHex(v.wrapped))), v.backupKey);
        }),
        v.expect,
      );
      return;
    case 'owner-token': {
      const token = await ownerToken(fromHex(v.backupKey), v.account);
      assert.equal(toHex(token), v.token);
      assert.equal(toHex(await sha256(token)), v.tokenHash);
      return;
    }
    case 'release':
      assert.equal(toHex(await sealRelease(fromHex(v.sessionKey), v.account, fromHex(v.wrappedKey), fromHex(v.nonce))), v.released);
      assert.equal(toHex(await openRelease(fromHex(v.sessionKey), v.account, fromHex(v.released))), v.wrappedKey);
      return;
  }
}

function derivePk(skHex: string): Uint8Array {
  const e = createECDH('prime256v1');
  e.setPrivateKey(Buffer.from(skHex, 'hex'));
  return new Uint8Array(e.getPublicKey());
}

// With the default WebCrypto provider (the async key schedule) and with node:crypto (the
// synchronous one in hpke.ts and envelope.ts): both must give every vector.
for (const provider of [webCryptoProvider, nodeCryptoProvider]) {
test(`spec/vectors/vault: every known-answer vector (${provider.name})`, async () => {
  const before = cryptoProvider();
  useCryptoProvider(provider);
  try {
    await checkAll();
  } finally {
    useCryptoProvider(before);
  }
});
}

async function checkAll(): Promise<void> {
  const files = readdirSync(VECTOR_DIR).filter((f) => f.endsWith('.json')).sort();
  assert.ok(files.length >= 30, `expected the vault vectors in ${VECTOR_DIR}`);
  const failures: string[] = [];
  for (const f of files) {
    const v = JSON.parse(readFileSync(join(VECTOR_DIR, f), 'utf8')) as Vector;
    assert.equal(`${v.name}.json`, f);
    try {
      await check(v);
    } catch (err) {
      failures.push(`${f}: ${(err as Error).message}`);
    }
  }
  process.stdout.write(`# vault vectors (${cryptoProvider().name}): ${files.length - failures.length}/${files.length} passed\n`);
  assert.deepEqual(failures, []);
}
