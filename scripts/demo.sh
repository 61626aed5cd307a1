#!/usr/bin/env bash
# Start a three-node concord multi-leader mesh on this machine and leave it
# running.
#
#   scripts/demo.sh          start node1..node3 (stops a previous demo first)
#   scripts/demo.sh stop     stop the demo and remove its directory
#   scripts/demo.sh status   show where the demo runs and its subscriptions
#
# What `start` does:
#   1. initdb and start node1..node3, each with database concord_demo, the
#      concord extension and a concord node;
#   2. create public.demo_table on every node and add it to replication set
#      'default';
#   3. subscribe every node to each of the two others (a full mesh:
#      forward_origins '{}', synchronize_data false as the tables start empty);
#   4. wait until all six subscriptions are replicating;
#   5. write rows on every node, then update on every node a row written on
#      another one, waiting with concord.wait_for_apply for each change to
#      reach every node;
#   6. show that the three tables are identical.
# A failing step stops the script with a non-zero status and the tail of the
# server logs; the nodes are left running for inspection (`stop` removes them).
#
# Environment:
#   CONCORD_DEMO_PORTS   three ports, e.g. "6001 6002 6003" (default: the
#                        first free ports from 5441 on)
#   CONCORD_DEMO_STATE   file remembering the demo directory
#                        (default /tmp/concord-demo.dir)
#   CONCORD_DEMO_TIMEOUT seconds to wait for replication (default 60)
#
# Servers run as the `postgres` OS user (initdb refuses root) and listen on
# 127.0.0.1 only, with trust authentication: this is a demo, not a deployment.
set -euo pipefail

PG_CONFIG=${PG_CONFIG:-pg_config}
BINDIR=$("$PG_CONFIG" --bindir)
STATE=${CONCORD_DEMO_STATE:-/tmp/concord-demo.dir}
TIMEOUT=${CONCORD_DEMO_TIMEOUT:-60}
DB=concord_demo
NODES=(node1 node2 node3)
DIR=
STEP=
STEP_NO=0
STEPS=6

# Run a command as the postgres OS user (directly when we already are not root).
as_pg() {
	if [[ $(id -u) -eq 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# psql on one node: psql_node PORT SQL...
psql_node() {
	local port=$1; shift
	as_pg "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" \
		-U postgres -d "$DB" "$@"
}

# One value from one node: sql_value PORT SQL
sql_value() {
	psql_node "$1" -At -c "$2"
}

port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Print a step heading; the failure report names the step that failed.
step() {
	STEP_NO=$((STEP_NO + 1))
	STEP=$*
	echo
	echo "== [$STEP_NO/$STEPS] $* =="
}

die() {
	echo "ERROR: $*" >&2
	exit 1
}

# EXIT trap of `start`: on failure, say which step failed and show the end
# of every server log.
on_exit() {
	local rc=$?
	[[ $rc -ne 0 ]] || return 0
	{
		echo
		echo "FAILED (exit status $rc) during step: ${STEP:-preparation}"
		if [[ -n "$DIR" ]]; then
			local n log
			for n in "${NODES[@]}"; do
				log="$DIR/$n.log"
				[[ -f "$log" ]] || log="$DIR/$n.initdb.log"
				[[ -f "$log" ]] || continue
				echo
				echo "--- last 25 lines of $log ---"
				tail -n 25 "$log"
			done
			echo
			echo "The nodes are left running in $DIR for inspection;"
			echo "stop them and remove the directory with: $0 stop"
		fi
	} >&2
	exit "$rc"
}

# Stop the demo recorded in $STATE, if any, and remove its directory.
stop_demo() {
	local dir n
	[[ -f "$STATE" ]] || { echo "no concord demo is recorded in $STATE"; return 0; }
	dir=$(cat "$STATE")
	for n in "${NODES[@]}"; do
		if [[ -f "$dir/$n/postmaster.pid" ]]; then
			as_pg "$BINDIR/pg_ctl" -D "$dir/$n" -m fast -w stop >/dev/null || true
			echo "stopped $n"
		fi
	done
	# Only remove what this script created.
	if [[ "$dir" == /tmp/concord-demo.* && -d "$dir" ]]; then
		rm -rf -- "$dir"
	fi
	rm -f -- "$STATE"
	echo "concord demo stopped"
}

status_demo() {
	[[ -f "$STATE" ]] || { echo "no concord demo is running"; return 0; }
	local dir n port; dir=$(cat "$STATE")
	echo "concord demo directory: $dir"
	for n in "${NODES[@]}"; do
		as_pg "$BINDIR/pg_ctl" -D "$dir/$n" status | head -1 | sed "s/^/$n: /" || true
		# line 4 of postmaster.pid is the port
		port=$(sed -n 4p "$dir/$n/postmaster.pid" 2>/dev/null || true)
		[[ -n "$port" ]] || continue
		echo "$n: port $port, subscriptions:"
		psql_node "$port" -At -F ' ' -c \
			"SELECT '  ' || subscription_name, status, coalesce('lag ' || lag_bytes || ' bytes', ''),
			        coalesce('last error: ' || last_error, '')
			   FROM concord.subscription_status ORDER BY 1" 2>/dev/null || true
	done
}

# Choose three free ports (or take them from CONCORD_DEMO_PORTS).
choose_ports() {
	PORTS=()
	if [[ -n "${CONCORD_DEMO_PORTS:-}" ]]; then
		read -r -a PORTS <<<"$CONCORD_DEMO_PORTS"
		[[ ${#PORTS[@]} -eq 3 ]] || die "CONCORD_DEMO_PORTS needs three ports"
		for p in "${PORTS[@]}"; do
			[[ $p =~ ^[0-9]+$ ]] || die "CONCORD_DEMO_PORTS: \"$p\" is not a port number"
			if port_in_use "$p"; then die "port $p is in use"; fi
		done
		return 0
	fi
	local p=5441
	while [[ ${#PORTS[@]} -lt 3 ]]; do
		[[ $p -lt 5541 ]] || die "no free port in 5441-5540"
		port_in_use "$p" || PORTS+=("$p")
		p=$((p + 1))
	done
}

# initdb one node and write its configuration: init_node NAME PORT
init_node() {
	local name=$1 port=$2 data="$DIR/$1"
	as_pg "$BINDIR/initdb" -D "$data" -A trust -U postgres -E UTF8 --no-locale \
		>"$DIR/$name.initdb.log"
	cat >>"$data/postgresql.conf" <<CONF

# --- concord demo ---
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
shared_preload_libraries = 'concord'
wal_level = logical
track_commit_timestamp = on
output_plugin_libraries = 'pgoutput, concord'
max_replication_slots = 10
max_wal_senders = 10
max_worker_processes = 20
logging_collector = off
CONF
}

# Wait (bounded) until the concord launcher shows in pg_stat_activity.
wait_for_launcher() {
	local name=$1 port=$2 i
	for ((i = 0; i < 10 * TIMEOUT; i++)); do
		if [[ $(sql_value "$port" \
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'concord launcher'") -ge 1 ]]; then
			return 0
		fi
		# poll interval: block on the server for 100 ms, not in the shell
		sql_value "$port" "SELECT pg_sleep(0.1)" >/dev/null
	done
	die "no 'concord launcher' process on $name after $TIMEOUT s"
}

# Subscription of node $1 to node $2 (indexes into NODES).
sub_name() {
	echo "${NODES[$1]}_from_${NODES[$2]}"
}

# Poll (bounded by $TIMEOUT) until every node's two subscriptions are
# replicating.
wait_replicating() {
	local deadline=$((SECONDS + TIMEOUT)) i ready total last=-1
	while :; do
		total=0
		for i in 0 1 2; do
			ready=$(sql_value "${PORTS[$i]}" \
				"SELECT count(*) FROM concord.subscription_status WHERE status = 'replicating'")
			total=$((total + ready))
		done
		# report progress only when it changes
		[[ $total -eq $last ]] || echo "  $total of 6 subscriptions replicating"
		last=$total
		[[ $total -eq 6 ]] && return 0
		if [[ $SECONDS -ge $deadline ]]; then
			for i in 0 1 2; do
				echo "--- concord.subscription_status on ${NODES[$i]} ---" >&2
				psql_node "${PORTS[$i]}" -P footer=off -c \
					"SELECT subscription_name, status, last_error FROM concord.subscription_status ORDER BY 1" >&2 || true
			done
			die "the subscriptions are not all replicating after $TIMEOUT s"
		fi
		# poll interval: block on the server for 200 ms, not in the shell
		sql_value "${PORTS[0]}" "SELECT pg_sleep(0.2)" >/dev/null
	done
}

# For every subscription: take the provider's current WAL position and wait
# (concord.wait_for_apply) until the subscriber has applied up to it.
wait_for_apply_all() {
	local s p lsn sub ok
	for s in 0 1 2; do
		for p in 0 1 2; do
			[[ $s -ne $p ]] || continue
			sub=$(sub_name "$s" "$p")
			lsn=$(sql_value "${PORTS[$p]}" "SELECT pg_current_wal_lsn()")
			ok=$(sql_value "${PORTS[$s]}" \
				"SELECT concord.wait_for_apply('$sub', '$lsn', '${TIMEOUT}s')")
			[[ $ok == t ]] || die "$sub: ${NODES[$s]} did not apply ${NODES[$p]}'s changes up to $lsn within $TIMEOUT s"
			echo "  $sub: applied ${NODES[$p]}'s changes up to $lsn"
		done
	done
}

start_demo() {
	[[ $(id -u) -eq 0 ]] || id -un | grep -qx postgres \
		|| die "run as root (or as the postgres user)"
	[[ -f "$("$PG_CONFIG" --pkglibdir)/concord.so" ]] \
		|| die "concord is not installed: run scripts/build.sh (or make install) first"
	if [[ -f "$STATE" ]]; then stop_demo; fi

	choose_ports
	trap on_exit EXIT
	DIR=$(mktemp -d /tmp/concord-demo.XXXXXX)
	chmod 755 "$DIR"
	if [[ $(id -u) -eq 0 ]]; then chown postgres: "$DIR"; fi
	echo "$DIR" >"$STATE"

	local i s p name port
	step "Starting three PostgreSQL nodes with the concord extension"
	for i in 0 1 2; do
		name=${NODES[$i]} port=${PORTS[$i]}
		init_node "$name" "$port"
		as_pg "$BINDIR/pg_ctl" -D "$DIR/$name" -l "$DIR/$name.log" -w start >/dev/null
		as_pg "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres \
			-d postgres -c "CREATE DATABASE $DB"
		psql_node "$port" -o /dev/null <<SQL
CREATE EXTENSION concord;
SELECT concord.create_node('$name', 'host=127.0.0.1 port=$port dbname=$DB');
SQL
		wait_for_launcher "$name" "$port"
		echo "  $name: 127.0.0.1:$port, data $DIR/$name, log $DIR/$name.log"
	done

	step "Creating public.demo_table on every node, in replication set 'default'"
	for i in 0 1 2; do
		psql_node "${PORTS[$i]}" -o /dev/null <<'SQL'
CREATE TABLE public.demo_table (
    id         bigint PRIMARY KEY,
    origin     text NOT NULL,
    note       text,
    written_at timestamptz NOT NULL DEFAULT now()
);
SELECT concord.replication_set_add_table('default', 'public.demo_table');
SQL
		echo "  ${NODES[$i]}: demo_table created and added to set 'default'"
	done

	step "Subscribing every node to the two others (full mesh)"
	for s in 0 1 2; do
		for p in 0 1 2; do
			[[ $s -ne $p ]] || continue
			psql_node "${PORTS[$s]}" -o /dev/null -c \
				"SELECT concord.create_subscription('$(sub_name "$s" "$p")',
				    'host=127.0.0.1 port=${PORTS[$p]} dbname=$DB',
				    replication_sets := '{default}',
				    synchronize_data := false,
				    forward_origins := '{}')"
			echo "  ${NODES[$s]}: subscription $(sub_name "$s" "$p") created"
		done
	done

	step "Waiting until all six subscriptions are replicating (at most $TIMEOUT s)"
	wait_replicating

	step "Writing on every node and waiting for the changes to reach the others"
	for i in 0 1 2; do
		name=${NODES[$i]}
		psql_node "${PORTS[$i]}" -o /dev/null <<SQL
INSERT INTO public.demo_table (id, origin, note)
SELECT $(((i + 1) * 1000)) + g, '$name', format('row %s, inserted on $name', g)
  FROM generate_series(1, 3) AS g;
SQL
		echo "  $name: inserted ids $(((i + 1) * 1000 + 1))..$(((i + 1) * 1000 + 3))"
	done
	wait_for_apply_all
	# Each node now updates a row that was written on the next node and has
	# replicated to it.
	for i in 0 1 2; do
		name=${NODES[$i]}
		local id=$((((i + 1) % 3 + 1) * 1000 + 1))
		[[ $(sql_value "${PORTS[$i]}" \
			"WITH u AS (UPDATE public.demo_table
			               SET note = note || ', updated on $name'
			             WHERE id = $id RETURNING 1)
			 SELECT count(*) FROM u") == 1 ]] \
			|| die "$name: row $id (written on another node) is not there to update"
		echo "  $name: updated row $id (written on ${NODES[(i + 1) % 3]})"
	done
	wait_for_apply_all

	step "Comparing the three nodes"
	for i in 0 1 2; do
		echo
		echo "--- public.demo_table on ${NODES[$i]} (port ${PORTS[$i]}) ---"
		psql_node "${PORTS[$i]}" -c \
			"SELECT id, origin, note, written_at FROM public.demo_table ORDER BY id"
	done
	local line first='' same=1
	echo "--- row count and checksum per node ---"
	for i in 0 1 2; do
		# the checksum covers every column (timestamps in UTC)
		line=$(sql_value "${PORTS[$i]}" \
			"SELECT 'rows=' || count(*) || ' checksum=' ||
			        md5(coalesce(string_agg(concat_ws('|', id, origin, note,
			                     written_at AT TIME ZONE 'UTC'), E'\n' ORDER BY id), ''))
			   FROM public.demo_table")
		echo "  ${NODES[$i]}: $line"
		[[ -n "$first" ]] || first=$line
		[[ "$line" == "$first" ]] || same=0
	done
	[[ $same -eq 1 ]] || die "the nodes differ"
	echo "  => all three nodes hold the same 9 rows"
	echo
	echo "--- concord.subscription_status on node1 ---"
	psql_node "${PORTS[0]}" -c \
		"SELECT subscription_name, provider_node, status, slot_name, received_lsn,
		        applied_lsn, lag_bytes, last_error
		   FROM concord.subscription_status ORDER BY subscription_name"

	STEP=
	cat <<EOF

The concord demo is running in $DIR (recorded in $STATE):
a three-node multi-leader mesh, every node subscribed to the two others,
replicating public.demo_table (replication set 'default') in database $DB.

Connect:
  psql -h 127.0.0.1 -p ${PORTS[0]} -U postgres $DB    # node1
  psql -h 127.0.0.1 -p ${PORTS[1]} -U postgres $DB    # node2
  psql -h 127.0.0.1 -p ${PORTS[2]} -U postgres $DB    # node3

Try it: write on one node, read on another.
  psql -h 127.0.0.1 -p ${PORTS[0]} -U postgres $DB \\
       -c "INSERT INTO demo_table (id, origin, note) VALUES (1004, 'node1', 'hello')"
  psql -h 127.0.0.1 -p ${PORTS[2]} -U postgres $DB \\
       -c "SELECT * FROM demo_table WHERE id = 1004"
  psql -h 127.0.0.1 -p ${PORTS[1]} -U postgres $DB \\
       -c "SELECT * FROM concord.subscription_status"
Only tables in a replication set replicate; DDL does not: create a new table
on every node and add it with concord.replication_set_add_table() on each.

Status:
  $0 status
Stop (and remove $DIR):
  $0 stop
EOF
}

case "${1:-start}" in
	start) start_demo ;;
	stop) stop_demo ;;
	status) status_demo ;;
	*) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
