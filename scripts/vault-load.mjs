// The client side of vault recoveries for the in-process vault benches (bench-vault-ab.mjs,
// bench-vault-layers.mjs): registration, and one recovery per account in its two phases,
// with the client work (OPAQUE, sealing, opening) outside the windows a bench times.
// `P` is a build's @coffer/protocol; `send(account, bytes)` delivers a sealed request to
// that build's vault and resolves to the sealed answer.
export const PASSWORD = 'bench password';
export const K = new Uint8Array(32).fill(7);

/** `fn` over `items`, `n` at a time; the results in order. */
export async function pool(items, n, fn) {
  let next = 0;
  const out = new Array(items.length);
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) {
      const k = next++;
      out[k] = await fn(items[k]);
    }
  }));
  return out;
}

/** Registers every account (the insecure fast KSF: argon2id is client work, not the vault's). */
export async function registerAll(P, fleetKey, accounts, send) {
  await pool(accounts, 16, async (account) => {
    const c = new P.VaultClient({ fleetKey, account, ksf: P.INSECURE_FAST_KSF_FOR_TESTING, transport: (b) => send(account, b) });
    const r = await c.register(PASSWORD, K);
    if (r.outcome !== 'ok') throw new Error(`register ${account}: ${r.outcome}`);
  });
}

/**
 * A recovery's HPKE ephemeral key (spec §3.2: login-start and login-finish share it), its
 * DH with the fleet key computed once. Built from `generateEphemeral`, which every build
 * compared by bench-vault-ab exports, so all builds get the same client behaviour.
 */
export async function oneEphemeral(P, fleetKey) {
  const eph = await P.generateEphemeral();
  const dh = await eph.dh(fleetKey.publicKey);
  return { publicKey: eph.publicKey, dh: async () => dh.slice() };
}

/**
 * One recovery per account: every login-start, `lanes` at a time, then every login-finish.
 * `timed(phase, run)` wraps each sending phase ('start', 'finish'): `run()` only sends.
 */
export async function recoverAll(P, fleetKey, accounts, lanes, send, timed) {
  const starts = await pool(accounts, 8, async (account) => {
    const start = P.opaque.client.startLogin({ password: PASSWORD });
    // One ephemeral for both requests, as VaultClient.recover does (spec §3.2).
    const ephemeral = await oneEphemeral(P, fleetKey);
    const sealed = await P.sealRequest(fleetKey, account, 'login-start', P.pad(P.encodeRequestBody({ op: 'login-start', timestampMs: Date.now(), ke1: P.fromBase64Url(start.startLoginRequest) })), { ephemeral });
    return { account, start, sealed, ephemeral };
  });
  const answers1 = await timed('start', () => pool(starts, lanes, async (s) => ({ s, bytes: await send(s.account, s.sealed.bytes) })));
  const finishes = await pool(answers1, 8, async ({ s, bytes }) => {
    const r = P.decodeResponseBody(P.unpad(await s.sealed.openResponse(bytes)));
    if (r.outcome !== 'ok') throw new Error(`login-start: ${r.outcome}`);
    const f = P.opaque.client.finishLogin({ password: PASSWORD, clientLoginState: s.start.clientLoginState, loginResponse: P.toBase64Url(r.ke2), keyStretching: P.toSerenityKeyStretching(r.ksf) });
    return { account: s.account, sealed: await P.sealRequest(fleetKey, s.account, 'login-finish', P.pad(P.encodeRequestBody({ op: 'login-finish', nonce: r.nonce, ke3: P.fromBase64Url(f.finishLoginRequest) })), { ephemeral: s.ephemeral }) };
  });
  const answers2 = await timed('finish', () => pool(finishes, lanes, async (f) => ({ f, bytes: await send(f.account, f.sealed.bytes) })));
  for (const { f, bytes } of answers2) {
    const r = P.decodeResponseBody(P.unpad(await f.sealed.openResponse(bytes)));
    if (r.outcome !== 'ok') throw new Error(`login-finish: ${r.outcome}`);
  }
}
