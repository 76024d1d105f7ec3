"""Placeholder: the download manager is being written."""


class DownloadManager:
    def __init__(self, settings, catalogue, hub, storage) -> None:
        self.settings = settings

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
