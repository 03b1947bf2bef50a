/**
 * `@coffer/protocol/core`: the small isomorphic pieces (bytes, labels, `Secret`, SHA-256,
 * the relay's proof of work) without the vault protocol (HPKE, OPAQUE, messages). A
 * process that only signs in to the relay and moves blobs (`coffer backup --repo
 * coffer:`) loads this instead of the whole index (issue 13: every module kept in the
 * old generation brings V8's next full collection closer). The index re-exports all of
 * it: both entry points give the very same bindings.
 */
export { LABELS, type LabelName } from './labels.js';
export { ProtocolError, DecodeError, type DecodeErrorCode } from './errors.js';
export { Secret } from './secret.js';
export { ByteReader, ByteWriter, concat, equalBytes, toHex, fromHex, toBase64Url, fromBase64Url, utf8 } from './bytes.js';
export { sha256 } from './primitives.js';
export { POW_LABEL, leadingZeroBits } from './pow.js';
