// Açar ID-card sign-in on the login page, through the Web eID browser extension (api/static/webeid.js, loaded
// before this script, as is json_endpoints.js: the requests and the way on, shared with webauthn.js). Loaded from 'self' only (Content-Security-Policy: no inline script); the page hands over its
// data in data-* attributes of #idcard and its translated messages in <script type="application/json"
// id="idcard-messages">.
//
// #idcard data-pending-id, data-csrf (the pending sign-in's token, sent as X-CSRF-Token like webauthn.js does),
//         data-lang (the page language, for the Web eID window)
// The steps: POST /idcard/webeid/challenge {pending_id} -> {nonce, expires_at}; the extension signs the nonce with
// the card (window.AcarWebEid.authenticate); POST /idcard/webeid/login {pending_id, nonce, token} -> {redirect} or
// {form_post: {action, params}} (as api.json_endpoints.next_step answers the passkey login). Refusals come back as
// application/problem+json with a member "code" (card.error.<code> in the catalogs, api.rendering.CARD_ERRORS).
// Status goes to a polite live region (#idcard-status, role="status"), errors to an assertive one (#idcard-error,
// role="alert"), so a screen reader says both; the button keeps the focus.
"use strict";

(function () {
  var root = document.getElementById("idcard");
  var messagesBlock = document.getElementById("idcard-messages");
  if (!root || !messagesBlock || !window.AcarWebEid || !window.AcarEndpoints) {
    return;
  }
  var endpoints = window.AcarEndpoints;
  var Failure = endpoints.Failure;
  var messages = JSON.parse(messagesBlock.textContent);
  var button = document.getElementById("idcard-button");
  var errorBox = document.getElementById("idcard-error");
  var statusBox = document.getElementById("idcard-status");
  var unavailable = document.getElementById("idcard-unavailable");
  var needs = document.getElementById("idcard-needs");
  var csrf = root.getAttribute("data-csrf") || "";
  var pendingId = root.getAttribute("data-pending-id") || "";
  var lang = root.getAttribute("data-lang") || "";
  var WebEid = window.AcarWebEid;
  var codes = WebEid.ErrorCode;

  // The Web eID error codes in the page's words. The application shows a missing reader or card and a blocked PIN
  // in its own window and reports only how the window ended, so: a timeout means no card was read (no reader, no
  // card, no PIN), closing the window is "cancelled" (whose message names the reader and the card), and a blocked
  // PIN is recognised by the application's message when one names it.
  var FROM_WEBEID = {};
  FROM_WEBEID[codes.EXTENSION_UNAVAILABLE] = "no_extension";
  FROM_WEBEID[codes.NATIVE_UNAVAILABLE] = "no_app";
  FROM_WEBEID[codes.VERSION_MISMATCH] = "update_needed";
  FROM_WEBEID[codes.VERSION_INVALID] = "update_needed";
  FROM_WEBEID[codes.CONTEXT_INSECURE] = "insecure_context";
  FROM_WEBEID[codes.ACTION_PENDING] = "busy";
  FROM_WEBEID[codes.USER_TIMEOUT] = "no_card";
  FROM_WEBEID[codes.ACTION_TIMEOUT] = "no_card";
  FROM_WEBEID[codes.USER_CANCELLED] = "cancelled";
  FROM_WEBEID[codes.NATIVE_FATAL] = "card_failed";
  FROM_WEBEID[codes.NATIVE_INVALID_ARGUMENT] = "card_failed";
  var PIN_BLOCKED = /PIN[_ ]?(?:code )?(?:is )?blocked|PIN_BLOCKED/i;
  var SHOW_NEEDS = ["no_extension", "no_app", "update_needed", "no_card", "cancelled", "card_failed"];

  function fromWebEid(error) {
    var code = error && error.code;
    if (code !== codes.EXTENSION_UNAVAILABLE && error && PIN_BLOCKED.test(String(error.message || ""))) {
      return new Failure("pin_blocked");
    }
    return new Failure(FROM_WEBEID[code] || "unknown");
  }

  // --- messages ----------------------------------------------------------------------------------------------

  function showError(code) {
    statusBox.textContent = "";
    errorBox.textContent = "";
    var paragraph = document.createElement("p");
    paragraph.textContent = messages.errors[code] || messages.errors.unknown;
    errorBox.appendChild(paragraph);
    if (needs && SHOW_NEEDS.indexOf(code) !== -1) {
      needs.open = true; // what a card sign-in needs, with the installation link
    }
  }

  function showStatus(name) {
    statusBox.textContent = messages.status[name] || "";
  }

  function clearMessages() {
    errorBox.textContent = "";
    statusBox.textContent = "";
  }

  // --- the server (json_endpoints.js) ---------------------------------------------------------------------

  function postJSON(url, body) {
    return endpoints.postJSON(url, body, csrf);
  }

  // The same way on as webauthn.js: a redirect, or the client's response_mode=form_post.
  function leave(answer) {
    showStatus("done");
    endpoints.leave(answer, window.location.href);
  }

  // --- the sign-in -------------------------------------------------------------------------------------------

  var busy = false;

  function setBusy(value) {
    busy = value;
    root.setAttribute("aria-busy", value ? "true" : "false");
    if (value) {
      button.setAttribute("aria-disabled", "true");
    } else {
      button.removeAttribute("aria-disabled");
    }
  }

  async function signIn() {
    showStatus("starting");
    var challenge = await postJSON("/idcard/webeid/challenge", { pending_id: pendingId });
    if (typeof challenge.nonce !== "string" || !challenge.nonce) {
      throw new Failure("unknown");
    }
    var token;
    try {
      token = await WebEid.authenticate(challenge.nonce, { lang: lang }, function () {
        showStatus("waiting"); // the extension took the request: its window opens
      });
    } catch (error) {
      throw fromWebEid(error);
    }
    showStatus("verifying");
    var answer = await postJSON("/idcard/webeid/login", {
      pending_id: pendingId, nonce: challenge.nonce, token: token,
    });
    leave(answer);
  }

  unavailable.hidden = true;
  button.hidden = false;

  button.addEventListener("click", function () {
    if (busy) {
      return;
    }
    clearMessages();
    setBusy(true);
    signIn().then(function () {
      setBusy(false);
    }, function (error) {
      setBusy(false);
      showError(error instanceof Failure ? error.code : "unknown");
    });
  });
})();
