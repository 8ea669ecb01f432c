"""Server-rendered pages: Jinja2 with autoescaping, every asset served by Açar, a strict Content-Security-Policy.

script-src 'self' and no inline script; form-action lists 'self' plus the client origins a form's answer may
redirect to (browsers apply form-action to the redirect that follows a submission).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), auto_reload=False)


def origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def csp(form_targets: Iterable[str] = ()) -> str:
    targets = " ".join(sorted({origin(u) for u in form_targets}))
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            f"form-action 'self'{' ' + targets if targets else ''}; frame-ancestors 'none'; base-uri 'none'")


def render(template: str, context: Mapping[str, Any], *, status: int = 200, form_targets: Iterable[str] = (),
           headers: Mapping[str, str] | None = None) -> HTMLResponse:
    html = _env.get_template(template).render(**context)
    response = HTMLResponse(html, status_code=status)
    response.headers["Content-Security-Policy"] = csp(form_targets)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_page(error: str, description: str, *, status: int = 400) -> HTMLResponse:
    return render("error.html", {"title": "Sign-in could not continue", "error": error, "description": description},
                  status=status)
