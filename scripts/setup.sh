#!/usr/bin/env bash
# Prepares a fresh Debian/Ubuntu machine: checks the .NET SDK, installs the two native build tools the TorchSharp
# libstdc++ shim needs when the system libstdc++ predates GCC 13 (patchelf, g++), the headless browser the web UI's
# end-to-end tests drive (Debian's chromium at /usr/bin/chromium; Playwright never downloads one), Node.js and npm
# (the official JavaScript Hub client's test) and Debian's
# python3-torch (the tests make PyTorch checkpoints with torch.save), and restores/builds the solution.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dotnet >/dev/null 2>&1; then
  echo "setup: the .NET SDK 10 is required (https://dot.net); 'dotnet' is not on PATH" >&2
  exit 1
fi

need=()
command -v patchelf >/dev/null 2>&1 || need+=(patchelf)
command -v g++ >/dev/null 2>&1 || need+=(g++)
[ -x /usr/bin/chromium ] || need+=(chromium)
# Node.js and npm for the test that drives the official JavaScript Hub client (@huggingface/hub, installed by that test
# with npm ci from tests/SensMerging.Hub.Tests/JsClient/package-lock.json).
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# PyTorch for the tests' .bin fixtures (torch.save) and LoRA references, run as /usr/bin/python3.
/usr/bin/python3 -c 'import torch' >/dev/null 2>&1 || need+=(python3-torch)
if [ ${#need[@]} -gt 0 ]; then
  as_root=()
  [ "$(id -u)" = "0" ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && as_root=(sudo -n); }
  if { [ "$(id -u)" = "0" ] || [ ${#as_root[@]} -gt 0 ]; } && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${need[*]}"
    "${as_root[@]}" apt-get update -qq >/dev/null
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: please install ${need[*]} (e.g. sudo apt-get install -y ${need[*]})" >&2
    exit 1
  fi
fi

dotnet build SensMerging.Host.sln -c Release --nologo -v quiet -clp:ErrorsOnly
