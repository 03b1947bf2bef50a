/**
 * The vault's synchronous node:crypto provider for @coffer/protocol's primitives: it
 * lives in `@coffer/protocol/node` (the relay installs it too).
 */
export { installNodeCrypto, nodeCryptoProvider } from '@coffer/protocol/node';
