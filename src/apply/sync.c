/*-------------------------------------------------------------------------
 *
 * sync.c
 *		The sync worker: copies a subscription's tables from the provider.
 *
 * Started by the apply worker, which waits for it.  It creates a
 * temporary slot on the provider that exports a snapshot, copies every
 * table to copy in that snapshot (COPY out there, COPY in here), and
 * records, in the same local transaction as the rows, the slot's
 * consistent point as each table's sync_lsn.  Apply then skips changes to
 * those tables that committed before sync_lsn (the copy has them) and
 * applies the rest: no gap and no overlap, under any concurrent writes.
 * Everything is one local transaction, so a failure leaves nothing
 * behind and the next attempt starts over.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/heap.h"
#include "catalog/pg_inherits.h"
#include "commands/copy.h"
#include "commands/tablecmds.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/origin.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "apply/apply.h"
#include "apply/sync.h"
#include "catalog/origin.h"
#include "catalog/relcheck.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/conflict.h"
#include "conflict/seen.h"
#include "remote/remote.h"
#include "shmem/shmem.h"


/*
 * A subscription made by join_mesh that waits for this copy: the copy
 * from the peer also brings what the peer had applied from that
 * subscription's provider, up to applied (join_fence).
 */
typedef struct JoinHeld
{
	Oid			subid;
	char	   *node;			/* its provider */
	XLogRecPtr	slot_lsn;		/* where its slot began */
	XLogRecPtr	applied;		/* what the copy covers, at the provider */
	TimestampTz seen;			/* the peer's SEEN value for the provider */
} JoinHeld;

static ConcordSubState *SyncShared = NULL;
static char *CopyingTable = NULL;
static PGconn *CopyConn = NULL;
static StringInfoData CopyBuf;
static char *SubName = NULL;

/* No parameters, sent as such: the extended protocol runs one statement. */
static const char *const NoParams[1] = {NULL};

static void
sync_error_context(void *arg pg_attribute_unused())
{
	if (SubName && CopyingTable)
		errcontext("subscription \"%s\", copy of %s", SubName, CopyingTable);
	else if (SubName)
		errcontext("subscription \"%s\", initial copy", SubName);
}

static void
sync_detach(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	/* An error may have left concord's lock held: we are leaving anyway. */
	LWLockReleaseAll();
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	if (SyncShared && SyncShared->sync_pid == MyProcPid)
		SyncShared->sync_pid = 0;
	LWLockRelease(ConcordShmem->lock);
}

/* COPY FROM's data source: rows of the provider's COPY TO STDOUT. */
static int
copy_read(void *outbuf, int minread, int maxread)
{
	int			bytes = 0;

	while (bytes < minread)
	{
		int			avail = CopyBuf.len - CopyBuf.cursor;

		if (avail > 0)
		{
			int			n = Min(avail, maxread - bytes);

			memcpy((char *) outbuf + bytes, CopyBuf.data + CopyBuf.cursor, n);
			CopyBuf.cursor += n;
			bytes += n;
		}
		else
		{
			char	   *buf;
			int			len = concord_remote_get_copy(CopyConn, &buf, true);

			if (len == -1)
				break;
			resetStringInfo(&CopyBuf);
			appendBinaryStringInfo(&CopyBuf, buf, len);
			PQfreemem(buf);
		}
	}
	return bytes;
}

static SyncTable *
find_or_add(List **tables, const char *nsp, const char *rel)
{
	ListCell   *lc;
	SyncTable  *t;

	foreach(lc, *tables)
	{
		t = lfirst(lc);
		if (strcmp(t->nspname, nsp) == 0 && strcmp(t->relname, rel) == 0)
			return t;
	}
	t = palloc0(sizeof(SyncTable));
	t->nspname = pstrdup(nsp);
	t->relname = pstrdup(rel);
	initStringInfo(&t->filter);
	*tables = lappend(*tables, t);
	return t;
}

/*
 * The SQL of a table's row filter: deparsed by the provider from the
 * analysed filter, in this session, which then reads it back
 * (catalog/row_filter.c).  A provider whose SQL objects predate 0.3.0 has
 * only the text, which is never pasted into SQL (review #2): such a
 * provider's filtered tables are not copied (provider_tables).
 */
static const char *
filter_column(PGconn *conn)
{
	return concord_remote_has_function(conn, "concord.row_filter_sql(oid, pg_catalog.regclass)") ?
		"CASE WHEN rst.row_filter IS NOT NULL "
		"THEN concord.row_filter_sql(rst.set_id, rst.set_reloid) END" :
		"NULL::pg_catalog.text";
}

/* The provider's tables of the subscribed sets, in the exported snapshot. */
static List *
provider_tables(PGconn *conn, List *sets)
{
	List	   *tables = NIL;
	ListCell   *lc;
	const char *filter = filter_column(conn);
	char	   *sql = psprintf("SELECT n.nspname, c.relname, c.relkind, rst.column_list, %s, "
							   "rst.row_filter IS NOT NULL "
							   "FROM concord.replication_set_table rst "
							   "JOIN concord.replication_set s ON s.set_id = rst.set_id "
							   "JOIN pg_catalog.pg_class c ON c.oid = rst.set_reloid "
							   "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
							   "WHERE s.set_name = $1 ORDER BY 1, 2",
							   filter);

	foreach(lc, sets)
	{
		const char *params[1] = {lfirst(lc)};
		PGresult   *res = concord_remote_query(conn, sql, 1, params, PGRES_TUPLES_OK);

		for (int i = 0; i < PQntuples(res); i++)
		{
			SyncTable  *t = find_or_add(&tables, PQgetvalue(res, i, 0),
										PQgetvalue(res, i, 1));

			t->partitioned = PQgetvalue(res, i, 2)[0] == 'p';
			if (PQgetisnull(res, i, 3))
				t->all_columns = true;
			else if (t->columns == NULL)
				t->columns = pstrdup(PQgetvalue(res, i, 3));
			else				/* "{a,b}" and "{c}" make "{a,b,c}" */
				t->columns = psprintf("%.*s,%s", (int) strlen(t->columns) - 1,
									  t->columns, PQgetvalue(res, i, 3) + 1);
			/*
			 * A filter the provider does not give analysed: its concord is
			 * older than 0.3.0, or the table left the set since the
			 * snapshot (row_filter_sql reads the catalog as it is now).
			 * Copying every row instead would ship what the filter keeps
			 * back.
			 */
			if (PQgetisnull(res, i, 4) && strcmp(PQgetvalue(res, i, 5), "t") == 0)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("cannot copy table %s.%s: the provider does not give its row filter analysed",
								PQgetvalue(res, i, 0), PQgetvalue(res, i, 1)),
						 errdetail("Its concord is older than 0.3.0, or the table's membership changed during the copy."),
						 errhint("Run ALTER EXTENSION concord UPDATE on the provider; the copy is tried again.")));
			if (PQgetisnull(res, i, 4))
				t->unfiltered = true;
			else
				appendStringInfo(&t->filter, "%s(%s)", t->filter.len ? " OR " : "",
								 PQgetvalue(res, i, 4));
		}
		PQclear(res);
	}
	return tables;
}

/* The provider's shipped column names of a table, in order. */
List *
concord_sync_provider_columns(PGconn *conn, SyncTable *t)
{
	const char *params[2];
	PGresult   *res;
	List	   *names = NIL;

	params[0] = quote_qualified_identifier(t->nspname, t->relname);
	params[1] = t->all_columns ? NULL : t->columns;
	res = concord_remote_query(conn,
							   "SELECT a.attname FROM pg_catalog.pg_attribute a "
							   "WHERE a.attrelid = $1::pg_catalog.regclass AND a.attnum > 0 "
							   "AND NOT a.attisdropped AND a.attgenerated = '' "
							   "AND ($2::pg_catalog.text[] IS NULL OR a.attname = ANY ($2::pg_catalog.text[])) "
							   "ORDER BY a.attnum",
							   2, params, PGRES_TUPLES_OK);
	for (int i = 0; i < PQntuples(res); i++)
		names = lappend(names, makeString(pstrdup(PQgetvalue(res, i, 0))));
	PQclear(res);
	return names;
}

Relation
concord_sync_open_table(SyncTable *t)
{
	RangeVar   *rv = makeRangeVar(t->nspname, t->relname, -1);
	Oid			relid = RangeVarGetRelid(rv, RowExclusiveLock, true);
	Relation	rel;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("subscription \"%s\": relation %s does not exist on this node",
						SubName, quote_qualified_identifier(t->nspname, t->relname)),
				 errhint("Create the table on the subscriber; the subscription retries the copy.")));
	rel = table_open(relid, NoLock);
	concord_check_replication_target(rel, SubName,
									 quote_qualified_identifier(t->nspname, t->relname));
	return rel;
}

void
concord_sync_check_columns(Relation rel, SyncTable *t, List *names)
{
	ListCell   *lc;

	foreach(lc, names)
		if (get_attnum(RelationGetRelid(rel), strVal(lfirst(lc))) <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("subscription \"%s\": column \"%s\" of relation %s does not exist on this node",
							SubName, strVal(lfirst(lc)),
							quote_qualified_identifier(t->nspname, t->relname)),
					 errhint("Add the column on the subscriber; the subscription retries the copy.")));
}

/*
 * Deletes every row of rels (a table, or a partitioned one and its
 * partitions), tuple by tuple, under the table's owner's privilege: as
 * TRUNCATE does, no trigger or rule fires (neither the foreign keys' nor
 * a user's), and the rows of other tables that point to these stay, to
 * point to the copy's.  Decoded as DELETEs, which a subscriber of this
 * node that receives the table's changes (forward_origins) applies.
 */
static void
delete_all(Relation rel, List *rels, const char *sub_name)
{
	ConcordAsOwner owner;
	Snapshot	snapshot;
	ListCell   *lc;

	concord_become_table_owner(rel, ACL_DELETE, sub_name, &owner);
	/* Under the lock: rows committed before it are visible. */
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	foreach(lc, rels)
	{
		Relation	r = lfirst(lc);
		TableScanDesc scan;
		TupleTableSlot *slot;

		if (!RELKIND_HAS_STORAGE(r->rd_rel->relkind))
			continue;
		slot = table_slot_create(r, NULL);
		scan = table_beginscan(r, snapshot, 0, NULL);
		while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
		{
			CHECK_FOR_INTERRUPTS();
			simple_table_tuple_delete(r, &slot->tts_tid, snapshot);
		}
		table_endscan(scan);
		ExecDropSingleTupleTableSlot(slot);
	}
	UnregisterSnapshot(snapshot);
	concord_restore_user(&owner);
	CommandCounterIncrement();
}

/*
 * Empties a local table as the copy reads it on the provider: a
 * partitioned table with its partitions, any other table alone (its
 * inheritance children are copied with ONLY, so left alone too).  As
 * TRUNCATE does: the lock, the checks; a foreign partition, which
 * TRUNCATE would empty on its remote server, or another session's
 * temporary one, is refused.  By TRUNCATE, unless another table has a
 * foreign key to it, which TRUNCATE refuses whatever the rows: then by
 * deleting its rows.  In the caller's transaction, as the table's owner.
 */
void
concord_sync_empty(Relation rel, const char *sub_name)
{
	Oid			relid = RelationGetRelid(rel);
	List	   *relids = list_make1_oid(relid);
	List	   *rels = NIL;
	List	   *logged = NIL;
	ListCell   *lc;
	ConcordAsOwner owner;

	LockRelationOid(relid, AccessExclusiveLock);
	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		relids = find_all_inheritors(relid, AccessExclusiveLock, NULL);
	foreach(lc, relids)
	{
		Relation	r = lfirst_oid(lc) == relid ? rel : table_open(lfirst_oid(lc), NoLock);

		if (r->rd_rel->relkind == RELKIND_FOREIGN_TABLE || RELATION_IS_OTHER_TEMP(r))
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("cannot empty partition %s of %s before copying it",
							RelationGetRelationName(r), RelationGetRelationName(rel)),
					 errdetail("It is a foreign table, or another session's temporary table."),
					 errhint("Detach it, or empty the table yourself.")));
		CheckTableNotInUse(r, "TRUNCATE");
		rels = lappend(rels, r);
		if (RelationIsLogicallyLogged(r))
			logged = lappend_oid(logged, lfirst_oid(lc));
	}
	/* Tables that reference these, leaving out those listed. */
	if (heap_truncate_find_FKs(relids) != NIL)
		delete_all(rel, rels, sub_name);
	else
	{
		concord_become_table_owner(rel, ACL_TRUNCATE, sub_name, &owner);
		ExecuteTruncateGuts(rels, relids, logged, DROP_RESTRICT, false);
		concord_restore_user(&owner);
	}
	foreach(lc, rels)
		if (lfirst(lc) != rel)
			table_close(lfirst(lc), NoLock);
}

/* The end of the provider's COPY, then the command's own result. */
void
concord_sync_end_copy(PGconn *conn, SyncTable *t)
{
	PGresult   *res;

	while ((res = PQgetResult(conn)) != NULL)
	{
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("copy of %s from the provider failed: %s",
							quote_qualified_identifier(t->nspname, t->relname),
							pchomp(PQresultErrorMessage(res)))));
		PQclear(res);
	}
}

/* Copies one table into the local transaction; empties it first if asked. */
static void
copy_table(PGconn *conn, SyncTable *t, bool truncate)
{
	Relation	rel = concord_sync_open_table(t);
	List	   *names = concord_sync_provider_columns(conn, t);
	StringInfoData sql;
	ListCell   *lc;
	PGresult   *res;
	ParseState *pstate;
	CopyFromState cstate;
	ConcordAsOwner owner;

	concord_sync_check_columns(rel, t, names);
	if (truncate)
		concord_sync_empty(rel, SubName);
	/* The copy writes as the table's owner, as apply does (owner.c). */
	concord_become_table_owner(rel, ACL_INSERT, SubName, &owner);

	initStringInfo(&sql);
	appendStringInfoString(&sql, "COPY (SELECT ");
	foreach(lc, names)
		appendStringInfo(&sql, "%s%s", foreach_current_index(lc) ? ", " : "",
						 quote_identifier(strVal(lfirst(lc))));
	appendStringInfo(&sql, " FROM %s%s", t->partitioned ? "" : "ONLY ",
					 quote_qualified_identifier(t->nspname, t->relname));
	if (!t->unfiltered && t->filter.len > 0)
		appendStringInfo(&sql, " WHERE %s", t->filter.data);
	appendStringInfoString(&sql, ") TO STDOUT");

	/* One statement, in the extended protocol: nothing can follow it. */
	res = concord_remote_query(conn, sql.data, 0, NoParams, PGRES_COPY_OUT);
	PQclear(res);

	CopyConn = conn;
	initStringInfo(&CopyBuf);
	pstate = make_parsestate(NULL);
	(void) addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock,
										 NULL, false, false);
	cstate = BeginCopyFrom(pstate, rel, NULL, NULL, false, copy_read, names, NIL);
	(void) CopyFrom(cstate);
	EndCopyFrom(cstate);
	concord_restore_user(&owner);

	concord_sync_end_copy(conn, t);
	table_close(rel, NoLock);
	CommandCounterIncrement();
}

static bool
table_pending(List *pending, SyncTable *t)
{
	ListCell   *lc;

	foreach(lc, pending)
	{
		ConcordSubTable *st = lfirst(lc);

		if (st->pending && strcmp(st->nspname, t->nspname) == 0 &&
			strcmp(st->relname, t->relname) == 0)
			return true;
	}
	return false;
}

/* The subscriptions join_mesh made to wait for this one's copy. */
static List *
join_held_subs(Oid subid)
{
	List	   *held = NIL;
	ListCell   *lc;

	foreach(lc, concord_subscription_get_all())
	{
		ConcordSubscription *sub = lfirst(lc);
		ConcordNode *provider;
		JoinHeld   *h;

		if (sub->join_copy_via != subid)
			continue;
		provider = concord_node_get_by_id(sub->provider_node_id);
		if (provider == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("the provider node of subscription \"%s\" is unknown", sub->name)));
		h = palloc0(sizeof(JoinHeld));
		h->subid = sub->id;
		h->node = provider->name;
		h->slot_lsn = sub->join_start_lsn;
		held = lappend(held, h);
	}
	return held;
}

/*
 * On the peer, in a transaction of fence_conn left open: waits until the
 * peer has applied every change its providers committed before our slots
 * there began, then holds the peer's apply commits (join_fence) and reads
 * how far each provider's changes are applied.  The copy's snapshot,
 * taken before the caller ends that transaction, holds exactly those.
 */
static void
join_fence(PGconn *fence_conn, List *held)
{
	List	   *nodes = NIL;
	StringInfoData lsns;
	const char *params[2];
	PGresult   *res;
	ListCell   *lc;

	initStringInfo(&lsns);
	foreach(lc, held)
	{
		JoinHeld   *h = lfirst(lc);

		nodes = lappend(nodes, h->node);
		appendStringInfo(&lsns, "%s%X/%X", foreach_current_index(lc) ? "," : "",
						 LSN_FORMAT_ARGS(h->slot_lsn));
	}
	params[0] = concord_remote_text_array(nodes);
	params[1] = psprintf("{%s}", lsns.data);
	PQclear(concord_remote_query(fence_conn, "BEGIN", 0, NULL, PGRES_COMMAND_OK));
	res = concord_remote_query(fence_conn,
							   "SELECT node_name, applied_lsn, "
							   "pg_catalog.to_char(seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') "
							   "FROM concord.join_fence($1::pg_catalog.text[], $2::pg_catalog.pg_lsn[])",
							   2, params, PGRES_TUPLES_OK);
	for (int i = 0; i < PQntuples(res); i++)
		foreach(lc, held)
		{
			JoinHeld   *h = lfirst(lc);

			if (strcmp(h->node, PQgetvalue(res, i, 0)) != 0)
				continue;
			h->applied = DatumGetLSN(DirectFunctionCall1(pg_lsn_in,
														 CStringGetDatum(PQgetvalue(res, i, 1))));
			if (!PQgetisnull(res, i, 2))
				h->seen = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
																  CStringGetDatum(psprintf("%s+00", PQgetvalue(res, i, 2))),
																  ObjectIdGetDatum(InvalidOid),
																  Int32GetDatum(-1)));
		}
	PQclear(res);
}

/* In the copy's transaction: the held subscriptions may stream now. */
static void
join_release(List *held)
{
	ListCell   *lc;

	foreach(lc, held)
	{
		JoinHeld   *h = lfirst(lc);
		ConcordSubscription *sub = concord_subscription_get_by_id(h->subid);

		if (sub == NULL)
			continue;
		sub->join_copy_via = InvalidOid;
		sub->join_start_lsn = Max(h->slot_lsn, h->applied);
		concord_subscription_update(sub);
	}
}

/*
 * The provider's clock, read before the copy's snapshot is taken: every
 * transaction it committed with an earlier timestamp is in the snapshot.
 */
static TimestampTz
provider_clock(PGconn *repl)
{
	PGresult   *res = concord_remote_query(repl, "SELECT pg_catalog.clock_timestamp()",
										   0, NULL, PGRES_TUPLES_OK);
	TimestampTz ts = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
															 CStringGetDatum(PQgetvalue(res, 0, 0)),
															 ObjectIdGetDatum(InvalidOid),
															 Int32GetDatum(-1)));

	PQclear(res);
	return ts;
}

/* Creates the temporary slot; returns its consistent point and snapshot. */
static XLogRecPtr
create_sync_slot(PGconn *repl, Oid local_id, Oid subid, char **snapshot)
{
	char	   *cmd = psprintf("CREATE_REPLICATION_SLOT concord_sync_%u_%u TEMPORARY "
							   "LOGICAL concord (SNAPSHOT 'export')", local_id, subid);
	PGresult   *res = concord_remote_query(repl, cmd, 0, NULL, PGRES_TUPLES_OK);
	XLogRecPtr	lsn;

	lsn = DatumGetLSN(DirectFunctionCall1(pg_lsn_in,
										  CStringGetDatum(PQgetvalue(res, 0, 1))));
	*snapshot = pstrdup(PQgetvalue(res, 0, 2));
	PQclear(res);
	return lsn;
}

/*
 * The copy is written under the replication origin of the provider, like
 * the changes apply writes: the rows came from there, so this node's own
 * subscribers must not receive them as changes written here.  The
 * origin's progress is left alone (no origin LSN is set).
 */
static char *ProviderName = NULL;

static void
use_provider_origin(ConcordSubscription *sub)
{
	ConcordNode *provider;
	RepOriginId origin;

	StartTransactionCommand();
	provider = concord_node_get_by_id(sub->provider_node_id);
	if (provider == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the provider node of subscription \"%s\" is unknown", sub->name)));
	origin = concord_origin_ensure(sub->id, provider->name);
	ProviderName = MemoryContextStrdup(TopMemoryContext, provider->name);
	CommitTransactionCommand();
	replorigin_session_setup(origin);
	replorigin_session_origin = origin;
	/*
	 * The rows of an initial copy are the common baseline (SPEC §4): their
	 * commit timestamp says so (conflict.c), and a later change of them
	 * from any node is not a conflict.  Not those of a resynchronization:
	 * a change older than its copy may still be on its way from a third
	 * node, and must not win over it (it meets the copy's own commit
	 * time, as before).
	 */
	replorigin_session_origin_timestamp = sub->sync_done ? 0 : CONCORD_BASELINE_TS;
}

/*
 * Whether a resynchronization can merge t (sync_merge.c): the provider
 * lets it, every row and column of the provider's is shipped, both
 * tables have the same columns of the same types and the same key (a
 * primary key or replica identity index), no deferrable unique or
 * exclusion constraint (ON CONFLICT refuses a deferrable key), no column GENERATED ALWAYS AS IDENTITY but the
 * key's, no
 * inheritance child, and only built-in types (the merge reads rows as jsonb: a cast of a type some
 * role owns would run in this superuser worker).  Else the table is
 * emptied and copied, as an initial copy is.
 */
static bool
mergeable(PGconn *conn, SyncTable *t)
{
	const char *params[1] = {quote_qualified_identifier(t->nspname, t->relname)};
	const char *shape = "SELECT pg_catalog.string_agg(a.attname || ' ' || "
		"pg_catalog.format_type(a.atttypid, a.atttypmod) || ' ' || a.attgenerated::pg_catalog.text || ' ' || "
		"(a.attname = ANY (k.cols))::text, ',' ORDER BY a.attname), "
		"pg_catalog.bool_and(a.atttypid < 16384 AND (a.attidentity <> 'a' OR a.attname = ANY (k.cols))) "
		"AND k.cols IS NOT NULL "
		"AND (SELECT pg_catalog.bool_and(x.indimmediate) FROM pg_catalog.pg_index x "
		"WHERE x.indrelid = $1::pg_catalog.regclass AND (x.indisunique OR x.indisexclusion)) "
		"AND NOT EXISTS (SELECT FROM pg_catalog.pg_inherits i WHERE i.inhparent = $1::pg_catalog.regclass "
		"AND (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = $1::pg_catalog.regclass) <> 'p') "
		"FROM pg_catalog.pg_attribute a, "
		"LATERAL (SELECT pg_catalog.array_agg(ka.attname) AS cols FROM "
		"(SELECT i.indkey, i.indnkeyatts FROM pg_catalog.pg_index i WHERE i.indrelid = $1::pg_catalog.regclass "
		"AND (i.indisreplident OR i.indisprimary) ORDER BY i.indisreplident DESC LIMIT 1) i, "
		"pg_catalog.unnest((i.indkey::pg_catalog.int2[])[0:i.indnkeyatts - 1]) u(n) "
		"JOIN pg_catalog.pg_attribute ka ON ka.attrelid = $1::pg_catalog.regclass AND ka.attnum = u.n) k "
		"WHERE a.attrelid = $1::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped "
		"GROUP BY k.cols";
	PGresult   *res;
	char	   *theirs;
	bool		same;
	MemoryContext caller = CurrentMemoryContext;

	if (!concord_sync_merge_usable() || !t->all_columns ||
		(!t->unfiltered && t->filter.len > 0))
		return false;
	res = concord_remote_query(conn, shape, 1, params, PGRES_TUPLES_OK);
	if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 1), "t") != 0)
	{
		PQclear(res);
		return false;
	}
	theirs = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(params[0])};

		if (SPI_execute_with_args(shape, 1, types, values, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the shape of table %s", params[0]);
		same = SPI_processed == 1 &&
			strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2), "t") == 0 &&
			strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), theirs) == 0;
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	return same;
}

/*
 * A resynchronization merges each pending table it can (sync_merge.c),
 * before the session takes the provider's origin: the merge writes under
 * the origins of the rows' versions.
 */
static void
merge_pending(ConcordSubscription *sub, List *pending, PGconn *conn, List *tables)
{
	ListCell   *lc;

	foreach(lc, tables)
	{
		SyncTable  *t = lfirst(lc);
		int64		written;

		if (!table_pending(pending, t) || !mergeable(conn, t))
			continue;
		CopyingTable = quote_qualified_identifier(t->nspname, t->relname);
		written = concord_sync_merge_table(conn, sub->id, sub->name, t);
		if (written >= 0)
			ereport(LOG,
					(errmsg("concord subscription \"%s\": %s resynchronized, " INT64_FORMAT " keys written",
							sub->name, CopyingTable, written)));
		CopyingTable = NULL;
		t->merged = written >= 0;
	}
}

static void
copy_all(ConcordSubscription *sub, List *pending, PGconn *conn, XLogRecPtr lsn,
		 List *held)
{
	List	   *tables = provider_tables(conn, sub->replication_sets);
	ListCell   *lc;

	if (sub->sync_done && held == NIL)
		merge_pending(sub, pending, conn, tables);
	use_provider_origin(sub);
	/* Joining a mesh: the rows keep their versions (sync_versions.c). */
	if (held != NIL)
		concord_sync_copy_versions(conn, sub->id, sub->name, ProviderName, tables);
	StartTransactionCommand();
	concord_constraints_immediate();
	PushActiveSnapshot(GetTransactionSnapshot());
	foreach(lc, tables)
	{
		SyncTable  *t = lfirst(lc);
		ConcordSubTable st;

		if (sub->sync_done && !table_pending(pending, t))
			continue;
		if (held == NIL && !t->merged)
		{
			CopyingTable = quote_qualified_identifier(t->nspname, t->relname);
			pgstat_report_activity(STATE_RUNNING, psprintf("copying %s", CopyingTable));
			copy_table(conn, t, sub->sync_done);
			CopyingTable = NULL;
		}
		st.sub_id = sub->id;
		st.nspname = t->nspname;
		st.relname = t->relname;
		st.pending = false;
		st.sync_lsn = lsn;
		concord_sub_table_set(&st);
	}
	/* Pending tables the provider no longer ships: nothing to copy. */
	foreach(lc, pending)
	{
		ConcordSubTable *st = lfirst(lc);

		if (st->pending)
		{
			st->pending = false;
			st->sync_lsn = lsn;
			concord_sub_table_set(st);
		}
	}
	/*
	 * The subscription as it is now (alter_subscription_* may have
	 * changed it meanwhile), under the lock its writers take: only
	 * sync_done moves.
	 */
	concord_catalog_lock(CATALOG_SUBSCRIPTION);
	{
		ConcordSubscription *now = concord_subscription_get_by_id(sub->id);

		if (now == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("subscription \"%s\" was dropped during its copy", sub->name)));
		now->sync_done = true;
		concord_subscription_update(now);
	}
	sub->sync_done = true;
	join_release(held);
	/* No transaction of the provider's: its subscribers' positions stay. */
	concord_apply_log_origin_lsn(InvalidXLogRecPtr);
	PopActiveSnapshot();
	CommitTransactionCommand();
}

static void
sync_run(Oid subid)
{
	ConcordSubscription *sub;
	ConcordNode *local;
	List	   *pending;
	PGconn	   *repl;
	PGconn	   *conn;
	PGconn	   *fence_conn = NULL;
	List	   *held;
	ListCell   *lc;
	char	   *snapshot;
	XLogRecPtr	lsn;
	TimestampTz before_snapshot;
	bool		was_synced;
	ConcordNode *provider;
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "concord sync",
											  ALLOCSET_DEFAULT_SIZES);

	StartTransactionCommand();
	LockDatabaseObject(concord_catalog_relid(CATALOG_SUBSCRIPTION, false),
					   subid, 0, AccessShareLock);
	MemoryContextSwitchTo(cxt);
	sub = concord_subscription_get_by_id(subid);
	local = concord_node_get_local(true);
	if (sub == NULL || local == NULL)
		proc_exit(0);
	pending = concord_sub_table_get(subid);
	held = sub->sync_done ? NIL : join_held_subs(subid);
	provider = concord_node_get_by_id(sub->provider_node_id);
	SubName = sub->name;
	was_synced = sub->sync_done;
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);

	repl = concord_remote_connect(sub->provider_dsn, true,
								  psprintf("%s sync", sub->name),
								  sub->password_required);
	/*
	 * A resynchronization's merge: what the provider received, read under
	 * its apply fence, held until the snapshot is taken.
	 */
	if (was_synced && held == NIL)
	{
		if (provider == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("the provider node of subscription \"%s\" is unknown", sub->name)));
		fence_conn = concord_remote_connect(sub->provider_dsn, false,
											psprintf("%s resync fence", sub->name),
											sub->password_required);
		if (!concord_sync_merge_prepare(fence_conn, provider->name))
		{
			ereport(LOG,
					(errmsg("concord subscription \"%s\": resynchronizing by a copy: the provider's concord predates 0.3.0 or its role may not read what a merge compares",
							sub->name)));
			concord_remote_finish(fence_conn);
			fence_conn = NULL;
		}
	}
	if (held != NIL)
	{
		fence_conn = concord_remote_connect(sub->provider_dsn, false,
											psprintf("%s join fence", sub->name),
											sub->password_required);
		join_fence(fence_conn, held);
	}
	before_snapshot = provider_clock(repl);
	concord_sync_merge_clock(before_snapshot);
	lsn = create_sync_slot(repl, local->id, subid, &snapshot);
	if (fence_conn)
	{
		/* The snapshot is taken: the peer's apply goes on. */
		PQclear(concord_remote_query(fence_conn, "COMMIT", 0, NULL, PGRES_COMMAND_OK));
		concord_remote_finish(fence_conn);
	}
	conn = concord_remote_connect(sub->provider_dsn, false,
								  psprintf("%s sync", sub->name),
								  sub->password_required);
	/* a merge's local steps may leave the snapshot idle for a while */
	PQclear(concord_remote_query(conn, "SET idle_in_transaction_session_timeout = 0",
								 0, NULL, PGRES_COMMAND_OK));
	PQclear(concord_remote_query(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
								 0, NULL, PGRES_COMMAND_OK));
	PQclear(concord_remote_query(conn,
								 psprintf("SET TRANSACTION SNAPSHOT %s",
										  quote_literal_cstr(snapshot)),
								 0, NULL, PGRES_COMMAND_OK));
	copy_all(sub, pending, conn, lsn, held);
	/*
	 * After an initial copy this node has every row of the provider's own
	 * transactions committed before the copy's snapshot: its SEEN vector
	 * says so, so that its own later changes of those rows are not taken
	 * for concurrent with them (review #5).  Not after a resynchronization
	 * of some tables, which says nothing of the others.
	 */
	if (!was_synced && ProviderName)
		concord_seen_applied(ProviderName, before_snapshot);
	/* And what the peer had applied of the others, joining a mesh. */
	foreach(lc, held)
	{
		JoinHeld   *h = lfirst(lc);

		if (h->seen != 0)
			concord_seen_applied(h->node, h->seen);
	}
	if (held != NIL)
		concord_sync_versions_seen();
	concord_remote_finish(conn);
	concord_remote_finish(repl);
	ereport(LOG,
			(errmsg("concord subscription \"%s\": copy done at provider LSN %X/%X",
					sub->name, LSN_FORMAT_ARGS(lsn))));
}

void
concord_sync_main(Datum main_arg)
{
	Oid			subid = DatumGetObjectId(main_arg);
	Oid			dboid;
	ErrorContextCallback errcb;

	dboid = concord_worker_connect();

	concord_is_worker = true;
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	SyncShared = concord_sub_state(dboid, subid, true);
	if (SyncShared == NULL)
	{
		LWLockRelease(ConcordShmem->lock);
		concord_no_room_error(ERROR, NULL);
	}
	SyncShared->sync_pid = MyProcPid;
	LWLockRelease(ConcordShmem->lock);
	before_shmem_exit(sync_detach, (Datum) 0);

	SetConfigOption("session_replication_role", "replica", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("search_path", "", PGC_SUSET, PGC_S_OVERRIDE);

	errcb.callback = sync_error_context;
	errcb.arg = NULL;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	PG_TRY();
	{
		sync_run(subid);
	}
	PG_CATCH();
	{
		concord_record_current_error(SyncShared);
		PG_RE_THROW();
	}
	PG_END_TRY();
}
