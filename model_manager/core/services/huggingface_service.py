"""Placeholder: the Hub service is being written."""


class HuggingFaceService:
    def __init__(self, settings) -> None:
        self.settings = settings
