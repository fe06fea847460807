// The demo page of `keyturn serve --demo`, built on the browser client keyturn.js.
import { KeyturnClient, KeyturnError } from "/static/keyturn.js";

const root = document.getElementById("demo");
const $ = (id) => document.getElementById(id);
const auth = new KeyturnClient({ clientId: root.dataset.clientId });
const apiUrl = root.dataset.api;

const ENDED_MESSAGE =
  "Your session has ended: it was ended from another device, expired, or its refresh " +
  "token was presented twice. Sign in again.";

let refreshes = -1;
let countdown = null;

function say(text) {
  $("status").textContent = text;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString();
}

/** The `jti` of a JWT, for display only: the page never relies on what it reads. */
function tokenLabel(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload));
    return `jti ${claims.jti.slice(0, 12)}…`;
  } catch {
    return `…${token.slice(-12)}`;
  }
}

function showLogin(message) {
  clearInterval(countdown);
  countdown = null;
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("login-message").textContent = message;
  $("password").value = "";
  $("password").focus();
}

function showApp() {
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  if (countdown === null) {
    tick();
    countdown = setInterval(tick, 250);
  }
}

function tick() {
  const left = Math.max(0, Math.ceil((auth.expiresAt - Date.now()) / 1000));
  $("countdown").textContent = `${left} s`;
}

function describeError(error) {
  if (error instanceof KeyturnError) return `${error.code}: ${error.message}`;
  return String(error);
}

async function callApi() {
  try {
    const response = await auth.fetch(apiUrl);
    const body = await response.json();
    $("api-result").textContent =
      `${response.status} ${response.statusText}\n${JSON.stringify(body, null, 2)}`;
    if (response.ok) {
      $("who").textContent = body.user;
      $("session-id").textContent = body.sid;
    }
  } catch (error) {
    if (auth.signedIn) $("api-result").textContent = describeError(error);
  }
}

function sessionRow(session) {
  const row = document.createElement("tr");
  row.dataset.sid = session.sid;
  const short = `${session.sid.slice(0, 8)}…`;
  const cells = [
    session.current ? `${short} (this page)` : short,
    session.device.name || session.device.user_agent || "unknown device",
    new Date(session.created_at).toLocaleString(),
    new Date(session.last_used_at).toLocaleString(),
  ];
  for (const text of cells) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.append(cell);
  }
  const action = document.createElement("td");
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "End";
  button.setAttribute(
    "aria-label",
    session.current ? `End session ${short}, signing out this page` : `End session ${short}`,
  );
  button.addEventListener("click", () => endSession(session));
  action.append(button);
  row.append(action);
  return row;
}

async function listSessions() {
  try {
    const response = await auth.fetch("/auth/sessions");
    if (!response.ok) return;
    const sessions = await response.json();
    $("sessions").replaceChildren(...sessions.map(sessionRow));
  } catch (error) {
    if (auth.signedIn) say(`Could not list the sessions: ${describeError(error)}`);
  }
}

async function endSession(session) {
  try {
    const response = await auth.fetch(`/auth/sessions/${encodeURIComponent(session.sid)}`, {
      method: "DELETE",
    });
    if (!response.ok) {
      say(`Could not end the session (${response.status}).`);
      return;
    }
    if (session.current) {
      await auth.logout();
      return;
    }
    say(`Session ${session.sid.slice(0, 8)}… ended.`);
    await listSessions();
  } catch (error) {
    if (auth.signedIn) say(describeError(error));
  }
}

auth.addEventListener("token", (event) => {
  refreshes += 1;
  $("token-id").textContent = tokenLabel(auth.accessToken);
  $("token-expiry").textContent = clock(event.detail.expiresAt);
  $("token-expiry").dateTime = new Date(event.detail.expiresAt).toISOString();
  $("refresh-count").textContent = String(refreshes);
  say(refreshes === 0 ? "Signed in." : `Access token refreshed at ${clock(Date.now())}.`);
  showApp();
  callApi();
});

auth.addEventListener("signedout", (event) => {
  refreshes = -1;
  $("sessions").replaceChildren();
  $("api-result").textContent = "";
  if (event.detail.reason === "logout") {
    say("Signed out.");
    showLogin("You signed out.");
  } else {
    say("Session ended.");
    showLogin(ENDED_MESSAGE);
  }
});

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = event.submitter;
  button.disabled = true;
  $("login-message").textContent = "";
  try {
    await auth.login($("username").value, $("password").value, { deviceName: "demo page" });
    await listSessions();
  } catch (error) {
    $("login-message").textContent = describeError(error);
  } finally {
    button.disabled = false;
  }
});

$("call-api").addEventListener("click", callApi);
$("list-sessions").addEventListener("click", listSessions);
$("logout").addEventListener("click", () => auth.logout().catch((e) => say(describeError(e))));

say("Looking for a session…");
auth
  .restore()
  .then(async (resumed) => {
    if (resumed) {
      await listSessions();
    } else {
      say("Not signed in.");
      showLogin("");
    }
  })
  .catch((error) => {
    say(`keyturn is unreachable: ${describeError(error)}`);
    showLogin("");
  });
