/**
 * A napi-rs package's native binding, loaded without its `index.js` where that is safe
 * (issue 13). The loaders of `@mongodb-js/zstd` and `@napi-rs/xattr` ask
 * `process.report.getReport()` whether the C library is musl each time a thread loads
 * them: it builds a whole process report, ~6–9 ms of CPU per thread (the main thread of
 * every backup and restore, each chunk worker).
 *
 * On Linux (x64, arm64) the glibc build is its own package, `<name>-linux-<arch>-gnu`,
 * installed only where npm chose it: it is required directly. Where that fails (not
 * installed, or a C library it does not load on), the package's own loader decides, as
 * before. Only the version check of the package's loader is skipped; package-lock.json
 * pins both packages together.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** Tests: the packages loaded without their loader. */
export const directBindingsForTesting = new Set<string>();

/** `pkg`'s binding: its glibc platform package when it loads, else `pkg`'s own `entry` (its loader). */
export function napiBinding<T>(pkg: string, entry: string = pkg): T {
  if (process.platform === 'linux' && (process.arch === 'x64' || process.arch === 'arm64')) {
    try {
      const binding = require(`${pkg}-linux-${process.arch}-gnu`) as T;
      directBindingsForTesting.add(pkg);
      return binding;
    } catch {
      // Not installed here, or not for this C library: the package's loader finds the right one.
    }
  }
  return require(entry) as T;
}
