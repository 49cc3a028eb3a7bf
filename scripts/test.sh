#!/usr/bin/env bash
# The test command: set-up (idempotent), lint, type check, then the whole suite against the real kernel.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export PATH="$PWD/.venv/bin:$PATH"
. scripts/own-root.sh && own_root "$PWD/scripts/test.sh" "$@"

echo "== ruff"; ruff check src tests bench || exit 1
echo "== mypy --strict src tests"; mypy src tests || exit 1
echo "== pytest"
# Two workers: most tests wait on the kernel or a guest rather than burn CPU.
# "No tests collected" (exit 5) is a failure too: a suite that runs nothing proves nothing.
exec pytest -n 2 --dist loadgroup -p no:cacheprovider "$@"
