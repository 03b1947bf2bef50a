/**
 * @coffer/client, loaded on first use. It brings @coffer/protocol and OPAQUE's WASM
 * (about 16 MiB of resident memory) that a backup, restore or any other key-mode command
 * never uses (issue 13), so only the commands that talk to the relay or the vault load it.
 */
import type * as Client from '@coffer/client';
import type * as Blobs from '@coffer/client/blobs';
import { knowClientErrors } from './tui.js';

type ClientModule = typeof Client;
type BlobsModule = typeof Blobs;

let loading: Promise<ClientModule> | undefined;
let loadingBlobs: Promise<BlobsModule> | undefined;

export function loadClient(): Promise<ClientModule> {
  loading ??= import('@coffer/client').then((m) => {
    knowClientErrors(m.CofferClientError);
    return m;
  });
  return loading;
}

/**
 * @coffer/client/blobs: the relay's blob API and the profile's backup key without
 * CofferClient and the vault protocol: what `--repo coffer:` needs (issue 13). Its
 * CofferClientError is the very class @coffer/client exports (the same module).
 */
export function loadBlobs(): Promise<BlobsModule> {
  loadingBlobs ??= import('@coffer/client/blobs').then((m) => {
    knowClientErrors(m.CofferClientError);
    return m;
  });
  return loadingBlobs;
}
