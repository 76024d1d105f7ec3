#!/usr/bin/env bash
# Run model-manager: creates .venv if needed, installs the project, prints the token on first start, serves.
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure-venv.sh
exec .venv/bin/python -m model_manager.startup "$@"
