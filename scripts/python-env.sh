#!/usr/bin/env bash
# Creates (or reuses) .venv with the Python packages the interop tests need; prints the venv's python path.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=tests/interop/requirements.txt
stamp=.venv/.requirements.sha256
wanted=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  python3 -m venv .venv >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  echo "$wanted" > "$stamp"
fi
echo "$PWD/.venv/bin/python"
