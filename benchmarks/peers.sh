#!/usr/bin/env bash
# The peers' own environments (never project dependencies).
#   benchmarks/peers.sh             ChannelAttribution, for the attribution benchmark
#   benchmarks/peers.sh lifetimes   lifetimes 0.11.3 (unmaintained since 2020: it needs the numpy,
#                                   pandas and scipy of its time), for the lifetime benchmark
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = "lifetimes" ]; then
  [ -x .venv-lifetimes/bin/python ] || python3 -m venv .venv-lifetimes
  .venv-lifetimes/bin/python -m pip install --quiet --upgrade pip
  .venv-lifetimes/bin/python -m pip install --quiet "lifetimes==0.11.3" "numpy==1.26.4" "pandas==1.5.3" \
    "scipy==1.10.1" "pyarrow==14.0.2"
  echo "$(pwd)/.venv-lifetimes/bin/python"
  exit 0
fi
[ -x .venv-peers/bin/python ] || python3 -m venv .venv-peers
.venv-peers/bin/python -m pip install --quiet --upgrade pip
.venv-peers/bin/python -m pip install --quiet "ChannelAttribution==2.2.5" pandas matplotlib
echo "$(pwd)/.venv-peers/bin/python"
