#!/bin/sh
# Builds target/py_tasks.wasm (~18 MB: CPython inside) from world.wit and app.py, for measuring
# fresh instances against --reuse on a heavy guest. Needs `pip install componentize-py==0.25.1`
# (a PyPI wheel); takes ~40 s. Not part of the test suite (see README.md beside this file).
#   sh tests/python-guest/build.sh [OUT]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../target/py_tasks.wasm}
cd "$here"
componentize-py -d world.wit -w tasks componentize app -o "$out"
