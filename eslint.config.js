import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'bench-work/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.mjs', '**/*.js'],
    languageOptions: {
      globals: Object.fromEntries(
        ['process', 'console', 'Buffer', 'URL', 'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'fetch', 'AbortSignal', 'AbortController', 'performance', 'TextEncoder', 'TextDecoder', 'structuredClone'].map((g) => [g, 'readonly']),
      ),
    },
    // Some scripts still name Node globals in /* global */ comments: harmless.
    rules: { 'no-redeclare': ['error', { builtinGlobals: false }] },
  },
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    // @coffer/protocol runs in browsers too: only its node/ entry may use Node's modules.
    files: ['packages/protocol/src/**/*.ts'],
    ignores: ['packages/protocol/src/node/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['node:*'] }] },
  },
  {
    // The vault core runs inside the HSM boundary: bytes in, bytes out, no I/O.
    files: ['packages/vault/src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: ['node:*', 'fs', 'net', 'http', 'crypto', 'better-sqlite3', 'pkcs11js', 'etcd3', '**/platform/**', '**/store/**', '**/server/**'] }],
      'no-restricted-globals': ['error', 'process', 'require', 'Buffer', 'setTimeout', 'setInterval', 'fetch'],
    },
  },
);
