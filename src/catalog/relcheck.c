/*-------------------------------------------------------------------------
 *
 * relcheck.c
 *		Validates a table, its column list and its row filter for a set.
 *
 * Everything a provider will need to ship a table's changes is checked
 * here, when the table joins a set and again when the set's operations
 * change, so that the output plugin never meets a table it cannot handle:
 *
 * - the table is an ordinary or partitioned, permanent user table;
 * - UPDATE and DELETE need a key to find the row on the subscriber (the
 *   primary key, a replica identity index, or REPLICA IDENTITY FULL);
 * - a column list names existing columns and keeps every key column;
 * - a row filter (analysed in row_filter.c) uses the table's own
 *   columns; for UPDATE and DELETE, its key columns only, since the
 *   old row of those changes carries nothing else in WAL (the rule of the
 *   built-in publications, for the same reason).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/sysattr.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "catalog/relcheck.h"

/* What a row filter's error context names. */
typedef struct RowFilterContext
{
	const char *relname;
	const char *filter;
} RowFilterContext;

char *
concord_relation_qualified_name(Relation rel)
{
	return quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
									  RelationGetRelationName(rel));
}

static bool
set_needs_key(const ConcordSet *set)
{
	return set->replicate_update || set->replicate_delete;
}

/*
 * Tables that no replication writes, whatever a set or a provider says:
 * system catalogs and anything in pg_catalog, TOAST tables, temporary
 * tables (of any session), and the tables of information_schema and of
 * concord's own schema.
 */
bool
concord_relation_is_system(Relation rel)
{
	Oid			nsp = RelationGetNamespace(rel);
	char	   *nspname;

	if (IsCatalogRelation(rel) || IsCatalogNamespace(nsp) ||
		IsToastNamespace(nsp) || isAnyTempNamespace(nsp))
		return true;
	nspname = get_namespace_name(nsp);
	return nspname == NULL ||
		strcmp(nspname, "information_schema") == 0 ||
		strcmp(nspname, CONCORD_SCHEMA) == 0;
}

/*
 * A provider's change (or copy) names a table by schema and name: refuses
 * to write one that no replication writes.  The check is made on the table
 * found here, so no spelling of the name gets around it.
 */
void
concord_check_replication_target(Relation rel, const char *sub_name,
								 const char *qualname)
{
	if (concord_relation_is_system(rel))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("subscription \"%s\": the provider sent a change of %s, which replication never writes",
						sub_name, qualname),
				 errdetail("System catalogs, TOAST tables, temporary tables and the tables of schemas pg_catalog, information_schema and %s are never replicated.",
						   CONCORD_SCHEMA),
				 errhint("Check the provider: no concord node sends such changes.")));
}

/* Refuses views, temporary and unlogged tables, catalogs and our own. */
void
concord_check_table_kind(Relation rel)
{
	char		relkind = rel->rd_rel->relkind;
	char	   *relname = concord_relation_qualified_name(rel);

	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", relname),
				 errdetail("Only ordinary and partitioned tables can be replicated.")));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("temporary table \"%s\" cannot be replicated",
						RelationGetRelationName(rel))));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_UNLOGGED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("unlogged table \"%s\" cannot be replicated", relname),
				 errdetail("Changes to unlogged tables are not written to WAL."),
				 errhint("Use ALTER TABLE %s SET LOGGED first.", relname)));
	if (concord_relation_is_system(rel))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("system table \"%s\" cannot be replicated", relname)));
}

/* True if the table has a key by which a subscriber can find its rows. */
static bool
table_has_key(Relation rel)
{
	if (rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL)
		return true;
	if (rel->rd_rel->relreplident == REPLICA_IDENTITY_NOTHING)
		return false;
	return OidIsValid(RelationGetReplicaIndex(rel));
}

static void
check_key(Relation rel, const ConcordSet *set)
{
	if (!set_needs_key(set) || table_has_key(rel))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("table \"%s\" has no primary key or replica identity",
					concord_relation_qualified_name(rel)),
			 errdetail("Replication set \"%s\" ships UPDATE or DELETE, which need a key to find the row on the subscriber.",
					   set->name),
			 errhint("Add a primary key, or use ALTER TABLE ... REPLICA IDENTITY USING INDEX or REPLICA IDENTITY FULL.")));
}

/*
 * The key columns, as a set of attnums offset by
 * FirstLowInvalidHeapAttributeNumber; with REPLICA IDENTITY FULL, every
 * user column.
 */
static Bitmapset *
key_columns(Relation rel)
{
	Bitmapset  *keys = NULL;
	TupleDesc	desc = RelationGetDescr(rel);

	if (rel->rd_rel->relreplident != REPLICA_IDENTITY_FULL)
		return RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_IDENTITY_KEY);

	for (int i = 0; i < desc->natts; i++)
	{
		if (TupleDescAttr(desc, i)->attisdropped)
			continue;
		keys = bms_add_member(keys, (i + 1) - FirstLowInvalidHeapAttributeNumber);
	}
	return keys;
}

/* Returns the attnum of one column-list entry, refusing bad names. */
static AttrNumber
column_list_attnum(Relation rel, Datum elem, bool isnull)
{
	char	   *colname;
	AttrNumber	attnum;

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("column list of table \"%s\" contains a null",
						concord_relation_qualified_name(rel))));
	colname = TextDatumGetCString(elem);
	attnum = get_attnum(RelationGetRelid(rel), colname);
	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						colname, concord_relation_qualified_name(rel)),
				 errhint("Column names are case sensitive in the column list.")));
	if (attnum < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("system column \"%s\" cannot be in the column list of \"%s\"",
						colname, concord_relation_qualified_name(rel))));
	return attnum;
}

static void
check_columns(Relation rel, const ConcordSet *set, ArrayType *columns)
{
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	Bitmapset  *listed = NULL;
	Bitmapset  *missing;

	if (columns == NULL)
		return;
	if (ARR_NDIM(columns) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("column list must be a one-dimensional array")));
	deconstruct_array(columns, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &nelems);
	if (nelems == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("column list of table \"%s\" is empty",
						concord_relation_qualified_name(rel)),
				 errhint("Pass NULL to replicate every column.")));

	for (int i = 0; i < nelems; i++)
	{
		AttrNumber	attnum = column_list_attnum(rel, elems[i], nulls[i]);
		int			member = attnum - FirstLowInvalidHeapAttributeNumber;

		if (bms_is_member(member, listed))
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_COLUMN),
					 errmsg("column \"%s\" appears twice in the column list of \"%s\"",
							TextDatumGetCString(elems[i]),
							concord_relation_qualified_name(rel))));
		listed = bms_add_member(listed, member);
	}

	if (!set_needs_key(set) && !table_has_key(rel))
		return;
	missing = bms_difference(key_columns(rel), listed);
	if (!bms_is_empty(missing))
	{
		AttrNumber	attnum = bms_next_member(missing, -1) +
			FirstLowInvalidHeapAttributeNumber;

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("column list of table \"%s\" omits key column \"%s\"",
						concord_relation_qualified_name(rel),
						get_attname(RelationGetRelid(rel), attnum, false)),
				 errhint("Every column of the primary key or replica identity must be replicated.")));
	}
}

static void
check_row_filter_columns(Relation rel, const ConcordSet *set, Node *expr,
						 const char *filter)
{
	Bitmapset  *used = NULL;
	Bitmapset  *outside;
	int			member = -1;

	pull_varattnos(expr, 1, &used);
	while ((member = bms_next_member(used, member)) >= 0)
	{
		if (member + FirstLowInvalidHeapAttributeNumber <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
					 errmsg("row_filter may only use the table's own columns"),
					 errdetail("System columns and whole-row references are not allowed."),
					 errcontext("row_filter \"%s\" of table \"%s\"", filter,
								concord_relation_qualified_name(rel))));
	}
	if (!set_needs_key(set) || rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL)
		return;
	outside = bms_difference(used, key_columns(rel));
	if (!bms_is_empty(outside))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("row_filter uses column \"%s\", which is not part of the key",
						get_attname(RelationGetRelid(rel),
									bms_next_member(outside, -1) + FirstLowInvalidHeapAttributeNumber,
									false)),
				 errdetail("Replication set \"%s\" ships UPDATE or DELETE, whose old row carries only the key columns.",
						   set->name),
				 errhint("Filter on key columns only, or use ALTER TABLE ... REPLICA IDENTITY FULL."),
				 errcontext("row_filter \"%s\" of table \"%s\"", filter,
							concord_relation_qualified_name(rel))));
}

/*
 * Runs every check for one table in one set; errors out on the first
 * failure.  filter_expr is the analysed row filter (row_filter.c), if any,
 * filter_text its text for messages.
 */
void
concord_check_table_for_set(Relation rel, const ConcordSet *set,
							ArrayType *columns, Node *filter_expr,
							const char *filter_text)
{
	concord_check_table_kind(rel);
	check_key(rel, set);
	check_columns(rel, set, columns);
	if (filter_expr != NULL)
		check_row_filter_columns(rel, set, filter_expr, filter_text);
}
