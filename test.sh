#!/usr/bin/env bash
# Run the whole test suite: creates/updates .venv with the test extras, installs Debian's chromium for
# the browser tests when missing, then runs pytest (arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure-venv.sh test
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install chromium; the browser tests will fail" >&2
fi
# llama.cpp for the fit accuracy tests: node-llama-cpp's prebuilt CPU binaries, installed once from the lock file.
# `npm install`, not `npm ci`: the registry mirror lacks some other platforms' optional packages, which npm
# leaves out of the lock file and `npm ci` then refuses; `npm install` takes the lock's versions all the same.
if [ ! -d tests/llama/node_modules/node-llama-cpp ]; then
    if command -v npm >/dev/null 2>&1; then
        (cd tests/llama && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --no-audit --no-fund --loglevel=error >/dev/null) \
            || echo "warning: could not install node-llama-cpp; the llama.cpp accuracy tests will not run" >&2
    else
        echo "warning: npm is missing; the llama.cpp accuracy tests will not run" >&2
    fi
fi
export HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_TELEMETRY=1
exec .venv/bin/python -m pytest "$@"
