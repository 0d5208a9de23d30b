#!/usr/bin/env bash
# Install saerad into ./.venv on a fresh Debian/Ubuntu machine with Python 3.11+.
# torch is pinned first to the CPU build (a looser pin would pull a multi-GB CUDA build);
# Java (for METEOR 1.5 in the evaluation suite) and, with the test extras, Chromium come from Debian
# when missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null
  else
    echo "note: no Java runtime; METEOR will be reported as unavailable" >&2
  fi
fi
# Chromium (Debian package) for the atlas's browser tests, driven by playwright's Python API.
if [[ ",$extras," == *",test,"* ]] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: no Chromium; the atlas browser tests will be skipped" >&2
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
