"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import Services, readiness
from api.problems import problem

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz() -> JSONResponse:
    """The process is alive and serving requests."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    """Ready: the database answers, the schema is at the migrations head, signing keys are loaded."""
    services: Services = request.app.state.services
    reasons = await readiness(services)
    if reasons:
        return problem(503, "not_ready", "Service not ready", "; ".join(reasons), reasons=reasons)
    return JSONResponse({"status": "ready"})
