// edgelink's development OpenID provider (oidc-provider, OpenID Certified).
// For `make run` and the tests only: in-memory storage, development signing
// keys, the built-in login form, two users (alice, bob; any password).
//
// Env: PORT (0 = any free port), HOST (127.0.0.1), REDIRECT_URIS and
// POST_LOGOUT_REDIRECT_URIS (comma-separated, for both clients),
// CONFIDENTIAL_SECRET. Prints `READY <issuer>` on stdout once listening.
//
// A machine client, `edgelink-service` (secret CONFIDENTIAL_SECRET), gets
// JWT access tokens with the client-credentials grant for any `resource`
// (the token's audience), with the scopes it asks for.
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 0);
const list = (v, fallback) => (v ?? fallback).split(',').map((s) => s.trim()).filter(Boolean);
const redirectUris = list(process.env.REDIRECT_URIS, 'http://127.0.0.1:3721/api/auth/callback');
const postLogout = list(process.env.POST_LOGOUT_REDIRECT_URIS, 'http://127.0.0.1:3721/');

const accounts = {
  alice: { email: 'alice@example.com', name: 'Alice Example' },
  bob: { email: 'bob@example.com', name: 'Bob Example' },
};

let provider;
const server = http.createServer((req, res) => provider.callback()(req, res));
server.listen(port, host, () => {
  const issuer = `http://${host}:${server.address().port}`;
  provider = new Provider(issuer, {
    clients: [
      {
        // The browser flow of `make run`: a public client, PKCE only.
        client_id: 'edgelink-web',
        token_endpoint_auth_method: 'none',
        redirect_uris: redirectUris,
        post_logout_redirect_uris: postLogout,
        grant_types: ['authorization_code'],
        response_types: ['code'],
      },
      {
        // A confidential client for the tests: secret via HTTP Basic.
        client_id: 'edgelink-confidential',
        client_secret: process.env.CONFIDENTIAL_SECRET ?? 'dev-confidential-secret',
        token_endpoint_auth_method: 'client_secret_basic',
        redirect_uris: redirectUris,
        post_logout_redirect_uris: postLogout,
        grant_types: ['authorization_code'],
        response_types: ['code'],
      },
      {
        // The same with the secret in the form body (client_secret_post).
        client_id: 'edgelink-confidential-post',
        client_secret: process.env.CONFIDENTIAL_SECRET ?? 'dev-confidential-secret',
        token_endpoint_auth_method: 'client_secret_post',
        redirect_uris: redirectUris,
        post_logout_redirect_uris: postLogout,
        grant_types: ['authorization_code'],
        response_types: ['code'],
      },
      {
        // A machine client (client-credentials grant, JWT access tokens).
        client_id: 'edgelink-service',
        client_secret: process.env.CONFIDENTIAL_SECRET ?? 'dev-confidential-secret',
        token_endpoint_auth_method: 'client_secret_basic',
        redirect_uris: [],
        grant_types: ['client_credentials'],
        response_types: [],
      },
    ],
    pkce: { required: () => true },
    // Put the email and profile claims in the ID token too (the BFF reads them there).
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Only the machine client gets audience-bound JWTs; browser
        // sign-ins keep their opaque access tokens.
        defaultResource: (_ctx, client, oneOf) => oneOf,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource, client) => {
          if (client.clientId !== 'edgelink-service') throw new errors.InvalidTarget();
          return {
            scope: 'device:read device:write device:delete device:manage session:read session:manage pairing:create token:manage',
            audience: resource,
            accessTokenFormat: 'jwt',
            accessTokenTTL: 600,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    async findAccount(_ctx, id) {
      const account = accounts[id];
      if (!account) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: account.email, email_verified: true, name: account.name };
        },
      };
    },
  });
  // Plain http on loopback: the provider must not insist on TLS.
  provider.proxy = true;
  process.stdout.write(`READY ${issuer}\n`);
});

for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => server.close(() => process.exit(0)));
