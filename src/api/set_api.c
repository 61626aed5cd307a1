/*-------------------------------------------------------------------------
 *
 * set_api.c
 *		SQL API for replication sets and their tables.
 *
 * Every function checks all of its input before it writes anything, and
 * writers hold the catalog locks to the end of the transaction, so a
 * refused call leaves the catalogs as they were.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/event_trigger.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "api/api.h"
#include "catalog/relcheck.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/tombstone.h"

PG_FUNCTION_INFO_V1(concord_create_replication_set);
PG_FUNCTION_INFO_V1(concord_alter_replication_set);
PG_FUNCTION_INFO_V1(concord_drop_replication_set);
PG_FUNCTION_INFO_V1(concord_replication_set_add_table);
PG_FUNCTION_INFO_V1(concord_replication_set_add_all_tables);
PG_FUNCTION_INFO_V1(concord_replication_set_remove_table);
PG_FUNCTION_INFO_V1(concord_on_sql_drop);
PG_FUNCTION_INFO_V1(concord_on_drop_extension);

static void
check_capture(const char *capture)
{
	if (strcmp(capture, "logical") == 0)
		return;
	if (strcmp(capture, "trigger") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("capture \"trigger\" is not supported yet"),
				 errhint("Use capture 'logical', which needs wal_level = logical.")));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid capture \"%s\"", capture),
			 errhint("Valid values are 'logical' and 'trigger'.")));
}

static char *
relid_qualified_name(Oid relid)
{
	char	   *relname = get_rel_name(relid);

	if (relname == NULL)
		return psprintf("%u", relid);
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  relname);
}

/* Looks a set up for a caller that needs it to exist. */
static ConcordSet *
set_get_existing(const char *set_name)
{
	ConcordSet *set = concord_set_get_by_name(set_name);

	if (set == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("replication set \"%s\" does not exist", set_name),
				 errhint("The replication sets are listed in concord.replication_set.")));
	return set;
}

/*
 * Opens the relation named by a regclass argument; the OID may be stale if
 * the table was dropped since the argument was parsed.
 */
static Relation
open_table_arg(FunctionCallInfo fcinfo, int argno)
{
	Oid			relid = DatumGetObjectId(concord_required_arg(fcinfo, argno, "relation"));
	Relation	rel = try_relation_open(relid, ShareUpdateExclusiveLock);

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	return rel;
}

Datum
concord_create_replication_set(PG_FUNCTION_ARGS)
{
	ConcordSet	set;

	set.name = concord_required_name(fcinfo, 0, "set_name");
	set.replicate_insert = DatumGetBool(concord_required_arg(fcinfo, 1, "replicate_insert"));
	set.replicate_update = DatumGetBool(concord_required_arg(fcinfo, 2, "replicate_update"));
	set.replicate_delete = DatumGetBool(concord_required_arg(fcinfo, 3, "replicate_delete"));
	set.replicate_truncate = DatumGetBool(concord_required_arg(fcinfo, 4, "replicate_truncate"));
	set.capture = TextDatumGetCString(concord_required_arg(fcinfo, 5, "capture"));

	if (set.name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("replication set name must not be empty")));
	check_capture(set.capture);
	concord_catalog_lock(CATALOG_SET);
	(void) concord_node_get_local(false);
	if (concord_set_get_by_name(set.name) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("replication set \"%s\" already exists", set.name),
				 errhint("Use concord.alter_replication_set() to change it.")));

	set.id = concord_set_new_id();
	concord_set_insert(&set);
	PG_RETURN_OID(set.id);
}

/* Re-checks every member table of a set against the set's new flags. */
static void
check_set_members(const ConcordSet *set)
{
	ListCell   *lc;

	foreach(lc, concord_set_table_get_by_set(set->id))
	{
		ConcordSetTable *member = lfirst(lc);
		Relation	rel = table_open(member->relid, AccessShareLock);

		concord_check_table_for_set(rel, set, member->columns,
									member->row_filter);
		if (set->replicate_delete)
			concord_tombstone_trigger_create(rel);
		table_close(rel, NoLock);
	}
}

Datum
concord_alter_replication_set(PG_FUNCTION_ARGS)
{
	char	   *set_name = concord_required_name(fcinfo, 0, "set_name");
	ConcordSet *set;

	concord_catalog_lock(CATALOG_SET);
	concord_catalog_lock(CATALOG_SET_TABLE);
	(void) concord_node_get_local(false);
	set = set_get_existing(set_name);

	if (!PG_ARGISNULL(1))
		set->replicate_insert = PG_GETARG_BOOL(1);
	if (!PG_ARGISNULL(2))
		set->replicate_update = PG_GETARG_BOOL(2);
	if (!PG_ARGISNULL(3))
		set->replicate_delete = PG_GETARG_BOOL(3);
	if (!PG_ARGISNULL(4))
		set->replicate_truncate = PG_GETARG_BOOL(4);
	if (!PG_ARGISNULL(5))
	{
		char	   *capture = TextDatumGetCString(PG_GETARG_DATUM(5));

		check_capture(capture);
		set->capture = capture;
	}
	check_set_members(set);
	concord_set_update(set);
	PG_RETURN_OID(set->id);
}

Datum
concord_drop_replication_set(PG_FUNCTION_ARGS)
{
	char	   *set_name = concord_required_name(fcinfo, 0, "set_name");
	bool		ifexists = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
	ConcordSet *set;

	concord_catalog_lock(CATALOG_SET);
	concord_catalog_lock(CATALOG_SET_TABLE);
	(void) concord_node_get_local(false);
	set = concord_set_get_by_name(set_name);
	if (set == NULL && ifexists)
	{
		ereport(NOTICE,
				(errmsg("replication set \"%s\" does not exist, skipping",
						set_name)));
		PG_RETURN_BOOL(false);
	}
	if (set == NULL)
		set = set_get_existing(set_name);
	concord_set_delete(set->id);
	PG_RETURN_BOOL(true);
}

/* Adds one open table to a set after every check; refuses duplicates. */
static void
add_table(const ConcordSet *set, Relation rel, ArrayType *columns,
		  const char *row_filter)
{
	ConcordSetTable member;

	concord_check_table_for_set(rel, set, columns, row_filter);
	if (concord_set_table_exists(set->id, RelationGetRelid(rel)))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("table \"%s\" is already in replication set \"%s\"",
						concord_relation_qualified_name(rel), set->name),
				 errhint("Remove it with concord.replication_set_remove_table() to change its columns or row filter.")));
	member.set_id = set->id;
	member.relid = RelationGetRelid(rel);
	member.columns = columns;
	member.row_filter = (char *) row_filter;
	concord_set_table_insert(&member);
	if (set->replicate_delete)
		concord_tombstone_trigger_create(rel);
}

/*
 * synchronize_data (argument 2) asks subscribers to copy the table's
 * existing rows when they learn of it; it is accepted here and acted on by
 * the subscription machinery.
 */
Datum
concord_replication_set_add_table(PG_FUNCTION_ARGS)
{
	char	   *set_name = concord_required_name(fcinfo, 0, "set_name");
	ArrayType  *columns = PG_ARGISNULL(3) ? NULL : PG_GETARG_ARRAYTYPE_P(3);
	char	   *row_filter = PG_ARGISNULL(4) ? NULL :
		TextDatumGetCString(PG_GETARG_DATUM(4));
	ConcordSet *set;
	Relation	rel;

	concord_catalog_lock(CATALOG_SET_TABLE);
	(void) concord_node_get_local(false);
	set = set_get_existing(set_name);
	rel = open_table_arg(fcinfo, 1);
	add_table(set, rel, columns, row_filter);
	table_close(rel, NoLock);
	PG_RETURN_BOOL(true);
}

/* The OIDs of a schema's candidate tables, partitions excluded. */
static List *
schema_table_oids(Oid nspid)
{
	Relation	pg_class = table_open(RelationRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	List	   *result = NIL;

	ScanKeyInit(&key, Anum_pg_class_relnamespace, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(nspid));
	scan = systable_beginscan(pg_class, InvalidOid, false, NULL, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_class form = (Form_pg_class) GETSTRUCT(tup);

		if ((form->relkind == RELKIND_RELATION ||
			 form->relkind == RELKIND_PARTITIONED_TABLE) &&
			form->relpersistence == RELPERSISTENCE_PERMANENT &&
			!form->relispartition)
			result = lappend_oid(result, form->oid);
	}
	systable_endscan(scan);
	table_close(pg_class, AccessShareLock);
	list_sort(result, list_oid_cmp);
	return result;
}

/* Adds a schema's tables not yet in the set; returns how many. */
static int
add_schema_tables(const ConcordSet *set, Oid nspid)
{
	ListCell   *lc;
	int			added = 0;

	foreach(lc, schema_table_oids(nspid))
	{
		Relation	rel;

		if (concord_set_table_exists(set->id, lfirst_oid(lc)))
			continue;
		rel = table_open(lfirst_oid(lc), ShareUpdateExclusiveLock);
		add_table(set, rel, NULL, NULL);
		table_close(rel, NoLock);
		added++;
	}
	return added;
}

Datum
concord_replication_set_add_all_tables(PG_FUNCTION_ARGS)
{
	char	   *set_name = concord_required_name(fcinfo, 0, "set_name");
	ArrayType  *schemas = DatumGetArrayTypeP(concord_required_arg(fcinfo, 1, "schema_names"));
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	List	   *nspids = NIL;
	ListCell   *lc;
	ConcordSet *set;
	int			added = 0;

	concord_catalog_lock(CATALOG_SET_TABLE);
	(void) concord_node_get_local(false);
	set = set_get_existing(set_name);

	/* Resolve every schema before adding anything. */
	deconstruct_array(schemas, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &nelems);
	for (int i = 0; i < nelems; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("schema_names must not contain NULL")));
		nspids = list_append_unique_oid(nspids,
										get_namespace_oid(TextDatumGetCString(elems[i]), false));
	}
	foreach(lc, nspids)
		added += add_schema_tables(set, lfirst_oid(lc));
	PG_RETURN_INT32(added);
}

Datum
concord_replication_set_remove_table(PG_FUNCTION_ARGS)
{
	char	   *set_name = concord_required_name(fcinfo, 0, "set_name");
	Oid			relid = DatumGetObjectId(concord_required_arg(fcinfo, 1, "relation"));
	ConcordSet *set;

	concord_catalog_lock(CATALOG_SET_TABLE);
	(void) concord_node_get_local(false);
	set = set_get_existing(set_name);
	if (!concord_set_table_delete(set->id, relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("table \"%s\" is not in replication set \"%s\"",
						relid_qualified_name(relid), set_name)));
	PG_RETURN_BOOL(true);
}

/*
 * Event trigger on sql_drop: a dropped table leaves no membership behind.
 * It runs as the user who dropped the table, who needs no privilege on the
 * catalogs since catalog/tables.c writes them directly.
 */
Datum
concord_on_sql_drop(PG_FUNCTION_ARGS)
{
	int			ret;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("concord.on_sql_drop() must be called as an event trigger")));

	/* DROP EXTENSION concord drops the catalogs themselves. */
	if (!OidIsValid(concord_catalog_relid(CATALOG_SET_TABLE, true)))
		PG_RETURN_VOID();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute("SELECT objid FROM pg_catalog.pg_event_trigger_dropped_objects() "
					  "WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass "
					  "AND objsubid = 0",
					  true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the dropped objects: %s",
			 SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		objid = SPI_getbinval(SPI_tuptable->vals[i],
										  SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			concord_catalog_forget_relation(DatumGetObjectId(objid));
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * Event trigger on ddl_command_start of DROP EXTENSION: dropping concord
 * while subscriptions exist would leave their slots on the providers and
 * their origins here, so it is refused; drop_subscription() cleans up.
 */
Datum
concord_on_drop_extension(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata = (EventTriggerData *) fcinfo->context;
	DropStmt   *stmt;
	ListCell   *lc;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("concord.on_drop_extension() must be called as an event trigger")));
	if (!IsA(trigdata->parsetree, DropStmt))
		PG_RETURN_VOID();
	stmt = (DropStmt *) trigdata->parsetree;
	if (stmt->removeType != OBJECT_EXTENSION)
		PG_RETURN_VOID();
	foreach(lc, stmt->objects)
	{
		if (strcmp(strVal(lfirst(lc)), "concord") == 0 &&
			OidIsValid(concord_catalog_relid(CATALOG_SUBSCRIPTION, true)) &&
			concord_subscription_exists(InvalidOid))
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("cannot drop extension concord because subscriptions exist"),
					 errhint("Drop them first with concord.drop_subscription(), which also removes their slots on the providers.")));
	}
	PG_RETURN_VOID();
}
