# shellcheck shell=bash
# Logging, failure and step timing shared by scripts/test and its helpers.

COFFER_STEP_TIMES=()
COFFER_STEP_NAME=""
COFFER_STEP_T0=0

log() { printf '%s\n' "$*" >&2; }

die() {
    log "scripts/test: error: $*"
    exit 1
}

# have CMD: whether CMD can be run.
have() { command -v "$1" >/dev/null 2>&1; }

# begin NAME WHAT...: announces a step on one line and starts its clock.
begin() {
    COFFER_STEP_NAME=$1
    shift
    COFFER_STEP_T0=$SECONDS
    log "==> [$COFFER_STEP_NAME] $*"
}

# end: records the time of the step begun last.
end() {
    COFFER_STEP_TIMES+=("$(printf '%-10s %5ss' "$COFFER_STEP_NAME" "$((SECONDS - COFFER_STEP_T0))")")
}

# step NAME CMD...: runs an external command as one step. Not for shell
# functions: `set -e` does not apply inside a function called as `f || ...`,
# so setup functions use begin/end and check their own commands.
step() {
    local name=$1 rc=0
    shift
    begin "$name" "$*"
    "$@" || rc=$?
    end
    ((rc == 0)) || die "step '$name' failed (exit $rc)"
}
