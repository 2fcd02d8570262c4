# Shared settings of the infra scripts. Sourced, not run.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Heavy installs are cached outside the repository, so a fresh checkout reuses them.
PASSERELLE_CACHE="${PASSERELLE_CACHE:-$HOME/.cache/passerelle}"
TANSU_VERSION="0.6.0"
TANSU_ROOT="$PASSERELLE_CACHE/tansu-$TANSU_VERSION"
TANSU_BIN="$TANSU_ROOT/bin/tansu"
VAR_DIR="${PASSERELLE_VAR:-$REPO_ROOT/var}"
BROKER_PORT="${PASSERELLE_BROKER_PORT:-9092}"
DATABASE_NAME="${PASSERELLE_DATABASE:-passerelle}"
PG_URL_BASE="${PASSERELLE_PG_URL_BASE:-postgres://postgres@127.0.0.1:5432}"
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\033[1m[passerelle]\033[0m %s\n' "$*" >&2; }
