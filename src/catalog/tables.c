/*-------------------------------------------------------------------------
 *
 * tables.c
 *		Reads and writes concord's catalog tables.
 *
 * The catalogs are ordinary tables in schema "concord", created by the
 * extension script.  They are written here with heap and index routines,
 * not SQL, so that the API functions need no privileges on them and the
 * workers need no SPI.
 *
 * Locking: writers of a catalog first take concord_catalog_lock() on it, a
 * self-conflicting lock held to the end of the transaction, so that checks
 * and the writes that depend on them are serialized.  Readers scan with the
 * latest MVCC snapshot: they see what others committed before the lock was
 * granted, and this transaction's own earlier commands.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "storage/lmgr.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/syscache.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/xid8.h"

#include "catalog/tables.h"

/* A heap scan of one catalog under a registered up-to-date snapshot. */

/*
 * Returns the OID of a concord catalog table.  The extension can be dropped
 * and created again, so the OID is looked up each time (a syscache hit).
 */
Oid
concord_catalog_relid(const char *relname, bool missing_ok)
{
	Oid			nspid = get_namespace_oid(CONCORD_SCHEMA, true);
	Oid			relid = InvalidOid;

	if (OidIsValid(nspid))
		relid = get_relname_relid(relname, nspid);
	if (!OidIsValid(relid) && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("concord catalog table \"%s.%s\" does not exist",
						CONCORD_SCHEMA, relname),
				 errhint("Run CREATE EXTENSION concord in this database.")));
	return relid;
}

/* Serializes writers of one catalog until the end of the transaction. */
void
concord_catalog_lock(const char *relname)
{
	LockRelationOid(concord_catalog_relid(relname, false),
					ShareRowExclusiveLock);
}

Relation
concord_catalog_open(const char *relname, LOCKMODE lockmode)
{
	return table_open(concord_catalog_relid(relname, false), lockmode);
}

/*
 * Inside logical decoding the catalogs are read with the historic snapshot
 * (they are user_catalog_tables for that reason); elsewhere with the latest
 * snapshot.
 */
void
concord_catalog_beginscan(CatalogScan *cs, Relation rel, int nkeys, ScanKey keys)
{
	if (HistoricSnapshotActive())
		cs->snapshot = RegisterSnapshot(GetCatalogSnapshot(RelationGetRelid(rel)));
	else
		cs->snapshot = RegisterSnapshot(GetLatestSnapshot());
	cs->sscan = systable_beginscan(rel, InvalidOid, false, cs->snapshot,
								   nkeys, keys);
}

void
concord_catalog_endscan(CatalogScan *cs)
{
	systable_endscan(cs->sscan);
	UnregisterSnapshot(cs->snapshot);
}

/*
 * Tells walsenders decoding past this point that what they ship of a
 * relation may have changed (see output_rel.c).  A relation already
 * dropped needs nothing: its drop invalidated it.
 */
static void
invalidate_relation(Oid relid)
{
	if (SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		CacheInvalidateRelcacheByRelid(relid);
}

static void
invalidate_set_members(Oid set_id)
{
	ListCell   *lc;

	foreach(lc, concord_set_table_get_by_set(set_id))
		invalidate_relation(((ConcordSetTable *) lfirst(lc))->relid);
}

/* Reads the rows of a catalog matching the keys, each built by from_tuple. */
List *
concord_catalog_collect(const char *relname, int nkeys, ScanKey keys,
						ConcordFromTuple from_tuple)
{
	Relation	rel = concord_catalog_open(relname, AccessShareLock);
	CatalogScan cs;
	HeapTuple	tup;
	List	   *result = NIL;

	concord_catalog_beginscan(&cs, rel, nkeys, keys);
	while (HeapTupleIsValid(tup = systable_getnext(cs.sscan)))
		result = lappend(result, from_tuple(tup, RelationGetDescr(rel)));
	concord_catalog_endscan(&cs);
	table_close(rel, AccessShareLock);
	return result;
}

void
concord_scankey_oid(ScanKey key, AttrNumber attno, Oid value)
{
	ScanKeyInit(key, attno, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(value));
}

/* A name key: the datum must point at a full NameData, not a C string. */
void
concord_scankey_name(ScanKey key, AttrNumber attno, const char *value)
{
	Name		n = palloc0(sizeof(NameData));

	namestrcpy(n, value);
	ScanKeyInit(key, attno, BTEqualStrategyNumber, F_NAMEEQ,
				NameGetDatum(n));
}

/* ---------------------------------------------------------------------
 * concord.node
 * ---------------------------------------------------------------------
 */

static void *
node_from_tuple(HeapTuple tup, TupleDesc desc)
{
	Datum		values[Natts_node];
	bool		nulls[Natts_node];
	ConcordNode *node = palloc0(sizeof(ConcordNode));

	heap_deform_tuple(tup, desc, values, nulls);
	node->id = DatumGetObjectId(values[Anum_node_id - 1]);
	node->name = pstrdup(NameStr(*DatumGetName(values[Anum_node_name - 1])));
	node->dsn = TextDatumGetCString(values[Anum_node_dsn - 1]);
	node->priority = DatumGetInt32(values[Anum_node_priority - 1]);
	node->is_local = DatumGetBool(values[Anum_node_is_local - 1]);
	node->created_at = DatumGetTimestampTz(values[Anum_node_created_at - 1]);
	return node;
}

/* Returns the first node matching the key, or NULL. */
static ConcordNode *
node_lookup(ScanKey key)
{
	List	   *nodes = concord_catalog_collect(CATALOG_NODE, 1, key, node_from_tuple);

	return nodes ? linitial(nodes) : NULL;
}

ConcordNode *
concord_node_get_local(bool missing_ok)
{
	ScanKeyData key;
	ConcordNode *node;

	ScanKeyInit(&key, Anum_node_is_local, BTEqualStrategyNumber, F_BOOLEQ,
				BoolGetDatum(true));
	node = node_lookup(&key);
	if (node == NULL && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("database \"%s\" is not a concord node",
						get_database_name(MyDatabaseId)),
				 errhint("Run concord.create_node() first.")));
	return node;
}

ConcordNode *
concord_node_get_by_name(const char *name)
{
	ScanKeyData key;

	concord_scankey_name(&key, Anum_node_name, name);
	return node_lookup(&key);
}

ConcordNode *
concord_node_get_by_id(Oid node_id)
{
	ScanKeyData key;

	concord_scankey_oid(&key, Anum_node_id, node_id);
	return node_lookup(&key);
}

static void
node_to_values(const ConcordNode *node, Datum *values, bool *nulls)
{
	Name		name = palloc0(sizeof(NameData));

	namestrcpy(name, node->name);
	memset(nulls, 0, sizeof(bool) * Natts_node);
	values[Anum_node_id - 1] = ObjectIdGetDatum(node->id);
	values[Anum_node_name - 1] = NameGetDatum(name);
	values[Anum_node_dsn - 1] = CStringGetTextDatum(node->dsn);
	values[Anum_node_priority - 1] = Int32GetDatum(node->priority);
	values[Anum_node_is_local - 1] = BoolGetDatum(node->is_local);
	values[Anum_node_created_at - 1] = TimestampTzGetDatum(GetCurrentTimestamp());
}

void
concord_node_insert(const ConcordNode *node)
{
	Relation	rel = concord_catalog_open(CATALOG_NODE, RowExclusiveLock);
	Datum		values[Natts_node];
	bool		nulls[Natts_node];
	HeapTuple	tup;

	node_to_values(node, values, nulls);
	tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	CatalogTupleInsert(rel, tup);
	heap_freetuple(tup);
	invalidate_relation(RelationGetRelid(rel));
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
}

/*
 * A node's id is a hash of its name, so that every node of a mesh knows a
 * peer by the same id.
 */
Oid
concord_node_id_for_name(const char *name)
{
	uint32		h = hash_bytes((const unsigned char *) name, strlen(name));

	if (h < FirstNormalObjectId)
		h += FirstNormalObjectId;
	return (Oid) h;
}

/*
 * Records the priority of a node this one knows only from the changes it
 * receives from it through another node (the far nodes of a ring or a
 * star), as the transaction states it: replica_priority then weighs that
 * node's versions here, and passes them on, with the priority they have
 * everywhere else.  Such a row has no DSN (''); its priority follows what
 * the node's changes say.  A node this one subscribes to keeps the
 * priority its subscription recorded.  Nothing is recorded for a name
 * whose id another node already has (a LOG line says so).  Writers of
 * concord.node are serialized (concord_catalog_lock()): the caller keeps
 * its transaction short.
 */
void
concord_node_learn(const char *name, int32 priority)
{
	ConcordNode *node;
	ConcordNode learnt;

	/* Read first; lock and read again only to write. */
	node = concord_node_get_by_name(name);
	if (node != NULL &&
		(node->dsn[0] != '\0' || node->is_local || node->priority == priority))
		return;
	concord_catalog_lock(CATALOG_NODE);
	node = concord_node_get_by_name(name);
	if (node != NULL)
	{
		if (node->dsn[0] == '\0' && !node->is_local && node->priority != priority)
		{
			node->priority = priority;
			concord_node_update(node);
		}
		return;
	}
	learnt.id = concord_node_id_for_name(name);
	node = concord_node_get_by_id(learnt.id);
	if (node != NULL)
	{
		ereport(LOG,
				(errmsg("node \"%s\" is not recorded in concord.node: its name hashes to the id of node \"%s\"",
						name, node->name),
				 errdetail("replica_priority gives the versions of node \"%s\" priority 0 here.", name)));
		return;
	}
	learnt.name = (char *) name;
	learnt.dsn = "";
	learnt.priority = priority;
	learnt.is_local = false;
	concord_node_insert(&learnt);
}

/* Rewrites the dsn and priority of the node with node->id. */
void
concord_node_update(const ConcordNode *node)
{
	Relation	rel = concord_catalog_open(CATALOG_NODE, RowExclusiveLock);
	ScanKeyData key;
	CatalogScan cs;
	HeapTuple	oldtup;

	concord_scankey_oid(&key, Anum_node_id, node->id);
	concord_catalog_beginscan(&cs, rel, 1, &key);
	oldtup = systable_getnext(cs.sscan);
	if (!HeapTupleIsValid(oldtup))
		elog(ERROR, "concord node %u vanished", node->id);
	else
	{
		Datum		values[Natts_node];
		bool		nulls[Natts_node];
		bool		replace[Natts_node];
		HeapTuple	newtup;

		memset(values, 0, sizeof(values));
		memset(nulls, 0, sizeof(nulls));
		memset(replace, 0, sizeof(replace));
		values[Anum_node_dsn - 1] = CStringGetTextDatum(node->dsn);
		replace[Anum_node_dsn - 1] = true;
		values[Anum_node_priority - 1] = Int32GetDatum(node->priority);
		replace[Anum_node_priority - 1] = true;
		newtup = heap_modify_tuple(oldtup, RelationGetDescr(rel),
								   values, nulls, replace);
		CatalogTupleUpdate(rel, &oldtup->t_self, newtup);
	}
	concord_catalog_endscan(&cs);
	invalidate_relation(RelationGetRelid(rel));
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
}

/* Deletes every row whose oid column attno equals value; returns the count. */
int
concord_catalog_delete_where_oid(const char *relname, AttrNumber attno, Oid value)
{
	Relation	rel = concord_catalog_open(relname, RowExclusiveLock);
	ScanKeyData key;
	CatalogScan cs;
	HeapTuple	tup;
	int			ndeleted = 0;

	concord_scankey_oid(&key, attno, value);
	concord_catalog_beginscan(&cs, rel, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(cs.sscan)))
	{
		CatalogTupleDelete(rel, &tup->t_self);
		ndeleted++;
	}
	concord_catalog_endscan(&cs);
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
	return ndeleted;
}

void
concord_node_delete(Oid node_id)
{
	concord_catalog_delete_where_oid(CATALOG_NODE, Anum_node_id, node_id);
	invalidate_relation(concord_catalog_relid(CATALOG_NODE, false));
}

/* ---------------------------------------------------------------------
 * concord.replication_set
 * ---------------------------------------------------------------------
 */

static void *
set_from_tuple(HeapTuple tup, TupleDesc desc)
{
	Datum		values[Natts_set];
	bool		nulls[Natts_set];
	ConcordSet *set = palloc0(sizeof(ConcordSet));

	heap_deform_tuple(tup, desc, values, nulls);
	set->id = DatumGetObjectId(values[Anum_set_id - 1]);
	set->name = pstrdup(NameStr(*DatumGetName(values[Anum_set_name - 1])));
	set->replicate_insert = DatumGetBool(values[Anum_set_insert - 1]);
	set->replicate_update = DatumGetBool(values[Anum_set_update - 1]);
	set->replicate_delete = DatumGetBool(values[Anum_set_delete - 1]);
	set->replicate_truncate = DatumGetBool(values[Anum_set_truncate - 1]);
	set->capture = TextDatumGetCString(values[Anum_set_capture - 1]);
	return set;
}

/* Returns the sets matching the keys (all sets with nkeys = 0). */
static List *
set_lookup(int nkeys, ScanKey keys)
{
	return concord_catalog_collect(CATALOG_SET, nkeys, keys, set_from_tuple);
}

ConcordSet *
concord_set_get_by_name(const char *name)
{
	ScanKeyData key;
	List	   *sets;

	concord_scankey_name(&key, Anum_set_name, name);
	sets = set_lookup(1, &key);
	return sets == NIL ? NULL : linitial(sets);
}

static bool
set_id_used(Oid set_id)
{
	ScanKeyData key;

	concord_scankey_oid(&key, Anum_set_id, set_id);
	return set_lookup(1, &key) != NIL;
}

/* A set id not in use; set ids are local, the first free one will do. */
Oid
concord_set_new_id(void)
{
	Oid			id = FirstNormalObjectId;

	while (set_id_used(id))
		id++;
	return id;
}

List *
concord_set_get_all(void)
{
	return set_lookup(0, NULL);
}

static HeapTuple
set_form_tuple(Relation rel, const ConcordSet *set)
{
	Datum		values[Natts_set];
	bool		nulls[Natts_set];
	Name		name = palloc0(sizeof(NameData));

	namestrcpy(name, set->name);
	memset(nulls, 0, sizeof(nulls));
	values[Anum_set_id - 1] = ObjectIdGetDatum(set->id);
	values[Anum_set_name - 1] = NameGetDatum(name);
	values[Anum_set_insert - 1] = BoolGetDatum(set->replicate_insert);
	values[Anum_set_update - 1] = BoolGetDatum(set->replicate_update);
	values[Anum_set_delete - 1] = BoolGetDatum(set->replicate_delete);
	values[Anum_set_truncate - 1] = BoolGetDatum(set->replicate_truncate);
	values[Anum_set_capture - 1] = CStringGetTextDatum(set->capture);
	return heap_form_tuple(RelationGetDescr(rel), values, nulls);
}

void
concord_set_insert(const ConcordSet *set)
{
	Relation	rel = concord_catalog_open(CATALOG_SET, RowExclusiveLock);

	CatalogTupleInsert(rel, set_form_tuple(rel, set));
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
}

/* Rewrites every column of the set with set->id. */
void
concord_set_update(const ConcordSet *set)
{
	Relation	rel = concord_catalog_open(CATALOG_SET, RowExclusiveLock);
	ScanKeyData key;
	CatalogScan cs;
	HeapTuple	oldtup;

	concord_scankey_oid(&key, Anum_set_id, set->id);
	concord_catalog_beginscan(&cs, rel, 1, &key);
	oldtup = systable_getnext(cs.sscan);
	if (!HeapTupleIsValid(oldtup))
		elog(ERROR, "concord replication set %u vanished", set->id);
	CatalogTupleUpdate(rel, &oldtup->t_self, set_form_tuple(rel, set));
	concord_catalog_endscan(&cs);
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
	invalidate_set_members(set->id);
}

/* Deletes a set together with its table memberships. */
void
concord_set_delete(Oid set_id)
{
	invalidate_set_members(set_id);
	concord_catalog_delete_where_oid(CATALOG_SET_TABLE, Anum_set_table_set_id, set_id);
	concord_catalog_delete_where_oid(CATALOG_SET, Anum_set_id, set_id);
}

/* ---------------------------------------------------------------------
 * concord.replication_set_table
 * ---------------------------------------------------------------------
 */

static void *
set_table_from_tuple(HeapTuple tup, TupleDesc desc)
{
	Datum		values[Natts_set_table];
	bool		nulls[Natts_set_table];
	ConcordSetTable *member = palloc0(sizeof(ConcordSetTable));

	/* Before 0.3.0 the catalog has no row_filter_expr: it reads as NULL. */
	memset(nulls, true, sizeof(nulls));
	heap_deform_tuple(tup, desc, values, nulls);
	member->set_id = DatumGetObjectId(values[Anum_set_table_set_id - 1]);
	member->relid = DatumGetObjectId(values[Anum_set_table_reloid - 1]);
	if (!nulls[Anum_set_table_columns - 1])
		member->columns = DatumGetArrayTypePCopy(values[Anum_set_table_columns - 1]);
	if (!nulls[Anum_set_table_row_filter - 1])
		member->row_filter = TextDatumGetCString(values[Anum_set_table_row_filter - 1]);
	if (!nulls[Anum_set_table_row_filter_expr - 1])
		member->row_filter_expr = TextDatumGetCString(values[Anum_set_table_row_filter_expr - 1]);
	return member;
}

static List *
set_table_lookup(int nkeys, ScanKey keys)
{
	return concord_catalog_collect(CATALOG_SET_TABLE, nkeys, keys, set_table_from_tuple);
}

List *
concord_set_table_get_by_set(Oid set_id)
{
	ScanKeyData key;

	concord_scankey_oid(&key, Anum_set_table_set_id, set_id);
	return set_table_lookup(1, &key);
}

List *
concord_set_table_get_by_relid(Oid relid)
{
	ScanKeyData key;

	concord_scankey_oid(&key, Anum_set_table_reloid, relid);
	return set_table_lookup(1, &key);
}

bool
concord_set_table_exists(Oid set_id, Oid relid)
{
	ScanKeyData keys[2];

	concord_scankey_oid(&keys[0], Anum_set_table_set_id, set_id);
	concord_scankey_oid(&keys[1], Anum_set_table_reloid, relid);
	return set_table_lookup(2, keys) != NIL;
}

static void
set_filter_values(const ConcordSetTable *member, Datum *values, bool *nulls)
{
	nulls[Anum_set_table_row_filter - 1] = member->row_filter == NULL;
	if (member->row_filter)
		values[Anum_set_table_row_filter - 1] = CStringGetTextDatum(member->row_filter);
	nulls[Anum_set_table_row_filter_expr - 1] = member->row_filter_expr == NULL;
	if (member->row_filter_expr)
		values[Anum_set_table_row_filter_expr - 1] =
			CStringGetTextDatum(member->row_filter_expr);
}

/* Replaces the row filter of one membership (text and analysed form). */
void
concord_set_table_update_filter(const ConcordSetTable *member)
{
	Relation	rel = concord_catalog_open(CATALOG_SET_TABLE, RowExclusiveLock);
	ScanKeyData keys[2];
	CatalogScan cs;
	HeapTuple	oldtup;
	Datum		values[Natts_set_table];
	bool		nulls[Natts_set_table];
	bool		replace[Natts_set_table];

	concord_scankey_oid(&keys[0], Anum_set_table_set_id, member->set_id);
	concord_scankey_oid(&keys[1], Anum_set_table_reloid, member->relid);
	concord_catalog_beginscan(&cs, rel, 2, keys);
	oldtup = systable_getnext(cs.sscan);
	if (!HeapTupleIsValid(oldtup))
		elog(ERROR, "concord set membership of relation %u vanished", member->relid);
	memset(replace, 0, sizeof(replace));
	set_filter_values(member, values, nulls);
	replace[Anum_set_table_row_filter - 1] = true;
	replace[Anum_set_table_row_filter_expr - 1] = true;
	CatalogTupleUpdate(rel, &oldtup->t_self,
					   heap_modify_tuple(oldtup, RelationGetDescr(rel),
										 values, nulls, replace));
	concord_catalog_endscan(&cs);
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
	invalidate_relation(member->relid);
}

void
concord_set_table_insert(const ConcordSetTable *member)
{
	Relation	rel = concord_catalog_open(CATALOG_SET_TABLE, RowExclusiveLock);
	Datum		values[Natts_set_table];
	bool		nulls[Natts_set_table];
	HeapTuple	tup;

	memset(nulls, 0, sizeof(nulls));
	values[Anum_set_table_set_id - 1] = ObjectIdGetDatum(member->set_id);
	values[Anum_set_table_reloid - 1] = ObjectIdGetDatum(member->relid);
	if (member->columns)
		values[Anum_set_table_columns - 1] = PointerGetDatum(member->columns);
	else
		nulls[Anum_set_table_columns - 1] = true;
	set_filter_values(member, values, nulls);
	tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	CatalogTupleInsert(rel, tup);
	heap_freetuple(tup);
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
	invalidate_relation(member->relid);
}

bool
concord_set_table_delete(Oid set_id, Oid relid)
{
	Relation	rel = concord_catalog_open(CATALOG_SET_TABLE, RowExclusiveLock);
	ScanKeyData keys[2];
	CatalogScan cs;
	HeapTuple	tup;
	bool		found = false;

	concord_scankey_oid(&keys[0], Anum_set_table_set_id, set_id);
	concord_scankey_oid(&keys[1], Anum_set_table_reloid, relid);
	concord_catalog_beginscan(&cs, rel, 2, keys);
	while (HeapTupleIsValid(tup = systable_getnext(cs.sscan)))
	{
		CatalogTupleDelete(rel, &tup->t_self);
		found = true;
	}
	concord_catalog_endscan(&cs);
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
	invalidate_relation(relid);
	return found;
}

/* Forgets a dropped relation: its set memberships and resolver settings. */
int
concord_catalog_forget_relation(Oid relid)
{
	concord_catalog_delete_where_oid(CATALOG_RESOLVER, Anum_resolver_reloid, relid);
	return concord_catalog_delete_where_oid(CATALOG_SET_TABLE, Anum_set_table_reloid,
											relid);
}

/* ---------------------------------------------------------------------
 * concord.origin_history
 * ---------------------------------------------------------------------
 */

/*
 * Records that origin roident stands for node_name from xid since on.
 * Nothing before ALTER EXTENSION concord UPDATE made the catalog: the
 * update records the origins that exist then.
 */
void
concord_origin_history_insert(Oid roident, uint64 since, const char *node_name)
{
	Oid			relid = concord_catalog_relid(CATALOG_ORIGIN_HISTORY, true);
	Relation	rel;
	Datum		values[Natts_origin_history];
	bool		nulls[Natts_origin_history] = {false};
	NameData	node;
	HeapTuple	tup;

	if (!OidIsValid(relid))
		return;
	rel = table_open(relid, RowExclusiveLock);
	namestrcpy(&node, node_name);
	values[Anum_origin_history_roident - 1] = ObjectIdGetDatum(roident);
	values[Anum_origin_history_since - 1] =
		FullTransactionIdGetDatum(FullTransactionIdFromU64(since));
	values[Anum_origin_history_node - 1] = NameGetDatum(&node);
	tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	CatalogTupleInsert(rel, tup);
	heap_freetuple(tup);
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
}

/*
 * Records that the origin stands for node_name from since on, replacing a
 * row of the same since: one whose origin was made and dropped in that
 * transaction (no transaction ever committed under it), or the mark of a
 * drop whose next xid is the transaction that makes the origin again.
 */
void
concord_origin_history_set(Oid roident, uint64 since, const char *node_name)
{
	Oid			relid = concord_catalog_relid(CATALOG_ORIGIN_HISTORY, true);
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key[1];
	HeapTuple	tup;
	bool		same = false;

	if (!OidIsValid(relid))
		return;
	rel = table_open(relid, RowExclusiveLock);
	ScanKeyInit(&key[0], Anum_origin_history_roident, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(roident));
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 1, key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_origin_history_since,
									 RelationGetDescr(rel), &isnull);

		if (U64FromFullTransactionId(DatumGetFullTransactionId(d)) == since)
		{
			CatalogTupleDelete(rel, &tup->t_self);
			same = true;
		}
	}
	systable_endscan(scan);
	table_close(rel, RowExclusiveLock);
	if (same)
		CommandCounterIncrement();
	concord_origin_history_insert(roident, since, node_name);
}

/* Records that concord dropped the origin: from since on, the id is no node's. */
void
concord_origin_history_mark_dropped(Oid roident, uint64 since)
{
	concord_origin_history_set(roident, since, "");
}

static void *
origin_holder_from_tuple(HeapTuple tup, TupleDesc desc)
{
	Datum		values[Natts_origin_history];
	bool		nulls[Natts_origin_history];
	ConcordOriginHolder *h = palloc(sizeof(ConcordOriginHolder));

	heap_deform_tuple(tup, desc, values, nulls);
	h->roident = DatumGetObjectId(values[Anum_origin_history_roident - 1]);
	h->since = U64FromFullTransactionId(
		DatumGetFullTransactionId(values[Anum_origin_history_since - 1]));
	namestrcpy(&h->node, NameStr(*DatumGetName(values[Anum_origin_history_node - 1])));
	return h;
}

/* Every row of concord.origin_history; none before the 0.3.0 catalogs. */
List *
concord_origin_history_all(void)
{
	if (!OidIsValid(concord_catalog_relid(CATALOG_ORIGIN_HISTORY, true)))
		return NIL;
	return concord_catalog_collect(CATALOG_ORIGIN_HISTORY, 0, NULL,
								   origin_holder_from_tuple);
}

/*
 * Switches to the owner of concord's catalog table relname (the superuser
 * who created the extension), in a restricted security context: concord's
 * own writes and reads, made while a worker runs as a table's owner or a
 * session as any role, need no privilege of that role.  Undo with
 * SetUserIdAndSecContext(*saved_user, *saved_context).
 */
/* The owner of a relation. */
Oid
concord_rel_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

void
concord_catalog_become_owner(const char *relname, Oid *saved_user,
							 int *saved_context)
{
	Oid			owner = concord_rel_owner(concord_catalog_relid(relname, false));

	GetUserIdAndSecContext(saved_user, saved_context);
	SetUserIdAndSecContext(owner, *saved_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

/*
 * The columns of a table in order, as a repair (antientropy/repair_row.c)
 * or a resynchronization's merge (apply/sync_groups.c) writes them: with
 * SPI connected, in SPI's memory.
 */
List *
concord_table_columns(Oid relid)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	List	   *columns = NIL;

	if (SPI_execute_with_args("SELECT pg_catalog.quote_ident(a.attname), pg_catalog.quote_literal(a.attname),"
							  " a.attname = ANY (concord.key_columns($1::pg_catalog.regclass)),"
							  " a.attgenerated <> '', a.attidentity = 'a'"
							  " FROM pg_catalog.pg_attribute a"
							  " WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped"
							  " ORDER BY a.attnum",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the columns of table %u", relid);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		ConcordColumn *c = palloc(sizeof(ConcordColumn));
		bool		isnull;

		c->ident = SPI_getvalue(tup, desc, 1);
		c->literal = SPI_getvalue(tup, desc, 2);
		c->key = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		c->generated = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
		c->always = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
		columns = lappend(columns, c);
	}
	return columns;
}
