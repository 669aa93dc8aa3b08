#!/usr/bin/env bash
# Quickstart (b): set up a full install (serving + training + test extras) and run the tests.
# Extra arguments go to pytest, e.g. ./test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  python3 -m venv "$VENV"
fi
echo "== installing moe-avatar[train,test] (torch, open_clip, onnx, pytest, grpcurl ...)"
"$VENV/bin/pip" install -q --disable-pip-version-check -e ./clients/python -e ".[train,test]"
echo "== running the tests"
exec "$VENV/bin/python" -m pytest -q --durations=15 "$@"
