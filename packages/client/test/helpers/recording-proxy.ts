/** A TCP proxy on 127.0.0.1:0 that records every byte in both directions. */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface RecordingProxy {
  readonly url: string;
  /** Bytes client→upstream and upstream→client, in arrival order per connection. */
  readonly toUpstream: Buffer[];
  readonly fromUpstream: Buffer[];
  close(): Promise<void>;
}

export async function startRecordingProxy(upstream: string): Promise<RecordingProxy> {
  const u = new URL(upstream);
  const toUpstream: Buffer[] = [];
  const fromUpstream: Buffer[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const up = createConnection({ host: u.hostname, port: Number(u.port) });
    sockets.add(client).add(up);
    client.on('data', (d: Buffer) => toUpstream.push(Buffer.from(d)));
    up.on('data', (d: Buffer) => fromUpstream.push(Buffer.from(d)));
    client.pipe(up);
    up.pipe(client);
    const end = (): void => {
      client.destroy();
      up.destroy();
      sockets.delete(client);
      sockets.delete(up);
    };
    client.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    toUpstream,
    fromUpstream,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * The forms a secret could take on the wire or in a log: raw, hex (both cases), and
 * base64/base64url at each of the three byte alignments (the middle of a secret encoded
 * inside a longer base64 string), so an embedded occurrence is found too.
 */
export function secretForms(secret: Uint8Array): Buffer[] {
  const raw = Buffer.from(secret);
  const forms = [raw, Buffer.from(raw.toString('hex')), Buffer.from(raw.toString('hex').toUpperCase())];
  for (let shift = 0; shift < 3; shift++) {
    for (const enc of ['base64', 'base64url'] as const) {
      const text = Buffer.concat([Buffer.alloc(shift), raw]).toString(enc);
      const start = Math.ceil((shift * 4) / 3);
      const stable = text.slice(start, start + Math.floor((raw.length * 4) / 3) - 4);
      forms.push(Buffer.from(stable));
    }
  }
  return forms;
}

/** Which forms of `secret` occur in `haystack` (by index into secretForms). */
export function findSecret(haystack: Buffer, secret: Uint8Array): string[] {
  const names = ['raw', 'hex', 'HEX', 'b64+0', 'b64url+0', 'b64+1', 'b64url+1', 'b64+2', 'b64url+2'];
  return secretForms(secret)
    .map((f, i) => (haystack.includes(f) ? names[i]! : null))
    .filter((x): x is string => x !== null);
}
