#!/usr/bin/env bash
# Start a three-node concord demo on this machine and leave it running.
#
#   scripts/demo.sh          start node1..node3 (stops a previous demo first)
#   scripts/demo.sh stop     stop the demo and remove its directory
#   scripts/demo.sh status   show where the demo runs
#
# Environment:
#   CONCORD_DEMO_PORTS   three ports, e.g. "6001 6002 6003" (default: the
#                        first free ports from 5441 on)
#   CONCORD_DEMO_STATE   file remembering the demo directory
#                        (default /tmp/concord-demo.dir)
#
# Servers run as the `postgres` OS user (initdb refuses root) and listen on
# 127.0.0.1 only, with trust authentication: this is a demo, not a deployment.
set -euo pipefail

PG_CONFIG=${PG_CONFIG:-pg_config}
BINDIR=$("$PG_CONFIG" --bindir)
STATE=${CONCORD_DEMO_STATE:-/tmp/concord-demo.dir}
DB=concord_demo
NODES=(node1 node2 node3)

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

port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Stop the demo recorded in $STATE, if any, and remove its directory.
stop_demo() {
	local dir
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
	local dir; dir=$(cat "$STATE")
	echo "concord demo directory: $dir"
	for n in "${NODES[@]}"; do
		as_pg "$BINDIR/pg_ctl" -D "$dir/$n" status | head -1 | sed "s/^/$n: /" || true
	done
}

# Choose three free ports (or take them from CONCORD_DEMO_PORTS).
choose_ports() {
	PORTS=()
	if [[ -n "${CONCORD_DEMO_PORTS:-}" ]]; then
		read -r -a PORTS <<<"$CONCORD_DEMO_PORTS"
		[[ ${#PORTS[@]} -eq 3 ]] || { echo "CONCORD_DEMO_PORTS needs three ports" >&2; exit 1; }
		for p in "${PORTS[@]}"; do
			if port_in_use "$p"; then echo "port $p is in use" >&2; exit 1; fi
		done
		return
	fi
	local p=5441
	while [[ ${#PORTS[@]} -lt 3 ]]; do
		[[ $p -lt 5541 ]] || { echo "no free port in 5441-5540" >&2; exit 1; }
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
	local port=$1 i
	for ((i = 0; i < 300; i++)); do
		if [[ $(psql_node "$port" -At -c \
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'concord launcher'") -ge 1 ]]; then
			return 0
		fi
		# poll interval: block on the server for 100 ms, not in the shell
		psql_node "$port" -At -c "SELECT pg_sleep(0.1)" >/dev/null
	done
	echo "WARNING: no 'concord launcher' process on port $port after 30 s" >&2
}

start_demo() {
	[[ $(id -u) -eq 0 ]] || id -un | grep -qx postgres \
		|| { echo "run as root (or as the postgres user)" >&2; exit 1; }
	[[ -f "$("$PG_CONFIG" --pkglibdir)/concord.so" ]] \
		|| { echo "concord is not installed: run scripts/build.sh first" >&2; exit 1; }
	[[ -f "$STATE" ]] && stop_demo

	choose_ports
	DIR=$(mktemp -d /tmp/concord-demo.XXXXXX)
	chmod 755 "$DIR"
	[[ $(id -u) -eq 0 ]] && chown postgres: "$DIR"
	echo "$DIR" >"$STATE"

	local i name port
	for i in 0 1 2; do
		name=${NODES[$i]} port=${PORTS[$i]}
		init_node "$name" "$port"
		as_pg "$BINDIR/pg_ctl" -D "$DIR/$name" -l "$DIR/$name.log" -w start >/dev/null
		as_pg "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres \
			-d postgres -c "CREATE DATABASE $DB"
		psql_node "$port" -o /dev/null <<SQL
CREATE EXTENSION concord;
SELECT concord.create_node('$name', 'host=127.0.0.1 port=$port dbname=$DB');
CREATE TABLE public.demo_table (
    id         integer PRIMARY KEY,
    payload    text,
    written_on text NOT NULL DEFAULT '$name'
);
SELECT concord.replication_set_add_table('default', 'public.demo_table');
INSERT INTO public.demo_table (id, payload) VALUES ($((i + 1)), 'hello from $name');
SQL
		echo "started $name on 127.0.0.1:$port (data $DIR/$name, log $DIR/$name.log)"
	done

	for i in 0 1 2; do
		name=${NODES[$i]} port=${PORTS[$i]}
		wait_for_launcher "$port"
		echo
		echo "=== $name (port $port) ==="
		psql_node "$port" -P footer=off <<'SQL'
\echo concord.node:
SELECT node_id, node_name, dsn, priority, is_local FROM concord.node;
\echo concord.replication_set_table:
SELECT s.set_name, t.set_reloid AS relation, t.column_list, t.row_filter
  FROM concord.replication_set_table t
  JOIN concord.replication_set s USING (set_id);
\echo public.demo_table:
SELECT * FROM public.demo_table ORDER BY id;
\echo concord background workers (pg_stat_activity):
SELECT pid, backend_type, backend_start FROM pg_stat_activity
 WHERE backend_type LIKE 'concord%' ORDER BY pid;
SQL
	done

	cat <<EOF

The concord demo is running in $DIR (recorded in $STATE).
Each node has database $DB with public.demo_table in replication set 'default'
and one row written locally.

NOTE: replication between the nodes is not implemented yet (subscriptions
come in the next release): the nodes, replication sets and the launcher
work, but rows written on one node stay on that node for now.

Connect:
  psql -h 127.0.0.1 -p ${PORTS[0]} -U postgres $DB    # node1
  psql -h 127.0.0.1 -p ${PORTS[1]} -U postgres $DB    # node2
  psql -h 127.0.0.1 -p ${PORTS[2]} -U postgres $DB    # node3

Stop (and remove $DIR):
  $0 stop
or stop one node by hand:
  runuser -u postgres -- $BINDIR/pg_ctl -D $DIR/node1 stop
EOF
}

case "${1:-start}" in
	start) start_demo ;;
	stop) stop_demo ;;
	status) status_demo ;;
	*) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
