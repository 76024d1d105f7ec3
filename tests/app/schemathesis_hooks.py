"""schemathesis hooks of the OpenAPI contract test (loaded through `hooks` in its schemathesis.toml).

No schema can say "the bytes of a valid GGUF file", so a schema-valid upload is given such bytes: the
upload is then tested all the way into the library (and again as a duplicate), never refused for content.
"""

from __future__ import annotations

import os

import schemathesis

UPLOAD = "POST /local/import/upload"


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    positive = meta is not None and meta.generation.mode.is_positive
    if case.operation.label == UPLOAD and positive and isinstance(case.body, dict) and "file" in case.body:
        with open(os.environ["CONTRACT_UPLOAD_GGUF"], "rb") as file:
            case.body["file"] = file.read()
    return case
