#!/usr/bin/env bash
# Install saerad into ./.venv on a fresh Debian/Ubuntu machine with Python 3.11+.
# torch is pinned first to the CPU build (a looser pin would pull a multi-GB CUDA build);
# Java (for METEOR 1.5 in the evaluation suite) comes from Debian when missing and we are root; with
# the test extras so do the PACS the DICOMweb tests run against (Orthanc + its DICOMweb plugin), the
# DICOM validators the SR tests call (dciodvfy from dicom3tools, dsrdump from dcmtk) and the browser
# the atlas tests drive (Chromium, through playwright's Python API).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
debs=()
command -v java >/dev/null 2>&1 || debs+=(default-jre-headless)
if [[ ",$extras," == *",test,"* ]]; then
  command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || debs+=(orthanc)
  ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so* >/dev/null 2>&1 || debs+=(orthanc-dicomweb)
  command -v dciodvfy >/dev/null 2>&1 || debs+=(dicom3tools)
  command -v dsrdump >/dev/null 2>&1 || debs+=(dcmtk)
fi
if [ "${#debs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # policy-rc.d (Docker images) or no init system: the orthanc package's own service does not start.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
  else
    echo "note: not root, so ${debs[*]} stay missing (METEOR unavailable / PACS and DICOM-validator tests skip)" >&2
  fi
fi
# Chromium with its recommended packages (fonts): the atlas screenshot test reads rendered text.
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
