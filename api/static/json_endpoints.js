// Açar: what the login pages' scripts share with the server's JSON endpoints (api/json_endpoints.py): the passkey
// script (webauthn.js: login, enrollment, account, signing approval) and the ID-card script (idcard.js). Loaded from
// 'self' before them (Content-Security-Policy: no inline script); it defines window.AcarEndpoints:
//
//   Failure(code)                 a refusal the page translates (its messages.errors[code])
//   postJSON(url, body, csrf)     POST JSON with X-CSRF-Token; resolves to the answer's object, or rejects with a
//                                 Failure: the problem's "code" (application/problem+json), "network", or "unknown"
//   leave(answer, fallback)       go where the server said: {redirect} or {form_post: {action, params}} (OAuth 2.0
//                                 Form Post Response Mode: the page builds and submits the form; the client's origin
//                                 is in the page's form-action), else to `fallback`
"use strict";

(function () {
  function Failure(code) {
    this.code = code;
  }

  async function postJSON(url, body, csrf) {
    var response;
    try {
      response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          "Accept": "application/json, application/problem+json",
          "X-CSRF-Token": csrf,
        },
        body: JSON.stringify(body),
      });
    } catch (ignored) {
      throw new Failure("network");
    }
    var data = null;
    try {
      data = await response.json();
    } catch (ignored) {
      data = null;
    }
    if (!response.ok) {
      throw new Failure(data && typeof data.code === "string" ? data.code : "unknown");
    }
    if (!data || typeof data !== "object") {
      throw new Failure("unknown");
    }
    return data;
  }

  function leave(answer, fallback) {
    if (answer.form_post && typeof answer.form_post.action === "string") {
      var post = document.createElement("form");
      post.method = "post";
      post.action = answer.form_post.action;
      var params = answer.form_post.params || {};
      Object.keys(params).forEach(function (name) {
        var input = document.createElement("input");
        input.type = "hidden";
        input.name = name;
        input.value = params[name];
        post.appendChild(input);
      });
      document.body.appendChild(post);
      post.submit();
      return;
    }
    window.location.assign(typeof answer.redirect === "string" ? answer.redirect : fallback);
  }

  window.AcarEndpoints = Object.freeze({ Failure: Failure, postJSON: postJSON, leave: leave });
})();
