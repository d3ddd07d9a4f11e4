#!/usr/bin/env bash
# Creates (or reuses) .venv with the Python packages the interop tests need; prints the venv's python path.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=tests/interop/requirements.txt
optional=tests/interop/requirements-optional.txt
stamp=.venv/.requirements.sha256
wanted=$(cat "$requirements" "$optional" | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  python3 -m venv .venv >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$optional" >&2 \
    || echo "python-env: optional packages did not install ($optional); the tests that use them skip" >&2
  echo "$wanted" > "$stamp"
fi
echo "$PWD/.venv/bin/python"
