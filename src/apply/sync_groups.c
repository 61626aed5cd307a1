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
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "apply/apply.h"
#include "apply/sync.h"
#include "catalog/tables.h"

/* The statements of one table, made once per group (SPI connected). */
typedef struct GroupSql
{
	char	   *lock;			/* the rows still of the version read, locked */
	char	   *insert;
	char	   *update;			/* NULL: every column is key */
} GroupSql;

/* The statements of the table being merged, kept across its groups. */
static GroupSql Cached;
static Oid	CachedRelid = InvalidOid;

/*
 * $1 of each: a JSON array of {"r": the provider's row, "t": the local
 * commit time (us since 1970), "n": the local origin}.  Aliases no
 * column name is likely to clash with.
 */
#define ELEMENTS \
	" pg_catalog.jsonb_array_elements($1) \"concord e\"," \
	" pg_catalog.jsonb_populate_record(NULL::%s, \"concord e\".value->'r') \"concord r\""

/* Makes the statements, in cxt (SPI connected: it leaves SPI's context current). */
static void
group_sql(Oid relid, const char *relation, GroupSql *sql, MemoryContext cxt)
{
	ListCell   *lc;
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
	foreach(lc, concord_table_columns(relid))
	{
		ConcordColumn *c = lfirst(lc);
		char	   *col = c->ident;
		bool		key = c->key;

		if (key)
		{
			appendStringInfo(&keys, "%s%s", keys.len ? ", " : "", col);
			appendStringInfo(&keyobj, "%s%s, \"concord t\".%s", keyobj.len ? ", " : "",
							 c->literal, col);
			appendStringInfo(&match, "%s\"concord t\".%s = \"concord r\".%s",
							 match.len ? " AND " : "", col, col);
		}
		if (c->generated)
			continue;
		appendStringInfo(&cols, "%s%s", cols.len ? ", " : "", col);
		appendStringInfo(&rcols, "%s\"concord r\".%s", rcols.len ? ", " : "", col);
		if (!key && !c->always)
			appendStringInfo(&set, "%s%s = \"concord r\".%s", set.len ? ", " : "", col, col);
	}
	/* as this worker: row_version() is concord's */
	sql->lock = MemoryContextStrdup(cxt, psprintf("SELECT pg_catalog.jsonb_build_object(%s)::pg_catalog.text FROM %s \"concord t\","
						 ELEMENTS
						 " WHERE %s AND EXISTS (SELECT FROM concord.row_version(\"concord t\".xmin) v"
						 " WHERE (EXTRACT(epoch FROM v.commit_time) * 1000000)::pg_catalog.int8"
						 " IS NOT DISTINCT FROM (\"concord e\".value->>'t')::pg_catalog.int8"
						 " AND v.origin_node IS NOT DISTINCT FROM (\"concord e\".value->>'n')::pg_catalog.name)"
						 " FOR UPDATE OF \"concord t\"",
						 keyobj.data, relation, relation, match.data));
	/* as the table's owner */
	sql->insert = MemoryContextStrdup(cxt, psprintf("INSERT INTO %s AS \"concord t\" (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM"
						   ELEMENTS
						   " ON CONFLICT (%s) DO NOTHING"
						   " RETURNING pg_catalog.jsonb_build_object(%s)::pg_catalog.text",
						   relation, cols.data, rcols.data, relation, keys.data, keyobj.data));
	sql->update = set.len == 0 ? NULL :
		MemoryContextStrdup(cxt, psprintf("UPDATE %s \"concord t\" SET %s FROM" ELEMENTS " WHERE %s"
				 " RETURNING pg_catalog.jsonb_build_object(%s)::pg_catalog.text",
				 relation, set.data, relation, match.data, keyobj.data));
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

/* The keys (text) an SPI result's first column gives. */
static List *
result_keys(void)
{
	List	   *keys = NIL;

	for (uint64 i = 0; i < SPI_processed; i++)
		keys = lappend(keys, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	return keys;
}

static bool
key_in(List *keys, const char *key)
{
	ListCell   *lc;

	foreach(lc, keys)
		if (strcmp(lfirst(lc), key) == 0)
			return true;
	return false;
}

/*
 * The keys of rows to insert that are free here now: no row, no tombstone
 * (table_digest_keys), and no UPDATE of the key dropped here for lack of
 * a row (update_missing: concord.repair_row() weighs that one).
 */
static List *
free_keys(const char *relation, const char *keys)
{
	Oid			types[2] = {TEXTOID, JSONBOID};
	Datum		values[2];
	Oid			saved_user;
	int			saved_context;
	List	   *result;

	values[0] = CStringGetTextDatum(relation);
	values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(keys));
	concord_catalog_become_owner("conflict_history", &saved_user, &saved_context);
	if (SPI_execute_with_args("SELECT k.key::pg_catalog.text"
							  " FROM concord.table_digest_keys($1::pg_catalog.regclass, NULL, $2) k"
							  " WHERE k.row_data IS NULL AND NOT k.deleted"
							  " AND NOT EXISTS (SELECT FROM concord.conflict_history h"
							  " WHERE h.relation = $1 AND h.key = k.key AND h.conflict_type = 'update_missing')",
							  2, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read which keys are free");
	SetUserIdAndSecContext(saved_user, saved_context);
	result = result_keys();
	return result;
}

/* A JSON array of the rows whose keys are in keys (NULL: all). */
static char *
elements_of(List *rows, List *keys, bool all, int *n)
{
	StringInfoData out;
	ListCell   *lc;

	*n = 0;
	initStringInfo(&out);
	appendStringInfoChar(&out, '[');
	foreach(lc, rows)
	{
		ConcordGroupRow *g = lfirst(lc);

		if (!all && !key_in(keys, g->key))
			continue;
		if ((*n)++)
			appendStringInfoString(&out, ", ");
		appendStringInfo(&out, "{\"r\": %s, \"t\": ", g->row);
		if (g->here->known)
			appendStringInfo(&out, INT64_FORMAT,
							 (int64) (g->here->commit_time + CONCORD_UNIX_EPOCH_USECS));
		else
			appendStringInfoString(&out, "null");
		appendStringInfoString(&out, ", \"n\": ");
		if (g->here->origin_node)
			escape_json(&out, g->here->origin_node);
		else
			appendStringInfoString(&out, "null");
		appendStringInfoChar(&out, '}');
	}
	appendStringInfoChar(&out, ']');
	return out.data;
}

/*
 * Writes a group of rows (ConcordGroupRow) of version v: INSERTs of the
 * keys still free here, or UPDATEs of the rows still of the version read
 * (locked first, as this worker).  Returns how many keys it wrote; the
 * caller merges the others one by one.  The session uses no replication
 * origin afterwards.
 */
uint64
concord_sync_write_group(Oid subid, const char *subname, const char *local, SyncTable *t,
						 const char *relation, bool update, List *rows,
						 const ConcordRepairVersion *v)
{
	MemoryContext caller = CurrentMemoryContext;
	Relation	rel;
	GroupSql	sql;
	uint64		written = 0;
	List	   *keys = NIL;
	char	   *elements;
	int			n;
	StringInfoData all_keys;
	ListCell   *lc;

	/* may make the origin, in a transaction of its own */
	concord_sync_use_version(subid, v->origin_node, v->known ? v->commit_time : 0);
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rel = concord_sync_open_table(t);
	/* made once per table (a sync worker makes one sync, then exits) */
	if (CachedRelid != RelationGetRelid(rel))
	{
		if (OidIsValid(CachedRelid))
		{
			pfree(Cached.lock);
			pfree(Cached.insert);
			if (Cached.update)
				pfree(Cached.update);
		}
		CachedRelid = InvalidOid;
		group_sql(RelationGetRelid(rel), relation, &Cached, TopMemoryContext);
		CachedRelid = RelationGetRelid(rel);
	}
	sql = Cached;
	initStringInfo(&all_keys);
	appendStringInfoChar(&all_keys, '[');
	foreach(lc, rows)
		appendStringInfo(&all_keys, "%s%s", foreach_current_index(lc) ? ", " : "",
						 ((ConcordGroupRow *) lfirst(lc))->key);
	appendStringInfoChar(&all_keys, ']');
	if (update && sql.update != NULL)
	{
		elements = elements_of(rows, NIL, true, &n);
		if (concord_spi_pinned(sql.lock, DirectFunctionCall1(jsonb_in, CStringGetDatum(elements))) != SPI_OK_SELECT)
			elog(ERROR, "could not lock the rows to update");
		keys = result_keys();
	}
	else if (!update)
		keys = free_keys(relation, all_keys.data);
	elements = elements_of(rows, keys, false, &n);
	if (n > 0)
	{
		if (concord_spi_as_owner(RelationGetRelid(rel), update ? sql.update : sql.insert,
								 DirectFunctionCall1(jsonb_in, CStringGetDatum(elements)),
								 false) != (update ? SPI_OK_UPDATE_RETURNING : SPI_OK_INSERT_RETURNING))
			elog(ERROR, "could not write the provider's rows");
		written = SPI_processed;
	}
	if (written > 0)
	{
		StringInfoData done;

		initStringInfo(&done);
		appendStringInfoChar(&done, '[');
		for (uint64 i = 0; i < written; i++)
			appendStringInfo(&done, "%s%s", i ? ", " : "",
							 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
		appendStringInfoChar(&done, ']');
		record_group(local, relation, subname, DirectFunctionCall1(jsonb_in, CStringGetDatum(done.data)),
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
