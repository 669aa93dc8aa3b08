#!/usr/bin/env bash
# Quickstart (a): set up a serving install (no torch), start the server on the bundled
# default model, generate avatars for an English and a Chinese prompt, stop the server.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PORT=${PORT:-50051}
OUT=${OUT:-out/quickstart}

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  python3 -m venv "$VENV"
fi
echo "== installing moe-avatar (serving install: grpcio, onnxruntime, tokenizers, pillow; no torch)"
"$VENV/bin/pip" install -q --disable-pip-version-check -e ./clients/python -e .

echo "== starting moe-avatar-server on 127.0.0.1:$PORT with models/"
"$VENV/bin/moe-avatar-server" --models models --host 127.0.0.1 --port "$PORT" --device auto --log-format text &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if "$VENV/bin/moe-avatar" --target "127.0.0.1:$PORT" health >/dev/null 2>&1; then break; fi
  kill -0 $SERVER 2>/dev/null || { echo "server exited; see the log above" >&2; exit 1; }
  sleep 0.5
done
"$VENV/bin/moe-avatar" --target "127.0.0.1:$PORT" info

mkdir -p "$OUT"
echo "== generating"
"$VENV/bin/moe-avatar" --target "127.0.0.1:$PORT" generate "silver hair, cat ears, smiling" -n 4 --seed 7 -o "$OUT/en"
"$VENV/bin/moe-avatar" --target "127.0.0.1:$PORT" generate "戴墨镜的蓝发少女" -n 4 --seed 7 -o "$OUT/zh"
echo "== done: avatars are in $(pwd)/$OUT/en and $(pwd)/$OUT/zh"
