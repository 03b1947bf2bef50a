/** Hand-built requests, for tests that replay, splice or capture exact bytes. */
import { decodeResponseBody, encodeRequestBody, fromBase64Url, opaque, pad, sealRequest, unpad, type EphemeralKeyPair, type FleetKey, type SealedRequest, type VaultRequest, type VaultResponse } from '@coffer/protocol';
import type { Harness } from './vault-harness.js';

export interface RawExchange {
  readonly sealed: SealedRequest;
  send(): Promise<{ status: number; response: VaultResponse | null; bytes: Buffer }>;
}

export async function raw(h: Harness, account: string, req: VaultRequest, fleetKey: FleetKey = h.vault.fleet.fleetKey, ephemeral?: EphemeralKeyPair): Promise<RawExchange> {
  const sealed = await sealRequest(fleetKey, account, req.op, pad(encodeRequestBody(req)), ephemeral ? { ephemeral } : {});
  return {
    sealed,
    async send() {
      const res = await h.post(account, sealed.bytes);
      if (res.status !== 200) return { status: res.status, response: null, bytes: res.body };
      return { status: 200, response: decodeResponseBody(unpad(await sealed.openResponse(new Uint8Array(res.body)))), bytes: res.body };
    },
  };
}

export async function freshKe1(password: string): Promise<{ ke1: Uint8Array; state: string }> {
  await opaque.ready;
  const s = opaque.client.startLogin({ password });
  return { ke1: fromBase64Url(s.startLoginRequest), state: s.clientLoginState };
}
