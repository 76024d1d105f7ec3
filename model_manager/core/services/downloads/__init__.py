"""The download engine behind `download_manager.DownloadManager`; see docs/downloads.md for the design."""
