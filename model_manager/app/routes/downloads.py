"""`/local/download...`: request, follow (Server-Sent Events), list and cancel downloads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from model_manager.app.deps import DownloadsDep
from model_manager.app.openapi_errors import error_responses
from model_manager.core.models import DownloadAccepted, DownloadRequest, DownloadStatus, MessageResponse
from model_manager.core.services.download_manager import DownloadManager

router = APIRouter(prefix="/local", tags=["downloads"])

PING_SECONDS = 15
SEND_TIMEOUT_SECONDS = 60  # a client that reads nothing for this long is disconnected


@router.post(
    "/download",
    status_code=202,
    response_model=DownloadAccepted,
    responses=error_responses(400, 403, 404, 409, 413, 422, 429, 502, 507),
)
async def request_download(request: DownloadRequest, downloads: DownloadsDep) -> DownloadAccepted:
    return await downloads.enqueue(request)


@router.get("/download/status", response_class=EventSourceResponse, responses=error_responses(404, 503))
async def download_events(
    downloads: DownloadsDep,
    download_id: Annotated[
        str | None, Query(description="Only this download; the stream ends after its last state")
    ] = None,
) -> EventSourceResponse:
    if download_id is not None:
        downloads.get(download_id)  # 404 DOWNLOAD_NOT_FOUND before the stream starts
    downloads.check_subscriber_room()  # 503 TOO_MANY_SUBSCRIBERS before the stream starts
    return EventSourceResponse(
        _status_events(downloads, download_id),
        ping=PING_SECONDS,
        ping_message_factory=lambda: ServerSentEvent(comment="ping"),
        send_timeout=SEND_TIMEOUT_SECONDS,
    )


async def _status_events(downloads: DownloadManager, download_id: str | None) -> AsyncIterator[ServerSentEvent]:
    # Subscribed only once the stream runs, so a client gone before that leaves nothing behind.
    subscription = downloads.subscribe(download_id)
    try:
        async for event in subscription:
            yield ServerSentEvent(data=event.status.model_dump_json(), id=str(event.event_id))
            if download_id is not None and event.status.status.is_terminal:
                return
    finally:
        subscription.close()


@router.get("/downloads", response_model=list[DownloadStatus])
async def list_downloads(downloads: DownloadsDep) -> list[DownloadStatus]:
    return downloads.list()


@router.get("/downloads/{download_id}", response_model=DownloadStatus, responses=error_responses(404))
async def get_download(download_id: str, downloads: DownloadsDep) -> DownloadStatus:
    return downloads.get(download_id)


@router.delete("/download/{download_id}", response_model=MessageResponse, responses=error_responses(404, 409))
async def cancel_download(download_id: str, downloads: DownloadsDep) -> MessageResponse:
    await downloads.cancel(download_id)
    return MessageResponse(message="Download cancelled successfully")
