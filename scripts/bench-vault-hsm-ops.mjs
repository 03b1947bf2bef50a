// `node scripts/bench-vault-hsm-ops.mjs [--rounds N] [--ops N] [--anchor-ops N]` (after `npx tsc -b`; needs SoftHSM2)
// CPU per SoftHSM2 operation of the vault's PKCS#11 hot path, on a throwaway token, rounds
// interleaved so load from other processes falls on every variant alike (median over rounds):
//   - ecdh: C_DeriveKey (CKM_ECDH1_DERIVE) + read CKA_VALUE + C_DestroyObject, the derived
//     object made with the vault's ECDH_SECRET_TEMPLATE and with CKA_PRIVATE = true (the
//     template before issue 13's third round), same private key, same peers; and with a
//     session EC key, generated as one or the session copy of a modifiable token key (what
//     the vault does since issue 13's session 18);
//   - seal: C_EncryptInit + C_Encrypt, AES-256-GCM of a 1 KiB record, and of a 3 KiB record
//     under a token key, a session key derived from one, and the session copy of a modifiable
//     token key (what the vault's seal keys are used through since issue 13's session 18);
//     mac: HMAC-SHA256 of 100 B;
//   - anchor: the vault's anchor write as its anchor thread makes it (platform/pkcs11/anchor.ts
//     AnchorSlots.write: C_SetAttributeValue of the older slot's label), and the same write
//     with the search of the token first (writeAnchorObject: what the first write after a
//     read does), --anchor-ops per round (default 20): one per group commit in the vault.
//     Before issue 13's fourth round every write was a search, C_CreateObject of the next
//     generation and C_DestroyObject of the old one (~1 ms of CPU here, most of it the
//     kernel allocating and freeing the object file's inode).
import { spawnSync } from 'node:child_process';
import { createECDH } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { argNumber } from './bench-args.mjs';

const ROUNDS = argNumber('rounds', 5);
const OPS = argNumber('ops', 400);
const require = createRequire(join(root, 'packages', 'vault', 'package.json'));
const pkcs11js = require('pkcs11js');
const { ECDH_SECRET_TEMPLATE, ecdhKeyPairTemplates, sealKeyTemplate, SESSION_COPY_TEMPLATE } = await import(join(root, 'packages/vault/dist/src/platform/pkcs11/keys.js'));
const { AnchorSlots, writeAnchorObject } = await import(join(root, 'packages/vault/dist/src/platform/pkcs11/anchor.js'));
const ANCHOR_OPS = argNumber('anchor-ops', 20);

const util = process.env.COFFER_SOFTHSM_UTIL ?? '/usr/bin/softhsm2-util';
const module = process.env.COFFER_SOFTHSM_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';
const dir = mkdtempSync(join(tmpdir(), 'coffer-bench-hsm-ops-'));
try {
  mkdirSync(join(dir, 'tokens'));
  writeFileSync(join(dir, 'softhsm2.conf'), `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  process.env.SOFTHSM2_CONF = join(dir, 'softhsm2.conf');
  const init = spawnSync(util, ['--init-token', '--free', '--label', 'ops', '--pin', '1234', '--so-pin', '123456'], { encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`softhsm2-util: ${init.stderr}`);
  const p = new pkcs11js.PKCS11();
  p.load(module);
  p.C_Initialize();
  try {
    const slot = p.C_GetSlotList(true).find((sl) => p.C_GetTokenInfo(sl).label.trim() === 'ops');
    const s = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    p.C_Login(s, pkcs11js.CKU_USER, '1234');
    const t = ecdhKeyPairTemplates('ops-ecdh');
    const pair = p.C_GenerateKeyPair(s, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, t.publicKey, t.privateKey);
    const aes = p.C_GenerateKey(s, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }, { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES }, { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_TOKEN, value: true }, { type: pkcs11js.CKA_PRIVATE, value: true }, { type: pkcs11js.CKA_SENSITIVE, value: true }, { type: pkcs11js.CKA_ENCRYPT, value: true },
    ]);
    const hmac = p.C_GenerateKey(s, { mechanism: pkcs11js.CKM_GENERIC_SECRET_KEY_GEN }, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }, { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET }, { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_TOKEN, value: true }, { type: pkcs11js.CKA_PRIVATE, value: true }, { type: pkcs11js.CKA_SENSITIVE, value: true }, { type: pkcs11js.CKA_SIGN, value: true },
    ]);
    const peers = Array.from({ length: OPS }, () => {
      const e = createECDH('prime256v1');
      e.generateKeys();
      return e.getPublicKey();
    });
    const privateTemplate = ECDH_SECRET_TEMPLATE.map((a) => (a.type === pkcs11js.CKA_PRIVATE ? { ...a, value: true } : a));
    const ecdh = (template, privateKey = pair.privateKey) => () => {
      for (const publicData of peers) {
        const k = p.C_DeriveKey(s, { mechanism: pkcs11js.CKM_ECDH1_DERIVE, parameter: { type: pkcs11js.CK_PARAMS_EC_DH, kdf: pkcs11js.CKD_NULL, publicData } }, privateKey, template);
        const v = p.C_GetAttributeValue(s, k, [{ type: pkcs11js.CKA_VALUE }])[0].value;
        p.C_DestroyObject(s, k);
        if (v.length !== 32) throw new Error('ecdh: not 32 bytes');
      }
    };
    // Issue 13, ninth round: the same operations on *session* objects (SoftHSM2 keeps them in
    // memory: no object-file reads per operation). Non-modifiable token keys cannot be
    // copied into session objects (docs/pkcs11.md); an AES key derived from a token key
    // (CKM_AES_CBC_ENCRYPT_DATA, the derived key a session object) can be.
    const aesDerivable = p.C_GenerateKey(s, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }, { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES }, { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_TOKEN, value: true }, { type: pkcs11js.CKA_PRIVATE, value: true }, { type: pkcs11js.CKA_SENSITIVE, value: true }, { type: pkcs11js.CKA_DERIVE, value: true },
    ]);
    const aesSession = p.C_DeriveKey(s, { mechanism: pkcs11js.CKM_AES_CBC_ENCRYPT_DATA, parameter: { type: pkcs11js.CK_PARAMS_AES_CBC, iv: Buffer.alloc(16), data: Buffer.alloc(32, 3) } }, aesDerivable, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }, { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES }, { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_TOKEN, value: false }, { type: pkcs11js.CKA_PRIVATE, value: true }, { type: pkcs11js.CKA_SENSITIVE, value: true }, { type: pkcs11js.CKA_EXTRACTABLE, value: false }, { type: pkcs11js.CKA_ENCRYPT, value: true },
    ]);
    // Session 18: the vault's seal keys are provisioned CKA_MODIFIABLE true and used through
    // a session copy (C_CopyObject, SESSION_COPY_TEMPLATE), what the platform does now.
    const aesCopy = p.C_CopyObject(s, p.C_GenerateKey(s, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, sealKeyTemplate('ops-seal-modifiable')), SESSION_COPY_TEMPLATE);
    const ecCopy = p.C_CopyObject(s, (() => { const t = ecdhKeyPairTemplates('ops-ecdh-modifiable'); return p.C_GenerateKeyPair(s, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, t.publicKey, t.privateKey).privateKey; })(), SESSION_COPY_TEMPLATE);
    const ts = ecdhKeyPairTemplates('ops-ecdh-session');
    const sessionPair = p.C_GenerateKeyPair(s, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, ts.publicKey.map((a) => (a.type === pkcs11js.CKA_TOKEN ? { ...a, value: false } : a)), ts.privateKey.map((a) => (a.type === pkcs11js.CKA_TOKEN ? { ...a, value: false } : a)));
    const record = Buffer.alloc(1024, 7);
    const aad = Buffer.alloc(40, 1);
    const seal = (key = aes, plaintext = record) => () => {
      for (let i = 0; i < OPS; i++) {
        const iv = Buffer.alloc(12);
        iv.writeUInt32BE(i);
        p.C_EncryptInit(s, { mechanism: pkcs11js.CKM_AES_GCM, parameter: { type: pkcs11js.CK_PARAMS_AES_GCM, iv, aad, ivBits: 96, tagBits: 128 } }, key);
        p.C_Encrypt(s, plaintext, Buffer.alloc(plaintext.length + 16));
      }
    };
    const record3k = Buffer.alloc(3072, 7); // the vault's padded record (RECORD_PADDED_SIZE)
    const mac = () => {
      for (let i = 0; i < OPS; i++) {
        p.C_SignInit(s, { mechanism: pkcs11js.CKM_SHA256_HMAC }, hmac);
        p.C_Sign(s, record.subarray(0, 100), Buffer.alloc(32));
      }
    };
    const anchorValue = Buffer.alloc(56, 5);
    const slots = new AnchorSlots();
    const anchor = () => {
      slots.forget(); // the case before wrote the token without it: its first write searches
      for (let i = 0; i < ANCHOR_OPS; i++) slots.write(p, s, anchorValue);
    };
    const anchorSearch = () => {
      for (let i = 0; i < ANCHOR_OPS; i++) writeAnchorObject(p, s, anchorValue);
    };
    const cases = { 'ecdh (token EC key, derived object CKA_PRIVATE=false)': ecdh(ECDH_SECRET_TEMPLATE), 'ecdh (derived object CKA_PRIVATE=true, before)': ecdh(privateTemplate), 'ecdh (session EC key generated as such)': ecdh(ECDH_SECRET_TEMPLATE, sessionPair.privateKey), 'ecdh (session copy of a token EC key, session 18)': ecdh(ECDH_SECRET_TEMPLATE, ecCopy), 'seal 1 KiB AES-GCM': seal(), 'seal 3 KiB AES-GCM (token key, the vault before)': seal(aes, record3k), 'seal 3 KiB AES-GCM (session key derived from a token key)': seal(aesSession, record3k), 'seal 3 KiB AES-GCM (session copy of a token key, session 18)': seal(aesCopy, record3k), 'mac HMAC-SHA256 100 B': mac, 'anchor write (per group commit)': anchor, 'anchor write with the token searched first': anchorSearch };
    const opsOf = (name) => (name.startsWith('anchor') ? ANCHOR_OPS : OPS);
    const results = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
    const cpuUs = () => {
      const u = process.cpuUsage();
      return u.user + u.system;
    };
    for (const fn of Object.values(cases)) fn(); // warm-up
    for (let r = 0; r < ROUNDS; r++) {
      for (const [name, fn] of Object.entries(cases)) {
        const c0 = cpuUs();
        fn();
        results[name].push((cpuUs() - c0) / opsOf(name));
      }
    }
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    console.log(`SoftHSM2 CPU per operation (µs; ${OPS} ops per case per round (anchor: ${ANCHOR_OPS}), ${ROUNDS} interleaved rounds; median [min–max]):`);
    for (const [name, xs] of Object.entries(results)) console.log(`  ${name.padEnd(62)} ${median(xs).toFixed(0).padStart(5)}  [${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}]`);
    p.C_Logout(s);
    p.C_CloseSession(s);
  } finally {
    p.C_Finalize();
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
