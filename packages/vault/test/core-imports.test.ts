// The core is a pure state machine (STYLE.md §2): it may import only other core files
// and @coffer/protocol. This scans the sources, as a second line after eslint.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const CORE = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'core');
const ALLOWED = /^(\.\/[\w-]+\.js|@coffer\/protocol)$/;
const FORBIDDEN_GLOBALS = /\b(process|require|Buffer|setTimeout|setInterval|fetch)\s*[.(]/;

test('vault core sources import only core files and @coffer/protocol', () => {
  const files = readdirSync(CORE).filter((f) => f.endsWith('.ts'));
  assert.ok(files.length >= 5, `found ${files.length} core files in ${CORE}`);
  let total = 0;
  for (const f of files) {
    const text = readFileSync(join(CORE, f), 'utf8');
    const specifiers = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s*['"]([^'"]+)['"]/g), ...text.matchAll(/import\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => m[1]!);
    total += specifiers.length;
    for (const s of specifiers) assert.match(s, ALLOWED, `${f} imports ${s}`);
    const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
    assert.doesNotMatch(code, FORBIDDEN_GLOBALS, `${f} uses an I/O global`);
  }
  assert.ok(total >= 10, `the scan found only ${total} imports: is the pattern still right?`);
});
