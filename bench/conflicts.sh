#!/usr/bin/env bash
# bench/conflicts.sh - what conflicts cost concord's apply: the catch-up of
# the same UPDATE workload when 0 %, 10 % and 50 % of the applied changes
# conflict, beside PostgreSQL's built-in logical replication applying it
# without conflicts. A benchmark, not a test: it prints figures and never
# fails on them.
#
# Usage (as root; the servers run as the `postgres` OS user):
#
#   bench/conflicts.sh                         # defaults, under a minute on 2 cores
#   BENCH_ROWS=2000 bench/conflicts.sh         # smoke run, about 10 s
#
# Environment (the first ones as in bench/replication.sh):
#   BENCH_ROWS      rows of the table = UPDATE transactions per run (default
#                   50000; rounded up to a multiple of BENCH_CLIENTS)
#   BENCH_CLIENTS   pgbench clients (default 4; threads = min(clients, cores))
#   BENCH_PAYLOAD   payload bytes per row (default 100)
#   BENCH_TIMEOUT   seconds any single catch-up may take (default 600)
#   BENCH_KEEP      1 = keep the temporary directory (server logs) afterwards
#   BENCH_PORT      first port to try (default 56432)
#   PG_CONFIG       pg_config of the PostgreSQL 15 installation to use
#   BENCH_RATES     conflict percentages to measure (default "0 10 50"; 0 is
#                   always measured, as the reference of the ratios)
#   BENCH_KEEP_LOCAL  percentage measured again with the keep_local resolver
#                   at the end (default 50; 0 = no such run)
#   BENCH_REPEAT    runs per measurement (default 1); with more, the
#                   measurements are interleaved and the medians reported
#
# Needs: concord installed (make install), postgresql-15-pglogical (only
# because every cluster gets the same shared_preload_libraries as in
# replication.sh).
#
# Setup: two clusters with concord, A (node_a) and B (node_b), both with
# table t (id bigint primary key, n int, payload text); A holds ids 1..ROWS,
# B gets them by concord's initial copy (so their versions are A's), B
# subscribes to A. A does not subscribe to B: it never sees B's writes, so
# every row B writes itself is concurrent with A's next update of it.
#
# Per conflict rate p:
#   1. B's subscription is disabled; wait until B's apply worker and A's
#      walsender are gone;
#   2. on B: UPDATE t SET n = n + 1, payload = repeat('L', PAYLOAD)
#      WHERE id % 100 < p (one local transaction, p % of the rows);
#   3. VACUUM ANALYZE t and CHECKPOINT on both; on A, pgbench runs ROWS
#      single-row UPDATE transactions, each of a different id (all of t);
#   4. LSN := A's pg_current_wal_lsn(), a marker row committed on A after
#      it; on B in one session: clock, concord.alter_subscription_enable,
#      concord.wait_for_apply(sub, LSN, '0s') polled every 10 ms, clock;
#   5. B's new concord.conflict_history rows are counted: each of the rows B
#      wrote meets an update_origin_differs conflict, resolved by
#      last_update_wins as apply_remote (A's update committed later).
# Then A's and B's tables are compared (count, sum(n), md5 of all rows).
# The keep_local run keeps B's versions: there only the rows B did not
# write must match, and B must still hold each row it wrote.
#
# The built-in reference: two more clusters, the same table filled on both,
# a built-in subscription (no local writes on its subscriber, so no
# conflicts, which PostgreSQL 15 would not detect anyway), the same steps
# 1, 3, 4 (ALTER SUBSCRIPTION ... ENABLE, then its replication origin's
# remote_lsn polled every 10 ms).
set -euo pipefail

RATES=${BENCH_RATES:-0 10 50}
KEEP_LOCAL_PCT=${BENCH_KEEP_LOCAL:-50}
REPEAT=${BENCH_REPEAT:-1}
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for p in $RATES $KEEP_LOCAL_PCT; do
	[[ $p =~ ^[0-9]+$ && $p -le 100 ]] || { echo "conflict rates must be integers from 0 to 100: $p" >&2; exit 2; }
done
[[ $REPEAT =~ ^[0-9]+$ && $REPEAT -gt 0 ]] || { echo "BENCH_REPEAT must be a positive integer" >&2; exit 2; }
# 0 % first: the reference of the ratios; each rate once, in the given order.
# shellcheck disable=SC2086  # one word per rate
RATES=$(printf '%s\n' 0 $RATES | awk '!seen[$0]++' | tr '\n' ' ')
RATES=${RATES% }
bench_init

# Every transaction updates another id: client c's k-th transaction
# updates id c * PER_CLIENT + k (k counts from 1; -D k=0 starts it).
write_update_script() {
	printf '\\set k :k + 1\n\\set id :client_id * %d + :k\nUPDATE t SET n = n + 1, payload = repeat(chr(97 + (:id %% 26)), %d) WHERE id = :id;\n' \
		"$PER_CLIENT" "$PAYLOAD" >"$WORK/update.sql"
	[[ $(id -u) -eq 0 ]] && chown postgres: "$WORK/update.sql"
	return 0
}

create_tables() {
	q "$1" -c "CREATE TABLE t (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, payload text NOT NULL)" \
		-c "CREATE TABLE bench_marker (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"
}

fill_table() {
	q "$1" -c "INSERT INTO t SELECT i, 0, repeat(chr(97 + (i % 26)::int), $PAYLOAD) FROM generate_series(1, $NTOT) i" \
		-c "VACUUM ANALYZE t"
}

# Wait until no concord apply worker runs on port $1.
wait_apply_gone() {
	local port=$1 i
	for ((i = 0; i < TIMEOUT * 20; i++)); do
		[[ $(q "$port" -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'concord apply'") == 0 ]] && return 0
		sleep 0.05
	done
	log "  apply worker on port $port still running after ${TIMEOUT}s"; return 1
}

# The workload touched every row of A once: all n equal, one more than before.
check_workload() {
	local port=$1 want=$2 got
	got=$(q "$port" -c "SELECT min(n) || ' ' || max(n) || ' ' || count(*) FROM t")
	if [[ $got != "$want $want $NTOT" ]]; then
		log "  *** UNEXPECTED *** after the workload, A's (min(n), max(n), rows) = ($got), expected ($want, $want, $NTOT)"
		RES[anomaly]=$(( ${RES[anomaly]:-0} + 1 ))
	fi
}

# record KEY SECS OK: appends one measurement; sets RATE to its rows/s.
record() {
	local key=$1 secs=$2 ok=$3
	if [[ $ok == t ]]; then
		RES[$key|secs]="${RES[$key|secs]:-} $secs"
		RATE=$(awk -v n="$NTOT" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
	else
		RES[$key|timeouts]=$(( ${RES[$key|timeouts]:-0} + 1 ))
		RATE=-
	fi
}

# --- built-in reference ---------------------------------------------------

BUILTIN_UPDATES=0

builtin_setup() {
	local r lsn
	log "== builtin one-way (no conflicts) =="
	start_cluster builtin_provider; start_cluster builtin_subscriber
	BP=${PORT[builtin_provider]}; BS=${PORT[builtin_subscriber]}
	create_tables "$BP"; create_tables "$BS"
	fill_table "$BP"; fill_table "$BS"
	q "$BS" -c "$WAIT_ORIGIN_FN"
	q "$BP" -c "CREATE PUBLICATION bench_pub FOR TABLE t, bench_marker"
	q "$BS" -c "SET client_min_messages = warning" \
		-c "CREATE SUBSCRIPTION bench_sub CONNECTION '$(dsn "$BP")' PUBLICATION bench_pub WITH (copy_data = false)"
	ORIGIN=$(q "$BS" -c "SELECT roname FROM pg_replication_origin")
	lsn=$(mark_lsn "$BP")
	r=$(drain builtin "$BS" bench_sub "$lsn")
	[[ ${r#* } == t ]] || { log "*** the built-in subscription did not start within ${TIMEOUT}s"; exit 1; }
	log "  subscription streaming (first marker applied after ${r% *}s)"
}

builtin_run() {
	local tps lsn r secs ok seen
	q "$BS" -c "ALTER SUBSCRIPTION bench_sub DISABLE"
	wait_slots_inactive "$BP"
	q "$BP" -c "VACUUM ANALYZE t"; q "$BS" -c "VACUUM ANALYZE t"
	checkpoint "$BP" "$BS"
	tps=$(run_pgbench "$BP" "$WORK/update.sql" -D k=0)
	BUILTIN_UPDATES=$((BUILTIN_UPDATES + 1)); check_workload "$BP" "$BUILTIN_UPDATES"
	RES[builtin|tps]="${RES[builtin|tps]:-} $tps"
	lsn=$(mark_lsn "$BP")
	r=$(timed_catchup builtin "$BS" bench_sub "$lsn" t)
	read -r secs ok seen <<<"$r"
	check_seen "$BP" t "$seen" "builtin (catch-up)"
	record builtin "$secs" "$ok"
	[[ $ok == t ]] || log "  *** TIMEOUT *** builtin did not apply up to $lsn within ${TIMEOUT}s"
	log "  builtin: provider $tps tps while disabled; $NTOT rows applied in ${secs}s = $RATE rows/s"
	verify "builtin" "$BP" "$BS" t
}

# --- concord --------------------------------------------------------------

CONCORD_UPDATES=0

concord_setup() {
	local r lsn
	log "== concord one-way, B subscribed to A =="
	start_cluster concord_a; start_cluster concord_b
	A=${PORT[concord_a]}; B=${PORT[concord_b]}
	create_tables "$A"; create_tables "$B"
	fill_table "$A"
	q "$A" -c "CREATE EXTENSION concord" -c "SELECT concord.create_node('node_a', '$(dsn "$A")')" \
		-c "SELECT concord.replication_set_add_table('default', 't')" \
		-c "SELECT concord.replication_set_add_table('default', 'bench_marker')" >/dev/null
	q "$B" -c "CREATE EXTENSION concord" -c "SELECT concord.create_node('node_b', '$(dsn "$B")')" >/dev/null
	q "$B" -c "$WAIT_CONCORD_FN"
	q "$B" -c "SELECT concord.create_subscription('bench_sub', '$(dsn "$A")', synchronize_data := true)" >/dev/null
	q "$B" -c "SELECT concord.wait_for_subscription_sync_complete('bench_sub', '${TIMEOUT}s')" >/dev/null
	lsn=$(mark_lsn "$A")
	r=$(drain concord "$B" bench_sub "$lsn")
	[[ ${r#* } == t ]] || { log "*** the concord subscription did not start within ${TIMEOUT}s"; exit 1; }
	q "$B" -c "VACUUM ANALYZE t"
	log "  initial copy of $NTOT rows done, subscription streaming"
	verify "concord initial copy" "$A" "$B" t
}

# concord_run PCT RESOLVER
concord_run() {
	local pct=$1 resolver=$2 key="concord|$2|$1" tps lsn r secs ok seen local_rows h0 hist how held
	q "$B" -c "SELECT concord.alter_subscription_disable('bench_sub')" >/dev/null
	wait_apply_gone "$B"; wait_slots_inactive "$A"
	q "$B" -c "SELECT concord.set_conflict_resolver('t', '$resolver')" >/dev/null
	# B's local versions, concurrent with A's coming updates of the same rows.
	local_rows=$(q "$B" -c "WITH u AS (UPDATE t SET n = n + 1, payload = repeat('L', $PAYLOAD)
		WHERE id % 100 < $pct RETURNING 1) SELECT count(*) FROM u")
	q "$A" -c "VACUUM ANALYZE t"; q "$B" -c "VACUUM ANALYZE t"
	checkpoint "$A" "$B"
	h0=$(q "$B" -c "SELECT coalesce(max(conflict_id), 0) FROM concord.conflict_history")
	tps=$(run_pgbench "$A" "$WORK/update.sql" -D k=0)
	CONCORD_UPDATES=$((CONCORD_UPDATES + 1)); check_workload "$A" "$CONCORD_UPDATES"
	RES[$key|tps]="${RES[$key|tps]:-} $tps"
	lsn=$(mark_lsn "$A")
	r=$(timed_catchup concord "$B" bench_sub "$lsn" t)
	read -r secs ok seen <<<"$r"
	# keep_local leaves B's rows, whose n is A's n all the same.
	check_seen "$A" t "$seen" "concord $pct% $resolver (catch-up)"
	record "$key" "$secs" "$ok"
	[[ $ok == t ]] || log "  *** TIMEOUT *** concord did not apply up to $lsn within ${TIMEOUT}s"
	hist=$(q "$B" -c "SELECT count(*) FROM concord.conflict_history WHERE conflict_id > $h0")
	how=$(q "$B" -c "SELECT coalesce(string_agg(conflict_type || '/' || resolver || '/' || resolution || ': ' || c, ', '), 'none')
		FROM (SELECT conflict_type, resolver, resolution, count(*) AS c FROM concord.conflict_history
			  WHERE conflict_id > $h0 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3) s")
	RES[$key|local]=$local_rows; RES[$key|hist]="${RES[$key|hist]:-} $hist"
	log "  concord $pct% $resolver: $local_rows rows written on B; provider $tps tps while disabled;" \
		"$NTOT rows applied in ${secs}s = $RATE rows/s; $hist conflict_history rows ($how)"
	if [[ $hist != "$local_rows" ]]; then
		log "  *** UNEXPECTED *** $hist conflicts recorded, $local_rows expected (one per row written on B)"
		RES[anomaly]=$(( ${RES[anomaly]:-0} + 1 ))
	fi
	if [[ $resolver == keep_local ]]; then
		verify "concord $pct% keep_local, rows B did not write" "$A" "$B" "t WHERE id % 100 >= $pct"
		held=$(q "$B" -c "SELECT count(*) FROM t WHERE id % 100 < $pct AND payload LIKE 'L%'")
		if [[ $held != "$local_rows" ]]; then
			log "  *** MISMATCH *** keep_local: B holds $held of its $local_rows own versions"
			RES[mismatch]=$(( ${RES[mismatch]:-0} + 1 ))
		fi
	else
		verify "concord $pct% $resolver" "$A" "$B" t
	fi
}

# --- main -----------------------------------------------------------------

log "conflict benchmark: $NTOT rows, $NTOT single-row UPDATE transactions per run, $CLIENTS clients ($THREADS threads)," \
	"payload $PAYLOAD bytes, conflict rates: $RATES %, keep_local: ${KEEP_LOCAL_PCT} %, $REPEAT run(s) each;" \
	"$("$BINDIR/postgres" --version); $CORES cores; dir $WORK"
START=$SECONDS
write_update_script

builtin_setup
for ((i = 1; i <= REPEAT; i++)); do builtin_run; done
stop_clusters builtin_subscriber builtin_provider

concord_setup
for ((i = 1; i <= REPEAT; i++)); do
	for p in $RATES; do concord_run "$p" last_update_wins; done
done
# keep_local leaves B's versions in place: last, so the rows stay comparable.
if [[ $KEEP_LOCAL_PCT -gt 0 ]]; then
	for ((i = 1; i <= REPEAT; i++)); do concord_run "$KEEP_LOCAL_PCT" keep_local; done
fi
stop_clusters concord_b concord_a

# --- report ---------------------------------------------------------------

# median LIST [FORMAT]: of the space-separated numbers, "-" if none.
median() {
	tr ' ' '\n' <<<"$1" | grep . | sort -g | awk -v f="${2:-%.3f}" '{ v[NR] = $1 }
		END { if (NR == 0) print "-"; else printf f "\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
rate_of() {
	local m; m=$(median "${RES[$1|secs]:-}")
	if [[ $m == - ]]; then echo -; else awk -v n="$NTOT" -v s="$m" 'BEGIN { printf "%.0f", n / s }'; fi
}
div() { [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ && $2 -gt 0 ]] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' || echo n/a; }

REF=concord\|last_update_wins\|0
BUILTIN_RATE=$(rate_of builtin); REF_RATE=$(rate_of "$REF"); REF_SECS=$(median "${RES[$REF|secs]:-}")
echo
echo "Results ($(date '+%Y-%m-%d %H:%M')): $NTOT single-row UPDATE transactions per run, each of another row," \
	"$CLIENTS clients, payload $PAYLOAD bytes, $CORES cores$([[ $REPEAT -gt 1 ]] && echo ", medians of $REPEAT runs")"
printf '%-29s | %9s | %9s | %12s | %10s | %12s | %10s | %10s | %13s\n' run "conflicts" "history" "provider TPS" "catch-up s" "apply rows/s" "vs conc 0%" "vs builtin" "us/conflict"
printf '%s\n' "------------------------------+-----------+-----------+--------------+------------+--------------+------------+------------+--------------"
printf '%-29s | %9s | %9s | %12s | %10s | %12s | %10s | %10s | %13s\n' "builtin (no conflicts)" - - \
	"$(median "${RES[builtin|tps]:-}" %.0f)" "$(median "${RES[builtin|secs]:-}")" "$BUILTIN_RATE" - - -
ROWS_OUT=()
for p in $RATES; do ROWS_OUT+=("$p|last_update_wins"); done
[[ $KEEP_LOCAL_PCT -gt 0 ]] && ROWS_OUT+=("$KEEP_LOCAL_PCT|keep_local")
for r in "${ROWS_OUT[@]}"; do
	p=${r%|*}; res=${r#*|}; key="concord|$res|$p"
	rate=$(rate_of "$key"); secs=$(median "${RES[$key|secs]:-}")
	hist=$(median "${RES[$key|hist]:-}" %.0f)
	per=-
	if [[ ${RES[$key|local]:-0} -gt 0 && $secs != - && $REF_SECS != - ]]; then
		per=$(awk -v s="$secs" -v r="$REF_SECS" -v c="${RES[$key|local]}" 'BEGIN { printf "%.1f", (s - r) * 1e6 / c }')
	fi
	printf '%-29s | %9s | %9s | %12s | %10s | %12s | %10s | %10s | %13s\n' "concord $p% $res" \
		"${RES[$key|local]:--}" "$hist" "$(median "${RES[$key|tps]:-}" %.0f)" "$secs" "$rate" \
		"$(div "$rate" "$REF_RATE")" "$(div "$rate" "$BUILTIN_RATE")" "$per"
	[[ -z ${RES[$key|timeouts]:-} ]] || echo "  (${RES[$key|timeouts]} run(s) of concord $p% $res timed out)"
done
[[ -z ${RES[builtin|timeouts]:-} ]] || echo "  (${RES[builtin|timeouts]} builtin run(s) timed out)"
echo
echo "conflicts = rows B wrote itself before the run (each is updated by A once: one update_origin_differs expected);"
echo "history = concord.conflict_history rows B wrote during the catch-up; vs conc 0% / vs builtin = apply rows/s ratios;"
echo "us/conflict = (catch-up s - concord 0% catch-up s) / conflicts."
[[ ${RES[mismatch]:-0} -eq 0 ]] || echo "*** ${RES[mismatch]} MISMATCH(ES) between A and B: see above ***"
[[ ${RES[anomaly]:-0} -eq 0 ]] || echo "*** ${RES[anomaly]} unexpected count(s) (workload or conflicts): see above ***"
echo "total time: $((SECONDS - START))s"
