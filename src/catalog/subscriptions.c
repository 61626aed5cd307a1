/*-------------------------------------------------------------------------
 *
 * subscriptions.c
 *		Reads and writes the catalogs of subscriptions: concord.subscription,
 *		concord.subscription_table and concord.conflict_resolver.
 *
 * As tables.c, whose helpers it uses (catalog/tables.h): heap and index
 * routines, writers serialized by concord_catalog_lock().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "catalog/tables.h"

/* ---------------------------------------------------------------------
 * concord.subscription
 * ---------------------------------------------------------------------
 */

/*
 * True if a subscription to the given provider exists, or any subscription
 * at all when provider_node_id is InvalidOid.
 */
bool
concord_subscription_exists(Oid provider_node_id)
{
	Relation	rel = concord_catalog_open(CATALOG_SUBSCRIPTION, AccessShareLock);
	ScanKeyData key;
	CatalogScan cs;
	bool		found;

	if (OidIsValid(provider_node_id))
		concord_scankey_oid(&key, Anum_sub_provider_node_id, provider_node_id);
	concord_catalog_beginscan(&cs, rel, OidIsValid(provider_node_id) ? 1 : 0, &key);
	found = HeapTupleIsValid(systable_getnext(cs.sscan));
	concord_catalog_endscan(&cs);
	table_close(rel, AccessShareLock);
	return found;
}

static ArrayType *
text_array_from_list(List *list)
{
	int			n = list_length(list);
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	int			i = 0;
	ListCell   *lc;

	foreach(lc, list)
		elems[i++] = CStringGetTextDatum(lfirst(lc));
	return construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT);
}

static List *
list_from_text_array(Datum array)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *result = NIL;

	deconstruct_array(DatumGetArrayTypeP(array), TEXTOID, -1, false,
					  TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			result = lappend(result, TextDatumGetCString(elems[i]));
	return result;
}

static void *
sub_from_tuple(HeapTuple tup, TupleDesc desc)
{
	Datum		values[Natts_sub];
	bool		nulls[Natts_sub];
	ConcordSubscription *sub = palloc0(sizeof(ConcordSubscription));

	/* Before 0.3.0 the catalog has no password_required: it reads as NULL. */
	memset(nulls, true, sizeof(nulls));
	heap_deform_tuple(tup, desc, values, nulls);
	sub->id = DatumGetObjectId(values[Anum_sub_id - 1]);
	sub->name = pstrdup(NameStr(*DatumGetName(values[Anum_sub_name - 1])));
	sub->provider_node_id = DatumGetObjectId(values[Anum_sub_provider_node_id - 1]);
	sub->provider_dsn = TextDatumGetCString(values[Anum_sub_provider_dsn - 1]);
	sub->slot_name = pstrdup(NameStr(*DatumGetName(values[Anum_sub_slot_name - 1])));
	sub->replication_sets = list_from_text_array(values[Anum_sub_replication_sets - 1]);
	sub->forward_origins = list_from_text_array(values[Anum_sub_forward_origins - 1]);
	sub->synchronize_data = DatumGetBool(values[Anum_sub_synchronize_data - 1]);
	sub->apply_delay = *DatumGetIntervalP(values[Anum_sub_apply_delay - 1]);
	sub->enabled = DatumGetBool(values[Anum_sub_enabled - 1]);
	sub->sync_done = DatumGetBool(values[Anum_sub_sync_done - 1]);
	sub->created_at = DatumGetTimestampTz(values[Anum_sub_created_at - 1]);
	sub->password_required = !nulls[Anum_sub_password_required - 1] &&
		DatumGetBool(values[Anum_sub_password_required - 1]);
	if (!nulls[Anum_sub_join_copy_via - 1])
		sub->join_copy_via = DatumGetObjectId(values[Anum_sub_join_copy_via - 1]);
	if (!nulls[Anum_sub_join_start_lsn - 1])
		sub->join_start_lsn = DatumGetLSN(values[Anum_sub_join_start_lsn - 1]);
	return sub;
}

static List *
sub_lookup(int nkeys, ScanKey keys)
{
	return concord_catalog_collect(CATALOG_SUBSCRIPTION, nkeys, keys, sub_from_tuple);
}

ConcordSubscription *
concord_subscription_get_by_name(const char *name)
{
	ScanKeyData key;
	List	   *subs;

	concord_scankey_name(&key, Anum_sub_name, name);
	subs = sub_lookup(1, &key);
	return subs ? linitial(subs) : NULL;
}

ConcordSubscription *
concord_subscription_get_by_id(Oid subid)
{
	ScanKeyData key;
	List	   *subs;

	concord_scankey_oid(&key, Anum_sub_id, subid);
	subs = sub_lookup(1, &key);
	return subs ? linitial(subs) : NULL;
}

List *
concord_subscription_get_all(void)
{
	return sub_lookup(0, NULL);
}

static HeapTuple
sub_form_tuple(Relation rel, const ConcordSubscription *sub)
{
	Datum		values[Natts_sub];
	bool		nulls[Natts_sub];
	Name		name = palloc0(sizeof(NameData));
	Name		slot = palloc0(sizeof(NameData));
	Interval   *delay = palloc(sizeof(Interval));

	namestrcpy(name, sub->name);
	namestrcpy(slot, sub->slot_name);
	*delay = sub->apply_delay;
	memset(nulls, 0, sizeof(nulls));
	values[Anum_sub_id - 1] = ObjectIdGetDatum(sub->id);
	values[Anum_sub_name - 1] = NameGetDatum(name);
	values[Anum_sub_provider_node_id - 1] = ObjectIdGetDatum(sub->provider_node_id);
	values[Anum_sub_provider_dsn - 1] = CStringGetTextDatum(sub->provider_dsn);
	values[Anum_sub_slot_name - 1] = NameGetDatum(slot);
	values[Anum_sub_replication_sets - 1] = PointerGetDatum(text_array_from_list(sub->replication_sets));
	values[Anum_sub_forward_origins - 1] = PointerGetDatum(text_array_from_list(sub->forward_origins));
	values[Anum_sub_synchronize_data - 1] = BoolGetDatum(sub->synchronize_data);
	values[Anum_sub_apply_delay - 1] = IntervalPGetDatum(delay);
	values[Anum_sub_enabled - 1] = BoolGetDatum(sub->enabled);
	values[Anum_sub_sync_done - 1] = BoolGetDatum(sub->sync_done);
	values[Anum_sub_created_at - 1] = TimestampTzGetDatum(GetCurrentTimestamp());
	values[Anum_sub_password_required - 1] = BoolGetDatum(sub->password_required);
	values[Anum_sub_join_copy_via - 1] = ObjectIdGetDatum(sub->join_copy_via);
	nulls[Anum_sub_join_copy_via - 1] = !OidIsValid(sub->join_copy_via);
	values[Anum_sub_join_start_lsn - 1] = LSNGetDatum(sub->join_start_lsn);
	nulls[Anum_sub_join_start_lsn - 1] = XLogRecPtrIsInvalid(sub->join_start_lsn);
	return heap_form_tuple(RelationGetDescr(rel), values, nulls);
}

void
concord_subscription_insert(const ConcordSubscription *sub)
{
	Relation	rel = concord_catalog_open(CATALOG_SUBSCRIPTION, RowExclusiveLock);

	if (sub->password_required &&
		RelationGetDescr(rel)->natts < Anum_sub_password_required)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("only a superuser may create a subscription before concord's catalogs are updated"),
				 errhint("Run ALTER EXTENSION concord UPDATE.")));
	if (OidIsValid(sub->join_copy_via) &&
		RelationGetDescr(rel)->natts < Anum_sub_join_copy_via)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot join a mesh before concord's catalogs are updated"),
				 errhint("Run ALTER EXTENSION concord UPDATE.")));
	CatalogTupleInsert(rel, sub_form_tuple(rel, sub));
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
}

/*
 * Rewrites enabled and sync_done of the subscription with sub->id, and
 * its join columns where the catalog has them.
 */
void
concord_subscription_update(const ConcordSubscription *sub)
{
	Relation	rel = concord_catalog_open(CATALOG_SUBSCRIPTION, RowExclusiveLock);
	ScanKeyData key;
	CatalogScan cs;
	HeapTuple	oldtup;
	Datum		values[Natts_sub];
	bool		nulls[Natts_sub];
	bool		replace[Natts_sub];

	concord_scankey_oid(&key, Anum_sub_id, sub->id);
	concord_catalog_beginscan(&cs, rel, 1, &key);
	oldtup = systable_getnext(cs.sscan);
	if (!HeapTupleIsValid(oldtup))
		elog(ERROR, "concord subscription %u vanished", sub->id);
	memset(nulls, 0, sizeof(nulls));
	memset(replace, 0, sizeof(replace));
	values[Anum_sub_enabled - 1] = BoolGetDatum(sub->enabled);
	replace[Anum_sub_enabled - 1] = true;
	values[Anum_sub_sync_done - 1] = BoolGetDatum(sub->sync_done);
	replace[Anum_sub_sync_done - 1] = true;
	if (RelationGetDescr(rel)->natts >= Anum_sub_join_start_lsn)
	{
		values[Anum_sub_join_copy_via - 1] = ObjectIdGetDatum(sub->join_copy_via);
		nulls[Anum_sub_join_copy_via - 1] = !OidIsValid(sub->join_copy_via);
		replace[Anum_sub_join_copy_via - 1] = true;
		values[Anum_sub_join_start_lsn - 1] = LSNGetDatum(sub->join_start_lsn);
		nulls[Anum_sub_join_start_lsn - 1] = XLogRecPtrIsInvalid(sub->join_start_lsn);
		replace[Anum_sub_join_start_lsn - 1] = true;
	}
	CatalogTupleUpdate(rel, &oldtup->t_self,
					   heap_modify_tuple(oldtup, RelationGetDescr(rel),
										 values, nulls, replace));
	concord_catalog_endscan(&cs);
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
}

void
concord_subscription_delete(Oid subid)
{
	concord_catalog_delete_where_oid(CATALOG_SUB_TABLE, Anum_sub_table_sub_id, subid);
	concord_catalog_delete_where_oid(CATALOG_SUBSCRIPTION, Anum_sub_id, subid);
}

/* ---------------------------------------------------------------------
 * concord.conflict_resolver
 * ---------------------------------------------------------------------
 */

/* One row of concord.conflict_resolver. */
static void *
resolver_from_tuple(HeapTuple tup, TupleDesc desc)
{
	Datum		values[Natts_resolver];
	bool		nulls[Natts_resolver];
	ConcordResolverSetting *rs = palloc0(sizeof(ConcordResolverSetting));

	heap_deform_tuple(tup, desc, values, nulls);
	rs->relid = DatumGetObjectId(values[Anum_resolver_reloid - 1]);
	rs->conflict_type = TextDatumGetCString(values[Anum_resolver_type - 1]);
	rs->resolver = TextDatumGetCString(values[Anum_resolver_name - 1]);
	if (!nulls[Anum_resolver_handler - 1])
		rs->handler = DatumGetObjectId(values[Anum_resolver_handler - 1]);
	return rs;
}

/* The settings for relid and those for every table (relid 0). */
List *
concord_resolver_settings(Oid relid)
{
	ScanKeyData key;
	List	   *result;

	concord_scankey_oid(&key, Anum_resolver_reloid, InvalidOid);
	result = concord_catalog_collect(CATALOG_RESOLVER, 1, &key, resolver_from_tuple);
	if (OidIsValid(relid))
	{
		concord_scankey_oid(&key, Anum_resolver_reloid, relid);
		result = list_concat(result, concord_catalog_collect(CATALOG_RESOLVER, 1, &key,
															 resolver_from_tuple));
	}
	return result;
}

/* Removes the setting of (relid, type); true if there was one. */
bool
concord_resolver_unset(Oid relid, const char *conflict_type)
{
	Relation	rel = concord_catalog_open(CATALOG_RESOLVER, RowExclusiveLock);
	ScanKeyData key;
	CatalogScan cs;
	HeapTuple	tup;
	bool		found = false;

	concord_scankey_oid(&key, Anum_resolver_reloid, relid);
	concord_catalog_beginscan(&cs, rel, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(cs.sscan)))
	{
		bool		isnull;
		Datum		type = heap_getattr(tup, Anum_resolver_type,
										RelationGetDescr(rel), &isnull);

		if (strcmp(TextDatumGetCString(type), conflict_type) != 0)
			continue;
		CatalogTupleDelete(rel, &tup->t_self);
		found = true;
	}
	concord_catalog_endscan(&cs);
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
	return found;
}

void
concord_resolver_set(const ConcordResolverSetting *setting)
{
	Relation	rel;
	Datum		values[Natts_resolver];
	bool		nulls[Natts_resolver];

	(void) concord_resolver_unset(setting->relid, setting->conflict_type);
	rel = concord_catalog_open(CATALOG_RESOLVER, RowExclusiveLock);
	memset(nulls, 0, sizeof(nulls));
	values[Anum_resolver_reloid - 1] = ObjectIdGetDatum(setting->relid);
	values[Anum_resolver_type - 1] = CStringGetTextDatum(setting->conflict_type);
	values[Anum_resolver_name - 1] = CStringGetTextDatum(setting->resolver);
	values[Anum_resolver_handler - 1] = ObjectIdGetDatum(setting->handler);
	nulls[Anum_resolver_handler - 1] = !OidIsValid(setting->handler);
	CatalogTupleInsert(rel, heap_form_tuple(RelationGetDescr(rel), values, nulls));
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
}

/* ---------------------------------------------------------------------
 * concord.subscription_table
 * ---------------------------------------------------------------------
 */

static void *
sub_table_from_tuple(HeapTuple tup, TupleDesc desc)
{
	Datum		values[Natts_sub_table];
	bool		nulls[Natts_sub_table];
	ConcordSubTable *st = palloc0(sizeof(ConcordSubTable));

	heap_deform_tuple(tup, desc, values, nulls);
	st->sub_id = DatumGetObjectId(values[Anum_sub_table_sub_id - 1]);
	st->nspname = pstrdup(NameStr(*DatumGetName(values[Anum_sub_table_nspname - 1])));
	st->relname = pstrdup(NameStr(*DatumGetName(values[Anum_sub_table_relname - 1])));
	st->pending = nulls[Anum_sub_table_sync_lsn - 1];
	if (!st->pending)
		st->sync_lsn = DatumGetLSN(values[Anum_sub_table_sync_lsn - 1]);
	return st;
}

List *
concord_sub_table_get(Oid subid)
{
	ScanKeyData key;

	concord_scankey_oid(&key, Anum_sub_table_sub_id, subid);
	return concord_catalog_collect(CATALOG_SUB_TABLE, 1, &key, sub_table_from_tuple);
}

/* Inserts or rewrites the row of (sub, table). */
void
concord_sub_table_set(const ConcordSubTable *st)
{
	Relation	rel = concord_catalog_open(CATALOG_SUB_TABLE, RowExclusiveLock);
	ScanKeyData keys[3];
	CatalogScan cs;
	HeapTuple	tup;
	Datum		values[Natts_sub_table];
	bool		nulls[Natts_sub_table];
	Name		nsp = palloc0(sizeof(NameData));
	Name		relname = palloc0(sizeof(NameData));

	concord_scankey_oid(&keys[0], Anum_sub_table_sub_id, st->sub_id);
	concord_scankey_name(&keys[1], Anum_sub_table_nspname, st->nspname);
	concord_scankey_name(&keys[2], Anum_sub_table_relname, st->relname);
	concord_catalog_beginscan(&cs, rel, 3, keys);
	while (HeapTupleIsValid(tup = systable_getnext(cs.sscan)))
		CatalogTupleDelete(rel, &tup->t_self);
	concord_catalog_endscan(&cs);

	namestrcpy(nsp, st->nspname);
	namestrcpy(relname, st->relname);
	memset(nulls, 0, sizeof(nulls));
	values[Anum_sub_table_sub_id - 1] = ObjectIdGetDatum(st->sub_id);
	values[Anum_sub_table_nspname - 1] = NameGetDatum(nsp);
	values[Anum_sub_table_relname - 1] = NameGetDatum(relname);
	values[Anum_sub_table_sync_lsn - 1] = LSNGetDatum(st->sync_lsn);
	nulls[Anum_sub_table_sync_lsn - 1] = st->pending;
	CatalogTupleInsert(rel, heap_form_tuple(RelationGetDescr(rel), values, nulls));
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
}

