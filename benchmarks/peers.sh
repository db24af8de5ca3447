#!/usr/bin/env bash
# The peers' own environment (never a project dependency): ChannelAttribution for attribution.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv-peers/bin/python ] || python3 -m venv .venv-peers
.venv-peers/bin/python -m pip install --quiet --upgrade pip
.venv-peers/bin/python -m pip install --quiet "ChannelAttribution==2.2.5" pandas matplotlib
echo "$(pwd)/.venv-peers/bin/python"
