"""Hub search: which filters go to the Hub, which are applied to its answers, and the result rows.

The Hub applies `search`, `author`, `pipeline_tag` and `filter` (tags, `gguf`, `license:<id>`; all must
match). It cannot apply minimum downloads or likes: those are applied here, and the search reads further
pages until the requested page is full, the Hub runs out, or `SEARCH_MAX_PAGES` pages were read. Every
filter is checked again on each result, so a Hub that ignores one cannot leak a non-matching row.
"""

from __future__ import annotations

from huggingface_hub.hf_api import ModelInfo

from model_manager.core.models import HubSort, ModelInfoShort, SearchFilters
from model_manager.core.services.hub.cards import license_of
from model_manager.core.services.hub.client import HUB_MAX_PAGE_SIZE, QueryParams, query_params

SEARCH_PAGE_SIZE = 100  # a Hub page serves the next few UI pages too (they are cached)
SEARCH_MAX_PAGES = 10

# API sort names -> the Hub's `sort` values (always descending).
HUB_SORT = {
    HubSort.likes: "likes",
    HubSort.downloads: "downloads",
    HubSort.time: "createdAt",
    HubSort.update: "lastModified",
    HubSort.trending: "trendingScore",
}
# The listing fields a result row needs, cardData for a license the tags do not carry.
SEARCH_FIELDS = (
    "author",
    "cardData",
    "createdAt",
    "downloads",
    "gated",
    "lastModified",
    "library_name",
    "likes",
    "pipeline_tag",
    "tags",
    "trendingScore",
)


def hub_query(query: str | None, filters: SearchFilters, sort: HubSort, wanted: int) -> QueryParams:
    """The `/api/models` query for a search that needs `wanted` matching rows (offset + limit)."""
    tags = ["gguf"] if filters.gguf else []
    tags += [tag for tag in filters.tags if tag not in tags]
    if filters.license:
        tags.append(f"license:{filters.license}")
    return query_params(
        search=(query or "").strip() or None,
        author=filters.author or None,
        pipeline_tag=filters.task or None,
        filter=tags,
        sort=HUB_SORT[sort],
        limit=min(HUB_MAX_PAGE_SIZE, max(SEARCH_PAGE_SIZE, wanted)),
        expand=list(SEARCH_FIELDS),
    )


def _has_tag(info: ModelInfo, tag: str) -> bool:
    wanted = tag.casefold()
    return any(t.casefold() == wanted for t in info.tags or ()) or wanted in {
        (info.pipeline_tag or "").casefold(),
        (info.library_name or "").casefold(),
    }


def matches(info: ModelInfo, filters: SearchFilters) -> bool:
    """Whether a listed model passes every filter."""
    if filters.author and (author_of(info) or "").casefold() != filters.author.casefold():
        return False
    if filters.task and (info.pipeline_tag or "").casefold() != filters.task.casefold():
        return False
    if filters.gguf and not _has_tag(info, "gguf"):
        return False
    if not all(_has_tag(info, tag) for tag in filters.tags):
        return False
    if filters.license and (license_of(info) or "").casefold() != filters.license.casefold():
        return False
    if filters.min_downloads is not None and (info.downloads or 0) < filters.min_downloads:
        return False
    if filters.min_likes is not None and (info.likes or 0) < filters.min_likes:
        return False
    return True


def past_last_match(info: ModelInfo, filters: SearchFilters, sort: HubSort) -> bool:
    """Whether no later model of a listing in this order can pass the minimum the order is sorted by."""
    if sort is HubSort.downloads and filters.min_downloads is not None:
        return (info.downloads or 0) < filters.min_downloads
    if sort is HubSort.likes and filters.min_likes is not None:
        return (info.likes or 0) < filters.min_likes
    return False


def author_of(info: ModelInfo) -> str | None:
    return info.author or (info.id.split("/", 1)[0] if "/" in info.id else None)


def short_info(info: ModelInfo) -> ModelInfoShort:
    """A search result row."""
    return ModelInfoShort(
        repo_id=info.id,
        model_name=info.id.rsplit("/", 1)[-1],
        author=author_of(info),
        task=info.pipeline_tag,
        license=license_of(info),
        downloads=info.downloads or 0,
        likes=info.likes or 0,
        last_modified=info.last_modified,
        tags=list(info.tags or ()),
    )
