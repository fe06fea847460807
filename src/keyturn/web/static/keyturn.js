/**
 * keyturn.js: a browser client for keyturn's first-party API, for a client registered
 * with cookie delivery (the refresh token lives in keyturn's httpOnly cookie, which
 * this code never sees).
 *
 * - The access token is kept in memory only, never in storage a script injected into
 *   the page could read later. A reload gets a new one through the cookie: `restore()`.
 * - `fetch()` adds the bearer token; on a 401 it refreshes once and retries once.
 * - The token is refreshed by itself shortly before it expires.
 * - A refresh whose answer is lost (a network error, no answer within `timeoutSeconds`,
 *   a 5xx or a 429) is sent again at once and then after a growing, bounded wait, with
 *   the same cookie: keyturn answers a retry of a rotated-out token with the same
 *   successor inside the client's retry window (10 s for a browser client), so the
 *   session survives. Such a failure never signs out; only a refusal (`invalid_grant`:
 *   the session is over) does.
 * - Refreshes started together in this page share one request.
 * - Across the tabs of one origin there is one refresh at a time (Web Locks), and its
 *   new access token goes to every tab (BroadcastChannel): ten open tabs make one
 *   refresh request, not ten. A new tab takes the token of a tab already signed in
 *   before it asks keyturn. Signing out in one tab signs out all of them.
 * - With `dpop: true`, the session is bound to a key (DPoP, RFC 9449): an ECDSA P-256
 *   key generated once per origin and client by WebCrypto as non-extractable, kept in
 *   IndexedDB and shared by the tabs. Every login and refresh carries a proof signed
 *   by it, and `fetch()` sends a DPoP-bound access token as `DPoP <token>` with a
 *   proof of the call. A refresh cookie copied out of the browser is worthless without
 *   the key, which script cannot export. A `use_dpop_nonce` challenge is answered
 *   once with the nonce it names; the latest nonce of each origin is remembered.
 *
 * It is an EventTarget:
 * - `token`: a new access token is in use; `detail: {expiresAt}` (ms since the epoch).
 * - `signedout`: the session is over in this page; `detail: {reason}` is `"logout"`
 *   or `"ended"` (a refresh was refused: the session was ended elsewhere, expired, or
 *   its refresh token was reused).
 *
 *     import { KeyturnClient } from "/static/keyturn.js";
 *     const auth = new KeyturnClient({ clientId: "my-spa" });
 *     if (!(await auth.restore())) await auth.login(username, password);
 *     const response = await auth.fetch("/api/things");
 */

const CSRF_HEADER = "X-Keyturn-CSRF";
/** How long a new tab waits for a signed-in tab to hand over its token. */
const ASK_WAIT_MS = 150;
/** How long the tab that refreshed keeps the lock after telling the others, so that
 * a tab next in line has the new token before it decides whether to refresh. */
const SETTLE_MS = 50;
/** The longest wait between two tries of one refresh. */
const MAX_BACKOFF_MS = 2_000;
/** Where the DPoP keys live: one IndexedDB database per origin, a key per client. */
const KEY_DATABASE = "keyturn-dpop";
const KEY_STORE = "keys";
const ES256 = { name: "ECDSA", namedCurve: "P-256" };
const SIGN_ES256 = { name: "ECDSA", hash: "SHA-256" };

/** An error answer of keyturn (RFC 6749 §5.2 shape), or a failed request. */
export class KeyturnError extends Error {
  /**
   * @param {number} status HTTP status; 0 when the request did not complete
   * @param {string} code the `error` field, e.g. "invalid_grant"
   * @param {string} description the `error_description` field
   */
  constructor(status, code, description) {
    super(description || code);
    this.name = "KeyturnError";
    this.status = status;
    this.code = code;
  }

  /** True when keyturn refused for good (not a network failure, a timeout, a 408, a
   * 429 or a 5xx). */
  get refused() {
    return this.status >= 400 && this.status < 500 && this.status !== 408 && this.status !== 429;
  }
}

export class KeyturnClient extends EventTarget {
  #baseUrl;
  #clientId;
  #refreshLead;
  #retryDelay;
  #attempts;
  #backoff;
  #timeout;
  #fetch;
  #token = null;
  #expiresAt = 0;
  #lifetime = 0;
  #timer = null;
  #refreshing = null;
  #channel = null;
  #lockName;
  #dpop;
  #tokenType = "Bearer";
  /** @type {Promise<{privateKey: CryptoKey, jwk: object}> | null} */
  #key = null;
  /** The latest `DPoP-Nonce` of each origin. */
  #nonces = new Map();

  /**
   * @param {object} options
   * @param {string} options.clientId the client registered with cookie delivery
   * @param {string} [options.baseUrl] keyturn's URL; "" when it serves this page
   * @param {number} [options.refreshLeadSeconds] refresh this long before expiry (at
   *   most a quarter of the token's lifetime)
   * @param {number} [options.attempts] tries of one refresh whose answer is lost
   *   (network error, timeout, 408, 429, 5xx), all with the same cookie
   * @param {number} [options.backoffSeconds] wait before the second try; doubled for
   *   each next one, at most 2 s. With the defaults the fourth try leaves within
   *   about 2 s of the first when the connections are cut, inside a browser client's
   *   10 s retry window
   * @param {number} [options.timeoutSeconds] a refresh request unanswered this long is
   *   abandoned and tried again (the server may have rotated: the retry gets the same
   *   successor)
   * @param {number} [options.retrySeconds] when every try failed for a passing reason,
   *   wait this long before the next round (the page stays signed in meanwhile)
   * @param {typeof fetch} [options.fetch] the fetch to use
   * @param {boolean} [options.dpop] bind the session to a non-extractable key of this
   *   origin (DPoP, RFC 9449): every tab proves with it; needs WebCrypto and IndexedDB
   */
  constructor({
    clientId,
    baseUrl = "",
    refreshLeadSeconds = 5,
    attempts = 4,
    backoffSeconds = 0.25,
    timeoutSeconds = 5,
    retrySeconds = 5,
    fetch = globalThis.fetch.bind(globalThis),
    dpop = false,
  }) {
    super();
    if (!clientId) throw new TypeError("clientId is required");
    this.#clientId = clientId;
    this.#baseUrl = baseUrl.replace(/\/$/, "");
    this.#refreshLead = refreshLeadSeconds * 1000;
    this.#retryDelay = retrySeconds * 1000;
    this.#attempts = Math.max(1, Math.floor(attempts));
    this.#backoff = backoffSeconds * 1000;
    this.#timeout = timeoutSeconds * 1000;
    this.#fetch = fetch;
    this.#lockName = `keyturn-refresh:${clientId}`;
    this.#dpop = Boolean(dpop);
    if (typeof BroadcastChannel === "function") {
      this.#channel = new BroadcastChannel(`keyturn:${clientId}`);
      this.#channel.onmessage = (event) => this.#hear(event.data);
    }
  }

  /** The current access token, or null when signed out. */
  get accessToken() {
    return this.#token;
  }

  /** When the current access token expires (ms since the epoch); 0 when signed out. */
  get expiresAt() {
    return this.#expiresAt;
  }

  get signedIn() {
    return this.#token !== null;
  }

  /** "DPoP" when the access token is bound to this origin's key, else "Bearer". */
  get tokenType() {
    return this.#tokenType;
  }

  /**
   * The RFC 7638 thumbprint of the DPoP key (the `cnf.jkt` of bound tokens), creating
   * the key if this origin has none yet; null without `dpop`.
   */
  async dpopThumbprint() {
    if (!this.#dpop) return null;
    const { jwk } = await this.#dpopKey();
    const canonical = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
    return base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(canonical)));
  }

  /** Sign in with a username and password; throws a KeyturnError if refused. */
  async login(username, password, { scope, deviceName } = {}) {
    const body = { username, password, client_id: this.#clientId };
    if (scope) body.scope = scope;
    if (deviceName) body.device_name = deviceName;
    this.#accept(await this.#post("/auth/login", body));
    this.#tell({ type: "token", ...this.#current() });
  }

  /**
   * Resume the session the cookie holds (after a reload, in a new tab). Resolves to
   * true when signed in, false when there is no session to resume.
   */
  async restore() {
    try {
      await this.refresh();
      return true;
    } catch (error) {
      if (error instanceof KeyturnError && error.refused) return false;
      throw error;
    }
  }

  /**
   * Rotate the refresh token for a new access token. Calls made while one is under
   * way share it. A lost answer is tried again (see `attempts`); when every try is
   * lost the KeyturnError (status 0 or 5xx) is thrown and, if signed in, another round
   * is scheduled after `retrySeconds`. When keyturn refuses, the session is over:
   * `signedout` is dispatched (if this page was signed in) and the KeyturnError is
   * thrown.
   */
  refresh() {
    if (this.#refreshing === null) {
      this.#refreshing = this.#rotate().finally(() => {
        this.#refreshing = null;
      });
    }
    return this.#refreshing;
  }

  /**
   * `fetch` with the access token: `Bearer <token>`, or `DPoP <token>` and a proof of
   * this call for a DPoP-bound one. A 401 gets one refresh and one retry (and a DPoP
   * nonce challenge one retry with the nonce), so the body must be one that can be
   * sent again (a string, Blob, FormData, URLSearchParams).
   */
  async fetch(input, init = {}) {
    if (this.#token === null) await this.refresh();
    let response = await this.#authorized(input, init);
    if (this.#resourceNonceChallenge(response)) {
      response = await this.#authorized(input, init);
    }
    if (response.status !== 401) return response;
    await this.refresh();
    return this.#authorized(input, init);
  }

  /** End this session at keyturn and forget the token; the cookie is cleared. */
  async logout() {
    this.#cancelTimer();
    try {
      await this.#post("/auth/logout", { client_id: this.#clientId });
    } finally {
      this.#signOut("logout", true);
      this.#tell({ type: "signedout", reason: "logout" });
    }
  }

  async #rotate() {
    const stale = this.#token;
    const locks = globalThis.navigator?.locks;
    if (!locks) return this.#rotateNow(stale);
    // One tab at a time: the others wait here, and most find the work done.
    return locks.request(this.#lockName, () => this.#rotateNow(stale));
  }

  async #rotateNow(stale) {
    // Another tab refreshed while this one waited for the lock: take its token.
    if (this.#token !== stale && this.#fresh()) return;
    if (this.#token === null && this.#channel !== null) {
      // A new tab: a signed-in tab may hand over its token without a request.
      this.#tell({ type: "ask" });
      await new Promise((resolve) => setTimeout(resolve, ASK_WAIT_MS));
      if (this.#fresh()) return;
    }
    let answer;
    try {
      answer = await this.#refreshRequest();
    } catch (error) {
      if (error instanceof KeyturnError && error.refused) {
        const wasSignedIn = this.#token !== null;
        this.#signOut("ended", false);
        if (wasSignedIn) this.#tell({ type: "signedout", reason: "ended" });
      } else if (this.#token !== null) {
        this.#schedule(this.#retryDelay);
      }
      throw error;
    }
    this.#accept(answer);
    this.#tell({ type: "token", ...this.#current() });
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
  }

  /**
   * POST /auth/refresh until it is answered, at most `attempts` times. The browser
   * sends the cookie it holds, and holds the old one until an answer arrives: a retry
   * presents the same refresh token, so a lost answer costs one replay, never the
   * session. The last failure is thrown; a refusal at once.
   */
  async #refreshRequest() {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#post(
          "/auth/refresh",
          { client_id: this.#clientId },
          { timeout: this.#timeout },
        );
      } catch (error) {
        if (!(error instanceof KeyturnError) || error.refused || attempt >= this.#attempts) {
          throw error;
        }
      }
      // Half to all of the doubled wait: tabs of many browsers that lost their answers
      // together do not come back in step.
      const wait = Math.min(this.#backoff * 2 ** (attempt - 1), MAX_BACKOFF_MS);
      await new Promise((resolve) => setTimeout(resolve, wait * (0.5 + Math.random() / 2)));
    }
  }

  /** True when this tab holds a token that is not yet due for a refresh. */
  #fresh() {
    return this.#token !== null && this.#expiresAt - Date.now() > this.#lead();
  }

  #lead() {
    return Math.min(this.#refreshLead, this.#lifetime / 4);
  }

  #current() {
    return {
      token: this.#token,
      expiresAt: this.#expiresAt,
      lifetime: this.#lifetime,
      tokenType: this.#tokenType,
    };
  }

  #tell(message) {
    if (this.#channel !== null) this.#channel.postMessage(message);
  }

  /** A message of another tab of this origin. */
  #hear(message) {
    if (message?.type === "token" && message.expiresAt > this.#expiresAt) {
      this.#adopt(message.token, message.expiresAt, message.lifetime, message.tokenType);
    } else if (message?.type === "nonce" && typeof message.nonce === "string") {
      this.#nonces.set(message.origin, message.nonce);
    } else if (message?.type === "signedout") {
      this.#signOut(message.reason, false);
    } else if (message?.type === "ask" && this.#fresh()) {
      this.#tell({ type: "token", ...this.#current() });
    }
  }

  async #authorized(input, init) {
    const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : {}));
    const token = this.#token;
    if (this.#dpop && this.#tokenType === "DPoP") {
      // RFC 9449 §7.1: the bound token in the DPoP scheme, with a proof of this call
      // and of the token (`ath`).
      const url = new URL(input instanceof Request ? input.url : String(input), baseHref());
      const method = init.method ?? (input instanceof Request ? input.method : "GET");
      headers.set("Authorization", `DPoP ${token}`);
      headers.set("DPoP", await this.#proof(method, url, token));
    } else {
      headers.set("Authorization", `Bearer ${token}`);
      headers.delete("DPoP");
    }
    const response = await this.#fetch(input, { ...init, headers });
    this.#learnNonce(response);
    return response;
  }

  /** True when `response` is a resource's nonce challenge to a proof (401 with
   * `WWW-Authenticate: DPoP error="use_dpop_nonce"` and a `DPoP-Nonce`, RFC 9449 §9). */
  #resourceNonceChallenge(response) {
    return (
      this.#dpop &&
      response.status === 401 &&
      response.headers.has("DPoP-Nonce") &&
      (response.headers.get("WWW-Authenticate") ?? "").includes("use_dpop_nonce")
    );
  }

  /** Remember the `DPoP-Nonce` of an answer for its origin (and tell the other tabs). */
  #learnNonce(response) {
    const nonce = this.#dpop ? response.headers.get("DPoP-Nonce") : null;
    if (!nonce || !response.url) return;
    const origin = new URL(response.url).origin;
    if (this.#nonces.get(origin) === nonce) return;
    this.#nonces.set(origin, nonce);
    this.#tell({ type: "nonce", origin, nonce });
  }

  /** The origin's key pair: the one in IndexedDB, or a new one put there (once: the
   * first tab to store its key wins, the others use that one). */
  #dpopKey() {
    if (this.#key === null) {
      this.#key = loadOrCreateKey(this.#clientId);
      this.#key.catch(() => {
        this.#key = null; // a failed open is tried again by the next proof
      });
    }
    return this.#key;
  }

  /**
   * A DPoP proof (RFC 9449 §4.2) for a `method` request to `url` (a URL): ES256 over
   * WebCrypto, the public JWK in the header, the origin's latest nonce, and `ath` of
   * `accessToken` when given.
   */
  async #proof(method, url, accessToken = null) {
    const { privateKey, jwk } = await this.#dpopKey();
    const target = new URL(url);
    target.search = "";
    target.hash = "";
    const claims = {
      jti: base64url(crypto.getRandomValues(new Uint8Array(16))),
      htm: method.toUpperCase(),
      htu: target.href,
      iat: Math.floor(Date.now() / 1000),
    };
    const nonce = this.#nonces.get(target.origin);
    if (nonce) claims.nonce = nonce;
    if (accessToken !== null) {
      const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(accessToken));
      claims.ath = base64url(digest);
    }
    const header = { typ: "dpop+jwt", alg: "ES256", jwk };
    const input = `${base64urlJson(header)}.${base64urlJson(claims)}`;
    // WebCrypto's ECDSA signature is r || s already, as JWS wants (RFC 7518 §3.4).
    const data = new TextEncoder().encode(input);
    const signature = await crypto.subtle.sign(SIGN_ES256, privateKey, data);
    return `${input}.${base64url(signature)}`;
  }

  #accept(answer) {
    const lifetime = answer.expires_in * 1000;
    this.#adopt(answer.access_token, Date.now() + lifetime, lifetime, answer.token_type);
  }

  #adopt(token, expiresAt, lifetime, tokenType = "Bearer") {
    this.#token = token;
    this.#tokenType = String(tokenType).toLowerCase() === "dpop" ? "DPoP" : "Bearer";
    this.#lifetime = lifetime;
    this.#expiresAt = expiresAt;
    this.#schedule(expiresAt - Date.now() - this.#lead());
    this.dispatchEvent(new CustomEvent("token", { detail: { expiresAt } }));
  }

  #schedule(delay) {
    this.#cancelTimer();
    this.#timer = setTimeout(() => {
      this.#timer = null;
      // Failures are reported through `signedout` or retried; nobody awaits this one.
      this.refresh().catch(() => {});
    }, Math.max(0, delay));
  }

  #cancelTimer() {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #signOut(reason, always) {
    const wasSignedIn = this.#token !== null;
    this.#cancelTimer();
    this.#token = null;
    this.#expiresAt = 0;
    if (wasSignedIn || always) {
      this.dispatchEvent(new CustomEvent("signedout", { detail: { reason } }));
    }
  }

  /**
   * POST a JSON body to keyturn. Every failure is a KeyturnError: status 0 with
   * `network_error` or `timeout` when no answer came (within `timeout` ms, if given).
   * With DPoP, a proof goes along, and a `use_dpop_nonce` challenge (RFC 9449 §8;
   * keyturn checks the proof first, so the challenged request consumed nothing) is
   * answered once, at once, with a new proof carrying the nonce.
   */
  async #post(path, body, options = {}) {
    for (let answered = false; ; answered = true) {
      try {
        return await this.#postOnce(path, body, options);
      } catch (error) {
        const challenged = error instanceof KeyturnError && error.code === "use_dpop_nonce";
        if (answered || !challenged || !this.#dpop) throw error;
      }
    }
  }

  async #postOnce(path, body, { timeout = 0 } = {}) {
    const headers = { "Content-Type": "application/json", [CSRF_HEADER]: "1" };
    if (this.#dpop) {
      headers.DPoP = await this.#proof("POST", new URL(this.#baseUrl + path, baseHref()));
    }
    const abort = timeout > 0 ? new AbortController() : null;
    const timer = abort && setTimeout(() => abort.abort(), timeout);
    try {
      let response;
      try {
        response = await this.#fetch(this.#baseUrl + path, {
          method: "POST",
          credentials: "include",
          cache: "no-store",
          // The CSRF proof keyturn asks of every cookie-authenticated request.
          headers,
          body: JSON.stringify(body),
          signal: abort?.signal,
        });
      } catch (failure) {
        if (abort?.signal.aborted) {
          throw new KeyturnError(0, "timeout", `no answer in ${timeout} ms`);
        }
        throw new KeyturnError(0, "network_error", String(failure));
      }
      this.#learnNonce(response);
      if (response.status === 204) return null;
      return await KeyturnClient.#read(response, abort);
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /** The JSON of an answer; a KeyturnError for an error answer or a body cut off. */
  static async #read(response, abort) {
    let data;
    try {
      data = await response.json();
    } catch (failure) {
      // A body that never arrived whole is a lost answer, like a failed request. (A 2xx
      // must have a body; an error answer without JSON still says its status.)
      if (response.ok || abort?.signal.aborted) {
        const code = abort?.signal.aborted ? "timeout" : "network_error";
        throw new KeyturnError(0, code, String(failure));
      }
      data = {};
    }
    if (!response.ok) {
      throw new KeyturnError(
        response.status,
        data.error || "server_error",
        data.error_description || response.statusText,
      );
    }
    return data;
  }
}

function baseHref() {
  return globalThis.location?.href;
}

function base64url(bytes) {
  const octets = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let text = "";
  for (const octet of octets) text += String.fromCharCode(octet);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function base64urlJson(value) {
  return base64url(new TextEncoder().encode(JSON.stringify(value)));
}

/** An IndexedDB request's result (or a transaction's completion), as a promise. */
function settled(request, event = "success") {
  return new Promise((resolve, reject) => {
    request.addEventListener(event, () => resolve(request.result));
    request.addEventListener("error", () => reject(request.error));
    request.addEventListener("abort", () => reject(request.error));
  });
}

async function openKeys() {
  if (typeof indexedDB === "undefined" || !globalThis.crypto?.subtle) {
    throw new KeyturnError(0, "dpop_unavailable", "DPoP needs IndexedDB and WebCrypto");
  }
  const opening = indexedDB.open(KEY_DATABASE, 1);
  opening.onupgradeneeded = () => opening.result.createObjectStore(KEY_STORE);
  return settled(opening);
}

/**
 * The DPoP key pair of `clientId` in this origin's IndexedDB, created if there is none.
 * The private key is generated non-extractable: the page (or script injected into it)
 * can sign with it while it runs here, never read it out. Tabs creating one at once
 * each add theirs in a read-write transaction that first looks again; IndexedDB runs
 * those one after the other, so every tab ends up with the first tab's key.
 */
async function loadOrCreateKey(clientId) {
  const db = await openKeys();
  try {
    const reading = db.transaction(KEY_STORE, "readonly").objectStore(KEY_STORE).get(clientId);
    let pair = await settled(reading);
    if (!pair) {
      const made = await crypto.subtle.generateKey(ES256, false, ["sign", "verify"]);
      const exported = await crypto.subtle.exportKey("jwk", made.publicKey);
      const candidate = {
        privateKey: made.privateKey,
        jwk: { crv: exported.crv, kty: exported.kty, x: exported.x, y: exported.y },
      };
      const writing = db.transaction(KEY_STORE, "readwrite");
      const store = writing.objectStore(KEY_STORE);
      const existing = store.get(clientId);
      existing.onsuccess = () => {
        pair = existing.result ?? candidate;
        if (!existing.result) store.add(candidate, clientId);
      };
      await settled(writing, "complete");
    }
    return pair;
  } finally {
    db.close();
  }
}
