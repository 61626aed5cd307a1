# shellcheck shell=bash disable=SC2034  # settings used by the sourcing scripts
# bench/lib.sh - what the benchmarks share: settings from the environment,
# throw-away clusters run as the `postgres` OS user on unix sockets, pgbench,
# verification, and the timed catch-up of a disabled subscription.
# Sourced, not run, by bench/replication.sh and bench/conflicts.sh:
#
#   set -euo pipefail
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # reads BENCH_*, defines functions
#   ...check the script's own settings...
#   bench_init                                  # temporary directory, exit trap
#
# Environment (see docs/benchmarks.md): BENCH_ROWS, BENCH_CLIENTS, BENCH_PAYLOAD,
# BENCH_TIMEOUT, BENCH_KEEP, BENCH_PORT, PG_CONFIG.

ROWS=${BENCH_ROWS:-50000}
CLIENTS=${BENCH_CLIENTS:-4}
PAYLOAD=${BENCH_PAYLOAD:-100}
TIMEOUT=${BENCH_TIMEOUT:-600}
KEEP=${BENCH_KEEP:-0}
NEXT_PORT=${BENCH_PORT:-56432}
PG_CONFIG=${PG_CONFIG:-pg_config}
BENCH_SCRIPT=bench/$(basename "$0")

for v in ROWS CLIENTS PAYLOAD TIMEOUT NEXT_PORT; do
	[[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || { echo "$v must be a positive integer" >&2; exit 2; }
done

BINDIR=$("$PG_CONFIG" --bindir)
PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)
for lib in concord pglogical; do
	[[ -f "$PKGLIBDIR/$lib.so" ]] || { echo "$PKGLIBDIR/$lib.so is missing: install it first" >&2; exit 2; }
done

CORES=$(nproc)
THREADS=$((CLIENTS < CORES ? CLIENTS : CORES))
PER_CLIENT=$(((ROWS + CLIENTS - 1) / CLIENTS))
NTOT=$((PER_CLIENT * CLIENTS))		# rows per workload run

declare -A PORT=()		# cluster name -> port
RUNNING=()				# clusters started and not yet stopped
declare -A RES=()		# "system|workload|column" -> figure

# Creates the temporary directory (WORK, sockets in SOCK), makes it the
# current directory, and stops the clusters / removes it at exit.
bench_init() {
	WORK=$(mktemp -d /tmp/concord-bench.XXXXXX)
	SOCK=$WORK/sock
	mkdir -p "$SOCK"
	[[ $(id -u) -eq 0 ]] && chown -R postgres: "$WORK"
	cd "$WORK" || exit 1
	trap cleanup EXIT
	trap 'exit 130' INT TERM
}

as_pg() {
	if [[ $(id -u) -eq 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

cleanup() {
	local rc=$? c
	for c in "${RUNNING[@]}"; do
		as_pg "$BINDIR/pg_ctl" -D "$WORK/$c" -m immediate -w stop >/dev/null 2>&1 || true
	done
	if [[ $KEEP == 1 || $rc -ne 0 ]]; then
		echo "bench directory kept: $WORK" >&2
	else
		rm -rf -- "$WORK"
	fi
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

port_busy() {
	[[ -e "$SOCK/.s.PGSQL.$1" ]] || (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# psql on cluster port $1, database bench; further arguments go to psql.
q() {
	local port=$1; shift
	as_pg "$BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SOCK" -p "$port" \
		-U postgres -d bench "$@"
}

dsn() { echo "host=$SOCK port=$1 dbname=bench user=postgres"; }

start_cluster() {
	local name=$1 dir=$WORK/$1 port
	while port_busy "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
	port=$NEXT_PORT; NEXT_PORT=$((NEXT_PORT + 1))
	as_pg "$BINDIR/initdb" -D "$dir" -A trust -U postgres --no-sync >"$WORK/$name.initdb.log" 2>&1 \
		|| { cat "$WORK/$name.initdb.log" >&2; exit 1; }
	cat >>"$dir/postgresql.conf" <<EOF

# $BENCH_SCRIPT
listen_addresses = ''
port = $port
unix_socket_directories = '$SOCK'
shared_preload_libraries = 'concord, pglogical'
wal_level = logical
track_commit_timestamp = on
output_plugin_libraries = 'pgoutput, concord, pglogical_output'
max_worker_processes = 20
max_replication_slots = 10
max_wal_senders = 10
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
# The built-in launcher starts an apply worker at most once per this
# interval (default 5s); at 5s an ENABLE shortly after a previous start
# would count up to 5s of throttling as catch-up time.
wal_retrieve_retry_interval = 100ms
# The benchmark vacuums its tables itself before each update workload; an
# autovacuum run landing in one system's timed catch-up (on a 2-core
# machine, right after a checkpoint: a full-page image per page) would
# slow that system alone.
autovacuum = off
EOF
	as_pg "$BINDIR/pg_ctl" -D "$dir" -l "$WORK/$name.log" -w -t 60 start >/dev/null \
		|| { tail -20 "$WORK/$name.log" >&2; exit 1; }
	RUNNING+=("$name")
	PORT[$name]=$port
	as_pg "$BINDIR/createdb" -h "$SOCK" -p "$port" -U postgres bench
}

# Stop clusters (in the order given: subscribers first, so that no
# "stream ended" errors are provoked), report the ERROR/FATAL/PANIC/WARNING
# lines each log got before the shutdown, remove their data directories.
stop_clusters() {
	local name c keep n lines
	declare -A upto=()
	for name in "$@"; do upto[$name]=$(wc -l <"$WORK/$name.log"); done
	for name in "$@"; do
		as_pg "$BINDIR/pg_ctl" -D "$WORK/$name" -m fast -w stop >/dev/null || true
		keep=()
		for c in "${RUNNING[@]}"; do [[ $c == "$name" ]] || keep+=("$c"); done
		RUNNING=("${keep[@]+"${keep[@]}"}")
	done
	for name in "$@"; do
		lines=$(head -n "${upto[$name]}" "$WORK/$name.log" | grep -E ' (ERROR|FATAL|PANIC|WARNING): ' || true)
		if [[ -n $lines ]]; then
			n=$(wc -l <<<"$lines")
			log "  $name: $n ERROR/FATAL/PANIC/WARNING line(s) in its log during the run; the first ones:"
			head -8 <<<"$lines" | sed 's/^/      /'
		fi
		rm -rf -- "${WORK:?}/$name"
	done
}

# pgbench on port $1 with script $2 (further arguments go to pgbench),
# PER_CLIENT transactions per client (PGB_PER_CLIENT if set) from CLIENTS
# clients (PGB_CLIENTS if set); prints the
# TPS (without connection time).
run_pgbench() {
	local port=$1 script=$2 out tps processed per=${PGB_PER_CLIENT:-$PER_CLIENT} clients=${PGB_CLIENTS:-$CLIENTS}
	shift 2
	out=$(as_pg "$BINDIR/pgbench" -n -h "$SOCK" -p "$port" -U postgres -c "$clients" -j "$THREADS" \
		-t "$per" -f "$script" "$@" bench 2>&1) || { echo "$out" >&2; return 1; }
	tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' <<<"$out")
	processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
	if [[ -z $tps || $processed != "$((per * clients))" ]]; then
		echo "pgbench did not finish its $((per * clients)) transactions:" >&2; echo "$out" >&2; return 1
	fi
	printf '%.0f\n' "$tps"
}

checkpoint() { local p; for p in "$@"; do q "$p" -c "CHECKPOINT"; done; }

# concord_mesh PREFIX NODE...: every concord node PREFIX<NODE> subscribes
# to every other one (<node>_from_<other>), without a copy.
concord_mesh() {
	local pre=$1 n m
	shift
	for n in "$@"; do
		for m in "$@"; do
			[[ $n == "$m" ]] && continue
			q "${PORT[$pre$n]}" -c "SELECT concord.create_subscription('${n}_from_$m',
				'$(dsn "${PORT[$pre$m]}")', synchronize_data := false)" >/dev/null
		done
	done
}

checksum() {
	q "$1" -c "SELECT count(*) || ' rows, sum(n) ' || coalesce(sum(n), 0) || ', md5 '
		|| md5(coalesce(string_agg(id || ':' || n || ':' || payload, ',' ORDER BY id), ''))
		FROM $2"
}

# verify LABEL PROVIDER_PORT SUBSCRIBER_PORT TABLE
verify() {
	local a b
	a=$(checksum "$2" "$4"); b=$(checksum "$3" "$4")
	if [[ $a == "$b" ]]; then
		log "  verify $1: OK ($a)"
	else
		log "  *** MISMATCH *** $1: provider $a / subscriber $b"
		RES[mismatch]=$(( ${RES[mismatch]:-0} + 1 ))
	fi
}

# Wait until no replication slot on port $1 is active (walsenders gone).
wait_slots_inactive() {
	local port=$1 i
	for ((i = 0; i < TIMEOUT * 20; i++)); do
		[[ $(q "$port" -c "SELECT count(*) FROM pg_replication_slots WHERE active") == 0 ]] && return 0
		sleep 0.05
	done
	log "  slots on port $port still active after ${TIMEOUT}s"; return 1
}

# Provider LSN after a workload, followed by a one-row marker transaction.
mark_lsn() {
	local lsn
	lsn=$(q "$1" -c "SELECT pg_current_wal_lsn()")
	q "$1" -c "INSERT INTO bench_marker DEFAULT VALUES"
	echo "$lsn"
}

# --- per-system SQL -------------------------------------------------------

enable_sql() {
	case $1 in
	builtin) echo "ALTER SUBSCRIPTION $2 ENABLE;" ;;
	pglogical) echo "SELECT pglogical.alter_subscription_enable('$2', true) \\gset x_" ;;
	concord*) echo "SELECT concord.alter_subscription_enable('$2') \\gset x_" ;;
	esac
}

disable_sql() {
	case $1 in
	builtin) echo "ALTER SUBSCRIPTION $2 DISABLE" ;;
	pglogical) echo "SELECT pglogical.alter_subscription_disable('$2', true)" ;;
	concord*) echo "SELECT concord.alter_subscription_disable('$2')" ;;
	esac
}

# SQL expression, true once subscription $2 has applied up to LSN $3.
wait_expr() {
	case $1 in
	builtin|pglogical) echo "CALL bench_wait_origin('$ORIGIN', '$3', $TIMEOUT)" ;;
	concord*) echo "CALL bench_wait_concord('$2', '$3', $TIMEOUT)" ;;
	esac
}

# On the subscriber (port $2) in one session: enable subscription $3, wait
# for LSN $4; prints "SECONDS OK ROWS SUM_N", the last two read from table
# $5 right after the wait returned (to check that the wait did not return
# before the data was visible).
timed_catchup() {
	local sys=$1 port=$2 sub=$3 lsn=$4 tbl=$5 perf_pid= perf_data
	perf_data="$WORK/perf-$sys-$tbl-$port-$(date +%H%M%S).data"
	case ${BENCH_PERF:-0} in
	1) perf record -F 1999 -g -a -o "$perf_data" >/dev/null 2>&1 & perf_pid=$! ;;
	# Call chains through code built without frame pointers (the server).
	dwarf) perf record -F 499 --call-graph dwarf,32768 -a -o "$perf_data" >/dev/null 2>&1 & perf_pid=$! ;;
	esac
	q "$port" <<EOF | sed -n 's/^RESULT //p'
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
$(enable_sql "$sys" "$sub")
$(wait_expr "$sys" "$sub" "$lsn") \gset
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3) AS secs \gset
SELECT 'RESULT ' || :'secs' || ' ' || :'ok' || ' ' || count(*) || ' ' || coalesce(sum(n), 0) FROM $tbl;
EOF
	if [[ -n $perf_pid ]]; then
		kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
		perf_report "$sys" "$port" "$perf_data" >&2
	fi
}

# BENCH_PERF=1 (or dwarf): the hottest symbols of the apply worker during a
# catch-up (perf record of every CPU, reported for the worker's process
# only; the data file stays in the bench directory with BENCH_KEEP=1).
perf_report() {
	local sys=$1 port=$2 data=$3 pid
	pid=$(q "$port" -c "SELECT pid FROM pg_stat_activity WHERE backend_type IN ('concord apply', 'logical replication worker') OR backend_type LIKE 'pglogical apply%' LIMIT 1")
	[[ -n $pid ]] || { log "  perf: no apply worker found on port $port"; return 0; }
	log "  perf: $sys apply worker (pid $pid), self time by symbol, top 40 ($data)"
	perf report -i "$data" --pid="$pid" --no-children --percentage relative --sort dso,symbol \
		--stdio 2>/dev/null | awk '/^ +[0-9]+\.[0-9]+%/ && n++ < 40' || true
}

# "KIND N.NN s": the CPU time (user + system) the apply worker (KIND apply,
# on the subscriber at port $1) or the walsender (KIND walsender, on the
# provider) has used since it started.  Both start at "enable", so after a
# timed catch-up this is the CPU the catch-up cost each side.
process_cpu() {
	local port=$1 kind=$2 pid ticks p
	# apply: concord's leader and its workers together
	if [[ $kind == apply ]]; then
		pid=$(q "$port" -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type IN ('concord apply', 'concord apply worker', 'logical replication worker') OR backend_type LIKE 'pglogical apply%'")
	else
		pid=$(q "$port" -c "SELECT pid FROM pg_stat_replication LIMIT 1")
	fi
	ticks=0
	for p in $pid; do
		[[ -r /proc/$p/stat ]] || continue
		# Fields 14 and 15 (utime, stime), after the parenthesised command name.
		ticks=$((ticks + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
	done
	if [[ -z $pid ]]; then
		echo "$kind ?"
		return 0
	fi
	awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v k="$kind" 'BEGIN { printf "%s %.2f s", k, t / hz }'
}

# Check the "ROWS SUM_N" seen right after a wait against the provider ($1).
check_seen() {
	local port=$1 tbl=$2 seen=$3 label=$4 want
	want=$(q "$port" -c "SELECT count(*) || ' ' || coalesce(sum(n), 0) FROM $tbl")
	if [[ $seen != "$want" ]]; then
		log "  *** MISMATCH *** $label: the wait returned when the subscriber had (rows, sum(n)) = ($seen), provider ($want)"
		RES[mismatch]=$(( ${RES[mismatch]:-0} + 1 ))
	fi
}

# Untimed wait on the subscriber; prints seconds waited.
drain() {
	local sys=$1 port=$2 sub=$3 lsn=$4
	q "$port" <<EOF | sed -n 's/^RESULT //p'
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
$(wait_expr "$sys" "$sub" "$lsn") \gset
SELECT 'RESULT ' || round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3) || ' ' || :'ok';
EOF
}

# The waits are procedures that commit between their polls: a wait that
# held one snapshot for the whole catch-up would hold back the xmin horizon,
# so that the subscriber could not prune the row versions the catch-up
# leaves behind (no HOT updates, twice the WAL), which distorts the figures.
WAIT_ORIGIN_FN="CREATE PROCEDURE bench_wait_origin(origin text, target pg_lsn, timeout_s float8,
	INOUT ok boolean DEFAULT NULL)
LANGUAGE plpgsql AS \$\$
DECLARE
	deadline timestamptz := clock_timestamp() + make_interval(secs => timeout_s);
BEGIN
	LOOP
		IF (SELECT remote_lsn FROM pg_replication_origin_status WHERE external_id = origin) >= target THEN
			ok := true;
			RETURN;
		END IF;
		IF clock_timestamp() > deadline THEN
			ok := false;
			RETURN;
		END IF;
		COMMIT;
		PERFORM pg_sleep(0.01);
	END LOOP;
END \$\$"

# concord.wait_for_apply sleeps 100 ms between its checks; asking it with a
# zero timeout every 10 ms gives concord the same poll granularity as the
# origin poll used for the other two.
WAIT_CONCORD_FN="CREATE PROCEDURE bench_wait_concord(sub name, target pg_lsn, timeout_s float8,
	INOUT ok boolean DEFAULT NULL)
LANGUAGE plpgsql AS \$\$
DECLARE
	deadline timestamptz := clock_timestamp() + make_interval(secs => timeout_s);
BEGIN
	LOOP
		IF concord.wait_for_apply(sub, target, '0s') THEN
			ok := true;
			RETURN;
		END IF;
		IF clock_timestamp() > deadline THEN
			ok := false;
			RETURN;
		END IF;
		COMMIT;
		PERFORM pg_sleep(0.01);
	END LOOP;
END \$\$"

# A result holds one value per round (RES[key], space-separated); the
# tables show their median: median LIST, or the list itself when one of
# them is not a number (a timeout); fmt KEY, "-" when there is none.
median() {
	local v
	for v in $1; do [[ $v =~ ^[0-9.]+$ ]] || { echo "$1"; return 0; }; done
	tr ' ' '\n' <<<"$1" | sort -g | awk '{ v[NR] = $1 }
		END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m }'
}
fmt() { local v; v=$(median "${RES[$1]:-}"); echo "${v:--}"; }
