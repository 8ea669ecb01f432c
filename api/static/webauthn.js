// Açar passkeys (W3C Web Authentication Level 2/3): sign in on the login page, create a passkey on the
// enrollment and account pages. Loaded from 'self' only (no inline script, Content-Security-Policy); the page
// hands over its data in data-* attributes of #passkey and its translated messages in the
// <script type="application/json" id="passkey-messages"> block.
//
// #passkey data-passkey="login"     data-pending-id, data-csrf (the pending request's token); #passkey-help, shown
//                                   when no passkey was used (the prompt failed or was cancelled)
// #passkey data-passkey="register"  data-csrf (the enrollment's or the account's token), data-done (fallback page),
//                                   data-interaction (the sign-in an enrollment returns to, if any)
// #passkey data-passkey="approve"   data-request-id, data-csrf (the session's "sign" token): the signer approves a
//                                   signing request with an assertion over the challenge the server derived from
//                                   the request and its documents (api.routes.approval)
// Every request carries X-CSRF-Token; errors come back as application/problem+json with a member "code" (both in
// json_endpoints.js, loaded before this script).
"use strict";

(function () {
  var root = document.getElementById("passkey");
  var messagesBlock = document.getElementById("passkey-messages");
  if (!root || !messagesBlock || !window.AcarEndpoints) {
    return;
  }
  var endpoints = window.AcarEndpoints;
  var Failure = endpoints.Failure;
  var messages = JSON.parse(messagesBlock.textContent);
  var form = document.getElementById("passkey-form");
  var button = document.getElementById("passkey-button");
  var errorBox = document.getElementById("passkey-error");
  var statusBox = document.getElementById("passkey-status");
  var unavailable = document.getElementById("passkey-unavailable");
  var help = document.getElementById("passkey-help");
  var mode = root.getAttribute("data-passkey");
  var csrf = root.getAttribute("data-csrf") || "";
  // The login page comes with a ceremony (#passkey-options, api.routes.interaction), made when the page was
  // answered: the first prompt uses it instead of asking /webauthn/login/options, one request fewer before the
  // passkey is asked for. {begin: {ceremony, publicKey}, at: performance.now() when it was made}, or null.
  var prepared = null;
  var preparedBlock = document.getElementById("passkey-options");
  if (preparedBlock) {
    try {
      prepared = { begin: JSON.parse(preparedBlock.textContent), at: 0 };
    } catch (ignored) {
      prepared = null;
    }
  }

  // --- base64url (RFC 4648 section 5) <-> ArrayBuffer ------------------------------------------------------

  function toBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var text = "";
    for (var i = 0; i < bytes.length; i++) {
      text += String.fromCharCode(bytes[i]);
    }
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function fromBase64url(value) {
    var base64 = String(value).replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) {
      base64 += "=";
    }
    var text = atob(base64);
    var bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) {
      bytes[i] = text.charCodeAt(i);
    }
    return bytes.buffer;
  }

  // --- the server's options JSON -> navigator.credentials shapes ---------------------------------------------

  function descriptors(list) {
    return (list || []).map(function (item) {
      return Object.assign({}, item, { id: fromBase64url(item.id) });
    });
  }

  function requestOptions(json) {
    if (typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function") {
      try {
        return PublicKeyCredential.parseRequestOptionsFromJSON(json);
      } catch (ignored) {
        // an option this browser does not know: the manual conversion below keeps the rest
      }
    }
    var options = Object.assign({}, json, { challenge: fromBase64url(json.challenge) });
    if (json.allowCredentials) {
      options.allowCredentials = descriptors(json.allowCredentials);
    }
    return options;
  }

  function creationOptions(json) {
    if (typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function") {
      try {
        return PublicKeyCredential.parseCreationOptionsFromJSON(json);
      } catch (ignored) {
        // as above
      }
    }
    var options = Object.assign({}, json, {
      challenge: fromBase64url(json.challenge),
      user: Object.assign({}, json.user, { id: fromBase64url(json.user.id) }),
    });
    if (json.excludeCredentials) {
      options.excludeCredentials = descriptors(json.excludeCredentials);
    }
    return options;
  }

  // --- a PublicKeyCredential -> RegistrationResponseJSON / AuthenticationResponseJSON ------------------------

  function credentialJSON(credential) {
    if (typeof credential.toJSON === "function") {
      try {
        return credential.toJSON();
      } catch (ignored) {
        // fall back to the manual encoding
      }
    }
    var response = credential.response;
    var out = {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      clientExtensionResults: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {},
      response: { clientDataJSON: toBase64url(response.clientDataJSON) },
    };
    if (credential.authenticatorAttachment) {
      out.authenticatorAttachment = credential.authenticatorAttachment;
    }
    if (response.attestationObject) {
      out.response.attestationObject = toBase64url(response.attestationObject);
      out.response.transports = response.getTransports ? response.getTransports() : [];
    } else {
      out.response.authenticatorData = toBase64url(response.authenticatorData);
      out.response.signature = toBase64url(response.signature);
      if (response.userHandle) {
        out.response.userHandle = toBase64url(response.userHandle);
      }
    }
    return out;
  }

  // --- messages ----------------------------------------------------------------------------------------------

  function fromDomException(error) {
    var name = error && error.name;
    if (name === "NotAllowedError" || name === "AbortError") {
      return new Failure("cancelled");
    }
    if (name === "InvalidStateError") {
      return new Failure("credential_exists"); // this authenticator already holds a passkey of the person
    }
    if (name === "NotSupportedError") {
      return new Failure("not_supported");
    }
    return new Failure("unknown");
  }

  function showError(code) {
    var text = messages.errors[code] || messages.errors.unknown;
    statusBox.textContent = "";
    errorBox.textContent = "";
    var paragraph = document.createElement("p");
    paragraph.textContent = text;
    errorBox.appendChild(paragraph);
  }

  function showStatus(name) {
    statusBox.textContent = messages.status[name] || "";
  }

  function clearMessages() {
    errorBox.textContent = "";
    statusBox.textContent = "";
    if (help) {
      help.hidden = true;
    }
  }

  // --- the server (json_endpoints.js) ---------------------------------------------------------------------

  function postJSON(url, body) {
    return endpoints.postJSON(url, body, csrf);
  }

  function leave(answer, fallback) {
    showStatus("done");
    endpoints.leave(answer, fallback);
  }

  // --- the ceremonies ----------------------------------------------------------------------------------------

  var busy = false;
  var autofill = null; // the AbortController of the conditional (autofill) request, while one waits

  function setBusy(value) {
    busy = value;
    root.setAttribute("aria-busy", value ? "true" : "false");
    if (value) {
      button.setAttribute("aria-disabled", "true");
    } else {
      button.removeAttribute("aria-disabled");
    }
  }

  // A ceremony for a prompt: `unused` (one whose prompt was abandoned before answering: the autofill request the
  // button takes over from) or the page's, once, while its challenge is young (it lives publicKey.timeout
  // milliseconds and the prompt waits for the citizen within that time too); else a new one from the server.
  function now() { // milliseconds since the page was requested, or null
    return window.performance && typeof window.performance.now === "function" ? window.performance.now() : null;
  }

  function young(ceremony) {
    var at = now();
    var begin = ceremony ? ceremony.begin : null;
    return begin && begin.ceremony && begin.publicKey && at !== null &&
      at - ceremony.at < (begin.publicKey.timeout || 0) / 2;
  }

  async function ceremonyFor(unused) {
    var page = prepared;
    prepared = null;
    if (young(unused)) {
      return unused;
    }
    if (young(page)) {
      return page;
    }
    var at = now() || 0;
    var begin = await postJSON("/webauthn/login/options", { pending_id: root.getAttribute("data-pending-id") });
    return { begin: begin, at: at };
  }

  var waiting = null; // the ceremony of the autofill request, while one waits

  async function signIn(conditional, unused) {
    var pendingId = root.getAttribute("data-pending-id");
    var ceremony = await ceremonyFor(unused);
    var begin = ceremony.begin;
    var request = { publicKey: requestOptions(begin.publicKey) };
    var controller = null;
    if (conditional) {
      controller = new AbortController();
      autofill = controller;
      waiting = ceremony;
      request.mediation = "conditional";
      request.signal = controller.signal;
    } else {
      showStatus("waiting");
    }
    var credential;
    try {
      credential = await navigator.credentials.get(request);
    } catch (error) {
      if (controller && controller.signal.aborted) {
        return; // the button took over from autofill
      }
      throw fromDomException(error);
    } finally {
      if (autofill === controller) {
        autofill = null;
        waiting = null;
      }
    }
    if (!credential) {
      throw new Failure("cancelled");
    }
    setBusy(true);
    showStatus("verifying");
    var answer = await postJSON("/webauthn/login/verify", {
      ceremony: begin.ceremony, pending_id: pendingId, credential: credentialJSON(credential),
    });
    leave(answer, window.location.href);
  }

  async function register() {
    var nameInput = document.getElementById("passkey-name");
    var name = nameInput ? nameInput.value.trim() : "";
    var begin = await postJSON("/webauthn/register/options", name ? { name: name } : {});
    showStatus("waiting");
    var credential;
    try {
      credential = await navigator.credentials.create({ publicKey: creationOptions(begin.publicKey) });
    } catch (error) {
      throw fromDomException(error);
    }
    if (!credential) {
      throw new Failure("cancelled");
    }
    showStatus("verifying");
    var body = { ceremony: begin.ceremony, credential: credentialJSON(credential) };
    if (name) {
      body.name = name;
    }
    var interaction = root.getAttribute("data-interaction");
    if (interaction) {
      body.interaction = interaction; // the server checks it names a live sign-in of this browser
    }
    var answer = await postJSON("/webauthn/register/verify", body);
    leave(answer, root.getAttribute("data-done") || "/account");
  }

  async function approve() {
    var base = "/sign/" + encodeURIComponent(root.getAttribute("data-request-id"));
    var begin = await postJSON(base + "/options", {});
    showStatus("waiting");
    var credential;
    try {
      credential = await navigator.credentials.get({ publicKey: requestOptions(begin.publicKey) });
    } catch (error) {
      throw fromDomException(error);
    }
    if (!credential) {
      throw new Failure("cancelled");
    }
    showStatus("verifying");
    var answer = await postJSON(base + "/approve", { ceremony: begin.ceremony, credential: credentialJSON(credential) });
    leave(answer, base);
  }

  // On the login page, a prompt that failed or was cancelled (navigator.credentials.get rejects with
  // NotAllowedError, which also covers "no passkey for this site on this device") and a passkey Açar does not
  // know both mean the citizen may have no usable passkey here: say so, and show the ways on (#passkey-help).
  var NO_PASSKEY = ["no_passkey", "unknown_credential", "credential_removed"];

  function failed(error) {
    setBusy(false);
    var code = error instanceof Failure ? error.code : "unknown";
    if (mode === "login" && code === "cancelled") {
      code = "no_passkey";
    }
    showError(code);
    if (help && mode === "login" && NO_PASSKEY.indexOf(code) !== -1) {
      help.hidden = false;
    }
  }

  async function startAutofill() {
    if (typeof PublicKeyCredential.isConditionalMediationAvailable !== "function") {
      return;
    }
    var available = false;
    try {
      available = await PublicKeyCredential.isConditionalMediationAvailable();
    } catch (ignored) {
      available = false;
    }
    if (!available || busy) {
      return;
    }
    signIn(true).catch(function (error) {
      if (!(error instanceof Failure && error.code === "cancelled")) {
        failed(error);
      }
    });
  }

  // --- the page ----------------------------------------------------------------------------------------------

  var supported = typeof window.PublicKeyCredential === "function" && navigator.credentials &&
    typeof navigator.credentials.get === "function" && typeof window.fetch === "function";
  if (!supported) {
    unavailable.textContent = messages.errors.not_supported; // the button stays hidden: this message replaces it
    return;
  }
  unavailable.hidden = true;
  form.hidden = false;

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (busy) {
      return;
    }
    clearMessages();
    setBusy(true);
    var unused = null; // the autofill request's ceremony: it was never answered, so the button's prompt takes it
    if (autofill) {
      unused = waiting;
      autofill.abort();
      autofill = null;
      waiting = null;
    }
    var ceremony = mode === "login" ? signIn(false, unused) : mode === "approve" ? approve() : register();
    ceremony.then(function () {
      setBusy(false);
    }, failed);
  });

  if (mode === "login") {
    startAutofill();
  }
})();
