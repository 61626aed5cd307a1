#!/usr/bin/env bash
# bench/big_transactions.sh - big transactions in a 3-node mesh, measured in
# one run for PostgreSQL's built-in logical replication, pglogical 2 and
# concord. A benchmark, not a test: it prints figures and never fails on
# them.
#
# Usage (as root; the servers run as the `postgres` OS user):
#
#   bench/big_transactions.sh                        # 300,000 rows, ~3-5 min
#   BENCH_ROWS=20000 bench/big_transactions.sh       # smoke run
#   BENCH_REPEAT=3 bench/big_transactions.sh         # medians of 3 rounds
#
# Environment: BENCH_ROWS (rows of the INSERT, default 300000),
# BENCH_SYSTEMS (any of "builtin pglogical concord", default all three),
# BENCH_REPEAT (rounds, default 1), BENCH_TIMEOUT, BENCH_KEEP, BENCH_PORT,
# PG_CONFIG, as for bench/replication.sh.
#
# Per system, three fresh clusters node_a, node_b, node_c, each with table
# t (id int primary key, v text, n int) and bench_marker:
#   concord    a full mesh: every node subscribes to the two others
#              (synchronize_data => false), so that each database has two
#              subscriptions and apply locks keys
#   pglogical  the same mesh, forward_origins '{}'
#   builtin    node_b and node_c subscribe to node_a (PostgreSQL 15 has no
#              origin filter, so the built-in cannot make a mesh)
# Then node_a commits three transactions, one statement each, with all
# subscriptions running: INSERT of BENCH_ROWS rows, UPDATE of all of them,
# DELETE of half. Timed, from just before the INSERT until both node_b and
# node_c have applied everything node_a wrote (the concord wait is
# concord.wait_for_apply, the others poll their replication origin):
#   total s     the whole thing, the three statements on node_a included
#   after s     from node_a's last COMMIT to both nodes having applied it
# The tables of the three nodes are compared afterwards (count, sum(n), md5).
set -euo pipefail

export BENCH_ROWS=${BENCH_ROWS:-300000}
SYSTEMS=${BENCH_SYSTEMS:-builtin pglogical concord}
REPEAT=${BENCH_REPEAT:-1}
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_REPEAT must be a positive integer" >&2; exit 2; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for s in $SYSTEMS; do
	case $s in builtin|pglogical|concord) ;; *) echo "unknown system in BENCH_SYSTEMS: $s" >&2; exit 2;; esac
done
bench_init

put() { RES[$1]="${RES[$1]:+${RES[$1]} }$2"; }
NODES=(node_a node_b node_c)

big_checksum() {
	q "$1" -c "SELECT count(*) || ' rows, sum(n) ' || coalesce(sum(n), 0) || ', md5 '
		|| md5(coalesce(string_agg(id || ':' || n || ':' || v, ',' ORDER BY id), '')) FROM t"
}

# setup SYS PREFIX: three clusters with tables and replication, streaming.
setup() {
	local sys=$1 pre=$2 n m port
	for n in "${NODES[@]}"; do
		start_cluster "$pre$n"
		port=${PORT[$pre$n]}
		q "$port" -c "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL)" \
			-c "CREATE TABLE bench_marker (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())" \
			-c "$WAIT_ORIGIN_FN"
	done
	case $sys in
	builtin)
		q "${PORT[${pre}node_a]}" -c "CREATE PUBLICATION bench_pub FOR TABLE t, bench_marker"
		for n in node_b node_c; do
			q "${PORT[$pre$n]}" -c "SET client_min_messages = warning" \
				-c "CREATE SUBSCRIPTION ${n}_from_node_a CONNECTION '$(dsn "${PORT[${pre}node_a]}")' PUBLICATION bench_pub WITH (copy_data = false)"
		done
		;;
	pglogical)
		for n in "${NODES[@]}"; do
			port=${PORT[$pre$n]}
			q "$port" -c "CREATE EXTENSION pglogical" -c "SELECT pglogical.create_node(node_name := '$n', dsn := '$(dsn "$port")')" \
				-c "SELECT pglogical.replication_set_add_table('default', 't')" \
				-c "SELECT pglogical.replication_set_add_table('default', 'bench_marker')" >/dev/null
		done
		for n in "${NODES[@]}"; do
			for m in "${NODES[@]}"; do
				[[ $n == "$m" ]] && continue
				q "${PORT[$pre$n]}" -c "SELECT pglogical.create_subscription(subscription_name := '${n}_from_$m',
					provider_dsn := '$(dsn "${PORT[$pre$m]}")', synchronize_structure := false,
					synchronize_data := false, forward_origins := '{}')" >/dev/null
			done
		done
		;;
	concord)
		for n in "${NODES[@]}"; do
			port=${PORT[$pre$n]}
			q "$port" -c "CREATE EXTENSION concord" -c "SELECT concord.create_node('$n', '$(dsn "$port")')" \
				-c "SELECT concord.replication_set_add_table('default', 't')" \
				-c "SELECT concord.replication_set_add_table('default', 'bench_marker')" \
				-c "$WAIT_CONCORD_FN" >/dev/null
		done
		concord_mesh "$pre" "${NODES[@]}"
		;;
	esac
}

# wait_sql SYS SUB LSN: a psql line that sets :ok once SUB applied up to LSN.
wait_sql() {
	local sys=$1 sub=$2 lsn=$3
	case $sys in
	concord) echo "CALL bench_wait_concord('$sub', '$lsn', $TIMEOUT) \\gset"; return ;;
	builtin) echo "SELECT 'pg_' || oid AS origin FROM pg_subscription WHERE subname = '$sub' \\gset" ;;
	pglogical) echo "SELECT sub_slot_name AS origin FROM pglogical.subscription WHERE sub_name = '$sub' \\gset" ;;
	esac
	echo "CALL bench_wait_origin(:'origin', '$lsn', $TIMEOUT) \\gset"
}

# wait_both SYS PREFIX LSN: waits on node_b and node_c; prints "t t" or
# with an f for a node that did not get there within BENCH_TIMEOUT.
wait_both() {
	local sys=$1 pre=$2 lsn=$3 n out=
	for n in node_b node_c; do
		out+=" $(q "${PORT[$pre$n]}" <<EOF | sed -n 's/^RESULT //p'
$(wait_sql "$sys" "${n}_from_node_a" "$lsn")
SELECT 'RESULT ' || :'ok';
EOF
)"
	done
	echo "$out"
}

bench_system() {
	local sys=$1 pre=${1}_r${ROUND}_ A lsn r t0 ti tu t1 t2 n a b ok
	log "== $sys, round $ROUND =="
	setup "$sys" "$pre"
	A=${PORT[${pre}node_a]}
	lsn=$(mark_lsn "$A")
	r=$(wait_both "$sys" "$pre" "$lsn")
	[[ $r == " t t" ]] || { log "*** $sys subscriptions did not start within ${TIMEOUT}s; skipping"; stop_clusters "${NODES[@]/#/$pre}"; return 0; }
	checkpoint "$A" "${PORT[${pre}node_b]}" "${PORT[${pre}node_c]}"
	t0=$(date +%s.%N)
	q "$A" -c "INSERT INTO t SELECT g, 'value ' || g, 0 FROM generate_series(1, $ROWS) g"
	ti=$(date +%s.%N)
	q "$A" -c "UPDATE t SET n = n + 1"
	tu=$(date +%s.%N)
	q "$A" -c "DELETE FROM t WHERE id % 2 = 0"
	t1=$(date +%s.%N)
	log "  on node_a: INSERT $(awk -v a="$t0" -v b="$ti" 'BEGIN { printf "%.2f", b - a }') s," \
		"UPDATE $(awk -v a="$ti" -v b="$tu" 'BEGIN { printf "%.2f", b - a }') s," \
		"DELETE $(awk -v a="$tu" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
	lsn=$(mark_lsn "$A")
	ok=$(wait_both "$sys" "$pre" "$lsn")
	t2=$(date +%s.%N)
	if [[ $ok == " t t" ]]; then
		put "$sys|total" "$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.2f", b - a }')"
		put "$sys|after" "$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.2f", b - a }')"
		log "  node_a ran the three statements in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s;" \
			"both others had applied them $(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.2f", b - a }') s later"
	else
		put "$sys|total" timeout; put "$sys|after" timeout
		log "  *** TIMEOUT *** $sys: not applied on both nodes within ${TIMEOUT}s (ok:$ok)"
	fi
	a=$(big_checksum "$A")
	for n in node_b node_c; do
		b=$(big_checksum "${PORT[$pre$n]}")
		if [[ $a == "$b" ]]; then
			log "  verify $n: OK ($b)"
		else
			log "  *** MISMATCH *** $n: node_a $a / $n $b"
			RES[mismatch]=$(( ${RES[mismatch]:-0} + 1 ))
		fi
	done
	stop_clusters "${pre}node_c" "${pre}node_b" "${pre}node_a"
}


log "big-transaction benchmark: INSERT $ROWS rows, UPDATE them, DELETE half;" \
	"$($BINDIR/postgres --version); $CORES cores; dir $WORK"
START=$SECONDS
for ((ROUND = 1; ROUND <= REPEAT; ROUND++)); do
	for s in $SYSTEMS; do bench_system "$s"; done
done
echo
echo "Results: INSERT $ROWS rows, UPDATE all, DELETE half, one transaction each, on node_a of 3 nodes; medians of $REPEAT round(s)"
printf '%-10s | %8s | %8s | %s\n' system "total s" "after s" "rounds (total s)"
printf '%s\n' "-----------+----------+----------+-----------------"
for s in builtin pglogical concord; do
	[[ -n ${RES[$s|total]:-} ]] || continue
	printf '%-10s | %8s | %8s | %s\n' "$s" "$(fmt "$s|total")" "$(fmt "$s|after")" "${RES[$s|total]}"
done
for s in builtin pglogical; do
	a=$(fmt "concord|total"); b=$(fmt "$s|total")
	[[ $a =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]] &&
		echo "concord/$s total time ratio: $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }') (lower is better)"
done
[[ ${RES[mismatch]:-0} -eq 0 ]] || echo "*** ${RES[mismatch]} MISMATCH(ES) between the nodes: see above ***"
echo "total time: $((SECONDS - START))s"
