#!/usr/bin/env bash
# Print the path of a Python >= 3.12: first on PATH, then among pyenv's versions.
# Exits 1 with a message on stderr when there is none.
set -u
ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; }
for name in python3.12 python3.13 python3 python; do
  p=$(command -v "$name" 2>/dev/null) || continue
  if ok "$p"; then echo "$p"; exit 0; fi
done
root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
for p in $(ls -d "$root"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -V); do
  if ok "$p"; then echo "$p"; exit 0; fi
done
echo "error: bayesnn needs Python >= 3.12 (JAX and ArviZ 1.x require it), and none was found" >&2
echo "       on PATH (python3.13, python3.12, python3) or among pyenv's versions ($root/versions)." >&2
echo "       Install one (e.g. 'pyenv install 3.12') or set PYTHON=/path/to/python3.12." >&2
exit 1
