"""Dependencies that routes declare in their signatures: settings, services and the token check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from model_manager.app.auth import TOKEN_MESSAGE, bearer_token_matches
from model_manager.app.errors import InvalidTokenError
from model_manager.core.catalogue import Catalogue
from model_manager.core.config import Settings
from model_manager.core.services.discovery import Discovery
from model_manager.core.services.download_manager import DownloadManager
from model_manager.core.services.huggingface_service import HuggingFaceService
from model_manager.core.services.local_storage import LocalStorage

_bearer = HTTPBearer(auto_error=False, description="The service's API token (printed by ./start.sh on first start)")


def _state(request: Request):
    return request.app.state


def get_settings_dep(request: Request) -> Settings:
    return _state(request).settings


def get_catalogue(request: Request) -> Catalogue:
    return _state(request).catalogue


def get_local_storage(request: Request) -> LocalStorage:
    return _state(request).local_storage


def get_hub(request: Request) -> HuggingFaceService:
    return _state(request).hub


def get_downloads(request: Request) -> DownloadManager:
    return _state(request).downloads


def get_discovery(request: Request) -> Discovery:
    return _state(request).discovery


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Accept the request only with `Authorization: Bearer <the API token>`, compared in constant time."""
    if not credentials or not bearer_token_matches(f"Bearer {credentials.credentials}", _state(request).api_token):
        raise InvalidTokenError(TOKEN_MESSAGE)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
CatalogueDep = Annotated[Catalogue, Depends(get_catalogue)]
LocalStorageDep = Annotated[LocalStorage, Depends(get_local_storage)]
HubDep = Annotated[HuggingFaceService, Depends(get_hub)]
DownloadsDep = Annotated[DownloadManager, Depends(get_downloads)]
DiscoveryDep = Annotated[Discovery, Depends(get_discovery)]
