"""Making a library model appear in another tool's own layout, with no copy: one module per tool.

Each module has `TARGET`, `default_name(source)`, `place(source, name, placed) -> details` and
`remove(source, created, details)`. `links` holds the link and removal rules they share: never copy,
never replace, and remove only what is still ours.
"""

from model_manager.core.services.exports import hf_cache, lmstudio, ollama

EXPORTERS = {module.TARGET: module for module in (ollama, lmstudio, hf_cache)}
