/*-------------------------------------------------------------------------
 *
 * diff_api.c
 *		concord.table_diff() and concord.wait_for_diff(): start a
 *		comparison of a table across nodes (antientropy/diff.c runs it)
 *		and wait for its end.
 *
 * table_diff() checks its arguments, records the run in concord.diff_run
 * and starts its worker, which begins once the calling transaction
 * committed.  The worker runs as a superuser and reaches each peer with
 * the DSN of this node's subscription to it; the caller needs SELECT on
 * the table, whose rows the results hold.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/commit_ts.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "concord.h"
#include "api/api.h"
#include "antientropy/diff.h"
#include "catalog/tables.h"

PG_FUNCTION_INFO_V1(concord_table_diff);
PG_FUNCTION_INFO_V1(concord_wait_for_diff);

/* The table's qualified name, after the checks of a table to compare. */
static char *
check_relation(Oid relid)
{
	char		relkind = get_rel_relkind(relid);
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};

	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", get_rel_name(relid)),
				 errhint("concord.table_diff() compares tables.")));
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", get_rel_name(relid)),
				 errdetail("A diff records the rows that differ: it needs SELECT on the table.")));
	/* raises the error of a table with no key */
	if (SPI_execute_with_args("SELECT concord.key_columns($1::regclass)",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the key of the table");
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/* Buckets: about 32 rows each, between 4096 and 262144. */
static int
buckets_for(Oid relid)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	bool		isnull;

	if (SPI_execute_with_args("SELECT GREATEST(4096, LEAST(262144,"
							  " (pg_catalog.sum(GREATEST(c.reltuples, 0)) / 32)::int))"
							  " FROM pg_catalog.pg_class c WHERE c.oid = $1 OR c.oid IN"
							  " (SELECT pt.relid FROM pg_catalog.pg_partition_tree($1::regclass) pt)",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not size the diff's buckets");
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static int
name_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp(lfirst(a), lfirst(b));
}

/* The peers this node subscribes to (NULL: all of them), checked. */
static List *
peers_of(ArrayType *given, const char *local)
{
	List	   *peers = NIL;
	Datum	   *names;
	bool	   *nulls;
	int			n;

	if (given == NULL)
	{
		if (SPI_execute("SELECT DISTINCT n.node_name::text FROM concord.node n"
						" JOIN concord.subscription s ON s.provider_node_id = n.node_id"
						" WHERE NOT n.is_local ORDER BY 1", true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not list the peers");
		for (uint64 i = 0; i < SPI_processed; i++)
			peers = lappend(peers, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
		if (peers == NIL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("this node subscribes to no node to compare the table with"),
					 errhint("A diff reaches each peer through this node's subscription to it: create the subscriptions first.")));
		return peers;
	}
	deconstruct_array(given, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR, &names, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("peers must name at least one node"),
				 errhint("Pass NULL to compare with every node this node subscribes to.")));
	for (int i = 0; i < n; i++)
	{
		char	   *name;
		Oid			types[1] = {TEXTOID};
		Datum		values[1];
		bool		isnull;
		ListCell   *lc;
		bool		seen = false;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("peers must not contain NULL")));
		name = pstrdup(NameStr(*DatumGetName(names[i])));
		if (strcmp(name, local) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("peers names this node (\"%s\")", local),
					 errhint("List the other nodes: this node is always compared.")));
		foreach(lc, peers)
			seen |= strcmp(lfirst(lc), name) == 0;
		if (seen)
			continue;
		values[0] = CStringGetTextDatum(name);
		if (SPI_execute_with_args("SELECT EXISTS (SELECT FROM concord.subscription s"
								  " WHERE s.provider_node_id = n.node_id)"
								  " FROM concord.node n WHERE n.node_name = $1::name",
								  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not look up a peer");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("node \"%s\" is not known here", name),
					 errhint("Name nodes this node subscribes to (concord.subscription_status).")));
		if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("this node does not subscribe to node \"%s\"", name),
					 errdetail("A diff reaches each peer with the DSN of this node's subscription to it."),
					 errhint("Run the diff on a node that subscribes to \"%s\", or leave it out.", name)));
		peers = lappend(peers, name);
	}
	list_sort(peers, name_cmp);
	return peers;
}

static Datum
text_array(List *strings)
{
	Datum	   *elems = palloc(sizeof(Datum) * list_length(strings));
	int			i = 0;
	ListCell   *lc;

	foreach(lc, strings)
		elems[i++] = CStringGetTextDatum(lfirst(lc));
	return PointerGetDatum(construct_array(elems, i, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * concord.table_diff(relation regclass, peers name[] DEFAULT NULL,
 * timeout interval DEFAULT '10min') RETURNS bigint
 */
Datum
concord_table_diff(PG_FUNCTION_ARGS)
{
	Oid			relid = DatumGetObjectId(concord_required_arg(fcinfo, 0, "relation"));
	Interval   *timeout = DatumGetIntervalP(concord_required_arg(fcinfo, 2, "timeout"));
	ArrayType  *given = PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1);
	char	   *local;
	char	   *relation;
	int			buckets;
	List	   *nodes;
	int64		run_id;
	int			pid;
	bool		isnull;
	Oid			types[8] = {INT8OID, TEXTOID, OIDOID, TEXTARRAYOID, INTERVALOID, INT4OID,
	INT4OID, OIDOID};
	Datum		values[8];
	Oid			saved_user;
	int			saved_context;

	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a diff cannot run during recovery")));
	if (!track_commit_timestamp)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a diff needs track_commit_timestamp = on"),
				 errdetail("It tells the row versions that settled by their commit timestamps.")));
	if (concord_deadline_from(fcinfo, 2) <= GetCurrentTimestamp())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must be positive")));
	local = concord_token_local_node();

	SPI_connect();
	relation = check_relation(relid);
	buckets = buckets_for(relid);
	/* the peers' names are read as the catalogs' owner: no DSN is read */
	concord_catalog_become_owner("node", &saved_user, &saved_context);
	nodes = lcons(local, peers_of(given, local));
	SetUserIdAndSecContext(saved_user, saved_context);
	/* concord's catalogs are written as their owner, the caller checked */
	concord_catalog_become_owner("diff_run", &saved_user, &saved_context);
	if (SPI_execute("SELECT pg_catalog.nextval('concord.diff_run_id_seq')", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not number the run");
	run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SetUserIdAndSecContext(saved_user, saved_context);

	if (!concord_diff_start(run_id, GetTopTransactionId(), concord_diff_cost_delay,
							concord_diff_cost_limit, &pid))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no background worker slot is free for the diff"),
				 errhint("Raise max_worker_processes, or wait for a running diff to end.")));
	values[0] = Int64GetDatum(run_id);
	values[1] = CStringGetTextDatum(relation);
	values[2] = ObjectIdGetDatum(relid);
	values[3] = text_array(nodes);
	values[4] = IntervalPGetDatum(timeout);
	values[5] = Int32GetDatum(buckets);
	values[6] = Int32GetDatum(pid);
	values[7] = ObjectIdGetDatum(GetUserId());
	concord_catalog_become_owner("diff_run", &saved_user, &saved_context);
	if (SPI_execute_with_args("INSERT INTO concord.diff_run"
							  " (run_id, relation, relid, nodes, timeout, buckets, worker_pid, started_by)"
							  " VALUES ($1, $2, $3, $4::name[], $5, $6, $7, $8)",
							  8, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the diff run");
	SetUserIdAndSecContext(saved_user, saved_context);
	SPI_finish();
	PG_RETURN_INT64(run_id);
}

/*
 * Whether the worker process is gone: no such process, or a backend of
 * this server that is no background worker (its PID was given again).
 * A worker just forked has no PGPROC yet, but exists.
 */
static bool
process_gone(int pid)
{
	PGPROC	   *proc;

	if (pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH))
		return true;
	proc = BackendPidGetProc(pid);
	return proc != NULL && !proc->isBackgroundWorker;
}

/*
 * Whether a running run's worker is gone: its process ended, or the
 * server restarted since the run started (its PID may name another
 * process by now).
 */
static bool
worker_gone(int pid, TimestampTz started_at)
{
	return process_gone(pid) || started_at < PgStartTime;
}

/* Marks the run failed (its worker is gone), unless it ended meanwhile. */
static void
reap_run(int64 run_id)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run_id)};

	if (SPI_execute_with_args("UPDATE concord.diff_run SET status = 'failed',"
							  " error = pg_catalog.format('the diff worker (PID %s) stopped before the run ended', worker_pid),"
							  " finished_at = pg_catalog.clock_timestamp(),"
							  " seconds = pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - started_at)"
							  " WHERE run_id = $1 AND status = 'running'",
							  1, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the diff run's end");
}

/*
 * concord.wait_for_diff(run_id bigint, timeout interval DEFAULT NULL)
 * RETURNS text: the run's status once it is not 'running', or 'running'
 * after the timeout.  A run whose worker is gone (killed, or the server
 * restarted) is marked failed.
 */
Datum
concord_wait_for_diff(PG_FUNCTION_ARGS)
{
	int64		run_id = DatumGetInt64(concord_required_arg(fcinfo, 0, "run_id"));
	TimestampTz deadline = concord_deadline_from(fcinfo, 1);
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run_id)};
	char		status[NAMEDATALEN];

	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("concord.wait_for_diff() cannot be used in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errdetail("The transaction's snapshot was taken before the wait, so it would not see the run end."),
				 errhint("Call it in a transaction of its own.")));
	/*
	 * The run's fence on this node would wait for this transaction (and a
	 * run this transaction asked for starts only once it committed).
	 */
	if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("concord.wait_for_diff() cannot be used after a write of its transaction"),
				 errdetail("The run's fence waits for the transactions that wrote, this one included; a run asked for in this transaction starts once it committed."),
				 errhint("Call it in a transaction of its own.")));
	for (;;)
	{
		bool		isnull;
		int			pid;
		bool		gone;
		Oid			saved_user;
		int			saved_context;

		SPI_connect();
		concord_catalog_become_owner("diff_run", &saved_user, &saved_context);
		if (SPI_execute_with_args("SELECT status, worker_pid, started_at FROM concord.diff_run WHERE run_id = $1",
								  1, types, values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the diff run");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("no diff run " INT64_FORMAT, run_id),
					 errhint("concord.diff_run lists the runs.")));
		strlcpy(status, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
				sizeof(status));
		pid = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		if (isnull)
			pid = 0;
		gone = strcmp(status, "running") == 0 &&
			worker_gone(pid, DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
															   SPI_tuptable->tupdesc, 3,
															   &isnull)));
		if (gone)
			reap_run(run_id);
		SetUserIdAndSecContext(saved_user, saved_context);
		SPI_finish();
		if (strcmp(status, "running") != 0)
			break;
		/* read again at once if the run was just marked failed */
		if (!gone && !concord_wait_tick(deadline))
			break;
	}
	PG_RETURN_TEXT_P(cstring_to_text(status));
}
