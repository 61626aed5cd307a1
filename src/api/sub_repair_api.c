/*-------------------------------------------------------------------------
 *
 * sub_repair_api.c
 *		concord.alter_subscription_repair(): recovers a subscription whose
 *		slot on the provider is lost, with what the slot no longer holds
 *		mended by a diff and a repair of each of its tables.
 *
 * A slot invalidated by max_slot_wal_keep_size (or dropped by hand) cannot
 * give back the changes the provider made since the subscription's
 * position: streaming cannot resume.  The recovery runs in a background
 * worker of its own (concord subscription repair), since each step must
 * commit before the next can start, and the caller waits for it:
 *
 * 1. With the subscription's workers stopped and held off (the lock that
 *    drop_subscription takes), the lost slot is dropped on the provider
 *    and a new one made, and the subscription's origins are set to its
 *    start: the subscription streams from the provider's position then
 *    on, once this commits.
 * 2. The worker waits until the subscription applied the provider's WAL
 *    up to where it was after step 1.
 * 3. Each table of the subscribed sets is compared with the provider
 *    (concord.table_diff, peers {provider}), and this node takes the
 *    provider's rows where they differ (concord.table_repair with
 *    source_node the provider, this node only): the provider holds the
 *    resolver's outcome of its own writes and of every write of this node
 *    it received, and its deletes of the lost stretch, whose tombstones
 *    may be gone (this node's vector claims them once it applies the
 *    provider's later changes), are absences that win.  A write made here
 *    since the diff stays (the repair finds it "stale") and meets the
 *    provider's through replication.  The diffs and repairs run as the
 *    caller.  Tables whose rows or columns the sets filter are not
 *    compared (a diff sees whole tables): they are listed as skipped.
 *
 * Each call is recorded in concord.subscription_repair, under an id the
 * caller takes; a failure names the step.  A call after one that failed
 * once the new slot was made resumes at step 2.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/acl.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rls.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "api/api.h"
#include "antientropy/repair.h"
#include "catalog/identity.h"
#include "catalog/origin.h"
#include "catalog/tables.h"
#include "remote/remote.h"
#include "shmem/shmem.h"

PG_FUNCTION_INFO_V1(concord_alter_subscription_repair);
PGDLLEXPORT void concord_sub_repair_main(Datum main_arg);

/* How long each table's diff, and the wait for the stream, may take. */
#define SUB_REPAIR_TIMEOUT	"1h"

static int64 RepairId = 0;

/* Runs one statement through SPI, in the current transaction. */
static void
run_sql(const char *sql, int nargs, Oid *types, Datum *values, int expected)
{
	SPI_connect();
	if (SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0) != expected)
		elog(ERROR, "could not run: %s", sql);
	SPI_finish();
}

/* Sets a column of this call's record, in the current transaction. */
static void
record_set(const char *column, Oid type, Datum value)
{
	Oid			types[2] = {INT8OID, type};
	Datum		values[2] = {Int64GetDatum(RepairId), value};

	run_sql(psprintf("UPDATE concord.subscription_repair SET %s WHERE repair_id = $1", column),
			2, types, values, SPI_OK_UPDATE);
}

/* The subscription, or an error if it was dropped meanwhile. */
static ConcordSubscription *
existing_sub(Oid subid)
{
	ConcordSubscription *sub = concord_subscription_get_by_id(subid);

	if (sub == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the subscription was dropped")));
	return sub;
}

static void
begin_step(void)
{
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
end_step(void)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* The provider's answer to a query of one value. */
static char *
provider_value(ConcordSubscription *sub, const char *sql, int nparams,
			   const char *const *params)
{
	PGconn	   *conn = concord_remote_connect(sub->provider_dsn, false,
											  "concord subscription repair",
											  sub->password_required);
	char	   *value = NULL;

	PG_TRY();
	{
		PGresult   *res = concord_remote_query(conn, sql, nparams, params, PGRES_TUPLES_OK);

		if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
			value = pstrdup(PQgetvalue(res, 0, 0));
		PQclear(res);
	}
	PG_FINALLY();
	{
		concord_remote_finish(conn);
	}
	PG_END_TRY();
	return value;
}

/* Sets every origin of the subscription to the new slot's start. */
static void
restart_origins_at(Oid subid, XLogRecPtr start)
{
	ListCell   *lc;

	foreach(lc, concord_origin_sub_list(subid))
	{
		ConcordSubOrigin *o = lfirst(lc);

		replorigin_advance(o->id, start, InvalidXLogRecPtr, true, true);
	}
}

/*
 * Step 1: a new slot for the subscription, its workers stopped meanwhile.
 * A failure once the slot was made drops it again.
 */
static void
renew_slot(Oid subid)
{
	ConcordSubscription *sub;
	const char *params[1];
	char	   *wal_status;
	char	   *start_text;
	XLogRecPtr	start;
	char	   *why;
	char	   *dsn;
	char	   *slot;
	bool		password_required;

	begin_step();
	concord_catalog_lock(CATALOG_SUBSCRIPTION);
	sub = existing_sub(subid);
	if (!concord_identity_check(&why))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this database is a copy of node \"%s\": the slots on the provider are the original node's",
						concord_node_get_local(false)->name),
				 errdetail("%s.", why)));
	params[0] = sub->slot_name;
	wal_status = provider_value(sub, "SELECT coalesce(wal_status, '') FROM pg_catalog.pg_replication_slots"
								" WHERE slot_name = $1", 1, params);
	if (wal_status != NULL && strcmp(wal_status, "lost") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the slot of subscription \"%s\" is not lost (its wal_status on the provider is \"%s\"): the subscription can resume",
						sub->name, wal_status)));
	/* New workers block on this lock until the new slot is there. */
	LockDatabaseObject(concord_catalog_relid(CATALOG_SUBSCRIPTION, false),
					   sub->id, 0, AccessExclusiveLock);
	concord_sub_stop_workers(sub->id);
	if (wal_status != NULL &&
		!concord_slot_drop(sub->provider_dsn, sub->password_required, sub->slot_name,
						   "concord subscription repair", true))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("could not drop the lost slot \"%s\" on the provider", sub->slot_name)));
	concord_slot_create(sub->provider_dsn, sub->password_required, sub->slot_name);
	dsn = MemoryContextStrdup(TopMemoryContext, sub->provider_dsn);
	slot = MemoryContextStrdup(TopMemoryContext, sub->slot_name);
	password_required = sub->password_required;
	PG_TRY();
	{
		start_text = provider_value(sub, "SELECT confirmed_flush_lsn FROM pg_catalog.pg_replication_slots"
									" WHERE slot_name = $1", 1, params);
		if (start_text == NULL)
			elog(ERROR, "the new slot has no start");
		start = DatumGetLSN(DirectFunctionCall1(pg_lsn_in, CStringGetDatum(start_text)));
		restart_origins_at(sub->id, start);

		/* Streams again once this commits, at once. */
		sub->enabled = true;
		concord_subscription_update(sub);
		concord_sub_retry_now(sub->id);
		concord_sub_wake_manager_at_commit();
		record_set("slot_lsn = $2::pg_catalog.pg_lsn", TEXTOID, CStringGetTextDatum(start_text));
		end_step();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* no stream may start from a slot that this call did not record */
		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		begin_step();
		(void) concord_slot_drop(dsn, password_required, slot, "concord subscription repair", true);
		end_step();
		ReThrowError(edata);
	}
	PG_END_TRY();
}

/*
 * Whether an earlier call made the new slot and failed after: this one
 * then resumes at step 2.
 */
static bool
resumes(Oid subid)
{
	ConcordSubscription *sub;
	bool		resume;
	Oid			types[2] = {NAMEOID, INT8OID};
	Datum		values[2];
	bool		isnull;

	begin_step();
	sub = existing_sub(subid);
	values[0] = DirectFunctionCall1(namein, CStringGetDatum(sub->name));
	values[1] = Int64GetDatum(RepairId);
	SPI_connect();
	if (SPI_execute_with_args("SELECT r.status = 'failed' AND r.slot_lsn IS NOT NULL"
							  "  FROM concord.subscription_repair r"
							  " WHERE r.sub_name = $1 AND r.repair_id <> $2"
							  " ORDER BY r.repair_id DESC LIMIT 1",
							  2, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the earlier repairs");
	resume = SPI_processed == 1 &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	end_step();
	return resume;
}

/* Step 2: the subscription applied the provider's WAL up to now. */
static void
wait_caught_up(Oid subid, TimestampTz deadline)
{
	ConcordSubscription *sub;
	char	   *now;
	XLogRecPtr	target;

	begin_step();
	sub = existing_sub(subid);
	now = provider_value(sub, "SELECT pg_catalog.pg_current_wal_lsn()", 0, NULL);
	target = DatumGetLSN(DirectFunctionCall1(pg_lsn_in, CStringGetDatum(now)));
	pgstat_report_activity(STATE_RUNNING, psprintf("waiting for subscription %s to apply up to %X/%X",
												   sub->name, LSN_FORMAT_ARGS(target)));
	if (!concord_wait_applied(sub, target, deadline))
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("subscription \"%s\" did not apply the provider's changes up to %X/%X within %s",
						sub->name, LSN_FORMAT_ARGS(target), SUB_REPAIR_TIMEOUT),
				 errhint("See last_error in concord.subscription_status.")));
	end_step();
}

/*
 * The tables of the subscribed sets, as OIDs here (those that exist here);
 * those whose rows or columns the sets filter go to *skipped, by name.
 */
static List *
sub_tables(Oid subid, MemoryContext cxt, List **skipped)
{
	ConcordSubscription *sub;
	List	   *relids = NIL;
	PGconn	   *conn;
	PGresult   *res;
	const char *params[1];

	begin_step();
	sub = existing_sub(subid);
	params[0] = concord_remote_text_array(sub->replication_sets);
	conn = concord_remote_connect(sub->provider_dsn, false, "concord subscription repair",
								  sub->password_required);
	PG_TRY();
	{
		res = concord_remote_query(conn,
								   "SELECT n.nspname, c.relname,"
								   " pg_catalog.bool_or(rst.row_filter IS NOT NULL OR rst.column_list IS NOT NULL)"
								   " FROM concord.replication_set_table rst"
								   " JOIN concord.replication_set s ON s.set_id = rst.set_id"
								   " JOIN pg_catalog.pg_class c ON c.oid = rst.set_reloid"
								   " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
								   " WHERE s.set_name = ANY ($1::pg_catalog.text[])"
								   " GROUP BY 1, 2 ORDER BY 1, 2",
								   1, params, PGRES_TUPLES_OK);
		for (int i = 0; i < PQntuples(res); i++)
		{
			Oid			nsp = get_namespace_oid(PQgetvalue(res, i, 0), true);
			Oid			relid = OidIsValid(nsp) ? get_relname_relid(PQgetvalue(res, i, 1), nsp) : InvalidOid;
			MemoryContext oldcxt;

			if (!OidIsValid(relid))
				continue;
			oldcxt = MemoryContextSwitchTo(cxt);
			if (strcmp(PQgetvalue(res, i, 2), "t") == 0)
				*skipped = lappend(*skipped,
								   quote_qualified_identifier(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1)));
			else
				relids = lappend_oid(relids, relid);
			MemoryContextSwitchTo(oldcxt);
		}
		PQclear(res);
	}
	PG_FINALLY();
	{
		concord_remote_finish(conn);
	}
	PG_END_TRY();
	end_step();
	return relids;
}

/*
 * Step 3, for one table: its diff with the provider, then this node's
 * repair, the provider's rows winning.
 */
static int64
mend_table(Oid relid, const char *provider, Oid caller, const char *local)
{
	Datum		peer = DirectFunctionCall1(namein, CStringGetDatum(provider));
	ArrayType  *peers = construct_array(&peer, 1, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR);
	Datum		timeout = DirectFunctionCall3(interval_in, CStringGetDatum(SUB_REPAIR_TIMEOUT),
											  ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	Oid			saved_user;
	int			saved_context;
	int64		run_id;
	char	   *status;
	bool		divergent;
	int64		sent = 0;

	GetUserIdAndSecContext(&saved_user, &saved_context);
	begin_step();
	SetUserIdAndSecContext(caller, saved_context);
	run_id = DatumGetInt64(DirectFunctionCall3(concord_table_diff, ObjectIdGetDatum(relid),
											   PointerGetDatum(peers), timeout));
	SetUserIdAndSecContext(saved_user, saved_context);
	record_set("run_ids = run_ids || $2", INT8OID, Int64GetDatum(run_id));
	end_step();

	begin_step();
	status = TextDatumGetCString(DirectFunctionCall2(concord_wait_for_diff, Int64GetDatum(run_id),
													 timeout));
	if (strcmp(status, "failed") == 0 || strcmp(status, "running") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the diff of table %s (run " INT64_FORMAT ") %s",
						get_rel_name(relid), run_id,
						strcmp(status, "failed") == 0 ? "failed" : "did not end in time"),
				 errhint("Its error is in concord.diff_run.")));
	divergent = strcmp(status, "divergent") == 0;
	end_step();
	if (divergent)
	{
		begin_step();
		SetUserIdAndSecContext(caller, saved_context);
		sent = concord_repair_run(run_id, provider, false, local, true);
		SetUserIdAndSecContext(saved_user, saved_context);
		end_step();
	}
	return sent;
}

static void
record_end(const char *error, int64 sent)
{
	Oid			types[3] = {INT8OID, TEXTOID, INT8OID};
	Datum		values[3] = {Int64GetDatum(RepairId), 0, Int64GetDatum(sent)};
	char		nulls[3] = "   ";

	if (error)
		values[1] = CStringGetTextDatum(error);
	else
		nulls[1] = 'n';
	begin_step();
	SPI_connect();
	if (SPI_execute_with_args("UPDATE concord.subscription_repair SET finished_at = pg_catalog.clock_timestamp(),"
							  " status = CASE WHEN $2 IS NULL THEN 'done' ELSE 'failed' END,"
							  " error = $2, rows_sent = $3 WHERE repair_id = $1",
							  3, types, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the end of the repair");
	SPI_finish();
	end_step();
}

/* The caller must be able to read and write every table compared. */
static void
check_caller(List *relids, Oid caller)
{
	ListCell   *lc;
	AclMode		needed[] = {ACL_SELECT, ACL_INSERT, ACL_UPDATE, ACL_DELETE};

	begin_step();
	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);

		for (int i = 0; i < (int) lengthof(needed); i++)
			if (pg_class_aclcheck(relid, caller, needed[i]) != ACLCHECK_OK)
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied for table %s", get_rel_name(relid)),
						 errdetail("The repair of a subscription compares and writes each table of its sets: it needs SELECT, INSERT, UPDATE and DELETE on them.")));
		if (check_enable_rls(relid, caller, false) == RLS_ENABLED)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("table %s has row-level security for the calling role", get_rel_name(relid))));
	}
	end_step();
}

static void
record_skipped(List *skipped)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(skipped), 1));
	int			n = 0;
	ListCell   *lc;

	begin_step();
	foreach(lc, skipped)
		elems[n++] = CStringGetTextDatum(lfirst(lc));
	record_set("skipped = $2", TEXTARRAYOID,
			   PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT)));
	end_step();
}

/* The provider's node name, or an error if the subscription is gone. */
static char *
provider_name(Oid subid, MemoryContext cxt)
{
	ConcordSubscription *sub;
	ConcordNode *node;
	char	   *name;

	begin_step();
	sub = concord_subscription_get_by_id(subid);
	node = sub ? concord_node_get_by_id(sub->provider_node_id) : NULL;
	if (node == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the subscription or its provider node was dropped")));
	name = MemoryContextStrdup(cxt, node->name);
	end_step();
	return name;
}

void
concord_sub_repair_main(Datum main_arg)
{
	Oid			subid = DatumGetObjectId(main_arg);
	Oid			caller;
	MemoryContext cxt;
	char	   *local = NULL;
	volatile int64 sent = 0;
	TimestampTz deadline;

	memcpy(&caller, MyBgworkerEntry->bgw_extra + sizeof(Oid), sizeof(Oid));
	memcpy(&RepairId, MyBgworkerEntry->bgw_extra + 2 * sizeof(Oid), sizeof(int64));
	(void) concord_worker_connect();
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	cxt = AllocSetContextCreate(TopMemoryContext, "concord subscription repair",
								ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 3600 * 1000);

	begin_step();
	{
		ConcordSubscription *sub = concord_subscription_get_by_id(subid);
		Oid			types[4] = {INT8OID, NAMEOID, INT4OID, OIDOID};
		Datum		values[4];

		local = MemoryContextStrdup(cxt, concord_token_local_node());
		values[0] = Int64GetDatum(RepairId);
		values[1] = DirectFunctionCall1(namein, CStringGetDatum(sub ? sub->name : "?"));
		values[2] = Int32GetDatum(MyProcPid);
		values[3] = ObjectIdGetDatum(caller);
		run_sql("INSERT INTO concord.subscription_repair (repair_id, sub_name, worker_pid, started_by)"
				" VALUES ($1, $2, $3, $4)", 4, types, values, SPI_OK_INSERT);
	}
	end_step();
	MemoryContextSwitchTo(cxt);

	PG_TRY();
	{
		List	   *skipped = NIL;
		List	   *relids = sub_tables(subid, cxt, &skipped);
		char	   *provider;
		ListCell   *lc;

		MemoryContextSwitchTo(cxt);
		check_caller(relids, caller);
		record_skipped(skipped);
		if (!resumes(subid))
			renew_slot(subid);
		MemoryContextSwitchTo(cxt);
		wait_caught_up(subid, deadline);
		provider = provider_name(subid, cxt);
		MemoryContextSwitchTo(cxt);
		foreach(lc, relids)
		{
			sent += mend_table(lfirst_oid(lc), provider, caller, local);
			MemoryContextSwitchTo(cxt);
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		record_end(concord_redact_dsn(edata->message), sent);
		proc_exit(0);
	}
	PG_END_TRY();
	record_end(NULL, sent);
	proc_exit(0);
}

/* Runs the worker for the subscription and waits for it; returns the row writes sent. */
static int64
run_worker(ConcordSubscription *sub)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	pid_t		pid;
	Oid			caller = GetUserId();
	Oid			types[1] = {INT8OID};
	Datum		values[1];
	Oid			saved_user;
	int			saved_context;
	bool		isnull;
	char	   *status;
	char	   *error;
	int64		sent;
	int64		repair_id;

	if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("a subscription's repair cannot run after a write of its transaction"),
				 errdetail("Its diffs' fences would wait for this transaction.")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("a subscription's repair cannot run in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errdetail("It reads what its worker recorded meanwhile.")));
	(void) concord_token_local_node();
	concord_fill_worker(&worker, "concord subscription repair", "concord_sub_repair_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "concord subscription repair %s", sub->name);
	worker.bgw_main_arg = ObjectIdGetDatum(sub->id);
	memcpy(worker.bgw_extra, &MyDatabaseId, sizeof(Oid));
	memcpy(worker.bgw_extra + sizeof(Oid), &caller, sizeof(Oid));
	SPI_connect();
	concord_catalog_become_owner("subscription_repair", &saved_user, &saved_context);
	if (SPI_execute("SELECT pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('concord.subscription_repair', 'repair_id'))",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not number the repair");
	SetUserIdAndSecContext(saved_user, saved_context);
	repair_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	memcpy(worker.bgw_extra + 2 * sizeof(Oid), &repair_id, sizeof(int64));
	worker.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&worker, &handle) ||
		WaitForBackgroundWorkerStartup(handle, &pid) != BGWH_STARTED)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no background worker slot is free for the subscription's repair"),
				 errhint("Raise max_worker_processes, or try again.")));
	if (WaitForBackgroundWorkerShutdown(handle) == BGWH_POSTMASTER_DIED)
		ereport(FATAL,
				(errcode(ERRCODE_ADMIN_SHUTDOWN),
				 errmsg("the postmaster died during the subscription's repair")));

	/* not read-only: a snapshot of now, which sees what the worker wrote */
	SPI_connect();
	values[0] = Int64GetDatum(repair_id);
	concord_catalog_become_owner("subscription_repair", &saved_user, &saved_context);
	if (SPI_execute_with_args("SELECT status, error, rows_sent FROM concord.subscription_repair"
							  " WHERE repair_id = $1",
							  1, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the repair's record");
	SetUserIdAndSecContext(saved_user, saved_context);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("the repair worker of subscription \"%s\" stopped before it recorded anything",
						sub->name),
				 errhint("See the server log.")));
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	error = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	sent = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	if (strcmp(status, "done") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s", error ? error : "the repair worker stopped before the end"),
				 errdetail("The repair of subscription \"%s\" failed; its record is in concord.subscription_repair.",
						   sub->name)));
	SPI_finish();
	return sent;
}

/* concord.alter_subscription_repair(subscription_name name) RETURNS bigint */
Datum
concord_alter_subscription_repair(PG_FUNCTION_ARGS)
{
	char	   *name = concord_required_name(fcinfo, 0, "subscription_name");

	PreventInTransactionBlock(true, "concord.alter_subscription_repair()");
	PG_RETURN_INT64(run_worker(concord_sub_get_existing(name)));
}
