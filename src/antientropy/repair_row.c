/*-------------------------------------------------------------------------
 *
 * repair_row.c
 *		concord.repair_row(): one key of a repair, on the node it repairs.
 *
 * concord.table_repair() (repair.c) calls it over libpq on every node that
 * lacks a key's winner, one call per key, each in a transaction of its
 * own.  It locks the key's row, reads the node's current version of the
 * key as the diff did (concord.table_digest_keys()), and:
 *
 * - if the node already holds the winner's row (or its absence), does
 *	 nothing ("already");
 * - if the node's version is no longer the one the diff saw, keeps it: a
 *	 write made since the diff (here, or arriving from a peer) is newer
 *	 than the diff's winner, and replication's resolver decides between
 *	 it and the other nodes' ("stale");
 * - else writes the winner: INSERT, UPDATE or DELETE as the table's owner,
 *	 under session_replication_role = replica like apply, in a transaction
 *	 that commits under a replication origin named for the winner's
 *	 origin node with the winner's commit time.  The row then carries the
 *	 winner's version on every node, so later conflicts decide alike
 *	 everywhere; a DELETE leaves a tombstone of that version.
 *
 * The origin is "concord_0<database OID>_<node>" (catalog/origin.c): its
 * name carries the node as apply's origins do, so row versions, decoding
 * and forwarding all read it as that node's.  PostgreSQL 15 lets one
 * process at a time use an origin, so repairs under one origin take turns
 * on its lock, taken before anything else; the session is released when
 * the transaction ends (repair_xact_end), and the manager drops the
 * origins no repair holds.  Under its origin the transaction's every
 * write is dated as the winner's, so the call must be the first write of
 * a transaction of its own, and no subtransaction's.
 *
 * Each call records what it did in concord.repair_history, in its own
 * transaction: a repair is done or not, never half.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "storage/itemptr.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "antientropy/repair.h"
#include "apply/apply.h"
#include "catalog/origin.h"
#include "catalog/tables.h"
#include "conflict/conflict.h"
#include "conflict/tombstone.h"

static RepOriginId HeldOrigin = InvalidRepOriginId;
static bool CallbackRegistered = false;

/* Releases the repair origin once its transaction ended, either way. */
static void
repair_xact_end(XactEvent event, void *arg pg_attribute_unused())
{
	RepOriginId held = HeldOrigin;

	if (held == InvalidRepOriginId)
		return;
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	HeldOrigin = InvalidRepOriginId;
	/* Released already (pg_replication_origin_session_reset()): no error here. */
	if (replorigin_session_origin != held)
		return;
	replorigin_session_origin = InvalidRepOriginId;
	replorigin_session_origin_lsn = InvalidXLogRecPtr;
	replorigin_session_origin_timestamp = 0;
	replorigin_session_reset();
}

/*
 * The repair origin of a node, made if needed, its lock taken first (and
 * held to the transaction's end: the manager drops the origins no repair
 * holds).  Runs before the transaction has an xid (but for a second
 * origin of the same call, concord_repair_key): this transaction writes
 * under the origin it may make, so the origin's history must begin at or
 * before its own xid, and after every xid of the id's previous holder;
 * the xid comes with the origin's catalog row, made under the lock that
 * its drop took.
 */
static RepOriginId
repair_origin(const char *origin_node)
{
	char	   *name = concord_repair_origin_name(origin_node);
	RepOriginId origin;

	concord_repair_origin_lock(name);
	origin = replorigin_by_name(name, true);
	if (origin == InvalidRepOriginId)
	{
		origin = replorigin_create(name);
		concord_origin_history_set(origin, U64FromFullTransactionId(GetTopFullTransactionId()),
								   origin_node);
	}
	return origin;
}

/* Whether the origin has no replication origin state yet, and one is free. */
static void
check_state_room(RepOriginId origin, const char *origin_node)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(origin)};
	int			used;
	bool		isnull;

	if (SPI_execute_with_args("SELECT pg_catalog.count(*), pg_catalog.bool_or(local_id = $1)"
							  " FROM pg_catalog.pg_replication_origin_status",
							  1, types, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the replication origins' states");
	used = (int) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) && !isnull)
		return;
	if (max_replication_slots - used <= CONCORD_ORIGIN_STATES_KEPT_FREE)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no room for the replication origin of a repair of node \"%s\"'s rows", origin_node),
				 errdetail("%d of the server's %d replication origin states (max_replication_slots) are taken, and a repair leaves %d free for the subscriptions.",
						   used, max_replication_slots, CONCORD_ORIGIN_STATES_KEPT_FREE),
				 errhint("Raise max_replication_slots (it needs a restart); the manager frees the states of past repairs within a minute.")));
}

/* Binds the transaction to the winner's origin and commit time. */
static void
take_origin(RepOriginId origin, const char *origin_node, TimestampTz commit_time)
{
	check_state_room(origin, origin_node);
	if (!CallbackRegistered)
	{
		RegisterXactCallback(repair_xact_end, NULL);
		CallbackRegistered = true;
	}
	replorigin_session_setup(origin);
	HeldOrigin = origin;
	replorigin_session_origin = origin;
	replorigin_session_origin_lsn = InvalidXLogRecPtr;
	replorigin_session_origin_timestamp = commit_time;
}

/*
 * Whether replication writes the table here: it (or a table it is a
 * partition of) is in a replication set, or a subscription copied it.
 */
static bool
replicated_here(Oid relid)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	bool		isnull;
	bool		found;

	SPI_connect();
	if (SPI_execute_with_args("SELECT EXISTS (SELECT FROM concord.replication_set_table st"
							  " WHERE st.set_reloid::pg_catalog.oid = $1"
							  " OR st.set_reloid::pg_catalog.oid IN (SELECT pg_catalog.pg_partition_ancestors($1)))"
							  " OR EXISTS (SELECT FROM concord.subscription_table t, pg_catalog.pg_class c,"
							  " pg_catalog.pg_namespace n WHERE c.oid = $1 AND n.oid = c.relnamespace"
							  " AND t.nspname = n.nspname AND t.relname = c.relname)",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up the table's sets");
	found = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return found;
}

/* Reads a version as table_repair() sends it (ConcordRepairVersion). */
static void
read_version(Datum json, ConcordRepairVersion *v)
{
	Oid			types[1] = {JSONBOID};
	Datum		values[1] = {json};

	if (SPI_execute_with_args("SELECT pg_catalog.jsonb_typeof($1->'row') = 'object',"
							  " $1->>'digest', ($1->>'commit_time')::pg_catalog.timestamptz,"
							  " $1->>'origin_node', coalesce(($1->>'deleted')::pg_catalog.bool, false),"
							  " ($1->'row')::pg_catalog.text",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not read a version");
	concord_version_from_spi(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, true, v);
}

/* The node's version of the key now, read as the diff read it. */
static void
current_version(Oid relid, Datum key, ConcordRepairVersion *v)
{
	Oid			types[2] = {OIDOID, JSONBOID};
	Datum		values[2] = {ObjectIdGetDatum(relid), key};

	if (SPI_execute_with_args("SELECT k.row_data IS NOT NULL, k.digest, k.commit_time,"
							  " k.origin_node, k.deleted"
							  " FROM concord.table_digest_keys($1::pg_catalog.regclass, NULL,"
							  " pg_catalog.jsonb_build_array($2)) k",
							  2, types, values, NULL, false, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not read the key's version");
	concord_version_from_spi(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, false, v);
}

static bool
same_text(const char *a, const char *b)
{
	return (a == NULL) == (b == NULL) && (a == NULL || strcmp(a, b) == 0);
}

/* Whether two versions hold the same content (a row's digest, or none). */
static bool
same_content(const ConcordRepairVersion *a, const ConcordRepairVersion *b)
{
	return a->present == b->present &&
		(!a->present || same_text(a->digest, b->digest));
}

/* Whether the node's version is the one the diff saw. */
static bool
same_version(const ConcordRepairVersion *now, const ConcordRepairVersion *then)
{
	if (!same_content(now, then) || now->known != then->known)
		return false;
	if (!now->present && now->deleted != then->deleted)
		return false;
	if (now->known && now->commit_time != then->commit_time)
		return false;
	return same_text(now->origin_node, then->origin_node);
}

/*
 * The statements that lock and write the key, as the table's owner: the
 * key's columns are compared with those of the key (or row) given as $1
 * in jsonb, read back with jsonb_populate_record().
 */
typedef struct RepairSql
{
	char	   *lock;
	char	   *insert;
	char	   *update;
	char	   *delete;
} RepairSql;

static void
make_sql(Oid relid, RepairSql *sql)
{
	char	   *qual = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
												  get_rel_name(relid));
	StringInfoData match,
				cols,
				rcols,
				set,
				keys;
	char	   *first_key = NULL;
	ListCell   *lc;

	initStringInfo(&match);
	initStringInfo(&cols);
	initStringInfo(&rcols);
	initStringInfo(&set);
	initStringInfo(&keys);
	foreach(lc, concord_table_columns(relid))
	{
		ConcordColumn *c = lfirst(lc);
		char	   *col = c->ident;
		bool		key = c->key;
		bool		generated = c->generated;
		bool		always = c->always;

		if (key && first_key == NULL)
			first_key = col;
		if (key)
		{
			appendStringInfo(&match, "%st.%s = r.%s", match.len ? " AND " : "", col, col);
			appendStringInfo(&keys, "%s%s", keys.len ? ", " : "", col);
		}
		if (generated)
			continue;
		appendStringInfo(&cols, "%s%s", cols.len ? ", " : "", col);
		appendStringInfo(&rcols, "%sr.%s", rcols.len ? ", " : "", col);
		if (!key && !always)
			appendStringInfo(&set, "%s%s = r.%s", set.len ? ", " : "", col, col);
	}
	if (match.len == 0)
		elog(ERROR, "table %s has no key", qual);
	if (set.len == 0)			/* every column is key: rows never differ */
		appendStringInfo(&set, "%s = t.%s", first_key, first_key);
	sql->lock = psprintf("SELECT t.tableoid, t.ctid FROM %s t,"
						 " pg_catalog.jsonb_populate_record(NULL::%s, $1) r WHERE %s FOR UPDATE OF t",
						 qual, qual, match.data);
	sql->insert = psprintf("INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s"
						   " FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) r ON CONFLICT (%s) DO NOTHING",
						   qual, cols.data, rcols.data, qual, keys.data);
	sql->update = psprintf("UPDATE %s t SET %s FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) r WHERE %s",
						   qual, set.data, qual, match.data);
	sql->delete = psprintf("DELETE FROM %s t USING pg_catalog.jsonb_populate_record(NULL::%s, $1) r WHERE %s",
						   qual, qual, match.data);
}

/* The row about to be deleted, for its tombstone. */
static TupleTableSlot *
fetch_locked(Relation *leaf, HeapTuple locked, TupleDesc desc)
{
	bool		isnull;
	Oid			leafid = DatumGetObjectId(SPI_getbinval(locked, desc, 1, &isnull));
	ItemPointerData tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(locked, desc, 2, &isnull));
	TupleTableSlot *slot;

	*leaf = table_open(leafid, RowExclusiveLock);
	slot = table_slot_create(*leaf, NULL);
	if (!table_tuple_fetch_row_version(*leaf, &tid, SnapshotAny, slot))
		elog(ERROR, "could not read the row to delete");
	return slot;
}

/*
 * The newest UPDATE of the key that reached this node after the diff,
 * while it had no row, and was dropped (update_missing keeps the
 * absence): if it is newer than the winner and its whole row was
 * recorded in concord.conflict_history, it is the version to insert
 * instead, or the node would take the older winner and keep it (the
 * UPDATE will not come again).  Read before the row is locked, so that
 * its origin can be made before the transaction has an xid: an UPDATE
 * dropped during the call itself is missed (a new diff and repair mend
 * that key).
 */
static bool
newer_dropped_update(Oid relid, Datum key, ConcordRepairVersion *winner)
{
	Oid			types[4] = {TEXTOID, JSONBOID, TIMESTAMPTZOID, OIDOID};
	Datum		values[4];
	char		nulls[4] = "    ";
	Oid			saved_user;
	int			saved_context;
	bool		found;

	values[0] = CStringGetTextDatum(quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
															   get_rel_name(relid)));
	values[1] = key;
	values[2] = TimestampTzGetDatum(winner->known ? winner->commit_time : CONCORD_BASELINE_TS);
	values[3] = ObjectIdGetDatum(relid);
	concord_catalog_become_owner("conflict_history", &saved_user, &saved_context);
	if (SPI_execute_with_args("SELECT true, NULL::pg_catalog.text, h.remote_commit_ts, h.remote_origin::pg_catalog.text,"
							  " false, h.remote_row::pg_catalog.text"
							  "  FROM concord.conflict_history h"
							  " WHERE h.relation = $1 AND h.key = $2 AND h.conflict_type = 'update_missing'"
							  "   AND h.remote_commit_ts > $3 AND h.remote_row IS NOT NULL"
							  "   AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a"
							  "                    WHERE a.attrelid = $4 AND a.attnum > 0 AND NOT a.attisdropped"
							  "                      AND a.attgenerated = ''"
							  "                      AND NOT h.remote_row ? a.attname::pg_catalog.text)"
							  " ORDER BY h.remote_commit_ts DESC, h.remote_origin DESC LIMIT 1",
							  4, types, values, nulls, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the conflict history");
	SetUserIdAndSecContext(saved_user, saved_context);
	found = SPI_processed == 1;
	if (found)
		concord_version_from_spi(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, true, winner);
	return found;
}

/* Writes the winner; the action taken ("stale" if an insert lost a race). */
static const char *
write_winner(Oid relid, RepairSql *sql, Datum key, const ConcordRepairVersion *now,
			 const ConcordRepairVersion *winner, RepOriginId origin,
			 HeapTuple locked, TupleDesc lockdesc)
{
	Datum		row;

	take_origin(origin, winner->origin_node, winner->known ? winner->commit_time : CONCORD_BASELINE_TS);
	if (!winner->present)
	{
		Relation	leaf;
		TupleTableSlot *slot = fetch_locked(&leaf, locked, lockdesc);

		if (concord_spi_as_owner(relid, sql->delete, key, false) != SPI_OK_DELETE || SPI_processed != 1)
			elog(ERROR, "could not delete the row");
		concord_tombstone_record(leaf, slot);
		ExecDropSingleTupleTableSlot(slot);
		table_close(leaf, NoLock);
		concord_apply_log_origin_lsn(InvalidXLogRecPtr);
		return "delete";
	}
	row = DirectFunctionCall1(jsonb_in, CStringGetDatum(winner->row));
	if (now->present)
	{
		if (concord_spi_as_owner(relid, sql->update, row, false) != SPI_OK_UPDATE || SPI_processed != 1)
			elog(ERROR, "could not update the row");
		concord_apply_log_origin_lsn(InvalidXLogRecPtr);
		return "update";
	}
	if (concord_spi_as_owner(relid, sql->insert, row, false) != SPI_OK_INSERT)
		elog(ERROR, "could not insert the row");
	if (SPI_processed == 0)
		return "stale";			/* inserted meanwhile, by a newer write */
	concord_apply_log_origin_lsn(InvalidXLogRecPtr);
	return "insert";
}

static void
record(int64 run_id, const char *coordinator, const char *local, Oid relid, Datum key,
	   const char *action, const ConcordRepairVersion *winner, const char *subscription)
{
	Oid			types[9] = {INT8OID, NAMEOID, NAMEOID, TEXTOID, JSONBOID, TEXTOID,
	NAMEOID, TIMESTAMPTZOID, NAMEOID};
	Datum		values[9];
	char		nulls[9] = "         ";
	Oid			saved_user;
	int			saved_context;

	values[0] = Int64GetDatum(run_id);
	if (subscription)
	{
		nulls[0] = 'n';
		values[8] = DirectFunctionCall1(namein, CStringGetDatum(subscription));
	}
	else
		nulls[8] = 'n';
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(coordinator));
	values[2] = DirectFunctionCall1(namein, CStringGetDatum(local));
	values[3] = CStringGetTextDatum(quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
															   get_rel_name(relid)));
	values[4] = key;
	values[5] = CStringGetTextDatum(action);
	if (winner->origin_node)
		values[6] = DirectFunctionCall1(namein, CStringGetDatum(winner->origin_node));
	else
		nulls[6] = 'n';
	values[7] = TimestampTzGetDatum(winner->commit_time);
	if (!winner->known)
		nulls[7] = 'n';
	concord_catalog_become_owner("repair_history", &saved_user, &saved_context);
	if (SPI_execute_with_args("INSERT INTO concord.repair_history"
							  " (run_id, coordinator, node_name, relation, key, action, origin_node, commit_time,"
							  " subscription_name)"
							  " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
							  9, types, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the repair");
	SetUserIdAndSecContext(saved_user, saved_context);
}

/*
 * Repairs one key on this node (local): see the file's comment.  Returns
 * the action taken.  The caller checked that the transaction has written
 * nothing yet and uses no replication origin.
 */
const char *
concord_repair_key(const char *relation, Datum key, Datum expected_json,
				   Datum winner_json, int64 run_id, const char *coordinator,
				   const char *local, const char *subscription)
{
	Oid			relid;
	ConcordRepairVersion expected,
				winner,
				now;
	RepairSql	sql;
	const char *action;
	HeapTuple	locked = NULL;
	TupleDesc	lockdesc = NULL;
	RepOriginId origin;
	ConcordRepairVersion dropped;
	bool		have_dropped;
	RepOriginId dropped_origin = InvalidRepOriginId;

	relid = DatumGetObjectId(DirectFunctionCall1(regclassin, CStringGetDatum(relation)));
	if (!replicated_here(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table %s is in no replication set of this node", relation),
				 errhint("A repair writes only replicated tables.")));

	SPI_connect();
	read_version(winner_json, &winner);
	if (winner.origin_node == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the winner of a repair needs its origin node")));
	dropped = winner;
	have_dropped = winner.present && newer_dropped_update(relid, key, &dropped);
	/* the origins first, before the transaction has an xid, in name order */
	if (have_dropped && strcmp(dropped.origin_node, winner.origin_node) < 0)
		dropped_origin = repair_origin(dropped.origin_node);
	origin = repair_origin(winner.origin_node);
	if (have_dropped && strcmp(dropped.origin_node, winner.origin_node) == 0)
		dropped_origin = origin;
	else if (have_dropped && strcmp(dropped.origin_node, winner.origin_node) > 0)
		dropped_origin = repair_origin(dropped.origin_node);
	read_version(expected_json, &expected);
	make_sql(relid, &sql);
	if (concord_spi_as_owner(relid, sql.lock, key, false) != SPI_OK_SELECT)
		elog(ERROR, "could not lock the key");
	if (SPI_processed > 0)
	{
		locked = SPI_copytuple(SPI_tuptable->vals[0]);
		lockdesc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
	}
	current_version(relid, key, &now);
	if (!now.present && locked != NULL)
		elog(ERROR, "the key's row went while locked");
	if (same_content(&now, &winner))
		action = "already";
	else if (!same_version(&now, &expected) || (now.present && locked == NULL))
		action = "stale";		/* written since the diff (or the lock) */
	else
	{
		/* this node lacks the key: the newest version it saw goes in */
		if (have_dropped && !now.present)
		{
			winner = dropped;
			origin = dropped_origin;
		}
		action = write_winner(relid, &sql, key, &now, &winner, origin, locked, lockdesc);
	}
	record(run_id, coordinator, local, relid, key, action, &winner, subscription);
	SPI_finish();
	return action;
}
