#!/usr/bin/env bash
# bench/sync_latency.sh - commit latency with a synchronous logical peer,
# measured in one run for PostgreSQL's built-in logical replication and
# concord. A benchmark, not a test: it prints figures and never fails on
# them.
#
# Usage (as root; the servers run as the `postgres` OS user):
#
#   bench/sync_latency.sh                         # ~90 s per round
#   BENCH_SECONDS=30 BENCH_REPEAT=3 bench/sync_latency.sh
#
# Environment: BENCH_SECONDS (pgbench run per case, default 10),
# BENCH_REPEAT (rounds, default 1), BENCH_SYSTEMS (any of "builtin
# concord"), BENCH_CLIENT_COUNTS (default "1 8"), BENCH_MODES (default
# "on remote_apply"), and BENCH_TIMEOUT, BENCH_KEEP, BENCH_PORT, PG_CONFIG
# as for bench/replication.sh.
#
# Per system and round, two fresh clusters: a provider and a subscriber
# whose subscription is named sync_peer (its apply worker's
# application_name), with synchronous_standby_names = 'sync_peer' on the
# provider. pgbench then commits single-row INSERTs on the provider for
# BENCH_SECONDS per case (clients x synchronous_commit mode), logging each
# transaction's latency; the table gives the median and 99th percentile
# (ms) and the rate, medians over the rounds.
set -euo pipefail

SECS=${BENCH_SECONDS:-10}
SYSTEMS=${BENCH_SYSTEMS:-builtin concord}
REPEAT=${BENCH_REPEAT:-1}
CLIENT_COUNTS=${BENCH_CLIENT_COUNTS:-1 8}
MODES=${BENCH_MODES:-on remote_apply}
[[ $REPEAT =~ ^[1-9][0-9]*$ && $SECS =~ ^[1-9][0-9]*$ ]] ||
	{ echo "BENCH_REPEAT and BENCH_SECONDS must be positive integers" >&2; exit 2; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for s in $SYSTEMS; do
	case $s in builtin|concord) ;; *) echo "unknown system in BENCH_SYSTEMS: $s" >&2; exit 2;; esac
done
for m in $MODES; do
	case $m in on|remote_write|remote_apply) ;; *) echo "unknown mode in BENCH_MODES: $m" >&2; exit 2;; esac
done
bench_init

put() { RES[$1]="${RES[$1]:+${RES[$1]} }$2"; }

# wait_true PORT SQL: polls until SQL returns t, for BENCH_TIMEOUT at most.
wait_true() {
	local port=$1 sql=$2 i
	for ((i = 0; i < TIMEOUT * 10; i++)); do
		[[ $(q "$port" -c "$sql") == t ]] && return 0
		sleep 0.1
	done
	return 1
}

setup() {
	local sys=$1 pre=$2 P S
	start_cluster "${pre}prov"
	start_cluster "${pre}sub"
	P=${PORT[${pre}prov]}; S=${PORT[${pre}sub]}
	for port in "$P" "$S"; do
		q "$port" -c "CREATE TABLE t (id bigserial PRIMARY KEY, v text NOT NULL)"
	done
	case $sys in
	builtin)
		q "$P" -c "CREATE PUBLICATION bench_pub FOR TABLE t"
		q "$S" -c "SET client_min_messages = warning" \
			-c "CREATE SUBSCRIPTION sync_peer CONNECTION '$(dsn "$P")' PUBLICATION bench_pub WITH (copy_data = false)"
		;;
	concord)
		for port in "$P" "$S"; do
			q "$port" -c "CREATE EXTENSION concord" \
				-c "SELECT concord.create_node('n$port', '$(dsn "$port")')" \
				-c "SELECT concord.replication_set_add_table('default', 't')" >/dev/null
		done
		q "$S" -c "SELECT concord.create_subscription('sync_peer', '$(dsn "$P")', synchronize_data := false)" >/dev/null
		;;
	esac
	q "$P" -c "ALTER SYSTEM SET synchronous_standby_names = 'sync_peer'" -c "SELECT pg_reload_conf()" >/dev/null
	wait_true "$P" "SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = 'sync_peer'" \
		|| { log "*** $sys: sync_peer did not become a synchronous standby"; return 1; }
}

# latency PORT MODE CLIENTS TAG: runs pgbench; records p50, p99 (ms), tps.
latency() {
	local port=$1 mode=$2 clients=$3 tag=$4 out tps
	local threads=$((clients < CORES ? clients : CORES))
	printf "INSERT INTO t (v) VALUES ('x');\n" >"$WORK/insert.sql"
	rm -f "$WORK"/lat.*
	out=$(cd "$WORK" && as_pg env PGOPTIONS="-c synchronous_commit=$mode" "$BINDIR/pgbench" -n \
		-h "$SOCK" -p "$port" -U postgres -c "$clients" -j "$threads" -T "$SECS" \
		-f "$WORK/insert.sql" -l --log-prefix=lat bench 2>&1) || { echo "$out" >&2; return 1; }
	tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' <<<"$out")
	# pgbench's log: client, transaction, latency (us), ...
	read -r p50 p99 < <(cat "$WORK"/lat.* | awk '{ print $3 / 1000 }' | sort -g |
		awk '{ v[NR] = $1 } END { i50 = int(NR * 0.50); i99 = int(NR * 0.99);
			if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1;
			printf "%.3f %.3f\n", v[i50], v[i99] }')
	put "$tag|p50" "$p50"; put "$tag|p99" "$p99"; put "$tag|tps" "$(printf '%.0f' "$tps")"
	log "  $tag: p50 ${p50} ms, p99 ${p99} ms, ${tps%.*} commits/s"
}

bench_system() {
	local sys=$1 pre=${1}_r${ROUND}_ P m c
	log "== $sys, round $ROUND =="
	setup "$sys" "$pre" || { stop_clusters "${pre}sub" "${pre}prov"; return 0; }
	P=${PORT[${pre}prov]}
	for m in $MODES; do
		for c in $CLIENT_COUNTS; do
			latency "$P" "$m" "$c" "$sys|$m|$c"
		done
	done
	a=$(q "$P" -c "SELECT count(*) FROM t")
	wait_true "${PORT[${pre}sub]}" "SELECT count(*) = $a FROM t" \
		&& log "  verify: the subscriber has the provider's $a rows" \
		|| { log "  *** MISMATCH *** the subscriber lacks rows"; RES[mismatch]=1; }
	stop_clusters "${pre}sub" "${pre}prov"
}


log "synchronous commit latency: single-row INSERTs, ${SECS}s per case;" \
	"$($BINDIR/postgres --version); $CORES cores; dir $WORK"
START=$SECONDS
for ((ROUND = 1; ROUND <= REPEAT; ROUND++)); do
	for s in $SYSTEMS; do bench_system "$s"; done
done
echo
echo "Results: commit latency on the provider with one synchronous logical peer; medians of $REPEAT round(s)"
printf '%-8s | %-12s | %7s | %9s | %9s | %9s\n' system mode clients "p50 ms" "p99 ms" commits/s
printf '%s\n' "---------+--------------+---------+-----------+-----------+----------"
for m in $MODES; do
	for c in $CLIENT_COUNTS; do
		for s in builtin concord; do
			[[ -n ${RES[$s|$m|$c|p50]:-} ]] || continue
			printf '%-8s | %-12s | %7s | %9s | %9s | %9s\n' "$s" "$m" "$c" \
				"$(fmt "$s|$m|$c|p50")" "$(fmt "$s|$m|$c|p99")" "$(fmt "$s|$m|$c|tps")"
		done
		a=$(fmt "concord|$m|$c|p50"); b=$(fmt "builtin|$m|$c|p50")
		[[ $a =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]] &&
			echo "  concord/builtin p50 latency, $m, $c client(s): $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }') (lower is better)"
	done
done
[[ ${RES[mismatch]:-0} -eq 0 ]] || echo "*** MISMATCH: see above ***"
echo "total time: $((SECONDS - START))s"
