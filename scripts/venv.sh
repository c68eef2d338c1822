# Sourced by scripts/run and scripts/test: make .venv with yagi-meter installed
# (and its test tools, for scripts/test), reinstalling only when pyproject.toml,
# setup.py or a requirements file changed.
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
# venv_extras: "test" (set by scripts/test) installs the test tools too; unset
# (scripts/run) installs only what a deployment needs.  Each kind of install
# has its own stamp, the hash of the files it was made from; an install with
# the test tools also satisfies scripts/run.
extras=${venv_extras:-}
hash_of() { cat pyproject.toml setup.py "$@" | sha256sum | cut -c1-16; }
run_want=$(hash_of requirements.txt)
test_want=$(hash_of requirements.txt requirements-test.txt)
if [ "$extras" = test ]; then
    stamp=.venv/.yagi-installed-test want=$test_want spec='.[test]'
else
    stamp=.venv/.yagi-installed want=$run_want spec='.'
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e "$spec"
    echo "$want" > "$stamp"
    if [ "$extras" = test ]; then
        echo "$run_want" > .venv/.yagi-installed
    fi
fi
