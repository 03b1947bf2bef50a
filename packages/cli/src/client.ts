/**
 * @coffer/client, loaded on first use. It brings @coffer/protocol and OPAQUE's WASM
 * (about 16 MiB of resident memory) that a backup, restore or any other key-mode command
 * never uses (issue 13), so only the commands that talk to the relay or the vault load it.
 */
import type * as Client from '@coffer/client';
import { knowClientErrors } from './tui.js';

type ClientModule = typeof Client;

let loading: Promise<ClientModule> | undefined;

export function loadClient(): Promise<ClientModule> {
  loading ??= import('@coffer/client').then((m) => {
    knowClientErrors(m.CofferClientError);
    return m;
  });
  return loading;
}
