#!/usr/bin/env bash
# Run the whole concord test suite (as root):
#   1. install dependencies and build + install the extension;
#   2. copy the tree to a temporary directory owned by `postgres` and, as
#      that user, run
#      a. pg_regress  (make installcheck, temporary instance),
#      b. pgTAP       (test/pgtap/*.sql on a temporary cluster),
#      c. TAP         (test/t/*.pl, multi-node, PostgreSQL::Test::Cluster);
#      d. TAP again, for the files TAP4_TESTS names, with four apply
#         workers per subscription (concord.apply_workers_per_subscription).
# The last line of output is "N passed, N failed" (pg_regress counts test
# files, the TAP layers count assertions); the exit status is non-zero when
# anything failed.
#
# CONCORD_KEEP_TMP=1 keeps the temporary directory (logs, data) afterwards.
# CONCORD_TAP_TESTS="test/t/120_x.pl ..." runs only those TAP files.
# CONCORD_LAYERS="tap" runs only those layers (of: regress pgtap tap tap4).
# CONCORD_TAP4_TESTS="test/t/120_x.pl ..." runs those files in layer tap4.
# CONCORD_DOCS="docs/replication.md ..." has test/t/300_docs.pl run only the
# examples of those files.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
export PG_CONFIG

summary() { echo "$1 passed, $2 failed"; }

if [[ $(id -u) -ne 0 ]]; then
	echo "scripts/test.sh must run as root (servers then run as postgres)" >&2
	summary 0 1
	exit 1
fi

# --- 1. dependencies and build --------------------------------------------
# CONCORD_SKIP_BUILD=1 tests what is installed already (for running one
# layer or file again while nothing in src/ or sql/ changed).
if [[ "${CONCORD_SKIP_BUILD:-}" == 1 ]]; then
	echo "CONCORD_SKIP_BUILD=1: testing the installed build"
elif ! bash "$REPO/scripts/install-deps.sh"; then
	echo "FAILED: installing dependencies" >&2
	summary 0 1
	exit 1
elif ! bash "$REPO/scripts/build.sh"; then
	echo "FAILED: build" >&2
	summary 0 1
	exit 1
fi

BINDIR=$("$PG_CONFIG" --bindir)
PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)

# --- 2. a private copy owned by postgres ----------------------------------
WORK=$(mktemp -d /tmp/concord-test.XXXXXX)
SRC="$WORK/src"          # the copied tree
RESULTS="$WORK/results"  # one "passed failed" file per layer
PGTAP_DATA="$WORK/pgtap_data"

# Stop every server left under $WORK (pgTAP cluster, TAP nodes killed
# half-way) and remove $WORK.  Quiet: it runs before the summary line and
# again from the EXIT trap.
cleanup() {
	[[ -d "$WORK" ]] || return 0
	local pidfile
	while IFS= read -r pidfile; do
		runuser -u postgres -- "$BINDIR/pg_ctl" -D "$(dirname "$pidfile")" \
			-m immediate -w stop >/dev/null 2>&1 || true
	done < <(find "$WORK" -name postmaster.pid 2>/dev/null)
	if [[ "${CONCORD_KEEP_TMP:-}" == 1 ]]; then
		echo "kept $WORK" >&2
	else
		rm -rf -- "$WORK"
	fi
	WORK=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The source tree without git data and build or test leftovers.
mkdir -p "$SRC" "$RESULTS" "$WORK/tap" "$WORK/tap4"
tar -C "$REPO" --exclude=./.git --exclude=./tmp_check --exclude=./results \
	--exclude=./log --exclude=./regression.diffs --exclude=./regression.out \
	--exclude='*.o' --exclude='*.so' --exclude='*.bc' -cf - . | tar -C "$SRC" -xf -
chmod 755 "$WORK"
chown -R postgres: "$WORK"

# Run a command as postgres inside the copy, with a clean, explicit env.
as_pg() {
	(cd "$SRC" && runuser -u postgres -- env \
		PATH="$BINDIR:/usr/local/bin:/usr/bin:/bin" \
		PG_CONFIG="$PG_CONFIG" LANG=C.UTF-8 "$@")
}

# --- 2a. pg_regress --------------------------------------------------------
layer_regress() {
	echo "=== pg_regress ==="
	local rc=0 out="$WORK/regress.out" passed failed
	as_pg make installcheck 2>&1 | tee "$out" || rc=$?
	# PG15 prints "test x ... ok"; PG16+ prints "ok 1 - x" / "not ok 1 - x".
	passed=$(grep -cE '\.\.\. ok( |$)|^ok [0-9]+ ' "$out" || true)
	failed=$(grep -cE '\.\.\. FAILED|^not ok [0-9]+ ' "$out" || true)
	if [[ $rc -ne 0 && $failed -eq 0 ]]; then
		failed=1 # pg_regress itself failed (initdb, server start, ...)
	fi
	if [[ -f "$SRC/regression.diffs" && $failed -gt 0 ]]; then
		echo "--- regression.diffs ---"
		cat "$SRC/regression.diffs"
	fi
	if [[ $rc -ne 0 && -d "$SRC/tmp_check/log" ]]; then
		echo "--- tail of the temporary instance's log ---"
		tail -n 50 "$SRC"/tmp_check/log/*.log 2>/dev/null || true
	fi
	echo "$passed $failed" >"$RESULTS/regress"
}

# --- 2b. pgTAP ------------------------------------------------------------
# The cluster listens on a socket in $WORK only (no TCP), so any port works.
PGTAP_PORT=5432
PGTAP_DB=concord_pgtap

layer_pgtap() {
	echo "=== pgTAP ==="
	shopt -s nullglob
	local files=("$SRC"/test/pgtap/*.sql)
	if [[ ${#files[@]} -eq 0 ]]; then
		echo "no pgTAP tests"
		echo "0 0" >"$RESULTS/pgtap"
		return
	fi
	as_pg initdb -D "$PGTAP_DATA" -A trust -U postgres -E UTF8 --no-locale --no-sync \
		>"$WORK/pgtap_initdb.log"
	{
		echo "# --- concord pgTAP cluster (test/regress.conf + local settings) ---"
		cat "$SRC/test/regress.conf"
		echo "port = $PGTAP_PORT"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$WORK'"
		echo "fsync = off"
	} >>"$PGTAP_DATA/postgresql.conf"
	as_pg pg_ctl -D "$PGTAP_DATA" -l "$WORK/pgtap.log" -w -t 120 start >/dev/null
	as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PGTAP_PORT" -d postgres \
		-c "CREATE DATABASE $PGTAP_DB"
	as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PGTAP_PORT" -d "$PGTAP_DB" \
		-c "CREATE EXTENSION pgtap" -c "CREATE EXTENSION concord"
	local rc=0
	as_pg env PGHOST="$WORK" PGPORT="$PGTAP_PORT" PGDATABASE="$PGTAP_DB" PGUSER=postgres \
		perl test/harness.pl --result-file "$RESULTS/pgtap" "${files[@]#"$SRC"/}" || rc=$?
	as_pg pg_ctl -D "$PGTAP_DATA" -m fast -w stop >/dev/null
	if [[ $rc -ne 0 ]]; then
		echo "--- tail of the pgTAP cluster's log ---"
		tail -n 50 "$WORK/pgtap.log" || true
	fi
}

# --- 2c. multi-node TAP ------------------------------------------------------
layer_tap() {
	echo "=== TAP (multi-node) ==="
	shopt -s nullglob
	local files=("$SRC"/test/t/*.pl)
	if [[ -n "${CONCORD_TAP_TESTS:-}" ]]; then
		read -r -a files <<<"$CONCORD_TAP_TESTS"
		files=("${files[@]/#/$SRC/}")
	fi
	if [[ ${#files[@]} -eq 0 ]]; then
		echo "no TAP tests"
		echo "0 0" >"$RESULTS/tap"
		return
	fi
	# The environment PGXS's prove_installcheck gives TAP tests.
	as_pg env \
		PERL5LIB="$PKGLIBDIR/pgxs/src/test/perl:$SRC/test" \
		TESTDIR="$WORK/tap" \
		PG_REGRESS="$PKGLIBDIR/pgxs/src/test/regress/pg_regress" \
		perl test/harness.pl --result-file "$RESULTS/tap" \
		--log-dir "$WORK/tap/tmp_check/log" "${files[@]#"$SRC"/}" || true
}

# --- 2d. TAP with four apply workers per subscription ----------------------
# The randomized 3-node workload, the crash tests, the conflict and
# causality tests and the ring under conflicts, again with
# concord.apply_workers_per_subscription = 4 (test/perl/ConcordTest.pm).
TAP4_TESTS="test/t/110_subscriber_crash.pl test/t/120_provider_crash.pl test/t/175_synchronous.pl
	test/t/200_conflicts_insert.pl test/t/210_causality.pl test/t/220_delete_update.pl
	test/t/222_delete_insert.pl test/t/260_random_workload.pl test/t/490_big_transactions.pl
	test/t/450_relation_changes.pl test/t/540_ring_conflicts.pl test/t/620_causal_tokens.pl"

layer_tap4() {
	echo "=== TAP with four apply workers per subscription ==="
	local files
	read -r -a files <<<"$(echo ${CONCORD_TAP4_TESTS:-$TAP4_TESTS})"
	as_pg env \
		CONCORD_TEST_APPLY_WORKERS=4 \
		PERL5LIB="$PKGLIBDIR/pgxs/src/test/perl:$SRC/test" \
		TESTDIR="$WORK/tap4" \
		PG_REGRESS="$PKGLIBDIR/pgxs/src/test/regress/pg_regress" \
		perl test/harness.pl --result-file "$RESULTS/tap4" \
		--log-dir "$WORK/tap4/tmp_check/log" "${files[@]}" || true
}

# Run each layer with errexit on, in a subshell, so that one layer's crash
# neither hides the others nor skips the summary.
LAYERS=${CONCORD_LAYERS:-regress pgtap tap tap4}
for layer in $LAYERS; do
	set +e
	(set -e; "layer_$layer")
	set -e
done

# Stop and remove everything before the summary so that it stays last.
passed=0 failed=0
for layer in $LAYERS; do
	if [[ -s "$RESULTS/$layer" ]]; then
		read -r p f <"$RESULTS/$layer"
	else
		echo "layer $layer did not finish" >&2
		p=0 f=1
	fi
	echo "layer $layer: passed=$p failed=$f"
	passed=$((passed + p)) failed=$((failed + f))
done
cleanup
trap - EXIT
summary "$passed" "$failed"
[[ $failed -eq 0 ]]
