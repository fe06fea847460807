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
   * `fetch` with the bearer token. A 401 gets one refresh and one retry, so the body
   * must be one that can be sent twice (a string, Blob, FormData, URLSearchParams).
   */
  async fetch(input, init = {}) {
    if (this.#token === null) await this.refresh();
    const response = await this.#withBearer(input, init);
    if (response.status !== 401) return response;
    await this.refresh();
    return this.#withBearer(input, init);
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
    return { token: this.#token, expiresAt: this.#expiresAt, lifetime: this.#lifetime };
  }

  #tell(message) {
    if (this.#channel !== null) this.#channel.postMessage(message);
  }

  /** A message of another tab of this origin. */
  #hear(message) {
    if (message?.type === "token" && message.expiresAt > this.#expiresAt) {
      this.#adopt(message.token, message.expiresAt, message.lifetime);
    } else if (message?.type === "signedout") {
      this.#signOut(message.reason, false);
    } else if (message?.type === "ask" && this.#fresh()) {
      this.#tell({ type: "token", ...this.#current() });
    }
  }

  #withBearer(input, init) {
    const headers = new Headers(init.headers);
    headers.set("Authorization", `Bearer ${this.#token}`);
    return this.#fetch(input, { ...init, headers });
  }

  #accept(answer) {
    const lifetime = answer.expires_in * 1000;
    this.#adopt(answer.access_token, Date.now() + lifetime, lifetime);
  }

  #adopt(token, expiresAt, lifetime) {
    this.#token = token;
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
   */
  async #post(path, body, { timeout = 0 } = {}) {
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
          headers: { "Content-Type": "application/json", [CSRF_HEADER]: "1" },
          body: JSON.stringify(body),
          signal: abort?.signal,
        });
      } catch (failure) {
        if (abort?.signal.aborted) {
          throw new KeyturnError(0, "timeout", `no answer in ${timeout} ms`);
        }
        throw new KeyturnError(0, "network_error", String(failure));
      }
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
