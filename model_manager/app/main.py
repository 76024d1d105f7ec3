"""The app factory: wires settings, services, middleware and routers together, and nothing else."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from model_manager import __version__
from model_manager.app.auth import TokenMiddleware
from model_manager.app.body_limits import JSON_BODY_LIMIT, BodyLimitMiddleware
from model_manager.app.deps import require_token
from model_manager.app.errors import install_error_handlers
from model_manager.app.logging import RequestIdMiddleware, configure_logging
from model_manager.app.openapi_errors import drop_default_validation_errors, error_responses
from model_manager.app.routes import discover, downloads, health, hub, local_models, storage, web
from model_manager.app.routes import fit as fit_routes
from model_manager.app.routes import system as system_routes
from model_manager.core.catalogue import Catalogue
from model_manager.core.config import Settings, get_settings
from model_manager.core.config.token import ensure_api_token
from model_manager.core.fit.service import FitService
from model_manager.core.services.discovery import Discovery
from model_manager.core.services.download_manager import DownloadManager
from model_manager.core.services.huggingface_service import HuggingFaceService
from model_manager.core.services.local_storage import LocalStorage

logger = logging.getLogger("model_manager")

# Bounded by free disk space instead of the JSON limit (core/services/library/uploads.py).
UPLOAD_PATHS = ("/local/import/upload",)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. Services are created once per app in its lifespan and shared by all requests."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for folder in (settings.models_dir, settings.downloads_dir, settings.data_dir):
            Path(folder).mkdir(parents=True, exist_ok=True)
        token, created = ensure_api_token(settings)
        if created:
            logger.info("generated a new API token and saved it in %s", settings.token_file)
        catalogue = Catalogue(settings.catalogue_file)
        catalogue.open()
        local_storage = LocalStorage(settings, catalogue)
        hub_service = HuggingFaceService(settings)
        download_manager = DownloadManager(settings, catalogue, hub_service, local_storage)
        app.state.settings = settings
        app.state.api_token = token
        app.state.catalogue = catalogue
        app.state.local_storage = local_storage
        app.state.hub = hub_service
        app.state.downloads = download_manager
        app.state.discovery = Discovery(settings, local_storage)
        app.state.fit = FitService(settings, catalogue, hub_service)
        await local_storage.reconcile()
        # Models already in MODELS_DIR that no row owns are registered in place, without delaying the start.
        local_storage.start_rescan()
        await download_manager.start()
        try:
            yield
        finally:
            await download_manager.stop()
            await local_storage.stop_rescan()
            catalogue.close()

    app = FastAPI(
        title="model-manager",
        version=__version__,
        description="Find GGUF models on the Hugging Face Hub, download them safely, keep a local library.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # Middleware added first runs innermost. Both checks answer before any body is read, the token first;
    # both sit inside CORS, so preflights never need the token and refusals carry the CORS headers.
    app.add_middleware(BodyLimitMiddleware, max_bytes=JSON_BODY_LIMIT, unlimited_paths=UPLOAD_PATHS)
    public = {"/health", "/", app.docs_url, app.redoc_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url}
    app.add_middleware(TokenMiddleware, public_paths=public - {None}, public_prefixes=("/static/",))
    origins = settings.cors_origins
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        # Credentials (cookies) are never needed with a Bearer token; never pair them with a wildcard.
        allow_credentials="*" not in origins,
        allow_methods=["*"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Retry-After"],
    )
    app.add_middleware(RequestIdMiddleware)

    # The middleware already refused requests without the token; the dependency declares the scheme in
    # the OpenAPI document and checks once more.
    protected = {"dependencies": [Depends(require_token)], "responses": error_responses(401)}
    app.include_router(health.router)
    app.include_router(hub.router, **protected)
    app.include_router(downloads.router, **protected)
    app.include_router(local_models.router, **protected)
    app.include_router(storage.router, **protected)
    app.include_router(discover.router, **protected)
    app.include_router(fit_routes.router, **protected)
    app.include_router(system_routes.router, **protected)
    app.include_router(web.router)
    drop_default_validation_errors(app)
    return app


def __getattr__(name: str):
    # `model_manager.app.main:app` for uvicorn, built on first access so importing this module has no side effects.
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
