#!/usr/bin/env node
// The `coffer` command as npm links it into node_modules/.bin. This small file is committed
// because npm links a workspace's bin at install time only if the file exists then, and
// the code it runs (../dist/src/main.js) is built after the install (npm run build, npm test, npm start).
// No node options or environment on the #! line (issue 13): `#!/usr/bin/env -S node --flag`
// needs an env with -S, which busybox (Alpine) and coreutils before 8.30 lack — there the
// kernel hands env "-S node --flag" as one argument and coffer would not start at all —
// and `node packages/cli/dist/src/main.js` (scripts, benchmarks) would run without them.
// A backup's V8 heap settings are made at run time instead (../src/heap.ts), alike on both paths.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const target = new URL('../dist/src/main.js', import.meta.url);
if (!existsSync(fileURLToPath(target))) {
  process.stderr.write(`coffer: error: not built: ${fileURLToPath(target)} is missing; run \`npm run build\` in the repository first\n`);
  process.exit(1);
}
const { runMain } = await import(target.href);
runMain();
