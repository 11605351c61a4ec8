# Shared helpers for the set-up scripts: find an interpreter, make a virtual environment.
# Sourced, not run.  Every environment lives in .venv/<python-version>/ at the repo root.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# find_python 3.12 -> prints a path to a working python3.12, or nothing.
find_python() {
    local minor="$1" cand
    for cand in "python$minor" "python3" "python"; do
        if command -v "$cand" >/dev/null 2>&1 &&
            "$cand" -c "import sys; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$minor' else 1)" 2>/dev/null; then
            command -v "$cand"
            return 0
        fi
    done
    # pyenv keeps versions that are installed but not active out of PATH.
    local root="${PYENV_ROOT:-$HOME/.pyenv}"
    for cand in "$root"/versions/"$minor".*/bin/python"$minor"; do
        if [ -x "$cand" ] && "$cand" -c "import sys" 2>/dev/null; then
            echo "$cand"
            return 0
        fi
    done
    return 1
}

# source_digest -> a digest of everything an install of tidal is built from.
source_digest() {
    (cd "$ROOT" && echo "compile=${TIDAL_COMPILE:-0}" && cat pyproject.toml setup.py \
        $(find src -name '*.py' -o -name '*.pxd' | sort)) | sha1sum | cut -d' ' -f1
}

# make_venv 3.12 EXTRAS -> prints the venv's python after installing tidal[EXTRAS] into it.
# The install compiles tidal's hot modules when a C compiler is there (setup.py), which takes a
# minute or two; a stamp in the venv skips it when the sources and the extras asked for are
# already installed.
make_venv() {
    local minor="$1" extras="$2" py venv stamp digest have
    py="$(find_python "$minor")" || { echo "python$minor not found" >&2; return 1; }
    venv="$ROOT/.venv/$minor"
    stamp="$venv/.tidal-installed"
    if [ ! -x "$venv/bin/python" ]; then
        "$py" -m venv "$venv" >&2 || return 1
        "$venv/bin/python" -m pip install -q --upgrade pip >&2 || return 1
    fi
    digest="$(source_digest)"
    if [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$digest" ]; then
        have="$(tail -n1 "$stamp")"
        local missing="" extra
        for extra in ${extras//,/ }; do
            case ",$have," in *",$extra,"*) ;; *) missing=1 ;; esac
        done
        if [ -z "$missing" ]; then
            echo "$venv/bin/python"
            return 0
        fi
        extras="$have,$extras"
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[$extras]" >&2 || return 1
    printf '%s\n%s\n' "$digest" "$extras" >"$stamp"
    echo "$venv/bin/python"
}
