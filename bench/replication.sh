#!/usr/bin/env bash
# bench/replication.sh - logical replication benchmark, measured in one run:
# PostgreSQL's built-in logical replication, pglogical 2 and concord one-way,
# then concord two-way. A benchmark, not a test: it prints figures and never
# fails on them.
#
# Usage (as root; the servers run as the `postgres` OS user):
#
#   bench/replication.sh                       # defaults, ~2-3 min on 2 cores
#   BENCH_ROWS=200000 bench/replication.sh     # steadier figures, ~8 min
#   BENCH_ROWS=2000 bench/replication.sh       # smoke run, about a minute
#
# Environment:
#   BENCH_ROWS      rows per workload run (default 50000; rounded up to a
#                   multiple of 10 x BENCH_CLIENTS)
#   BENCH_CLIENTS   pgbench clients (default 4; threads = min(clients, cores))
#   BENCH_PAYLOAD   payload bytes per row (default 100)
#   BENCH_SYSTEMS   what to run, any of "builtin pglogical concord concord_w2
#                   concord_w4 concord2" (default: all six, in that order);
#                   concord_wN is concord one-way with
#                   concord.apply_workers_per_subscription = N (N = 2 to 8)
#   BENCH_TIMEOUT   seconds any single catch-up may take (default 600)
#   BENCH_KEEP      1 = keep the temporary directory (server logs) afterwards
#   BENCH_REPEAT    rounds of the one-way systems (default 1); with more,
#                   the table shows medians and the ratios each round's
#   BENCH_PERF      1 = perf profile of each timed catch-up (needs perf),
#                   dwarf = the same with call chains through the server
#   BENCH_PORT      first port to try (default 56432)
#   PG_CONFIG       pg_config of the PostgreSQL 15 installation to use
#
# Needs: concord installed (make install), postgresql-15-pglogical.
#
# Each system gets two fresh clusters (provider, subscriber) in a temporary
# directory, reached over unix sockets, all with the same configuration
# (shared_preload_libraries = 'concord, pglogical', wal_level = logical, ...).
# Tables: id bigserial primary key, n int (bumped by updates), payload text.
#
# Per system and per workload (A = single-row INSERT transactions,
# B = single-row UPDATE transactions of random existing ids, C = INSERT
# transactions of 10 rows each, one tenth as many, catch-up only; D =
# "mixed": single-row transactions, 80 % UPDATEs of random rows of a table
# loaded with the same BENCH_ROWS rows on both sides before replication was
# set up, 20 % INSERTs, catch-up only; E = "insert16": A from 16 clients,
# catch-up only):
#   provider TPS (no repl)  pgbench on a provider table that no subscription
#                           covers, before any subscription exists
#   provider TPS (repl)     pgbench on a replicated table with the
#                           subscription running
#   catch-up s              subscription disabled (and its walsender gone),
#                           workload run, LSN := pg_current_wal_lsn() on the
#                           provider, then timed on the subscriber in one
#                           session from just before "enable" until
#                           everything up to LSN is applied:
#                             builtin   ALTER SUBSCRIPTION ... ENABLE, then
#                                       poll pg_replication_origin_status
#                                       .remote_lsn >= LSN every 10 ms
#                             pglogical pglogical.alter_subscription_enable,
#                                       same origin poll
#                             concord   concord.alter_subscription_enable,
#                                       then concord.wait_for_apply(sub, LSN,
#                                       '0s') every 10 ms (wait_for_apply
#                                       itself sleeps 100 ms between checks)
#                           (a one-row "marker" transaction is committed on the
#                           provider after LSN is taken, so that a replication
#                           origin, which moves on commits only, can reach it)
#   apply rows/s            rows / catch-up s
# After every measurement the subscriber's table is compared with the
# provider's (count, sum(n), md5 of all rows), and the count and sum(n) the
# subscriber showed right after a timed wait returned are checked too; a
# difference prints MISMATCH.
#
# concord two-way: two clusters, each subscribed to the other (forward_origins
# default '{}'), the INSERT workload run on both at once on disjoint id
# ranges. "TPS (repl)" is each side's TPS with both subscriptions running,
# "TPS (no repl)" each side's TPS with both subscriptions disabled (both sides
# still loaded at once), catch-up s / apply rows/s as above, per side.
set -euo pipefail

SYSTEMS=${BENCH_SYSTEMS:-builtin pglogical concord concord_w2 concord_w4 concord2}
REPEAT=${BENCH_REPEAT:-1}
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_REPEAT must be a positive integer" >&2; exit 2; }

# put KEY VALUE: notes one round's VALUE of result KEY.
put() { RES[$1]="${RES[$1]:+${RES[$1]} }$2"; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# insert10 runs PER_CLIENT / 10 transactions of 10 rows per client.
PER_CLIENT=$(((PER_CLIENT + 9) / 10 * 10))
NTOT=$((PER_CLIENT * CLIENTS))

for s in $SYSTEMS; do
	case $s in builtin|pglogical|concord|concord2|concord_w[2-8]) ;; *) echo "unknown system in BENCH_SYSTEMS: $s" >&2; exit 2;; esac
done
bench_init

# Write the pgbench scripts for table $1.
write_scripts() {
	local t=$1
	printf 'INSERT INTO %s (payload) VALUES (repeat(%s, %d));\n' "$t" "'x'" "$PAYLOAD" >"$WORK/insert_$t.sql"
	printf '\\set id random(1, %d)\nUPDATE %s SET n = n + 1, payload = repeat(chr(97 + (:id %% 26)), %d) WHERE id = :id;\n' \
		"$NTOT" "$t" "$PAYLOAD" >"$WORK/update_$t.sql"
	printf 'INSERT INTO %s (payload) SELECT repeat(%s, %d) FROM generate_series(1, 10);\n' "$t" "'x'" "$PAYLOAD" \
		>"$WORK/insert10_$t.sql"
	# 80 % UPDATEs of the rows loaded before replication, 20 % INSERTs.
	printf '\\set r random(1, 100)\n\\set id random(1, %d)\n\\if :r <= 80\nUPDATE %s SET n = n + 1, payload = repeat(chr(97 + (:id %% 26)), %d) WHERE id = :id;\n\\else\nINSERT INTO %s (payload) VALUES (repeat(%s, %d));\n\\endif\n' \
		"$NTOT" "$t" "$PAYLOAD" "$t" "'x'" "$PAYLOAD" >"$WORK/mixed_$t.sql"
	[[ $(id -u) -eq 0 ]] && chown postgres: "$WORK/insert_$t.sql" "$WORK/update_$t.sql" "$WORK/insert10_$t.sql" \
		"$WORK/mixed_$t.sql"
	return 0
}

create_table() {
	q "$1" -c "CREATE TABLE $2 (id bigserial PRIMARY KEY, n int NOT NULL DEFAULT 0, payload text NOT NULL)"
}

# load_table PORT TABLE: rows 1..NTOT, the same on every node, written
# before replication is set up (for concord: before create_node, so they
# are the common baseline); the provider's sequence continues after them.
load_table() {
	q "$1" -c "INSERT INTO $2 (id, payload) SELECT g, repeat('x', $PAYLOAD) FROM generate_series(1, $NTOT) g" \
		-c "SELECT setval('${2}_id_seq', $NTOT)" -c "VACUUM ANALYZE $2" >/dev/null
}

setup_replication() {
	local sys=$1 P=$2 S=$3 t
	case $sys in
	builtin)
		q "$P" -c "CREATE PUBLICATION bench_pub FOR TABLE t_repl, t_catch, t_mixed, bench_marker"
		q "$S" -c "SET client_min_messages = warning" -c "CREATE SUBSCRIPTION bench_sub CONNECTION '$(dsn "$P")' PUBLICATION bench_pub WITH (copy_data = false)"
		;;
	pglogical)
		q "$P" -c "CREATE EXTENSION pglogical" -c "SELECT pglogical.create_node(node_name := 'provider', dsn := '$(dsn "$P")')" >/dev/null
		for t in t_repl t_catch t_mixed bench_marker; do
			q "$P" -c "SELECT pglogical.replication_set_add_table('default', '$t')" >/dev/null
		done
		q "$S" -c "CREATE EXTENSION pglogical" -c "SELECT pglogical.create_node(node_name := 'subscriber', dsn := '$(dsn "$S")')" >/dev/null
		q "$S" -c "SELECT pglogical.create_subscription(subscription_name := 'bench_sub', provider_dsn := '$(dsn "$P")',
				synchronize_structure := false, synchronize_data := false)" >/dev/null
		q "$S" -c "SELECT pglogical.wait_for_subscription_sync_complete('bench_sub')" >/dev/null
		;;
	concord*)
		if [[ $sys == concord_w* ]]; then
			q "$S" -c "ALTER SYSTEM SET concord.apply_workers_per_subscription = ${sys#concord_w}" -c "SELECT pg_reload_conf()" >/dev/null
		fi
		q "$P" -c "CREATE EXTENSION concord" -c "SELECT concord.create_node('provider', '$(dsn "$P")')" >/dev/null
		for t in t_repl t_catch t_mixed bench_marker; do
			q "$P" -c "SELECT concord.replication_set_add_table('default', '$t')" >/dev/null
		done
		q "$S" -c "CREATE EXTENSION concord" -c "SELECT concord.create_node('subscriber', '$(dsn "$S")')" >/dev/null
		q "$S" -c "SELECT concord.create_subscription('bench_sub', '$(dsn "$P")', synchronize_data := false)" >/dev/null
		q "$S" -c "$WAIT_CONCORD_FN"
		;;
	esac
	ORIGIN=""
	if [[ $sys != concord* ]]; then
		[[ $(q "$S" -c "SELECT count(*) FROM pg_replication_origin") == 1 ]] \
			|| { log "expected one replication origin on the subscriber"; q "$S" -c "TABLE pg_replication_origin"; exit 1; }
		ORIGIN=$(q "$S" -c "SELECT roname FROM pg_replication_origin")
	fi
}

# --- one-way --------------------------------------------------------------

# measure_repl SYS P S WORKLOAD: provider TPS with the subscription running.
measure_repl() {
	local sys=$1 P=$2 S=$3 wl=$4 tps lsn r
	[[ $wl == update ]] && q "$P" -c "VACUUM ANALYZE t_repl" && q "$S" -c "VACUUM ANALYZE t_repl"
	checkpoint "$P" "$S"
	tps=$(run_pgbench "$P" "$WORK/${wl}_t_repl.sql")
	lsn=$(mark_lsn "$P")
	r=$(drain "$sys" "$S" bench_sub "$lsn")
	put "$sys|$wl|repl" "$tps"
	log "  $wl, replication running: provider $tps tps; subscriber caught up ${r% *}s after the load ended (ok=${r#* })"
	[[ ${r#* } == t ]] || log "  *** TIMEOUT *** waiting for $sys to apply $wl"
	verify "$sys $wl (repl)" "$P" "$S" t_repl
}

# measure_catchup SYS P S WORKLOAD: disabled subscription, workload, timed
# catch-up.  mixed runs on t_mixed (rows loaded on both sides before
# replication), the others on t_catch; insert16 is insert from 16 clients.
measure_catchup() {
	local sys=$1 P=$2 S=$3 wl=$4 tps lsn r secs ok seen sub_before rate t=t_catch rows=$NTOT
	[[ $wl == mixed ]] && t=t_mixed
	q "$S" -c "$(disable_sql "$sys" bench_sub)" >/dev/null
	wait_slots_inactive "$P"
	[[ $wl == update || $wl == mixed ]] && q "$P" -c "VACUUM ANALYZE $t" && q "$S" -c "VACUUM ANALYZE $t"
	checkpoint "$P" "$S"
	case $wl in
	insert10) tps=$(PGB_PER_CLIENT=$((PER_CLIENT / 10)) run_pgbench "$P" "$WORK/${wl}_$t.sql") ;;
	insert16)
		rows=$((NTOT / 16 * 16))
		tps=$(PGB_CLIENTS=16 PGB_PER_CLIENT=$((NTOT / 16)) run_pgbench "$P" "$WORK/insert_$t.sql") ;;
	*) tps=$(run_pgbench "$P" "$WORK/${wl}_$t.sql") ;;
	esac
	lsn=$(mark_lsn "$P")
	sub_before=$(q "$S" -c "SELECT pg_current_wal_lsn() || ' ' || pg_relation_size('${t}_pkey')")
	r=$(timed_catchup "$sys" "$S" bench_sub "$lsn" "$t")
	read -r secs ok seen <<<"$r"
	# What applying cost the subscriber: WAL per row, and how much the
	# primary key index grew (an UPDATE that is not HOT adds an entry).
	q "$S" -c "SELECT round((pg_current_wal_lsn() - '${sub_before% *}')::numeric / $rows) || ' WAL bytes/row, index +'
		|| pg_size_pretty(pg_relation_size('${t}_pkey') - ${sub_before#* }) || ' (WAL ${sub_before% *}..' || pg_current_wal_lsn() || ')'" | while read -r l; do log "  subscriber: $l"; done
	log "  CPU used during the catch-up: $(process_cpu "$S" apply), $(process_cpu "$P" walsender)"
	check_seen "$P" "$t" "$seen" "$sys $wl (catch-up)"
	if [[ $ok == t ]]; then
		rate=$(awk -v n="$rows" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
	else
		secs=timeout; rate="-"
		log "  *** TIMEOUT *** $sys did not apply $wl up to $lsn within ${TIMEOUT}s"
	fi
	put "$sys|$wl|catchup" "$secs"; put "$sys|$wl|rate" "$rate"
	log "  $wl, catch-up: provider $tps tps while disabled; $rows rows applied in ${secs}s = $rate rows/s"
	verify "$sys $wl (catch-up)" "$P" "$S" "$t"
}

bench_oneway() {
	local sys=$1 P S t tps tps_insert lsn r
	log "== $sys one-way =="
	local prov=${sys}_provider$ROUND_TAG sub=${sys}_subscriber$ROUND_TAG
	start_cluster "$prov"; start_cluster "$sub"
	P=${PORT[$prov]}; S=${PORT[$sub]}
	for t in t_norepl t_repl t_catch t_mixed; do create_table "$P" $t; write_scripts $t; done
	for t in t_repl t_catch t_mixed; do create_table "$S" $t; done
	load_table "$P" t_mixed; load_table "$S" t_mixed
	q "$P" -c "CREATE TABLE bench_marker (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"
	q "$S" -c "CREATE TABLE bench_marker (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"
	q "$S" -c "$WAIT_ORIGIN_FN"

	# Without replication: no subscription exists yet.
	checkpoint "$P"
	tps=$(run_pgbench "$P" "$WORK/insert_t_norepl.sql"); put "$sys|insert|norepl" "$tps"; tps_insert=$tps
	q "$P" -c "VACUUM ANALYZE t_norepl"; checkpoint "$P"
	tps=$(run_pgbench "$P" "$WORK/update_t_norepl.sql"); put "$sys|update|norepl" "$tps"
	log "  no replication: insert $tps_insert tps, update $tps tps"

	setup_replication "$sys" "$P" "$S"
	lsn=$(mark_lsn "$P")
	r=$(drain "$sys" "$S" bench_sub "$lsn")
	[[ ${r#* } == t ]] || { log "*** $sys subscription did not start within ${TIMEOUT}s; skipping"; stop_clusters "$sub" "$prov"; return 0; }
	log "  subscription streaming (first marker applied after ${r% *}s)"

	measure_repl "$sys" "$P" "$S" insert
	measure_repl "$sys" "$P" "$S" update
	measure_catchup "$sys" "$P" "$S" insert
	measure_catchup "$sys" "$P" "$S" update
	measure_catchup "$sys" "$P" "$S" insert10
	measure_catchup "$sys" "$P" "$S" mixed
	measure_catchup "$sys" "$P" "$S" insert16

	stop_clusters "$sub" "$prov"
}

# --- concord two-way ------------------------------------------------------

# Run the insert workload on both nodes at once; prints "TPS1 TPS2".
pgbench_both() {
	local a=$1 b=$2 pa pb ta tb
	run_pgbench "$a" "$WORK/insert_t_2way.sql" >"$WORK/pgb.1" & pa=$!
	run_pgbench "$b" "$WORK/insert_t_2way.sql" >"$WORK/pgb.2" & pb=$!
	wait "$pa"; wait "$pb"
	ta=$(cat "$WORK/pgb.1"); tb=$(cat "$WORK/pgb.2")
	echo "$ta $tb"
}

bench_twoway() {
	local sys=concord2 A B la lb ra rb pa pb tps n
	log "== concord two-way =="
	start_cluster concord2_node1; start_cluster concord2_node2
	A=${PORT[concord2_node1]}; B=${PORT[concord2_node2]}
	write_scripts t_2way
	for n in 1 2; do
		local port; port=${PORT[concord2_node$n]}
		create_table "$port" t_2way
		q "$port" -c "CREATE EXTENSION concord" -c "SELECT concord.create_node('node$n', '$(dsn "$port")')" \
			-c "SELECT concord.replication_set_add_table('default', 't_2way')" >/dev/null
		q "$port" -c "$WAIT_CONCORD_FN"
	done
	# Disjoint id ranges: node2 inserts from 1e9 on.
	q "$B" -c "ALTER SEQUENCE t_2way_id_seq RESTART WITH 1000000001"
	q "$A" -c "SELECT concord.create_subscription('from_node2', '$(dsn "$B")', synchronize_data := false)" >/dev/null
	q "$B" -c "SELECT concord.create_subscription('from_node1', '$(dsn "$A")', synchronize_data := false)" >/dev/null
	la=$(q "$B" -c "SELECT pg_current_wal_lsn()"); lb=$(q "$A" -c "SELECT pg_current_wal_lsn()")
	ra=$(drain concord "$A" from_node2 "$la"); rb=$(drain concord "$B" from_node1 "$lb")
	if [[ ${ra#* } != t || ${rb#* } != t ]]; then
		log "*** concord two-way subscriptions did not start within ${TIMEOUT}s; skipping"
		stop_clusters concord2_node1 concord2_node2; return 0
	fi
	log "  both subscriptions streaming"

	# Both workloads at once, replication running.
	checkpoint "$A" "$B"
	tps=$(pgbench_both "$A" "$B")
	put "concord2 node1|insert|repl" "${tps% *}"; put "concord2 node2|insert|repl" "${tps#* }"
	la=$(q "$A" -c "SELECT pg_current_wal_lsn()"); lb=$(q "$B" -c "SELECT pg_current_wal_lsn()")
	drain concord "$B" from_node1 "$la" >"$WORK/drain.2" & pb=$!
	drain concord "$A" from_node2 "$lb" >"$WORK/drain.1" & pa=$!
	wait "$pa"; wait "$pb"
	ra=$(cat "$WORK/drain.1"); rb=$(cat "$WORK/drain.2")
	log "  insert on both, replication running: node1 ${tps% *} tps, node2 ${tps#* } tps;" \
		"caught up ${ra% *}s (node1, ok=${ra#* }) / ${rb% *}s (node2, ok=${rb#* }) after the load ended"
	verify "concord two-way (repl)" "$A" "$B" t_2way

	# Catch-up: both disabled, both loaded, both enabled at once.
	q "$A" -c "SELECT concord.alter_subscription_disable('from_node2')" >/dev/null
	q "$B" -c "SELECT concord.alter_subscription_disable('from_node1')" >/dev/null
	wait_slots_inactive "$A"; wait_slots_inactive "$B"
	checkpoint "$A" "$B"
	tps=$(pgbench_both "$A" "$B")
	put "concord2 node1|insert|norepl" "${tps% *}"; put "concord2 node2|insert|norepl" "${tps#* }"
	la=$(q "$A" -c "SELECT pg_current_wal_lsn()"); lb=$(q "$B" -c "SELECT pg_current_wal_lsn()")
	timed_catchup concord "$A" from_node2 "$lb" t_2way >"$WORK/catch.1" & pa=$!
	timed_catchup concord "$B" from_node1 "$la" t_2way >"$WORK/catch.2" & pb=$!
	wait "$pa"; wait "$pb"
	for n in 1 2; do
		local r secs ok seen rate key="concord2 node$n|insert"
		r=$(cat "$WORK/catch.$n"); read -r secs ok seen <<<"$r"
		# Nothing is written any more: what a node saw right after its own
		# wait must be what it holds now.
		check_seen "${PORT[concord2_node$n]}" t_2way "$seen" "concord two-way node$n (catch-up)"
		if [[ $ok == t ]]; then
			rate=$(awk -v n="$NTOT" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
		else
			secs=timeout; rate="-"
			log "  *** TIMEOUT *** node$n did not catch up within ${TIMEOUT}s"
		fi
		put "$key|catchup" "$secs"; put "$key|rate" "$rate"
		log "  node$n caught up in ${secs}s ($rate rows/s)"
	done
	log "  insert on both, subscriptions disabled: node1 ${tps% *} tps, node2 ${tps#* } tps"
	verify "concord two-way (catch-up)" "$A" "$B" t_2way

	stop_clusters concord2_node1 concord2_node2
}

# --- main -----------------------------------------------------------------

log "replication benchmark: $NTOT transactions per run, $CLIENTS clients ($THREADS threads)," \
	"payload $PAYLOAD bytes; $($BINDIR/postgres --version); $CORES cores; dir $WORK"
START=$SECONDS
# One-way systems round after round (interleaved, so that a slow moment of
# the machine does not land on one system only); two-way once at the end.
for ((ROUND = 1; ROUND <= REPEAT; ROUND++)); do
	ROUND_TAG=; [[ $REPEAT -gt 1 ]] && { ROUND_TAG=_r$ROUND; log "=== round $ROUND of $REPEAT ==="; }
	for s in $SYSTEMS; do
		[[ $s == concord2 ]] || bench_oneway "$s"
	done
done
for s in $SYSTEMS; do
	[[ $s != concord2 ]] || bench_twoway
done

echo
echo "Results: $NTOT rows per run (insert, update: single-row transactions; insert10: $((NTOT / 10)) transactions of 10 rows;" \
	"mixed: 80 % UPDATEs of $NTOT rows loaded on both sides before replication, 20 % INSERTs; insert16: insert from 16 clients)," \
	"$CLIENTS clients, payload $PAYLOAD bytes, $CORES cores"
printf '%-19s | %-8s | %22s | %19s | %12s | %10s\n' system workload "provider TPS (no repl)" "provider TPS (repl)" "apply rows/s" "catch-up s"
printf '%s\n' "--------------------+----------+------------------------+---------------------+--------------+-----------"
ONEWAY=()
for s in $SYSTEMS; do [[ $s == concord2 ]] || ONEWAY+=("$s"); done
for s in "${ONEWAY[@]}" "concord2 node1" "concord2 node2"; do
	for wl in insert update insert10 mixed insert16; do
		[[ -n ${RES[$s|$wl|norepl]:-}${RES[$s|$wl|rate]:-} ]] || continue
		label=$s; [[ $s == concord2* ]] && label="concord 2-way ${s#concord2 }"
		printf '%-19s | %-8s | %22s | %19s | %12s | %10s\n' "$label" "$wl" \
			"$(fmt "$s|$wl|norepl")" "$(fmt "$s|$wl|repl")" "$(fmt "$s|$wl|rate")" "$(fmt "$s|$wl|catchup")"
	done
done
echo
# Ratio of the median apply rates of systems $1 and $2 for workload $3,
# followed, with several rounds, by the ratio in each round.
ratio() {
	local a b i rounds=
	a=$(fmt "$1|$3|rate"); b=$(fmt "$2|$3|rate")
	if [[ ! $a =~ ^[0-9.]+$ || ! $b =~ ^[0-9.]+$ ]]; then
		echo "n/a"
		return 0
	fi
	awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }'
	if [[ $REPEAT -gt 1 ]]; then
		read -r -a ra <<<"${RES[$1|$3|rate]}"; read -r -a rb <<<"${RES[$2|$3|rate]}"
		for ((i = 0; i < ${#ra[@]} && i < ${#rb[@]}; i++)); do
			[[ ${ra[i]} =~ ^[0-9]+$ && ${rb[i]} =~ ^[0-9]+$ ]] &&
				rounds+=" $(awk -v a="${ra[i]}" -v b="${rb[i]}" 'BEGIN { printf "%.2f", a / b }')"
		done
		echo " (median of $REPEAT rounds; each round:$rounds)"
	fi
}
for s in "${ONEWAY[@]}"; do
	[[ $s == concord* ]] || continue
	for wl in insert update insert10 mixed insert16; do
		echo "$s/builtin apply ratio ($wl): $(ratio "$s" builtin $wl)"
	done
done
for wl in insert update insert10 mixed insert16; do
	echo "pglogical/builtin apply ratio ($wl): $(ratio pglogical builtin $wl)"
done
echo "(two-way 'TPS (no repl)' = both nodes loaded at once with both subscriptions disabled)"
[[ ${RES[mismatch]:-0} -eq 0 ]] || echo "*** ${RES[mismatch]} MISMATCH(ES) between provider and subscriber: see above ***"
echo "total time: $((SECONDS - START))s"
