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
#include "catalog/objectaddress.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "commands/event_trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "api/api.h"
#include "catalog/identity.h"
#include "catalog/relcheck.h"
#include "catalog/row_filter.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/tombstone.h"

PG_FUNCTION_INFO_V1(concord_create_replication_set);
PG_FUNCTION_INFO_V1(concord_row_filter_sql);
PG_FUNCTION_INFO_V1(concord_on_alter_table);
PG_FUNCTION_INFO_V1(concord_row_filter_upgrade);
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
	char		relkind = get_rel_relkind(relid);
	Relation	rel;

	/* Whoever does not own it may not even lock it (checked again after). */
	if (relkind != '\0' && !pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(relkind),
					   get_rel_name(relid));
	rel = try_relation_open(relid, ShareUpdateExclusiveLock);
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

/* The analysed row filter of a membership, if it has one. */
static Node *
stored_filter(Relation rel, const ConcordSetTable *member)
{
	if (member->row_filter == NULL)
		return NULL;
	if (member->row_filter_expr == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the row filter of table \"%s\" was not analysed",
						concord_relation_qualified_name(rel)),
				 errhint("Run ALTER EXTENSION concord UPDATE: version 0.3.0 stores row filters analysed.")));
	return concord_row_filter_load(rel, member->relid, member->row_filter_expr);
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
									stored_filter(rel, member),
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

/*
 * Only the table's owner (or a superuser) decides whether its rows leave
 * this node, as for ALTER PUBLICATION ... ADD TABLE (review #19).
 */
static void
check_owner(Relation rel)
{
	if (!pg_class_ownercheck(RelationGetRelid(rel), GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER,
					   get_relkind_objtype(rel->rd_rel->relkind),
					   RelationGetRelationName(rel));
}

/* Adds one open table to a set after every check; refuses duplicates. */
static void
add_table(const ConcordSet *set, Relation rel, ArrayType *columns,
		  const char *row_filter)
{
	ConcordSetTable member;
	Node	   *filter_expr = NULL;

	check_owner(rel);
	/*
	 * With SQL objects older than 0.3.0 only the text is stored (as
	 * deparsed); the update analyses it again.
	 */
	if (row_filter != NULL)
		filter_expr = concord_row_filter_analyse(rel, row_filter);
	concord_check_table_for_set(rel, set, columns, filter_expr, row_filter);
	if (concord_set_table_exists(set->id, RelationGetRelid(rel)))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("table \"%s\" is already in replication set \"%s\"",
						concord_relation_qualified_name(rel), set->name),
				 errhint("Remove it with concord.replication_set_remove_table() to change its columns or row filter.")));
	member.set_id = set->id;
	member.relid = RelationGetRelid(rel);
	member.columns = columns;
	member.row_filter = filter_expr ? concord_row_filter_deparse(rel, filter_expr) : NULL;
	member.row_filter_expr = filter_expr ? nodeToString(filter_expr) : NULL;
	concord_set_table_insert(&member);
	if (set->replicate_delete)
		concord_tombstone_trigger_create(rel);
}

/*
 * synchronize_data (argument 2) is accepted and has no effect yet: a table
 * added to a set later is not copied by subscribers (resynchronize it).
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
	if (OidIsValid(get_rel_namespace(relid)) &&
		!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(get_rel_relkind(relid)),
					   get_rel_name(relid));
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
		if (strcmp(strVal(lfirst(lc)), "concord") == 0)
			concord_identity_sweep_at_commit();	/* the marker goes too */
	}
	PG_RETURN_VOID();
}

/*
 * concord.row_filter_sql(set_id, relid): the row filter of one table in one
 * set, deparsed from its analysed form: column names as they are now,
 * constants written under fixed settings that read back the same anywhere
 * (catalog/row_filter.c).  A subscriber's initial copy calls it on the
 * provider, in the session that then runs the COPY: nothing it parsed
 * itself is sent (review #2).  The caller needs SELECT on
 * concord.replication_set_table, as for reading the filter's text.
 */
Datum
concord_row_filter_sql(PG_FUNCTION_ARGS)
{
	Oid			set_id = PG_GETARG_OID(0);
	Oid			relid = PG_GETARG_OID(1);
	Oid			catalog = concord_catalog_relid(CATALOG_SET_TABLE, false);
	ListCell   *lc;
	char	   *sql = NULL;

	char	   *why;

	if (pg_class_aclcheck(catalog, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, get_rel_name(catalog));
	/* A copy's stored filters may number another database's columns. */
	if (concord_node_get_local(true) != NULL && !concord_identity_check(&why))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this database is a copy of node \"%s\", not that node",
						concord_node_get_local(false)->name),
				 errdetail("%s.", why),
				 errhint("Its row filters are analysed again when it becomes a node: concord.reclaim_node_identity().")));
	foreach(lc, concord_set_table_get_by_relid(relid))
	{
		ConcordSetTable *member = lfirst(lc);
		Relation	rel;

		if (member->set_id != set_id || member->row_filter == NULL)
			continue;
		rel = table_open(relid, AccessShareLock);
		sql = concord_row_filter_deparse(rel, stored_filter(rel, member));
		table_close(rel, AccessShareLock);
	}
	if (sql == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(sql));
}

/*
 * The update to 0.3.0 analyses the row filters stored as text before:
 * each is checked again by the rules of today (built-in parts only) and
 * stored analysed, its text as deparsed.  A filter that fails stops the
 * update, saying which.
 */
Datum
concord_row_filter_upgrade(PG_FUNCTION_ARGS pg_attribute_unused())
{
	concord_row_filter_reanalyse_all(true);
	PG_RETURN_VOID();
}

/*
 * The ddl_command_end event trigger of ALTER TABLE: a row filter is stored
 * analysed, its columns by number and type, so an ALTER that drops or
 * retypes a column it uses is refused here, before it commits.  Left to the
 * WAL sender, the changes between the ALTER and the table's new filter
 * would stop the stream for good (they are decoded with the old one).  A
 * rename is followed: the filter's text is deparsed again, so that the
 * text pg_dump keeps names the columns as they are.
 */
Datum
concord_on_alter_table(PG_FUNCTION_ARGS)
{
	List	   *relids = NIL;
	ListCell   *lc;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("concord.on_alter_table() must be called as an event trigger")));
	/*
	 * A restored dump's filters are another database's, its columns
	 * perhaps numbered otherwise: they are analysed again when it becomes
	 * a node, and not looked at before.  A physical copy (a promoted
	 * standby, a base backup) has the node's catalogs: its filters are
	 * checked and follow renames as on the node, so that they still mean
	 * what they meant once it is made the node (reclaim_node_identity).
	 */
	if (!OidIsValid(concord_catalog_relid(CATALOG_SET_TABLE, true)) ||
		concord_node_get_local(true) == NULL || !concord_identity_recorded())
		PG_RETURN_VOID();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT DISTINCT objid FROM pg_catalog.pg_event_trigger_ddl_commands() "
					"WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the commands of the event trigger");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 1, &isnull));

		if (!isnull)
			relids = lappend_oid(relids, relid);
	}
	SPI_finish();
	foreach(lc, relids)
	{
		List	   *tree;
		List	   *members = NIL;
		ListCell   *lc2;

		if (get_rel_relkind(lfirst_oid(lc)) == '\0')
			continue;
		/* An ALTER of a partitioned table alters its partitions too. */
		tree = find_all_inheritors(lfirst_oid(lc), NoLock, NULL);
		foreach(lc2, tree)
			members = list_concat(members, concord_set_table_get_by_relid(lfirst_oid(lc2)));
		foreach(lc2, members)
		{
			ConcordSetTable *member = lfirst(lc2);
			Relation	rel;

			Node	   *expr;
			char	   *text;

			if (member->row_filter_expr == NULL)
				continue;
			rel = table_open(member->relid, AccessShareLock);
			expr = concord_row_filter_load(rel, member->relid, member->row_filter_expr);
			/* The text follows renames: a dump restores the text. */
			text = concord_row_filter_deparse(rel, expr);
			if (strcmp(text, member->row_filter) != 0)
			{
				member->row_filter = text;
				concord_set_table_update_filter(member);
			}
			table_close(rel, NoLock);
		}
	}
	PG_RETURN_VOID();
}
