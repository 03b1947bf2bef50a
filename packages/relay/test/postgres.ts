// The local PostgreSQL starter is product code (npm run cluster uses it); tests use it from there.
export { startPostgres, postgresMissing, POSTGRES_BINARIES, type TestPostgres } from '../src/dev-postgres.js';
