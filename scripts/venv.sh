# Sourced by scripts/run and scripts/test: make .venv with yagi-meter and its
# test tools installed, reinstalling only when a requirements file changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "yagi-meter needs Python 3.11 or newer; found $(python3 --version 2>&1)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    if ! python3 -m venv .venv 2>/dev/null; then
        rm -rf .venv
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            # Debian and Ubuntu ship venv separately.
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv .venv
        else
            echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
fi
stamp=.venv/.yagi-installed
want=$(cat setup.py requirements.txt requirements-test.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    echo "$want" > "$stamp"
fi
