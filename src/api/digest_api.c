/*-------------------------------------------------------------------------
 *
 * digest_api.c
 *		The part of a diff each node runs (antientropy/digest.c reads the
 *		table): concord.table_digest() and concord.table_digest_rows(),
 *		which read a whole table in one statement, and
 *		concord.table_digest_step() with its two results, which read it
 *		in steps of a session, each step a statement of its own.
 *
 * A session has at most one stepped read: a step from block 0 begins it
 * (and drops any earlier one), each next step must start at the block the
 * last one returned, and reading its result ends it, as does a step that
 * fails.  The read runs as the role of its first step, with that role's
 * privileges on the table; the arguments of its first step apply to it
 * all.  Rows listed are kept in a tuplestore that spills to a temporary
 * file and outlives the steps' transactions.  A key whose row an update
 * moved between two steps may be listed twice (concord.table_diff counts
 * it in flight).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "antientropy/digest.h"

PG_FUNCTION_INFO_V1(concord_table_digest);
PG_FUNCTION_INFO_V1(concord_table_digest_rows);
PG_FUNCTION_INFO_V1(concord_table_digest_step);
PG_FUNCTION_INFO_V1(concord_table_digest_step_buckets);
PG_FUNCTION_INFO_V1(concord_table_digest_step_rows);

/* The stepped read of this session. */
typedef struct DigestSession
{
	MemoryContext cxt;			/* holds the scan and the rows */
	ConcordDigestScan *scan;
	Oid			relid;
	Oid			userid;
	bool		list_rows;
	bool		done;			/* the table has been read */
	BlockNumber next_block;
	TupleDesc	desc;			/* of the rows listed */
	Tuplestorestate *rows;		/* if list_rows; may spill to disk */
} DigestSession;

static DigestSession *Session = NULL;

static void
session_end(void)
{
	if (Session == NULL)
		return;
	if (Session->rows)
		tuplestore_end(Session->rows);
	MemoryContextDelete(Session->cxt);
	Session = NULL;
}

/* The columns of a listed row, as concord.table_digest_rows() has them. */
static TupleDesc
rows_desc(void)
{
	TupleDesc	desc = CreateTemplateTupleDesc(6);

	TupleDescInitEntry(desc, 1, "bucket", INT4OID, -1, 0);
	TupleDescInitEntry(desc, 2, "key", JSONBOID, -1, 0);
	TupleDescInitEntry(desc, 3, "digest", TEXTOID, -1, 0);
	TupleDescInitEntry(desc, 4, "commit_time", TIMESTAMPTZOID, -1, 0);
	TupleDescInitEntry(desc, 5, "origin_node", NAMEOID, -1, 0);
	TupleDescInitEntry(desc, 6, "settled", BOOLOID, -1, 0);
	return BlessTupleDesc(desc);
}

static void
put_row(Tuplestorestate *store, TupleDesc desc, const ConcordDigestRow *r)
{
	Datum		values[6];
	bool		nulls[6] = {false};

	values[0] = Int32GetDatum(r->bucket);
	values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(r->key));
	values[2] = CStringGetTextDatum(r->digest);
	values[3] = TimestampTzGetDatum(r->commit_time);
	nulls[3] = !r->known;
	nulls[4] = r->origin_node == NULL;
	if (r->origin_node)
		values[4] = DirectFunctionCall1(namein, CStringGetDatum(r->origin_node));
	values[5] = BoolGetDatum(r->settled);
	tuplestore_putvalues(store, desc, values, nulls);
}

/* A listed row, into the tuplestore of a one-shot call. */
static void
emit_tuple(const ConcordDigestRow *r, void *arg)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) arg;

	put_row(rsinfo->setResult, rsinfo->setDesc, r);
}

/* A listed row, kept by the session until its result is read. */
static void
emit_keep(const ConcordDigestRow *r, void *arg)
{
	DigestSession *s = (DigestSession *) arg;

	put_row(s->rows, s->desc, r);
}

static void
put_buckets(ReturnSetInfo *rsinfo, ConcordDigestScan *scan)
{
	int			buckets = concord_digest_nbuckets(scan);

	for (int b = 0; b < buckets; b++)
	{
		Datum		values[4];
		bool		nulls[4] = {false};
		int64		count;
		int64		in_flight;
		char		digest[33];

		concord_digest_buckets(scan, b, &count, &in_flight, digest);
		if (count == 0 && in_flight == 0)
			continue;
		values[0] = Int32GetDatum(b);
		values[1] = Int64GetDatum(count);
		values[2] = CStringGetTextDatum(digest);
		values[3] = Int64GetDatum(in_flight);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

#define ARG_JSONB(n)	(PG_ARGISNULL(n) ? NULL : PG_GETARG_JSONB_P(n))
#define ARG_ARRAY(n)	(PG_ARGISNULL(n) ? NULL : PG_GETARG_ARRAYTYPE_P(n))

static int
arg_buckets(FunctionCallInfo fcinfo, int n)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("buckets must be between 1 and 1048576")));
	return PG_GETARG_INT32(n);
}

/*
 * A read of the whole table in one statement: the buckets summed, or the
 * rows listed (of only_buckets, the fourth argument).
 */
static Datum
read_whole(FunctionCallInfo fcinfo, bool list_rows)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ConcordDigestScan *scan;

	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0))
		return (Datum) 0;
	scan = concord_digest_begin(CurrentMemoryContext, PG_GETARG_OID(0), ARG_JSONB(1),
								arg_buckets(fcinfo, 2), list_rows ? ARG_ARRAY(3) : NULL,
								list_rows, true);
	(void) concord_digest_step(scan, PG_INT64_MAX, list_rows ? emit_tuple : NULL, rsinfo);
	if (!list_rows)
		put_buckets(rsinfo, scan);
	concord_digest_end(scan);
	return (Datum) 0;
}

/*
 * concord.table_digest(relation, fences, buckets): per bucket with rows,
 * the settled rows' count and digest and the rows in flight.
 */
Datum
concord_table_digest(PG_FUNCTION_ARGS)
{
	return read_whole(fcinfo, false);
}

/*
 * concord.table_digest_rows(relation, fences, buckets, only_buckets): the
 * rows (of only_buckets).
 */
Datum
concord_table_digest_rows(PG_FUNCTION_ARGS)
{
	return read_whole(fcinfo, true);
}

/*
 * concord.table_digest_step(relation, fences, buckets, only_buckets,
 * from_block, max_rows): reads about max_rows rows of the table from
 * from_block on (0: begins a new read); returns the block to go on from,
 * or NULL once the table has been read.  With only_buckets the rows of
 * those buckets are listed (table_digest_step_rows()), else the buckets
 * summed (table_digest_step_buckets()).
 */
Datum
concord_table_digest_step(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_ARGISNULL(0) ? InvalidOid : PG_GETARG_OID(0);
	int64		from = PG_ARGISNULL(4) ? -1 : PG_GETARG_INT64(4);
	int64		max_rows = PG_ARGISNULL(5) ? 0 : PG_GETARG_INT64(5);
	BlockNumber next = InvalidBlockNumber;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("relation must not be NULL")));
	if (max_rows < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must be at least 1")));
	if (from == 0)
	{
		MemoryContext cxt;

		session_end();
		cxt = AllocSetContextCreate(TopMemoryContext, "concord digest session",
									ALLOCSET_DEFAULT_SIZES);
		Session = MemoryContextAllocZero(cxt, sizeof(DigestSession));
		Session->cxt = cxt;
		Session->relid = relid;
		Session->userid = GetUserId();
		Session->list_rows = !PG_ARGISNULL(3);
		PG_TRY();
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			if (Session->list_rows)
			{
				Session->desc = rows_desc();
				/* kept across the transactions of the steps */
				Session->rows = tuplestore_begin_heap(false, true, work_mem);
			}
			MemoryContextSwitchTo(old);
			Session->scan = concord_digest_begin(cxt, relid, ARG_JSONB(1),
												 arg_buckets(fcinfo, 2),
												 ARG_ARRAY(3), Session->list_rows,
												 false);
		}
		PG_CATCH();
		{
			session_end();
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	else if (Session == NULL || Session->done || Session->relid != relid ||
			 from != (int64) Session->next_block ||
			 Session->list_rows != !PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no read of this table stopped at block " INT64_FORMAT " in this session", from),
				 errhint("Begin the read at block 0; every step of a read runs in the same session.")));
	/* a step that fails ends the read */
	PG_TRY();
	{
		next = concord_digest_step(Session->scan, max_rows,
								   Session->list_rows ? emit_keep : NULL, Session);
	}
	PG_CATCH();
	{
		session_end();
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (next == InvalidBlockNumber)
	{
		Session->done = true;
		PG_RETURN_NULL();
	}
	Session->next_block = next;
	PG_RETURN_INT64((int64) next);
}

static void
check_finished(bool list_rows)
{
	if (Session == NULL || !Session->done || Session->list_rows != list_rows ||
		Session->userid != GetUserId())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no read of a table %s ended in this session",
						list_rows ? "with only_buckets" : "without only_buckets"),
				 errhint("Call concord.table_digest_step() until it returns NULL.")));
}

/* concord.table_digest_step_buckets(): the sums of the read; ends it. */
Datum
concord_table_digest_step_buckets(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	check_finished(false);
	InitMaterializedSRF(fcinfo, 0);
	put_buckets(rsinfo, Session->scan);
	session_end();
	return (Datum) 0;
}

/* concord.table_digest_step_rows(): the rows of the read; ends it. */
Datum
concord_table_digest_step_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleTableSlot *slot;

	check_finished(true);
	InitMaterializedSRF(fcinfo, 0);
	slot = MakeSingleTupleTableSlot(Session->desc, &TTSOpsMinimalTuple);
	tuplestore_rescan(Session->rows);
	while (tuplestore_gettupleslot(Session->rows, true, false, slot))
		tuplestore_puttupleslot(rsinfo->setResult, slot);
	ExecDropSingleTupleTableSlot(slot);
	session_end();
	return (Datum) 0;
}
