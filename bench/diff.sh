#!/usr/bin/env bash
# bench/diff.sh - what concord.table_diff() costs: its time and CPU per row
# against SELECT count(*) of the same table, the bytes it moves, and the
# foreground TPS and replication lag of a node while diffs run on it. A
# benchmark, not a test: it prints figures and never fails on them.
#
# Usage (as root; the servers run as the `postgres` OS user):
#
#   bench/diff.sh                          # 1,000,000 rows, 3 rounds, ~10 min
#   BENCH_ROWS=100000 BENCH_REPEAT=1 bench/diff.sh      # smoke run
#
# Environment: BENCH_ROWS (rows of the table, default 1000000),
# BENCH_REPEAT (rounds, default 3), BENCH_CLIENTS (pgbench clients of the
# load, default 4), BENCH_SECONDS (length of each load window, default 20),
# BENCH_PACE_DELAY and BENCH_PACE_LIMIT (the paced diffs' pace),
# BENCH_TIMEOUT, BENCH_KEEP, BENCH_PORT, PG_CONFIG, as for
# bench/replication.sh.
#
# Three concord nodes node_a, node_b, node_c in a full mesh
# (synchronize_data false), each with table t (id int primary key, v text,
# n int) holding the same BENCH_ROWS rows, loaded on each before
# replication. Per round, on node_a:
#   count s      SELECT count(*) FROM t
#   digest s     concord.table_digest('t', NULL, 32768): one node's read
#                of the table (ns/row: its time per row; a CPU-bound
#                single process, so its time is its CPU)
#   diff s       a concord.table_diff('t') run on the idle mesh, from its
#                diff_run row; bytes: its bytes_received
#   TPS          pgbench on node_a (one-row UPDATEs by random key,
#                BENCH_CLIENTS clients) for BENCH_SECONDS: without
#                diffs, then with paced diffs of t running one after
#                another on node_a, then with diffs at full speed, then
#                without diffs again (the base of a round's drops is the
#                mean of the two windows without: TPS drifts down as the
#                UPDATEs leave dead rows); paced diffs pause
#                concord.diff_cost_delay = BENCH_PACE_DELAY ms after
#                each step of concord.diff_cost_limit = BENCH_PACE_LIMIT
#                rows (defaults: the scheduled diffs' default pace)
#   lag p50/p99  node_a writes a heartbeat row every 100 ms meanwhile;
#                node_b's trigger (ENABLE ALWAYS) stamps its arrival:
#                arrival minus the commit on node_a, per window
set -euo pipefail

export BENCH_ROWS=${BENCH_ROWS:-1000000}
REPEAT=${BENCH_REPEAT:-3}
SECS=${BENCH_SECONDS:-20}
PACE_DELAY=${BENCH_PACE_DELAY:-1000}
PACE_LIMIT=${BENCH_PACE_LIMIT:-10000}
[[ $PACE_DELAY =~ ^[0-9]+$ && $PACE_LIMIT =~ ^[1-9][0-9]*$ ]] ||
	{ echo "BENCH_PACE_DELAY and BENCH_PACE_LIMIT must be integers" >&2; exit 2; }
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_REPEAT must be a positive integer" >&2; exit 2; }
[[ $SECS =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_SECONDS must be a positive integer" >&2; exit 2; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init

put() { RES[$1]="${RES[$1]:+${RES[$1]} }$2"; }
NODES=(node_a node_b node_c)
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# The TPS drop of $1 against $2, in percent.
drop() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", 100 * (1 - a / b) }'; }

setup() {
	local pre=$1 n m port
	for n in "${NODES[@]}"; do
		start_cluster "$pre$n"
		port=${PORT[$pre$n]}
		q "$port" -c "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL)" \
			-c "INSERT INTO t SELECT g, 'value ' || g, g % 1000 FROM generate_series(1, $ROWS) g" \
			-c "CREATE TABLE hb (id int PRIMARY KEY, at timestamptz NOT NULL, seen timestamptz)" \
			-c "CREATE FUNCTION hb_seen() RETURNS trigger LANGUAGE plpgsql AS
				\$\$ BEGIN NEW.seen := clock_timestamp(); RETURN NEW; END \$\$" \
			-c "CREATE TRIGGER hb_seen BEFORE INSERT ON hb FOR EACH ROW EXECUTE FUNCTION hb_seen()" \
			-c "ALTER TABLE hb ENABLE ALWAYS TRIGGER hb_seen" \
			-c "VACUUM ANALYZE t" \
			-c "CREATE EXTENSION concord" -c "SELECT concord.create_node('$n', '$(dsn "$port")')" \
			-c "SELECT concord.replication_set_add_table('default', 't')" \
			-c "SELECT concord.replication_set_add_table('default', 'hb')" >/dev/null
	done
	concord_mesh "$pre" "${NODES[@]}"
	for n in "${NODES[@]}"; do
		q "${PORT[$pre$n]}" -c "DO \$\$ BEGIN
			FOR i IN 1 .. $TIMEOUT * 10 LOOP
				EXIT WHEN (SELECT count(*) = 2 AND bool_and(status = 'replicating') FROM concord.subscription_status);
				PERFORM pg_sleep(0.1);
			END LOOP; END \$\$" >/dev/null
	done
}

# A timed SQL statement on port $1: prints its seconds.
timed() {
	local t0 t1
	t0=$(date +%s.%N); q "$1" -c "$2" >/dev/null; t1=$(date +%s.%N)
	secs "$t0" "$t1"
}

# One load window on node_a: pgbench for SECS seconds and heartbeats
# numbered from $2; with $3 = diff, diffs of t one after another
# meanwhile, with $3 = paced, paced ones.  Prints "tps p50_ms p99_ms
# diffs seconds_of_the_first_diff".
window() {
	local A=$1 from=$2 mode=$3 B=$4 pid hb out tps diffs=0 lag pace first=-
	cat >"$WORK/update.sql" <<EOF
\set k random(1, $ROWS)
UPDATE t SET n = n + 1 WHERE id = :k;
EOF
	chown postgres: "$WORK/update.sql" 2>/dev/null || true
	as_pg "$BINDIR/pgbench" -n -h "$SOCK" -p "$A" -U postgres -c "$CLIENTS" -j "$THREADS" \
		-T "$SECS" -f "$WORK/update.sql" bench >"$WORK/pgbench.out" 2>&1 &
	pid=$!
	q "$A" -c "DO \$\$ BEGIN
		FOR i IN $from .. $from + $SECS * 10 - 1 LOOP
			INSERT INTO hb VALUES (i, clock_timestamp());
			COMMIT;
			PERFORM pg_sleep(0.1);
		END LOOP; END \$\$" >/dev/null &
	hb=$!
	if [[ $mode != none ]]; then
		pace="SET concord.diff_cost_delay = 0;"
		[[ $mode == paced ]] &&
			pace="SET concord.diff_cost_delay = $PACE_DELAY; SET concord.diff_cost_limit = $PACE_LIMIT;"
		while kill -0 "$pid" 2>/dev/null; do
			out=$(q "$A" <<EOF
$pace
SELECT concord.table_diff('t', timeout => '1 hour') AS run \\gset
SELECT concord.wait_for_diff(:run) AS status \\gset
SELECT round(seconds::numeric, 1) FROM concord.diff_run WHERE run_id = :run;
EOF
)
			[[ $first == - ]] && first=$(tail -n1 <<<"$out")
			diffs=$((diffs + 1))
		done
	fi
	wait "$pid" || { cat "$WORK/pgbench.out" >&2; exit 1; }
	wait "$hb"
	tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$WORK/pgbench.out")
	q "$B" -c "DO \$\$ BEGIN
		FOR i IN 1 .. $TIMEOUT * 10 LOOP
			EXIT WHEN (SELECT count(*) FROM hb WHERE id >= $from AND id < $from + $SECS * 10) = $SECS * 10;
			PERFORM pg_sleep(0.1);
		END LOOP; END \$\$" >/dev/null
	lag=$(q "$B" -c "SELECT round(1000 * extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY seen - at)))::int
		|| ' ' || round(1000 * extract(epoch FROM percentile_cont(0.99) WITHIN GROUP (ORDER BY seen - at)))::int
		FROM hb WHERE id >= $from AND id < $from + $SECS * 10")
	printf '%.0f %s %s %s\n' "$tps" "$lag" "$diffs" "$first"
}

bench_round() {
	local pre=r${ROUND}_ A B c d t run secs_ bytes w0 w1
	log "== round $ROUND =="
	setup "$pre"
	A=${PORT[${pre}node_a]}; B=${PORT[${pre}node_b]}
	checkpoint "$A" "$B" "${PORT[${pre}node_c]}"
	q "$A" -c "SELECT count(*) FROM t" >/dev/null		# warm the cache
	c=$(timed "$A" "SELECT count(*) FROM t")
	d=$(timed "$A" "SELECT count(*) FROM concord.table_digest('t', NULL, 32768)")
	run=$(q "$A" -c "SELECT concord.table_diff('t')")
	q "$A" -c "SELECT concord.wait_for_diff($run)" >/dev/null
	read -r t secs_ bytes <<<"$(q "$A" -F ' ' -c "SELECT status, round(seconds::numeric, 2), bytes_received FROM concord.diff_run WHERE run_id = $run")"
	[[ $t == clean ]] || log "  *** the diff of the idle mesh ended $t ***"
	put count "$c"; put digest "$d"; put diff "$secs_"; put bytes "$bytes"
	put nsrow "$(awk -v d="$d" -v r="$ROWS" 'BEGIN { printf "%.0f", d * 1e9 / r }')"
	log "  count(*) ${c}s, one node's digest ${d}s, diff of 3 nodes ${secs_}s, $bytes bytes received"
	# the windows without diffs come first and last: TPS drifts down as the
	# UPDATEs add dead rows, so the base of a round is the mean of the two
	read -r w0 <<<"$(window "$A" 0 none "$B")"
	read -r w2 <<<"$(window "$A" 200000 paced "$B")"
	read -r w1 <<<"$(window "$A" 100000 diff "$B")"
	read -r w3 <<<"$(window "$A" 300000 none "$B")"
	read -r t p50 p99 _ <<<"$w0"; read -r t3 _ <<<"$w3"
	log "  without diffs: $t and $t3 TPS, heartbeat lag p50 ${p50} ms p99 ${p99} ms"
	t=$(( (t + t3) / 2 )); put tps0 "$t"; put lag50_0 "$p50"; put lag99_0 "$p99"; base=$t
	read -r t p50 p99 n f <<<"$w1"; put tps1 "$t"; put lag50_1 "$p50"; put lag99_1 "$p99"; put load1 "$f"
	put drop1 "$(drop "$t" "$base")"
	log "  with diffs ($n runs, the first ${f}s): $t TPS ($(drop "$t" "$base") % less), heartbeat lag p50 ${p50} ms p99 ${p99} ms"
	read -r t p50 p99 n f <<<"$w2"; put tps2 "$t"; put lag50_2 "$p50"; put lag99_2 "$p99"; put load2 "$f"
	put drop2 "$(drop "$t" "$base")"
	log "  with paced diffs ($n runs, the first ${f}s): $t TPS ($(drop "$t" "$base") % less), heartbeat lag p50 ${p50} ms p99 ${p99} ms"
	stop_clusters "${pre}node_c" "${pre}node_b" "${pre}node_a"
}

log "diff benchmark: $ROWS rows on 3 nodes, $CLIENTS clients for ${SECS}s per window;" \
	"$($BINDIR/postgres --version); $CORES cores; dir $WORK"
START=$SECONDS
for ((ROUND = 1; ROUND <= REPEAT; ROUND++)); do bench_round; done
echo
echo "Results: $ROWS rows, 3 nodes; medians of $REPEAT round(s)"
printf '%-44s | %s\n' measure value
printf '%s\n' "---------------------------------------------+------------"
printf '%-44s | %s\n' "SELECT count(*) s" "$(fmt count)" \
	"one node's table_digest s" "$(fmt digest)" \
	"table_digest ns per row" "$(fmt nsrow)" \
	"table_diff of 3 nodes s (idle)" "$(fmt diff)" \
	"bytes received by the diff" "$(fmt bytes)" \
	"TPS without diffs (mean of before, after)" "$(fmt tps0)" \
	"TPS with diffs running" "$(fmt tps1)" \
	"table_diff s under that load" "$(fmt load1)" \
	"TPS with paced diffs running" "$(fmt tps2)" \
	"paced table_diff s under that load" "$(fmt load2)" \
	"lag p50 / p99 ms without diffs" "$(fmt lag50_0) / $(fmt lag99_0)" \
	"lag p50 / p99 ms with diffs" "$(fmt lag50_1) / $(fmt lag99_1)" \
	"lag p50 / p99 ms with paced diffs" "$(fmt lag50_2) / $(fmt lag99_2)"
a=$(fmt digest); b=$(fmt count)
[[ $a =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]] &&
	echo "digest / count(*) time ratio: $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", a / b }')"
echo "TPS drop while diffing at full speed: $(fmt drop1) % (median of the rounds' drops)"
echo "TPS drop while diffing paced ($PACE_DELAY ms per $PACE_LIMIT rows): $(fmt drop2) % (median of the rounds' drops; target: under 10 %)"
echo "total time: $((SECONDS - START))s"
