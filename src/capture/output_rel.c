/*-------------------------------------------------------------------------
 *
 * output_rel.c
 *		The output plugin's cache of what to ship for each relation.
 *
 * An entry says whether a relation is in one of the replication sets the
 * subscriber asked for (directly, or through a partitioned ancestor),
 * which operations and columns to ship, and the compiled row filter.  It
 * is built from concord's catalogs under the historic snapshot of the
 * change being decoded, and dropped on relcache invalidation: the set API
 * invalidates the relcache of every table whose membership it changes, so
 * the walsender sees the change at the exact point of the WAL where it
 * happened.
 *
 * When a table is in several subscribed sets, it ships an operation if
 * any of them does, every column any of them lists, and a row that passes
 * any of their filters.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "capture/output_rel.h"
#include "catalog/relcheck.h"
#include "catalog/row_filter.h"
#include "catalog/tables.h"

static HTAB *OutputRels = NULL;
static MemoryContext OutputRelContext = NULL;
static List *SubscribedSets = NIL;
static bool CallbackRegistered = false;

static void
output_rel_forget(ConcordOutputRel *entry)
{
	entry->valid = false;
	entry->meta_sent = false;
}

static void
output_rel_invalidate(Datum arg pg_attribute_unused(), Oid relid)
{
	HASH_SEQ_STATUS status;
	ConcordOutputRel *entry;

	if (OutputRels == NULL)
		return;
	if (OidIsValid(relid))
	{
		entry = hash_search(OutputRels, &relid, HASH_FIND, NULL);
		if (entry)
			output_rel_forget(entry);
		return;
	}
	hash_seq_init(&status, OutputRels);
	while ((entry = hash_seq_search(&status)) != NULL)
		output_rel_forget(entry);
}

void
concord_output_rel_init(List *set_names)
{
	HASHCTL		ctl;
	ListCell   *lc;

	OutputRelContext = AllocSetContextCreate(CacheMemoryContext,
											 "concord output relations",
											 ALLOCSET_DEFAULT_SIZES);
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(ConcordOutputRel);
	ctl.hcxt = OutputRelContext;
	OutputRels = hash_create("concord output relations", 128, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	SubscribedSets = NIL;
	foreach(lc, set_names)
		SubscribedSets = lappend(SubscribedSets,
								 MemoryContextStrdup(OutputRelContext, lfirst(lc)));

	if (!CallbackRegistered)
	{
		CacheRegisterRelcacheCallback(output_rel_invalidate, (Datum) 0);
		CallbackRegistered = true;
	}
}

/* The relation and its partitioned ancestors: membership goes through them. */
static List *
membership_relids(Relation rel)
{
	List	   *relids = list_make1_oid(RelationGetRelid(rel));

	if (rel->rd_rel->relispartition)
		relids = list_concat(relids, get_partition_ancestors(RelationGetRelid(rel)));
	return relids;
}

/* Adds a column list (names) to the entry's columns, as attnums of rel. */
static void
add_columns(Bitmapset **columns, Relation rel, ArrayType *names)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(names, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		AttrNumber	attnum;

		if (nulls[i])
			continue;
		attnum = get_attnum(RelationGetRelid(rel), TextDatumGetCString(elems[i]));
		if (attnum > 0)
			*columns = bms_add_member(*columns, attnum);
	}
}

/* Merges one membership row of one subscribed set into the entry. */
static void
merge_membership(ConcordOutputRel *entry, Relation rel, const ConcordSet *set,
				 const ConcordSetTable *member, bool *all_columns,
				 bool *unfiltered, List **filters)
{
	entry->replicated = true;
	entry->ship_insert |= set->replicate_insert;
	entry->ship_update |= set->replicate_update;
	entry->ship_delete |= set->replicate_delete;
	entry->ship_truncate |= set->replicate_truncate;
	if (member->columns == NULL)
		*all_columns = true;
	else
		add_columns(&entry->columns, rel, member->columns);
	if (member->row_filter == NULL)
		*unfiltered = true;
	else if (member->row_filter_expr == NULL)
	{
		/*
		 * Changes committed before the update to 0.3.0 (or before it ran)
		 * see the filter as it was stored then, as text: it is analysed
		 * here, by today's rules, as the update analysed it.
		 */
		*filters = lappend(*filters,
						   concord_row_filter_analyse_stored(rel, member->row_filter, true));
	}
	else
		*filters = lappend(*filters,
						   concord_row_filter_load(rel, member->relid,
												   member->row_filter_expr));
}

/* Compiles the filters into the entry; everything kept lives in the cache. */
static void
compile_filter(ConcordOutputRel *entry, Relation rel, List *filters)
{
	Expr	   *expr = list_length(filters) == 1 ? linitial(filters) :
		make_orclause(filters);
	MemoryContext oldcxt = MemoryContextSwitchTo(OutputRelContext);

	TupleDesc	desc;

	entry->estate = CreateExecutorState();
	entry->filter = ExecPrepareExpr(expr, entry->estate);
	/* The slot's descriptor goes with the executor state (not refcounted). */
	MemoryContextSwitchTo(entry->estate->es_query_cxt);
	desc = CreateTupleDescCopy(RelationGetDescr(rel));
	MemoryContextSwitchTo(OutputRelContext);
	entry->slot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * (Re)builds an entry.  Catalog reads and parsing allocate in the caller's
 * short-lived context; only what the entry keeps goes to the cache.
 */
static void
output_rel_build(ConcordOutputRel *entry, Relation rel)
{
	List	   *relids = membership_relids(rel);
	bool		all_columns = false;
	bool		unfiltered = false;
	List	   *filters = NIL;
	ListCell   *lc;

	if (entry->slot)
		ExecDropSingleTupleTableSlot(entry->slot);
	if (entry->estate)
		FreeExecutorState(entry->estate);
	bms_free(entry->columns);
	memset(((char *) entry) + sizeof(Oid), 0, sizeof(ConcordOutputRel) - sizeof(Oid));

	foreach(lc, SubscribedSets)
	{
		ConcordSet *set = concord_set_get_by_name(lfirst(lc));
		ListCell   *lc2;

		if (set == NULL)
			continue;
		foreach(lc2, relids)
		{
			ListCell   *lc3;

			foreach(lc3, concord_set_table_get_by_relid(lfirst_oid(lc2)))
			{
				ConcordSetTable *member = lfirst(lc3);

				if (member->set_id == set->id)
					merge_membership(entry, rel, set, member, &all_columns,
									 &unfiltered, &filters);
			}
		}
	}
	if (all_columns)
		entry->columns = NULL;
	else
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(OutputRelContext);

		entry->columns = bms_copy(entry->columns);
		MemoryContextSwitchTo(oldcxt);
	}
	if (entry->replicated && !unfiltered && filters != NIL)
		compile_filter(entry, rel, filters);
	entry->valid = true;
}

ConcordOutputRel *
concord_output_rel_get(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	bool		found;
	ConcordOutputRel *entry;

	entry = hash_search(OutputRels, &relid, HASH_ENTER, &found);
	if (!found)
		memset(((char *) entry) + sizeof(Oid), 0,
			   sizeof(ConcordOutputRel) - sizeof(Oid));
	if (!entry->valid)
		output_rel_build(entry, rel);
	return entry;
}

/* True if the tuple passes the entry's row filter. */
bool
concord_output_rel_filter(ConcordOutputRel *entry,
						  HeapTuple tuple)
{
	ExprContext *econtext;
	Datum		result;
	bool		isnull;

	if (entry->filter == NULL)
		return true;
	econtext = GetPerTupleExprContext(entry->estate);
	ExecStoreHeapTuple(tuple, entry->slot, false);
	econtext->ecxt_scantuple = entry->slot;
	result = ExecEvalExprSwitchContext(entry->filter, econtext, &isnull);
	ExecClearTuple(entry->slot);
	ResetExprContext(econtext);
	return !isnull && DatumGetBool(result);
}
