/*-------------------------------------------------------------------------
 *
 * sync_groups.c
 *		A resynchronization's merge, the fast way: the provider's rows of
 *		one version written in one transaction.
 *
 * Most keys a merge writes (sync_merge.c) are of two kinds: a key with no
 * row and no tombstone here that the provider has a row of (a table added
 * to a set after the copy, rows lost here), and a row here that the
 * provider's row of the same key supersedes.  Their rows are written by
 * groups of one version (the provider's origin node and commit time of
 * the row), each group in one transaction under this subscription's
 * origin of the version's node with that commit time, as a joining node's
 * copy is (sync_versions.c): an INSERT ... ON CONFLICT DO NOTHING of the
 * free keys, an UPDATE of the rows whose version is still the one the
 * merge read.  A key taken, or a row changed, meanwhile is left out of
 * the statement (it returns the keys it wrote) and merged again on its
 * own, through concord.repair_row().  Each key written is recorded in
 * concord.repair_history in the same transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "replication/origin.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "apply/apply.h"
#include "apply/sync.h"
#include "catalog/tables.h"

/* The statements of one table, made once per group (SPI connected). */
typedef struct GroupSql
{
	char	   *insert;
	char	   *update;			/* NULL: every column is key */
} GroupSql;

static void
group_sql(Oid relid, const char *relation, GroupSql *sql)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	StringInfoData cols,
				rcols,
				keys,
				keyobj,
				set,
				match;

	initStringInfo(&cols);
	initStringInfo(&rcols);
	initStringInfo(&keys);
	initStringInfo(&keyobj);
	initStringInfo(&set);
	initStringInfo(&match);
	if (SPI_execute_with_args("SELECT pg_catalog.quote_ident(a.attname), pg_catalog.quote_literal(a.attname),"
							  " a.attname = ANY (concord.key_columns($1::pg_catalog.regclass)),"
							  " a.attgenerated <> '', a.attidentity = 'a'"
							  " FROM pg_catalog.pg_attribute a"
							  " WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped"
							  " ORDER BY a.attnum",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the columns of table %s", relation);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *col = SPI_getvalue(tup, desc, 1);
		bool		isnull;
		bool		key = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));

		if (key)
		{
			appendStringInfo(&keys, "%s%s", keys.len ? ", " : "", col);
			appendStringInfo(&keyobj, "%s%s, t.%s", keyobj.len ? ", " : "",
							 SPI_getvalue(tup, desc, 2), col);
			appendStringInfo(&match, " AND t.%s = r.%s", col, col);
		}
		if (DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull)))
			continue;
		appendStringInfo(&cols, "%s%s", cols.len ? ", " : "", col);
		appendStringInfo(&rcols, "%sr.%s", rcols.len ? ", " : "", col);
		if (!key && !DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull)))
			appendStringInfo(&set, "%s%s = r.%s", set.len ? ", " : "", col, col);
	}
	/* $1: a JSON array of {"r": row, "t": commit time (us since 1970), "n": origin} */
	sql->insert = psprintf("INSERT INTO %s AS t (%s) OVERRIDING SYSTEM VALUE SELECT %s"
						   " FROM pg_catalog.jsonb_array_elements($1) e,"
						   " pg_catalog.jsonb_populate_record(NULL::%s, e->'r') r"
						   " ON CONFLICT (%s) DO NOTHING"
						   " RETURNING pg_catalog.jsonb_build_object(%s)",
						   relation, cols.data, rcols.data, relation, keys.data, keyobj.data);
	/* the row's version still the one read: else it changed meanwhile */
	sql->update = set.len == 0 ? NULL :
		psprintf("UPDATE %s t SET %s"
				 " FROM pg_catalog.jsonb_array_elements($1) e,"
				 " pg_catalog.jsonb_populate_record(NULL::%s, e->'r') r"
				 " WHERE true%s AND EXISTS (SELECT FROM concord.row_version(t.xmin) v"
				 " WHERE (EXTRACT(epoch FROM v.commit_time) * 1000000)::pg_catalog.int8"
				 " IS NOT DISTINCT FROM (e->>'t')::pg_catalog.int8"
				 " AND v.origin_node IS NOT DISTINCT FROM (e->>'n')::pg_catalog.name)"
				 " RETURNING pg_catalog.jsonb_build_object(%s)",
				 relation, set.data, relation, match.data, keyobj.data);
}

/* Records the keys (a jsonb array) a group wrote, in its transaction. */
static void
record_group(const char *local, const char *relation, const char *subname, Datum keys,
			 const char *action, const ConcordRepairVersion *v)
{
	Oid			types[7] = {NAMEOID, TEXTOID, NAMEOID, TIMESTAMPTZOID, NAMEOID, JSONBOID, TEXTOID};
	Datum		values[7];
	char		nulls[7] = "       ";
	Oid			saved_user;
	int			saved_context;

	values[0] = DirectFunctionCall1(namein, CStringGetDatum(local));
	values[1] = CStringGetTextDatum(relation);
	values[2] = DirectFunctionCall1(namein, CStringGetDatum(v->origin_node));
	values[3] = TimestampTzGetDatum(v->commit_time);
	if (!v->known)
		nulls[3] = 'n';
	values[4] = DirectFunctionCall1(namein, CStringGetDatum(subname));
	values[5] = keys;
	values[6] = CStringGetTextDatum(action);
	concord_catalog_become_owner("repair_history", &saved_user, &saved_context);
	if (SPI_execute_with_args("INSERT INTO concord.repair_history"
							  " (coordinator, node_name, relation, key, action, origin_node, commit_time,"
							  " subscription_name)"
							  " SELECT $1, $1, $2, k, $7, $3, $4, $5"
							  " FROM pg_catalog.jsonb_array_elements($6) k",
							  7, types, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the resynchronization");
	SetUserIdAndSecContext(saved_user, saved_context);
}

/*
 * Writes a group (elements: the JSON array of group_sql()) of version v:
 * INSERTs of free keys, or UPDATEs of rows still of the version read.
 * Returns how many keys it wrote; the session uses no origin afterwards.
 */
uint64
concord_sync_write_group(Oid subid, const char *subname, const char *local, SyncTable *t,
						 const char *relation, bool update, const char *elements,
						 const ConcordRepairVersion *v)
{
	MemoryContext caller = CurrentMemoryContext;
	Relation	rel;
	GroupSql	sql;
	uint64		written;
	StringInfoData keys;

	/* may make the origin, in a transaction of its own */
	concord_sync_use_version(subid, v->origin_node, v->known ? v->commit_time : 0);
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rel = concord_sync_open_table(t);
	group_sql(RelationGetRelid(rel), relation, &sql);
	if (update && sql.update == NULL)
		written = 0;			/* every column is key: nothing to update */
	else if (concord_spi_as_owner(RelationGetRelid(rel), update ? sql.update : sql.insert,
								  DirectFunctionCall1(jsonb_in, CStringGetDatum(elements)),
								  false) != (update ? SPI_OK_UPDATE_RETURNING : SPI_OK_INSERT_RETURNING))
		elog(ERROR, "could not write the provider's rows");
	else
		written = SPI_processed;
	if (written > 0)
	{
		initStringInfo(&keys);
		appendStringInfoChar(&keys, '[');
		for (uint64 i = 0; i < written; i++)
			appendStringInfo(&keys, "%s%s", i ? ", " : "",
							 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
		appendStringInfoChar(&keys, ']');
		record_group(local, relation, subname, DirectFunctionCall1(jsonb_in, CStringGetDatum(keys.data)),
					 update ? "update" : "insert", v);
	}
	table_close(rel, NoLock);
	/* A copy: no transaction of the origin's (shmem/position.c). */
	concord_apply_log_origin_lsn(InvalidXLogRecPtr);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	/* concord.repair_row(), next, must find no origin in use */
	replorigin_session_reset();
	replorigin_session_origin = InvalidRepOriginId;
	replorigin_session_origin_timestamp = 0;
	return written;
}
