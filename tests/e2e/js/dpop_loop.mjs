// A DPoP (RFC 9449) client built only from oauth4webapi (unmodified, from the npm
// registry): authorization code + PKCE with the code exchanged under a DPoP proof,
// then refresh after refresh under proofs of the same key, each new access token used
// with its proof (`ath`) at keyturn's GET /auth/sessions. Finally the live refresh
// token is stolen: presented by a second oauth4webapi DPoP handle with another key
// (`other_key`) or by a bare fetch with no proof at all (`no_proof`), and then the
// legitimate client refreshes once more.
//
//   node dpop_loop.mjs <issuer> <client_id> <redirect_uri> <rotations> <other_key|no_proof>
//
// Prints one JSON line with the authorization URL, reads the callback URL (after the
// user signed in) from stdin, and prints one JSON line with what happened; the Python
// test (tests/e2e/test_dpop_interop.py) judges it.
//
// Nonces: oauth4webapi's DPoP handle remembers the DPoP-Nonce of every answer and
// `isDPoPNonceError` recognises a `use_dpop_nonce` refusal (token endpoint: JSON body;
// resource: WWW-Authenticate challenge). The library leaves the retry to the
// application, and documents this pattern: retry the same call once.
import * as oauth from "oauth4webapi";
import { createInterface } from "node:readline";

const [issuerText, clientId, redirectUri, rotationsText, theft] = process.argv.slice(2);
const rotations = Number(rotationsText);
if (theft !== "other_key" && theft !== "no_proof") throw new Error(`unknown theft ${theft}`);
const issuer = new URL(issuerText);
const insecure = { [oauth.allowInsecureRequests]: true }; // the test server is plain HTTP
const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { ...insecure, algorithm: "oauth2" }),
);
const client = { client_id: clientId };
const auth = oauth.None();

// A non-extractable private key, as the library generates it by default.
const keyPair = await oauth.generateKeyPair("ES256");
const DPoP = oauth.DPoP(client, keyPair);
const challenges = { token: 0, resource: 0 };

async function retryingNonce(kind, work) {
  try {
    return await work();
  } catch (error) {
    if (!oauth.isDPoPNonceError(error)) throw error;
    challenges[kind] += 1;
    return work();
  }
}

async function errorOf(work) {
  try {
    await work();
    return "accepted";
  } catch (error) {
    return error.error ?? String(error);
  }
}

// The token endpoint's answer as sent (token_type before the library lowercases it)
// and as the library processed it.
async function tokenCall(request, processResponse) {
  return retryingNonce("token", async () => {
    const response = await request();
    const raw = await response.clone().json().catch(() => ({}));
    return { raw, tokens: await processResponse(response) };
  });
}

const verifier = oauth.generateRandomCodeVerifier();
const state = oauth.generateRandomState();
const url = new URL(as.authorization_endpoint);
url.search = new URLSearchParams({
  response_type: "code",
  client_id: clientId,
  redirect_uri: redirectUri,
  scope: "read keyturn:account", // the account API is the resource it calls
  code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
  code_challenge_method: "S256",
  state,
}).toString();
console.log(JSON.stringify({ authorize: url.href }));

const lines = createInterface({ input: process.stdin });
const callback = await new Promise((resolve) => lines.once("line", resolve));
lines.close();

const params = oauth.validateAuthResponse(as, client, new URL(callback), state);
const issued = [
  await tokenCall(
    () =>
      oauth.authorizationCodeGrantRequest(as, client, auth, params, redirectUri, verifier, {
        ...insecure,
        DPoP,
      }),
    (response) => oauth.processAuthorizationCodeResponse(as, client, response),
  ),
];
const codeChallenges = challenges.token;

function refresh(refreshToken, handle) {
  return tokenCall(
    () =>
      oauth.refreshTokenGrantRequest(as, client, auth, refreshToken, {
        ...insecure,
        DPoP: handle,
      }),
    (response) => oauth.processRefreshTokenResponse(as, client, response),
  );
}

async function sessions(accessToken) {
  const response = await retryingNonce("resource", () =>
    oauth.protectedResourceRequest(
      accessToken,
      "GET",
      new URL("/auth/sessions", issuer),
      undefined,
      undefined,
      { ...insecure, DPoP },
    ),
  );
  return response.status;
}

const saved = { refreshToken: issued[0].tokens.refresh_token }; // the application's storage
const resourceStatuses = [];
for (let i = 0; i < rotations; i++) {
  const next = await refresh(saved.refreshToken, DPoP);
  issued.push(next);
  saved.refreshToken = next.tokens.refresh_token;
  resourceStatuses.push(await sessions(next.tokens.access_token));
}

const stolen = saved.refreshToken;
const beforeTheft = challenges.token;
let thiefError;
let thiefJkt = null;
if (theft === "other_key") {
  const thief = oauth.DPoP(client, await oauth.generateKeyPair("ES256"));
  thiefJkt = await thief.calculateThumbprint();
  thiefError = await errorOf(() => refresh(stolen, thief));
} else {
  const response = await fetch(as.token_endpoint, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
    body: new URLSearchParams({
      grant_type: "refresh_token",
      refresh_token: stolen,
      client_id: clientId,
    }),
  });
  thiefError = (await response.json()).error;
}
const thiefChallenges = challenges.token - beforeTheft;
const after = await errorOf(() => refresh(saved.refreshToken, DPoP));

console.log(
  JSON.stringify({
    algs: as.dpop_signing_alg_values_supported ?? [],
    jkt: await DPoP.calculateThumbprint(),
    jwk: await crypto.subtle.exportKey("jwk", keyPair.publicKey),
    code_challenges: codeChallenges,
    challenges,
    token_types: issued.map((step) => step.raw.token_type),
    library_token_types: issued.map((step) => step.tokens.token_type),
    access_tokens: issued.map((step) => step.tokens.access_token),
    refresh_tokens: issued.map((step) => step.tokens.refresh_token),
    resource_statuses: resourceStatuses,
    thief: thiefError,
    thief_jkt: thiefJkt,
    thief_challenges: thiefChallenges,
    after,
  }),
);
