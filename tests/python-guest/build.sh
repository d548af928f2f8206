#!/bin/sh
# Builds target/py_tasks.wasm (~18 MB: CPython inside) from world.wit and app.py: the heavy
# guest of tests/all/python_guest.rs and of the compare bench's fresh-vs-reuse rows. Needs
# `pip install componentize-py==0.25.1` (a PyPI wheel); takes 10-40 s. `.ci/run` runs it.
#   sh tests/python-guest/build.sh [OUT]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../target/py_tasks.wasm}
cd "$here"
componentize-py -d world.wit -w tasks componentize app -o "$out"
