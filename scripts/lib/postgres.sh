# shellcheck shell=bash
# Finds the PostgreSQL the tests run against (DESIGN §10): COFFER_TEST_DATABASE_URL,
# else a server on 127.0.0.1:${COFFER_TEST_PG_PORT:-5432}, else a throwaway
# cluster made with initdb and stopped by coffer_pg_cleanup. Exports
# COFFER_TEST_DATABASE_URL and COFFER_TEST_REQUIRE_POSTGRES=1.
# Needs common.sh.

COFFER_PG_DIR=""
COFFER_PG_RUNAS=()
COFFER_PG_BINDIR=""

coffer_psql() {
    local url=$1
    shift
    PGCONNECT_TIMEOUT=5 psql -X -q -v ON_ERROR_STOP=1 "$url" "$@"
}

# A URL fit for logs: the password, if any, is masked.
coffer_pg_redact() {
    sed -E 's#^([a-z]+://[^:/@]*):.*@#\1:***@#' <<<"$1"
}

coffer_pg_connects() {
    coffer_psql "$1" -Atc 'select 1' >/dev/null 2>&1
}

# The newest server binaries Debian's packages installed, or COFFER_TEST_PG_BINDIR.
coffer_pg_bindir() {
    if [[ -n ${COFFER_TEST_PG_BINDIR:-} ]]; then
        printf '%s\n' "$COFFER_TEST_PG_BINDIR"
        return 0
    fi
    local dir
    dir=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n1) || true
    [[ -n $dir ]] && printf '%s\n' "$dir"
}

# PostgreSQL comes with the rust-svc machine; elsewhere install Debian's.
coffer_pg_install() {
    if ((EUID == 0)) && have apt-get; then
        log "    PostgreSQL is not installed: apt-get install postgresql"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2; then
            die "apt-get could not install postgresql"
        fi
    else
        die "PostgreSQL is not installed (need psql and initdb; apt-get install postgresql) and COFFER_TEST_DATABASE_URL is not set"
    fi
}

# A port on 127.0.0.1 that nothing listens on.
coffer_free_port() {
    local port _
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        port=$((50000 + RANDOM % 10000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    return 1
}

coffer_pg_start_throwaway() {
    COFFER_PG_BINDIR=$(coffer_pg_bindir) || true
    if [[ -z $COFFER_PG_BINDIR || ! -x $COFFER_PG_BINDIR/initdb ]]; then
        coffer_pg_install
        COFFER_PG_BINDIR=$(coffer_pg_bindir) || true
        [[ -x $COFFER_PG_BINDIR/initdb ]] || die "no initdb found under /usr/lib/postgresql/*/bin (set COFFER_TEST_PG_BINDIR)"
    fi
    # /tmp, not TMPDIR: the server's OS user must reach the socket directory.
    COFFER_PG_DIR=$(mktemp -d /tmp/coffer-pg.XXXXXX) || die "mktemp failed"
    if ((EUID == 0)); then
        # postgres refuses to run as root.
        local user=${COFFER_TEST_PG_OS_USER:-postgres}
        if ! id "$user" >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /usr/sbin/nologin "$user" ||
                die "could not create OS user $user to run postgres"
        fi
        chown "$user:" "$COFFER_PG_DIR"
        COFFER_PG_RUNAS=(runuser -u "$user" --)
    fi
    log "    initdb in $COFFER_PG_DIR ($COFFER_PG_BINDIR)"
    "${COFFER_PG_RUNAS[@]}" "$COFFER_PG_BINDIR/initdb" -D "$COFFER_PG_DIR/data" -U postgres \
        -A trust -E UTF8 --locale=C --no-sync >"$COFFER_PG_DIR/initdb.log" 2>&1 || {
        cat "$COFFER_PG_DIR/initdb.log" >&2
        die "initdb failed"
    }
    local port attempt
    for attempt in 1 2 3; do
        port=$(coffer_free_port) || die "no free port for the throwaway postgres"
        # Durability is pointless for a cluster deleted on exit.
        if "${COFFER_PG_RUNAS[@]}" "$COFFER_PG_BINDIR/pg_ctl" -D "$COFFER_PG_DIR/data" \
            -l "$COFFER_PG_DIR/postgres.log" -w -t 60 -o "-c listen_addresses=127.0.0.1 -p $port \
-k '$COFFER_PG_DIR' -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
-c max_connections=300" start >/dev/null; then
            COFFER_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres
            return 0
        fi
        log "    postgres did not start on port $port (attempt $attempt):"
        tail -n 5 "$COFFER_PG_DIR/postgres.log" >&2 || true
    done
    die "could not start a throwaway postgres (log: $COFFER_PG_DIR/postgres.log)"
}

# Stops the throwaway cluster, if this run started one.
coffer_pg_cleanup() {
    [[ -n $COFFER_PG_DIR ]] || return 0
    if [[ -f $COFFER_PG_DIR/data/postmaster.pid ]]; then
        "${COFFER_PG_RUNAS[@]}" "$COFFER_PG_BINDIR/pg_ctl" -D "$COFFER_PG_DIR/data" \
            -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$COFFER_PG_DIR"
    COFFER_PG_DIR=""
}

# Drops coffer_test_* databases that earlier runs left behind. Tests of another
# run may be using theirs right now, so a database is kept while in use (DROP
# refuses) or younger than 5 minutes (a test may not have connected yet). Its
# age is its PG_VERSION file's, which needs a superuser; without one, in-use
# is the only guard.
coffer_pg_drop_leftovers() {
    local url=$1 names name dropped=0 kept=0
    local like="datname like 'coffer\\_test\\_%'"
    names=$(coffer_psql "$url" -Atc "select datname from pg_database where $like
        and (pg_stat_file('base/' || oid || '/PG_VERSION')).modification < now() - interval '5 minutes'" 2>/dev/null) ||
        names=$(coffer_psql "$url" -Atc "select datname from pg_database where $like") ||
        die "could not list databases at $(coffer_pg_redact "$url")"
    for name in $names; do
        [[ $name =~ ^coffer_test_[A-Za-z0-9_-]+$ ]] || continue
        if coffer_psql "$url" -c "drop database if exists \"$name\"" 2>/dev/null; then
            dropped=$((dropped + 1))
        else
            kept=$((kept + 1))
        fi
    done
    log "    dropped $dropped leftover coffer_test_* database(s), $kept in use"
}

setup_postgres() {
    begin postgres "find PostgreSQL"
    have psql || coffer_pg_install
    local host=127.0.0.1 port=${COFFER_TEST_PG_PORT:-5432}
    if [[ -n ${COFFER_TEST_DATABASE_URL:-} ]]; then
        log "    using COFFER_TEST_DATABASE_URL"
        coffer_pg_connects "$COFFER_TEST_DATABASE_URL" ||
            die "cannot connect to COFFER_TEST_DATABASE_URL ($(coffer_pg_redact "$COFFER_TEST_DATABASE_URL"))"
    elif coffer_pg_connects "postgres://postgres@$host:$port/postgres"; then
        COFFER_TEST_DATABASE_URL=postgres://postgres@$host:$port/postgres
        log "    using the server on $host:$port"
    else
        log "    no server accepts postgres@$host:$port; starting a throwaway cluster"
        coffer_pg_start_throwaway
        coffer_pg_connects "$COFFER_TEST_DATABASE_URL" ||
            die "throwaway postgres started but $COFFER_TEST_DATABASE_URL does not connect"
    fi
    coffer_pg_drop_leftovers "$COFFER_TEST_DATABASE_URL"
    export COFFER_TEST_DATABASE_URL
    export COFFER_TEST_REQUIRE_POSTGRES=1
    log "    COFFER_TEST_DATABASE_URL=$(coffer_pg_redact "$COFFER_TEST_DATABASE_URL")"
    end
}
