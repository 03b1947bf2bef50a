/**
 * Sizes given on the command line: `4096`, `500K`, `500M`, `1.5G`, `2T`, optionally with
 * `B`/`iB` (`500MiB`), any case; units are powers of 1024, as restic's. Returns the bytes
 * (rounded down), or undefined when `s` is not such a size (a negative number, a unit it
 * does not know, more than 2^53 bytes).
 */
export function parseByteSize(s: string): number | undefined {
  const m = /^(\d{1,15}(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(s.trim());
  if (!m) return undefined;
  const bytes = Math.floor(Number(m[1]) * UNITS[m[2]!.toUpperCase()]!);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };
