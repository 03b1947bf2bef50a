#!/usr/bin/env node
// The `coffer-vault` command as npm links it into node_modules/.bin. This small file is committed
// because npm links a workspace's bin at install time only if the file exists then, and
// the code it runs (../dist/src/server/main.js) is built after the install (npm run build, npm test, npm start).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const target = new URL('../dist/src/server/main.js', import.meta.url);
if (!existsSync(fileURLToPath(target))) {
  process.stderr.write(`coffer-vault: error: not built: ${fileURLToPath(target)} is missing; run \`npm run build\` in the repository first\n`);
  process.exit(1);
}
await import(target.href);
