"""FastAPI dependencies, declared once: the service, readiness, admin authentication."""

from __future__ import annotations

import hmac

from fastapi import Depends, Request

from .errors import Forbidden, Unauthorized
from .service import Service


def get_service(request: Request) -> Service:
    return request.app.state.service


def ready_service(service: Service = Depends(get_service)) -> Service:
    """The service, or NotReady (503) while it boots or after its start-up failed."""
    service.require_ready()
    return service


def require_admin(request: Request, service: Service = Depends(get_service)) -> None:
    """``Authorization: Bearer <admin token>``. No token configured -> 403 (uploads disabled);
    missing or malformed header -> 401; wrong token -> 403. Checked before the body is read."""
    token = service.settings.admin_token
    if token is None or not token.get_secret_value():
        raise Forbidden("uploads and deletes are disabled: the server has no admin token",
                        accepted="start the server with SPEECHPROMPT_ADMIN_TOKEN set")
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("this operation needs an admin token", accepted="Authorization: Bearer <admin token>",
                           headers={"WWW-Authenticate": 'Bearer realm="speechprompt"'})
    if not hmac.compare_digest(credential.strip().encode(), token.get_secret_value().encode()):
        raise Forbidden("the admin token is not valid")
