/**
 * Bearer-token authentication (spec/relay-api.md §1). A token is either a built-in
 * session (`cs1.…`, looked up in the account store) or an app JWT; the request's
 * account becomes `local:<id>` or `app:<sub>`. Every failure is the same 401.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { RelayError } from '../errors.js';
import type { TokenBuckets } from '../rate-limit.js';
import type { AccountStore } from './account-store.js';
import type { JwtVerifier } from './jwt.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated account (`local:…` or `app:…`); '' before authentication. */
    account: string;
    /** What the route adds to the request's log line (lengths, statuses: never bytes or secrets); null for none. */
    logFields: Record<string, unknown> | null;
  }
}

export const LOCAL_PREFIX = 'local:';
export const APP_PREFIX = 'app:';

export interface Authenticator {
  (req: FastifyRequest, reply: FastifyReply): Promise<void>;
}

export function makeAuthenticator(options: { accounts: AccountStore | null; jwt: JwtVerifier | null; perAccount: TokenBuckets }): Authenticator {
  const { accounts, jwt, perAccount } = options;
  return async (req) => {
    const header = req.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer ([\x21-\x7e]{1,8192})$/i.exec(header.trim()) : null;
    if (!m) throw new RelayError('unauthenticated');
    const token = m[1]!;
    let account: string | null = null;
    if (token.startsWith('cs1.')) {
      const id = accounts ? await accounts.session(token) : null;
      if (id) account = LOCAL_PREFIX + id;
    } else if (jwt && token.split('.').length === 3) {
      const sub = await jwt.subject(token);
      if (sub) account = APP_PREFIX + sub;
    }
    if (!account) throw new RelayError('unauthenticated');
    const wait = perAccount.take(account);
    if (wait > 0) throw new RelayError('rate-limited', { retryAfter: wait });
    req.account = account;
  };
}
