// Açar's Web eID client: asks the Web eID browser extension for an authentication token ("web-eid:1") over the
// extension's window-message protocol, the one the official JavaScript library (npm @web-eid/web-eid-library,
// https://github.com/web-eid/web-eid.js) speaks.
//
// Why not the official library: the issue asks for it, served from Açar itself, but it is not installable here
// (its npm registry answers 404 to this machine, and Açar downloads nothing at run time). This module replaces it
// with the one call Açar needs, authenticate(), written from the library's documented protocol (learnt from its
// source and API documentation, not copied). It is a classic script (window.AcarWebEid) served from 'self': it runs
// under Açar's strict Content-Security-Policy (script-src 'self', no inline script, no eval).
//
// The protocol (Web eID system architecture, "Web eID JavaScript library" and "browser extension" sections):
// - The page posts {action: "web-eid:authenticate", libraryVersion, challengeNonce, options: {lang,
//   userInteractionTimeout}} to its own window. challengeNonce is the server's nonce (base64, at least 256 bits).
// - The extension's content script, listening on the same window, answers at once {action:
//   "web-eid:authenticate-ack"}; no acknowledgement within EXTENSION_HANDSHAKE_TIMEOUT means no extension (or one
//   switched off): ERR_WEBEID_EXTENSION_UNAVAILABLE.
// - Then the extension starts the Web eID application (native messaging), which shows its own window (card reader,
//   card, certificate, PIN) and signs hash(origin) || hash(nonce) with the card's authentication key. The answer:
//   {action: "web-eid:authenticate-success", unverifiedCertificate (base64 DER), algorithm (e.g. "ES384"),
//   signature (base64; raw r||s for ECDSA), format ("web-eid:1"), appVersion}
//   or {action: "web-eid:authenticate-failure", error: {code: "ERR_WEBEID_...", message}}.
// - No answer within EXTENSION_HANDSHAKE_TIMEOUT + NATIVE_APP_HANDSHAKE_TIMEOUT + the user-interaction timeout:
//   ERR_WEBEID_ACTION_TIMEOUT. The extension itself gives up after the user-interaction timeout with
//   ERR_WEBEID_USER_TIMEOUT.
// - The library waits until MAX_EXTENSION_LOAD_DELAY after it was loaded before its first message, giving the
//   browser time to load the content script; so does this module. Requests need a secure context (https, or
//   http://localhost): ERR_WEBEID_CONTEXT_INSECURE. One request of a kind at a time: ERR_WEBEID_ACTION_PENDING.
// The application reports no card reader, no card and a blocked PIN in its own window; the page learns only how the
// window ended: cancelled by the citizen (ERR_WEBEID_USER_CANCELLED), timed out (ERR_WEBEID_USER_TIMEOUT) or failed
// (ERR_WEBEID_NATIVE_FATAL with the application's message).
//
// libraryVersion: the extension answers ERR_WEBEID_VERSION_MISMATCH when its major version (or the application's)
// is older than the library's; this module speaks the message shapes of library major version 2, so it says 2.0.0.
//
// Only messages from this very window (event.source === window, as the extension's content script itself checks)
// are read: a frame cannot answer in the extension's name. The token is not trusted here: Açar's server verifies it
// (idp.core.webeid).
"use strict";

window.AcarWebEid = (function () {
  var PROTOCOL_VERSION = "2.0.0";
  var EXTENSION_HANDSHAKE_TIMEOUT = 1000; // ms: the content script acknowledges at once
  var NATIVE_APP_HANDSHAKE_TIMEOUT = 5000; // ms: the extension starts the Web eID application
  var USER_INTERACTION_TIMEOUT = 2 * 60 * 1000; // ms: the extension's default for reader, card and PIN
  var MAX_EXTENSION_LOAD_DELAY = 1000; // ms after loading, before the first message
  var AUTHENTICATE = "web-eid:authenticate";
  var REPLY = /^(web-eid:[a-z-]+?)-(ack|success|failure)$/;
  var loadedAt = Date.now();
  var pending = {}; // action -> the request waiting for its answer

  var ErrorCode = Object.freeze({
    ACTION_TIMEOUT: "ERR_WEBEID_ACTION_TIMEOUT",
    USER_TIMEOUT: "ERR_WEBEID_USER_TIMEOUT",
    VERSION_MISMATCH: "ERR_WEBEID_VERSION_MISMATCH",
    VERSION_INVALID: "ERR_WEBEID_VERSION_INVALID",
    EXTENSION_UNAVAILABLE: "ERR_WEBEID_EXTENSION_UNAVAILABLE",
    NATIVE_UNAVAILABLE: "ERR_WEBEID_NATIVE_UNAVAILABLE",
    UNKNOWN_ERROR: "ERR_WEBEID_UNKNOWN_ERROR",
    CONTEXT_INSECURE: "ERR_WEBEID_CONTEXT_INSECURE",
    USER_CANCELLED: "ERR_WEBEID_USER_CANCELLED",
    NATIVE_INVALID_ARGUMENT: "ERR_WEBEID_NATIVE_INVALID_ARGUMENT",
    NATIVE_FATAL: "ERR_WEBEID_NATIVE_FATAL",
    ACTION_PENDING: "ERR_WEBEID_ACTION_PENDING",
    MISSING_PARAMETER: "ERR_WEBEID_MISSING_PARAMETER",
  });
  var KNOWN_CODES = Object.keys(ErrorCode).map(function (name) { return ErrorCode[name]; });

  function WebEidError(code, message) {
    this.name = "WebEidError";
    this.code = code;
    this.message = message || code;
  }
  WebEidError.prototype = Object.create(Error.prototype);
  WebEidError.prototype.constructor = WebEidError;

  // The extension's serialised error ({code, message, ...}); anything else is an unknown error.
  function fromSerialized(error) {
    var code = error && typeof error.code === "string" && KNOWN_CODES.indexOf(error.code) !== -1 ?
      error.code : ErrorCode.UNKNOWN_ERROR;
    var message = error && typeof error.message === "string" ? error.message : "";
    return new WebEidError(code, message);
  }

  function finish(action) {
    var request = pending[action];
    if (request) {
      clearTimeout(request.ackTimer);
      clearTimeout(request.replyTimer);
      delete pending[action];
    }
    return request;
  }

  window.addEventListener("message", function (event) {
    if (event.source !== window || !event.data || typeof event.data.action !== "string") {
      return;
    }
    var reply = REPLY.exec(event.data.action);
    var request = reply && pending[reply[1]];
    if (!request || !request.sent) {
      return; // our own request, a warning, or an answer nobody waits for
    }
    if (reply[2] === "ack") {
      clearTimeout(request.ackTimer);
      if (request.onAcknowledged) {
        request.onAcknowledged();
      }
      return;
    }
    finish(reply[1]);
    if (reply[2] === "success") {
      request.resolve(event.data);
    } else {
      request.reject(fromSerialized(event.data.error));
    }
  });

  function send(message, replyTimeout, onAcknowledged) {
    if (!window.isSecureContext) {
      return Promise.reject(new WebEidError(ErrorCode.CONTEXT_INSECURE));
    }
    if (pending[message.action]) {
      return Promise.reject(new WebEidError(ErrorCode.ACTION_PENDING));
    }
    var request = { sent: false, onAcknowledged: onAcknowledged };
    pending[message.action] = request;
    return new Promise(function (resolve, reject) {
      request.resolve = resolve;
      request.reject = reject;
      var wait = Math.max(0, loadedAt + MAX_EXTENSION_LOAD_DELAY - Date.now());
      setTimeout(function () {
        request.ackTimer = setTimeout(function () {
          finish(message.action); // unlike the library, a retry need not wait for the reply timeout
          reject(new WebEidError(ErrorCode.EXTENSION_UNAVAILABLE));
        }, EXTENSION_HANDSHAKE_TIMEOUT);
        request.replyTimer = setTimeout(function () {
          finish(message.action);
          reject(new WebEidError(ErrorCode.ACTION_TIMEOUT));
        }, replyTimeout);
        request.sent = true;
        window.postMessage(message, window.location.origin);
      }, wait);
    });
  }

  // authenticate(challengeNonce, {lang, userInteractionTimeout}, onAcknowledged) -> Promise of the authentication
  // token {unverifiedCertificate, algorithm, signature, format, appVersion}, or a WebEidError with its `code`.
  // onAcknowledged() runs when the extension has taken the request (its window is about to open).
  function authenticate(challengeNonce, options, onAcknowledged) {
    if (typeof challengeNonce !== "string" || !challengeNonce) {
      return Promise.reject(new WebEidError(ErrorCode.MISSING_PARAMETER, "authenticate needs a challenge nonce"));
    }
    var given = options || {};
    var forward = {};
    if (typeof given.lang === "string" && given.lang) {
      forward.lang = given.lang; // ISO 639-1, the application's window speaks it when it can
    }
    if (typeof given.userInteractionTimeout === "number") {
      forward.userInteractionTimeout = given.userInteractionTimeout;
    }
    var timeout = EXTENSION_HANDSHAKE_TIMEOUT + NATIVE_APP_HANDSHAKE_TIMEOUT +
      (forward.userInteractionTimeout || USER_INTERACTION_TIMEOUT);
    var message = { action: AUTHENTICATE, libraryVersion: PROTOCOL_VERSION, challengeNonce: challengeNonce,
      options: forward };
    return send(message, timeout, onAcknowledged).then(function (answer) {
      var fields = ["unverifiedCertificate", "algorithm", "signature", "format", "appVersion"];
      var token = {};
      for (var i = 0; i < fields.length; i++) {
        if (typeof answer[fields[i]] !== "string" || !answer[fields[i]]) {
          throw new WebEidError(ErrorCode.UNKNOWN_ERROR, "unexpected response from the extension");
        }
        token[fields[i]] = answer[fields[i]];
      }
      return token;
    });
  }

  return Object.freeze({ authenticate: authenticate, ErrorCode: ErrorCode, WebEidError: WebEidError,
    config: Object.freeze({ PROTOCOL_VERSION: PROTOCOL_VERSION, EXTENSION_HANDSHAKE_TIMEOUT: EXTENSION_HANDSHAKE_TIMEOUT,
      NATIVE_APP_HANDSHAKE_TIMEOUT: NATIVE_APP_HANDSHAKE_TIMEOUT, USER_INTERACTION_TIMEOUT: USER_INTERACTION_TIMEOUT,
      MAX_EXTENSION_LOAD_DELAY: MAX_EXTENSION_LOAD_DELAY }) });
})();
