"""Discover: the GGUF models other tools already keep on this machine, to bring into the library without a copy.

`Discovery` (in `service`) is the facade. One module per place, each reading that tool's layout and nothing
else: `ollama` (manifests naming blobs), `lmstudio` (`models/<publisher>/<repo>`), `hf_cache` (the Hugging
Face cache), `llama_cpp` (llama.cpp's own cache), `scan_dirs` (the folders of LIBRARY_SCAN_DIRS). They
report `found.Candidate`s and `found.Skipped` entries; `check` then reads each candidate's GGUF header
(header only) and tells whether the library already holds it and whether a link import needs no copy.

Nothing here writes, moves or removes a file. A folder or file that cannot be read is skipped with the
reason, never an error. Every blocking call runs in a worker thread.
"""

from model_manager.core.services.discovery.service import Discovery

__all__ = ["Discovery"]
