// An OAuth client built only from oauth4webapi (unmodified, from the npm registry):
// authorization code + PKCE against a keyturn server, then refresh after refresh,
// keeping each rotated refresh token as an application would, and validating every
// access token as an RFC 9068 resource server. Finally the first refresh token is
// replayed, which must end the session.
//
//   node refresh_loop.mjs <issuer> <client_id> <redirect_uri> <rotations>
//
// Prints one JSON line with the authorization URL, reads the callback URL (after the
// user signed in) from stdin, and prints one JSON line with what happened.
import * as oauth from "oauth4webapi";
import { createInterface } from "node:readline";

const [issuerText, clientId, redirectUri, rotationsText] = process.argv.slice(2);
const rotations = Number(rotationsText);
const issuer = new URL(issuerText);
const insecure = { [oauth.allowInsecureRequests]: true }; // the test server is plain HTTP
const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { ...insecure, algorithm: "oauth2" }),
);
const client = { client_id: clientId };
const auth = oauth.None();

const verifier = oauth.generateRandomCodeVerifier();
const state = oauth.generateRandomState();
const url = new URL(as.authorization_endpoint);
url.search = new URLSearchParams({
  response_type: "code",
  client_id: clientId,
  redirect_uri: redirectUri,
  scope: "read",
  code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
  code_challenge_method: "S256",
  state,
}).toString();
console.log(JSON.stringify({ authorize: url.href }));

const lines = createInterface({ input: process.stdin });
const callback = await new Promise((resolve) => lines.once("line", resolve));
lines.close();

// Checks state, error and (RFC 9207) iss of the authorization response.
const params = oauth.validateAuthResponse(as, client, new URL(callback), state);
let tokens = await oauth.processAuthorizationCodeResponse(
  as,
  client,
  await oauth.authorizationCodeGrantRequest(as, client, auth, params, redirectUri, verifier, insecure),
);

async function validate(accessToken) {
  const request = new Request(new URL("/resource", issuer), {
    headers: { authorization: `Bearer ${accessToken}` },
  });
  return oauth.validateJwtAccessToken(as, request, issuerText, insecure);
}

async function refresh(refreshToken) {
  const response = await oauth.refreshTokenGrantRequest(as, client, auth, refreshToken, insecure);
  return oauth.processRefreshTokenResponse(as, client, response);
}

async function errorOf(work) {
  try {
    await work();
    return "accepted";
  } catch (error) {
    return error.error ?? String(error);
  }
}

const saved = { refreshToken: tokens.refresh_token }; // the application's token storage
const first = tokens.refresh_token;
const seen = new Set([first]);
const subjects = new Set([(await validate(tokens.access_token)).sub]);
for (let i = 0; i < rotations; i++) {
  tokens = await refresh(saved.refreshToken);
  if (!tokens.refresh_token || seen.has(tokens.refresh_token)) {
    throw new Error(`rotation ${i} did not give a new refresh token`);
  }
  seen.add(tokens.refresh_token);
  saved.refreshToken = tokens.refresh_token;
  subjects.add((await validate(tokens.access_token)).sub);
}
const replay = await errorOf(() => refresh(first));
const after = await errorOf(() => refresh(saved.refreshToken));
console.log(
  JSON.stringify({
    rotations: seen.size - 1,
    validated: rotations + 1,
    subjects: [...subjects],
    replay,
    after,
  }),
);
