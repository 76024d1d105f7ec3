"""Placeholder: the local library service is being written."""


class LocalStorage:
    def __init__(self, settings, catalogue) -> None:
        self.settings = settings
        self.catalogue = catalogue

    async def reconcile(self) -> None:
        return None
