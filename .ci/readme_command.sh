#!/usr/bin/env bash
# Print one of the README's two quick-start commands: `main` (installs and runs the main job) or `test`
# (installs and runs the tests): the first line of a ```bash block under "## Quick start" that runs
# `corporation run` (main) or `pytest` (test).
set -euo pipefail
which="${1:?usage: readme_command.sh main|test}"
cd "$(dirname "$0")/.."
pattern='corporation run'
[ "$which" = test ] && pattern='pytest'
awk -v pat="$pattern" '
  /^## / { inside = ($0 == "## Quick start") }
  inside && /^```bash/ { block = 1; next }
  block && /^```/ { block = 0; next }
  block && index($0, pat) { print; found = 1; exit }
  END { if (!found) exit 1 }
' README.md || { echo "README.md: no quick-start command running '$pattern'" >&2; exit 1; }
