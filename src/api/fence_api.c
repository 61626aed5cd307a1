/*-------------------------------------------------------------------------
 *
 * fence_api.c
 *		concord.fence(): a point of this node's history before which every
 *		transaction of its own is committed and named by a WAL position.
 *
 * A diff of a table across nodes while writes go on (anti-entropy) must
 * tell a difference that will stay from a change still on its way.  A row
 * version (its origin node and commit timestamp) is settled, reached
 * every node, once two things hold: its commit timestamp is before a
 * fence taken on its origin, and every node holds that origin's changes
 * up to the fence's position (concord.wait_for_token() with the fence's
 * token, whichever subscription brings them, forwarded ones included).
 *
 * The fence on a node:
 *	1. fence_time: the current time;
 *	2. waits for every transaction running now to end, up to a timeout:
 *	   those a fresh snapshot lists, and those with a transaction id
 *	   between its xmax and the next one to be handed out;
 *	3. fence_lsn: the end of the newest commit of this node's sessions
 *	   that wrote rows (shmem/position.c), logged as a MARK so that nodes
 *	   receiving this node's changes forwarded learn that they hold it.
 * A transaction of this node whose commit timestamp is before fence_time
 * took it while it was still running (RecordTransactionCommit), so it had
 * ended before step 2's snapshot or was waited for there: its commit is
 * before fence_lsn.  No lock is taken and no snapshot is kept: only the
 * transactions running at the fence are waited for, not later ones.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/subtrans.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "api/api.h"
#include "catalog/tables.h"
#include "conflict/seen.h"
#include "proto/proto.h"
#include "shmem/position.h"

#define FENCE_POLL_MS	10

PG_FUNCTION_INFO_V1(concord_fence);

/* Waits for xid to end; an ERROR naming it once deadline (0: none) passed. */
static void
wait_for_xid(TransactionId xid, TimestampTz deadline, Interval *timeout)
{
	CHECK_FOR_INTERRUPTS();
	while (TransactionIdIsInProgress(xid))
	{
		if (deadline != 0 && GetCurrentTimestamp() >= deadline)
		{
			int			pid = BackendXidGetPid(SubTransGetTopmostTransaction(xid));

			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("concord.fence() waited %s for transaction %u to end",
							DatumGetCString(DirectFunctionCall1(interval_out,
																IntervalPGetDatum(timeout))),
							xid),
					 pid != 0 ?
					 errdetail("The transaction is that of process %d; it was running when the fence was taken.", pid) :
					 errdetail("The transaction is a prepared transaction (pg_prepared_xacts), or ended just now."),
					 errhint("End that transaction, or take the fence with a longer timeout.")));
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 FENCE_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * The nodes whose changes this node receives: the providers of its
 * subscriptions and the origins they forward ("all" for every origin).
 * A diff waits here only for the fences of those (antientropy/diff.c).
 */
static Datum
receives_from(void)
{
	List	   *names = NIL;
	ListCell   *lc;
	Datum	   *elems;
	int			n = 0;

	foreach(lc, concord_subscription_get_all())
	{
		ConcordSubscription *sub = lfirst(lc);
		ConcordNode *provider = concord_node_get_by_id(sub->provider_node_id);

		if (provider)
			names = lappend(names, provider->name);
		names = list_concat(names, sub->forward_origins);
	}
	elems = palloc(sizeof(Datum) * Max(list_length(names), 1));
	foreach(lc, names)
		elems[n++] = DirectFunctionCall1(namein, CStringGetDatum(lfirst(lc)));
	return PointerGetDatum(construct_array(elems, n, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR));
}

/*
 * concord.fence(timeout interval DEFAULT '1min', OUT fence_time
 * timestamptz, OUT fence_lsn pg_lsn, OUT token text): this node's fence,
 * and a token of it for concord.wait_for_token() on the other nodes.
 */
Datum
concord_fence(PG_FUNCTION_ARGS)
{
	TimestampTz deadline = concord_deadline_from(fcinfo, 0);
	Interval   *timeout = PG_ARGISNULL(0) ? NULL : PG_GETARG_INTERVAL_P(0);
	char	   *local;
	TimestampTz fence_time;
	Snapshot	snap;
	TransactionId *running;
	int			nrunning;
	TransactionId first;
	TransactionId last;
	XLogRecPtr	lsn;
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	StringInfoData token;

	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a fence cannot be taken during recovery")));
	/*
	 * Its locks could hold up a transaction it waits for, and the wait is
	 * no lock wait: no deadlock check would see it.  So not in a block, nor
	 * after this transaction wrote or locked rows (it has an xid then).
	 */
	if (IsTransactionBlock() || TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("concord.fence() cannot run inside a transaction block or after a write of its transaction"),
				 errdetail("It waits for the transactions running at the fence, which may wait for this one's locks."),
				 errhint("Call it in a transaction of its own.")));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	fence_time = GetCurrentTimestamp();
	snap = GetLatestSnapshot();
	nrunning = snap->xcnt;
	running = palloc(sizeof(TransactionId) * Max(nrunning, 1));
	memcpy(running, snap->xip, sizeof(TransactionId) * nrunning);
	first = snap->xmax;
	last = ReadNextTransactionId();
	for (int i = 0; i < nrunning; i++)
		if (!TransactionIdIsCurrentTransactionId(running[i]))
			wait_for_xid(running[i], deadline, timeout);
	/* A snapshot lists none at or past its xmax: those are running too. */
	for (TransactionId xid = first; TransactionIdPrecedes(xid, last);)
	{
		if (!TransactionIdIsCurrentTransactionId(xid))
			wait_for_xid(xid, deadline, timeout);
		TransactionIdAdvance(xid);
	}
	/*
	 * A clock set back meanwhile could stamp a later transaction before
	 * fence_time, after the position taken below.
	 */
	if (GetCurrentTimestamp() < fence_time)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the clock of this server went back while the fence was taken"),
				 errhint("Take the fence again.")));

	/* Concord's catalogs are read only now: no lock of them while waiting. */
	local = concord_token_local_node();
	lsn = concord_position_local_end();
	concord_token_mark(local, lsn);

	initStringInfo(&token);
	appendStringInfoChar(&token, '{');
	concord_token_append(&token, local, lsn);
	appendStringInfoChar(&token, '}');
	values[0] = TimestampTzGetDatum(fence_time);
	values[1] = LSNGetDatum(lsn);
	values[2] = CStringGetTextDatum(token.data);
	values[3] = receives_from();
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * concord.seen(OUT origin_node name, OUT commit_time timestamptz, OUT
 * receives boolean): the causality vector of this database
 * (conflict/seen.c), per origin node the commit time of its latest
 * transaction applied here, and a row with no commit time for each node
 * it receives from but has applied nothing of yet ("all" when a
 * subscription forwards every origin); receives: whether this node
 * receives that node's changes now (an entry may be left from a
 * subscription since dropped).  A resynchronization reads it on the
 * provider (apply/sync_merge.c).
 */
PG_FUNCTION_INFO_V1(concord_seen);

static bool
name_in(Datum *names, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(NameStr(*DatumGetName(names[i])), name) == 0)
			return true;
	return false;
}

Datum
concord_seen(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	List	   *vector = concord_seen_vector();
	ArrayType  *from = DatumGetArrayTypeP(receives_from());
	Datum	   *names;
	int			nnames;
	bool		all;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	deconstruct_array(from, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR,
					  &names, NULL, &nnames);
	all = name_in(names, nnames, "all");
	foreach(lc, vector)
	{
		ConcordSeenEntry *e = lfirst(lc);
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = DirectFunctionCall1(namein, CStringGetDatum(e->origin));
		values[1] = TimestampTzGetDatum(e->commit_ts);
		values[2] = BoolGetDatum(all || name_in(names, nnames, e->origin));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	for (int i = 0; i < nnames; i++)
	{
		const char *name = NameStr(*DatumGetName(names[i]));
		Datum		values[3];
		bool		nulls[3] = {false, true, false};

		if (concord_seen_lookup(vector, name) != 0 || name_in(names, i, name))
			continue;
		values[0] = names[i];
		values[1] = (Datum) 0;
		values[2] = BoolGetDatum(true);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
