"""Hub discovery (search, model details, GGUF providers) and file resolution for downloads.

The facade over `core/services/hub/`: `client` (huggingface_hub calls off the event loop, deadline,
error mapping, cache), `search` (filters), `variants` (GGUF files into quantization variants),
`ranking` (the provider score), `cards` (license, base model, README). See docs/hub.md.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from huggingface_hub.hf_api import ModelInfo, RepoSibling

from model_manager.core.config import Settings
from model_manager.core.errors import GatedRepoError, NotFoundError
from model_manager.core.models import GGUFProvider, HubFile, HubSort, ModelInfoDetailed, ModelInfoShort, SearchFilters
from model_manager.core.services.hub import cards, search
from model_manager.core.services.hub.client import HubClient, query_params
from model_manager.core.services.hub.projectors import matching_projector
from model_manager.core.services.hub.ranking import ProviderCandidate, rank_providers
from model_manager.core.services.hub.variants import RepoFiles, ambiguous, group_variants

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
PROVIDER_MAX_CANDIDATES = 30  # the most-downloaded quantizations examined; each costs one Hub request
PROVIDER_CONCURRENCY = 8
PROVIDER_FIELDS = ("author", "cardData", "createdAt", "downloads", "gated", "lastModified", "likes", "siblings", "tags")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Hub repo, resolved for download: where it is, how big, and what its bytes must hash to."""

    repo_id: str
    revision: str  # as asked for ("main", a tag, a commit)
    filename: str
    url: str  # resolve URL at `commit` (when known), URL-encoded, on the configured endpoint
    size: int | None
    sha256: str | None  # the LFS sha256, or the ETag when that is a sha256; None for small git files
    etag: str | None
    commit: str | None  # the commit `revision` resolved to: every part of a download comes from the same one


@dataclass(frozen=True)
class ResolvedVariant:
    """A variant resolved for download: its files (split parts in order) and the projector that goes with it."""

    files: list[RemoteFile]
    projector: RemoteFile | None = None


class HuggingFaceService:
    """Everything the service asks the Hugging Face Hub. One instance per app, shared by all requests.

    Methods raise `NotFoundError`, `GatedRepoError`, `RateLimitedError` or `HubUnavailableError`
    (see `hub.client.HubClient`).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = HubClient(settings)

    def hub_auth_headers(self) -> dict[str, str]:
        """`{"authorization": "Bearer <HF_TOKEN>"}`, or `{}` without a token. For requests to the Hub host only."""
        return self.client.auth_headers()

    # ------------------------------------------------------------------ downloads

    async def resolve_file(self, repo_id: str, filename: str, revision: str = "main") -> RemoteFile:
        """The file at `revision`, freshly asked (never cached). Raises `GatedRepoError` when our token cannot read it."""
        info = await self.client.model_info(repo_id, revision=revision, files_metadata=True, cached=False)
        sibling = next((s for s in info.siblings or () if s.rfilename == filename), None)
        if sibling is None:
            raise NotFoundError(f"{repo_id} has no file {filename!r} at revision {revision!r}")
        return await self._remote_file(info, revision, sibling)

    async def resolve_variant(self, repo_id: str, quantization: str, revision: str = "main") -> list[RemoteFile]:
        """Every `.gguf` file of the variant labelled `quantization` (split parts in order, projectors excluded).

        Raises NotFoundError when no variant matches, AmbiguousVariantError (details list the candidates)
        when it matches several: an old label such as `Q4_K_M` in a repo where labels were disambiguated,
        or a label given in another case that matches several labels.
        """
        return (await self.resolve_download(repo_id, quantization, revision, include_projector=False)).files

    async def resolve_download(
        self,
        repo_id: str,
        quantization: str,
        revision: str = "main",
        *,
        include_projector: bool = True,
        projector: str | None = None,
    ) -> ResolvedVariant:
        """The variant's files, as `resolve_variant`, and with `include_projector` its projector: `projector`
        (a repo path) when given, else the matching one (`hub/projectors.py`), None when the repo has none.

        Raises what `resolve_variant` raises, and NotFoundError when `projector` is not a projector of the repo.
        """
        info = await self.client.model_info(repo_id, revision=revision, files_metadata=True, cached=False)
        repo_files = _repo_files(info)
        found = repo_files.matching(quantization)
        if len(found) > 1:
            raise ambiguous(quantization, found, where=repo_id)
        if not found:
            raise NotFoundError(f"{repo_id} has no GGUF variant {quantization!r} at revision {revision!r}")
        (variant,) = found
        if projector is not None and projector not in repo_files.mmproj_files:
            raise NotFoundError(
                f"{repo_id} has no projector (mmproj) file {projector!r} at revision {revision!r}",
                details={"projector": projector, "projectors": repo_files.mmproj_files},
            )
        chosen = (projector or matching_projector(repo_files.mmproj_files, variant.files)) if include_projector else None
        siblings = {s.rfilename: s for s in info.siblings or ()}
        wanted = [*variant.files, *([chosen] if chosen else [])]
        remote = list(await asyncio.gather(*(self._remote_file(info, revision, siblings[f]) for f in wanted)))
        return ResolvedVariant(files=remote[: len(variant.files)], projector=remote[-1] if chosen else None)

    async def _remote_file(self, info: ModelInfo, revision: str, sibling: RepoSibling) -> RemoteFile:
        # The HEAD pins the commit and, since a gated repo's model_info is public, tells whether we may read it.
        metadata = await self.client.file_metadata(info.id, sibling.rfilename, info.sha or revision)
        commit = info.sha or metadata.commit_hash
        etag = metadata.etag
        sha256 = sibling.lfs.sha256 if sibling.lfs else (etag if etag and _SHA256.match(etag) else None)
        return RemoteFile(
            repo_id=info.id,
            revision=revision,
            filename=sibling.rfilename,
            url=self.client.file_url(info.id, sibling.rfilename, commit or revision),
            size=sibling.size if sibling.size is not None else metadata.size,
            sha256=sha256,
            etag=etag,
            commit=commit,
        )

    # ------------------------------------------------------------------ discovery

    async def search_models(
        self,
        query: str | None = None,
        *,
        limit: int = 20,
        offset: int = 0,
        sort: HubSort = HubSort.likes,
        filters: SearchFilters | None = None,
    ) -> list[ModelInfoShort]:
        """Rows `offset` to `offset + limit` of the models matching `query` and every filter, in `sort` order."""
        filters = filters or SearchFilters()
        wanted = offset + limit
        params = search.hub_query(query, filters, sort, wanted)
        found: list[ModelInfoShort] = []
        async for info in self.client.iter_models(params, max_pages=search.SEARCH_MAX_PAGES):
            if search.past_last_match(info, filters, sort):
                break
            if search.matches(info, filters):
                found.append(search.short_info(info))
                if len(found) >= wanted:
                    break
        return found[offset:wanted]

    async def get_model_details(self, repo_id: str) -> ModelInfoDetailed:
        """Card data, README, files with sizes and sha256. `GatedRepoError` when gated and our token cannot read it."""
        info = await self.client.model_info(repo_id, files_metadata=True)
        gated = bool(info.gated)
        if gated:
            await self._check_gated_access(info)
        siblings = info.siblings or []
        readme = None
        if any(s.rfilename == "README.md" for s in siblings):
            readme = cards.readme_body(await self.client.read_text(info.id, "README.md", info.sha or "main"))
        files = [
            HubFile(filename=s.rfilename, size_bytes=s.size, sha256=s.lfs.sha256 if s.lfs else None) for s in siblings
        ]
        base_models = cards.base_models_of(info)
        return ModelInfoDetailed(
            **search.short_info(info).model_dump(),
            description=cards.description_from(readme),
            readme_content=readme,
            model_card=cards.card_data(info),
            file_count=len(files),
            total_size_bytes=sum(f.size_bytes or 0 for f in files),
            files=files,
            gated=gated,
            base_model=base_models[0] if base_models else None,
        )

    async def _check_gated_access(self, info: ModelInfo) -> None:
        """Returns when our HF_TOKEN may read the gated repo's files; raises GatedRepoError when it may not."""
        if not self.client.token:
            raise GatedRepoError(
                f"{info.id} is gated: accept its terms on the Hub and set HF_TOKEN to a token of that account",
                details={"token_configured": False},
            )
        if not await self._may_download(info):
            raise GatedRepoError(
                f"{info.id} is gated and the configured HF_TOKEN has no access: accept its terms on the Hub "
                "with the account of that token",
                details={"token_configured": True},
            )

    async def _may_download(self, info: ModelInfo) -> bool:
        """Whether our token may read the gated repo's files: one HEAD of one file, its verdict cached."""
        names = [s.rfilename for s in info.siblings or ()]
        probe = next((n for n in names if n not in ("README.md", ".gitattributes")), names[0] if names else None)
        return probe is None or await self.client.may_read(info.id, probe, info.sha or "main")

    async def get_gguf_providers(self, repo_id: str) -> list[GGUFProvider]:
        """The repos holding GGUF quantizations of the model, best first by score (see hub/ranking.py). `[]` if none.

        Hub requests: one listing through the `base_model:quantized:<id>` relation, one model_info of the
        base model, one model_info (with file sizes) per candidate that lists `.gguf` files, and with
        HF_TOKEN set one HEAD per gated candidate to learn whether that token may download it. All cached.
        """
        params = query_params(
            filter=[f"base_model:quantized:{repo_id}", "gguf"],
            sort="downloads",
            limit=PROVIDER_MAX_CANDIDATES,
            expand=list(PROVIDER_FIELDS),
        )
        base, page = await asyncio.gather(self.client.model_info(repo_id), self.client.models_page(params=params))
        base_id = base.id
        listed = [info for info in page.models[:PROVIDER_MAX_CANDIDATES] if _may_quantize(info, base_id)]

        limit = asyncio.Semaphore(PROVIDER_CONCURRENCY)

        async def examine(listing: ModelInfo) -> ProviderCandidate | None:
            async with limit:
                try:
                    info = await self.client.model_info(listing.id)
                except NotFoundError:  # deleted or made private since the listing
                    return None
                if not _may_quantize(info, base_id):
                    return None
                # A gated repo is downloadable only with a token whose account accepted its terms: ask the Hub.
                downloadable = not info.gated or (self.client.token is not None and await self._may_download(info))
            return self._candidate(info, base_id, downloadable)

        candidates = await asyncio.gather(*(examine(info) for info in listed))
        found = [c for c in candidates if c is not None and c.variants]
        return rank_providers(found, base_id, now=datetime.now(timezone.utc))

    def _candidate(self, info: ModelInfo, base_id: str, downloadable: bool) -> ProviderCandidate:
        repo_files = _repo_files(info)
        gated = bool(info.gated)
        if downloadable:
            blocked = None
        elif self.client.token is None:
            blocked = "gated and no HF_TOKEN is configured"
        else:
            blocked = "gated and the configured HF_TOKEN has no access (accept its terms on the Hub with that account)"
        return ProviderCandidate(
            repo_id=info.id,
            author=search.author_of(info) or "",
            downloads=info.downloads or 0,
            likes=info.likes or 0,
            last_modified=info.last_modified,
            variants=repo_files.variants,
            mmproj_files=repo_files.mmproj_files,
            hub_relation=_has_relation_tag(info, base_id),
            card_relation=_card_names(info, base_id),
            gated=gated,
            downloadable=downloadable,
            why_not_downloadable=blocked,
            left_out_files=repo_files.left_out,
            projectors=repo_files.projectors,
        )


def _repo_files(info: ModelInfo) -> RepoFiles:
    return group_variants((s.rfilename, s.size) for s in info.siblings or ())


def _has_relation_tag(info: ModelInfo, base_id: str) -> bool:
    wanted = f"base_model:quantized:{base_id}".casefold()
    return any(tag.casefold() == wanted for tag in info.tags or ())


def _card_names(info: ModelInfo, base_id: str) -> bool:
    return base_id.casefold() in {name.casefold() for name in cards.base_models_of(info)}


def _may_quantize(info: ModelInfo, base_id: str) -> bool:
    """Whether a listed repo can be a GGUF quantization of `base_id`: not the base itself, related to it,
    a card that does not name another base, and `.gguf` files when the listing shows its files."""
    if info.id.casefold() == base_id.casefold():
        return False
    if not (_has_relation_tag(info, base_id) or _card_names(info, base_id)):
        return False
    if cards.base_models_of(info) and not _card_names(info, base_id):
        return False
    if info.siblings is not None and not _repo_files(info).variants:
        return False
    return True
