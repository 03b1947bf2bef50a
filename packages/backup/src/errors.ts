/**
 * The backup engine's errors: one base class with a stable `code`, so the CLI can map
 * each to a message and an exit code. Bugs are plain `Error`s.
 */
export type CofferErrorCode =
  | 'invalid-key' // text that is not a well-formed 64-digit key
  | 'wrong-key' // a well-formed key that is not this repository's
  | 'not-a-repository'
  | 'repository-exists'
  | 'unsupported-version'
  | 'corrupt' // authentication or structure failed although the key is right
  | 'missing-object'
  | 'storage' // the storage backend failed (I/O error, disk full, permission)
  | 'locked'
  | 'not-found' // a snapshot or source path that does not exist
  | 'exists' // restore target would overwrite
  | 'needs-repair' // prune refused: deleting now could lose data; the message says which repair to run
  | 'nothing-read' // a backup could read none of its paths: no snapshot saved
  | 'invalid-argument';

export class CofferError extends Error {
  override name = 'CofferError';
  constructor(
    readonly code: CofferErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** True when `e` is a CofferError with this code. */
  static is(e: unknown, code: CofferErrorCode): e is CofferError {
    return e instanceof CofferError && e.code === code;
  }
}

/**
 * The one error for every authentication failure in the sealed-object layer. It never
 * says which check failed (STYLE.md §4); callers add *where* (the object name).
 */
export class DecryptionError extends Error {
  override name = 'DecryptionError';
  constructor() {
    super('sealed object failed authentication');
  }
}
