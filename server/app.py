"""App factory: ``create_app(settings, runtime_factory)`` -> FastAPI app. Nothing loads at import; the
lifespan starts the service (runtime loaded in a worker thread) and stops it on shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import handlers
from .metrics import InProgress
from .routes import ROUTERS, web
from .schemas import problem_media_types
from .service import RuntimeFactory, Service
from .settings import Settings


def create_app(settings: Settings | None = None, runtime_factory: RuntimeFactory | None = None) -> FastAPI:
    """Build the app. ``runtime_factory(settings)`` returns the runtime (default: load the bundle named by
    ``settings.bundle_dir``); tests pass a fake or a tiny random bundle."""
    settings = settings or Settings()
    service = Service(settings, runtime_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="speechprompt-server", version="1", lifespan=lifespan,
                  summary="SpeechPrompt v2 task prompts on a frozen GSLM backbone: audio in, class out.")
    app.state.service = service
    handlers.install(app, service.metrics)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", web.static_files(), name="static")  # the page's files (server/routes/web.py)
    app.add_middleware(InProgress, gauge=service.metrics.http_in_progress)
    build_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = problem_media_types(build_openapi(), settings.max_upload_bytes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
