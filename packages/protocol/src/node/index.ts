/** @coffer/protocol/node: the few pieces that only Node services need (files, HTTP server close). */
export { loadLinkKey, LinkKeyError } from './link-key-file.js';
export { installNodeCrypto, nodeCryptoProvider } from './node-crypto.js';
export { closeIdleUntilClosed, CLOSE_SWEEP_MS } from './graceful-close.js';
