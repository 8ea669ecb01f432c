"""The enrollment admin API: a registration office issues activation codes (and recovers lost passkeys).

Bearer admin tokens with scope acar:enroll (or acar:admin), or the token of a registration officer or a system
administrator (api.auth.CODES); errors are RFC 9457 problems. The code appears only in
the answer that creates it, with Cache-Control: no-store; the audit trail names the officer, never the code.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from api.auth import CODES, AdminPrincipal, require_permission
from api.deps import Services
from api.logging import request_id_var
from api.schemas.enrollment import EnrollmentCodeIssued, EnrollmentCodeRequest, PersonSummary
from api.web import NO_STORE
from idp.sql.enrollment import issue_for_fin
from storage.base import utcnow

router = APIRouter(prefix="/admin/enrollment-codes", tags=["enrollment"])
Officer = Annotated[AdminPrincipal, Depends(require_permission(CODES))]


@router.post("", status_code=201, response_model=EnrollmentCodeIssued)
async def issue_code(body: EnrollmentCodeRequest, request: Request, response: Response,
                     principal: Officer) -> EnrollmentCodeIssued:
    """Issue an activation code for the person with this FIN (their earlier unused codes stop working); with
    revoke_credentials every passkey they have is removed first (recovery). 404 for an unknown FIN, 422 for a
    malformed one."""
    services: Services = request.app.state.services
    async with services.sessions() as session, session.begin():
        person, issued, removed = await issue_for_fin(
            session, services.enrollment_policy, services.passkeys, fin=body.fin,
            issued_by=principal.actor, revoke_credentials=body.revoke_credentials, clock=utcnow,
            request_id=request_id_var.get())
    response.headers.update(NO_STORE)
    return EnrollmentCodeIssued(code=issued.code, code_id=issued.code_id, expires_at=issued.expires_at,
                                credentials_revoked=removed,
                                person=PersonSummary(id=person.id, fin=person.fin, given_name=person.given_name,
                                                     family_name=person.family_name))
