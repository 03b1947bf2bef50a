/** @coffer/protocol/node: the few pieces that only Node services need (files). */
export { loadLinkKey, LinkKeyError } from './link-key-file.js';
export { installNodeCrypto, nodeCryptoProvider } from './node-crypto.js';
