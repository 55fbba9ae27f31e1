#!/usr/bin/env bash
# Downloads the wheels benchmarks/gpu_check.sh installs on a GPU machine that has no registry: the packages
# its image lacks (kronfluence and einconv, dattri; pydantic, a core dependency, and its four) and pandas<3 (the package's pin), for CPython 3.12 on
# x86-64 Linux. Run where pip reaches a registry; carry the folder (default .whl) to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
mkdir -p "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dest" kronfluence==1.0.1 einconv==0.1.0 dattri==0.3.0 "pandas>=2.2,<3" \
  pydantic==2.12.5 pydantic_core==2.41.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
ls -la "$dest"
