// The node:crypto provider the vault installs gives exactly WebCrypto's results, so a
// client on WebCrypto (browser) and a vault on node:crypto interoperate.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { cryptoProvider, decodeResponseBody, encodeRequestBody, encodeResponseBody, fleetKeyFromPublicKey, openRequest, pad, parseRequest, sealRequest, toHex, unpad, useCryptoProvider, webCryptoProvider, type CryptoProvider } from '@coffer/protocol';
import { nodeCryptoProvider } from '../src/server/node-crypto.js';
import { createECDH, createHmac } from 'node:crypto';

const hex = async (p: Uint8Array | null | Promise<Uint8Array | null>) => { const v = await p; return v ? toHex(v) : null; };

test('node:crypto and WebCrypto providers agree on SHA-256, HMAC and AES-GCM', async () => {
  for (let i = 0; i < 50; i++) {
    const data = randomBytes(i * 7);
    const key = randomBytes(i % 2 ? 32 : 16);
    const nonce = randomBytes(12);
    const aad = randomBytes(i);
    assert.equal(await hex(nodeCryptoProvider.sha256(data)), await hex(webCryptoProvider.sha256(data)));
    assert.equal(await hex(nodeCryptoProvider.hmacSha256(key.subarray(0, i % 33), data)), await hex(webCryptoProvider.hmacSha256(key.subarray(0, i % 33), data)));
    const ct = await nodeCryptoProvider.aesGcmSeal(key, nonce, aad, data);
    assert.equal(toHex(ct), toHex(await webCryptoProvider.aesGcmSeal(key, nonce, aad, data)));
    assert.equal(await hex(webCryptoProvider.aesGcmOpen(key, nonce, aad, ct)), toHex(data));
    const bad = Uint8Array.from(ct);
    bad[0]! ^= 1;
    assert.equal(await nodeCryptoProvider.aesGcmOpen(key, nonce, aad, bad), null);
  }
});

test('the node:crypto HMAC-SHA256 is RFC 2104 for keys shorter than, equal to and longer than the block', async () => {
  for (let n = 0; n <= 200; n++) {
    const key = randomBytes(n);
    const data = randomBytes((n * 13) % 300);
    assert.equal(await hex(nodeCryptoProvider.hmacSha256(key, data)), createHmac('sha256', key).update(data).digest('hex'), `key of ${n} bytes`);
  }
  // RFC 4231 test case 2
  assert.equal(await hex(nodeCryptoProvider.hmacSha256(new TextEncoder().encode('Jefe'), new TextEncoder().encode('what do ya want for nothing?'))), '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
});

test('a WebCrypto client and a node:crypto vault exchange sealed messages both ways', async () => {
  const recipient = createECDH('prime256v1');
  recipient.generateKeys();
  const fleetKey = await fleetKeyFromPublicKey(new Uint8Array(recipient.getPublicKey()));
  const dh = async (enc: Uint8Array) => new Uint8Array(recipient.computeSecret(enc));
  const before = cryptoProvider();
  try {
    for (const [client, vault] of [[webCryptoProvider, nodeCryptoProvider], [nodeCryptoProvider, webCryptoProvider]] as [CryptoProvider, CryptoProvider][]) {
      useCryptoProvider(client);
      const sealed = await sealRequest(fleetKey, 'acct', 'status', pad(encodeRequestBody({ op: 'status', proof: null })));
      useCryptoProvider(vault);
      const opened = await openRequest(parseRequest(sealed.bytes), 'acct', fleetKey.publicKey, dh);
      const response = await opened.sealResponse(pad(encodeResponseBody({ outcome: 'locked', op: 'status' })), randomBytes(32));
      useCryptoProvider(client);
      assert.deepEqual(decodeResponseBody(unpad(await sealed.openResponse(response))), { outcome: 'locked', op: 'status' });
    }
  } finally {
    useCryptoProvider(before);
  }
});
