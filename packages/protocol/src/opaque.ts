/**
 * @serenity-kit/opaque, loaded on first use (issue 13). Its module inlines the WASM
 * build (~430 KB of source) and its loader touches the global `Response`, which makes
 * Node load undici: ~4 MB more old-generation heap in every process that imports
 * @coffer/protocol, enough to keep V8 starting incremental marking through a whole
 * backup to `coffer:` (tens of full collections instead of one), which runs no OPAQUE.
 *
 * `opaque.ready` loads the module and waits for its WASM, as the module's own `ready`
 * does; `opaque.client` / `opaque.server` are the module's, once it is ready (both sides
 * await `ready` before any flow, as the module requires anyway).
 */
import type * as Opaque from '@serenity-kit/opaque';

type OpaqueModule = Pick<typeof Opaque, 'ready' | 'client' | 'server'>;

let loaded: OpaqueModule | undefined;
let loading: Promise<void> | undefined;

function ready(): OpaqueModule {
  if (!loaded) throw new Error('@serenity-kit/opaque is not ready: await opaque.ready first');
  return loaded;
}

export const opaque: OpaqueModule = Object.freeze({
  get ready(): Promise<void> {
    loading ??= import('@serenity-kit/opaque').then(async (m) => {
      await m.ready;
      loaded = m;
    });
    return loading;
  },
  get client(): OpaqueModule['client'] {
    return ready().client;
  },
  get server(): OpaqueModule['server'] {
    return ready().server;
  },
});
