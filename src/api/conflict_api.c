/*-------------------------------------------------------------------------
 *
 * conflict_api.c
 *		SQL API for conflict handling: set_conflict_resolver(), tombstone_gc(),
 *		row_version().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/commit_ts.h"
#include "access/htup_details.h"
#include "access/transam.h"
#include "catalog/pg_class.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "catalog/origin.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/conflict.h"
#include "conflict/handler.h"
#include "conflict/tombstone_gc.h"

PG_FUNCTION_INFO_V1(concord_set_conflict_resolver);
PG_FUNCTION_INFO_V1(concord_tombstone_gc_sql);
PG_FUNCTION_INFO_V1(concord_row_version);

static void
check_resolver_name(const char *resolver, Oid relid, Oid handler)
{
	if (concord_resolver_from_name(resolver) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown conflict resolver \"%s\"", resolver),
				 errhint("Valid resolvers are last_update_wins, first_update_wins, replica_priority, keep_local, apply_remote, skip, error and custom.")));
	if (strcmp(resolver, "custom") == 0)
	{
		if (!OidIsValid(relid))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the custom resolver needs a table"),
					 errhint("A handler takes the rows of one table; set it per table.")));
		if (!OidIsValid(handler))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the custom resolver needs a handler"),
					 errhint("Pass handler => 'my_handler(%s, %s, concord.conflict_info)'.",
							 format_type_be(get_rel_type_id(relid)),
							 format_type_be(get_rel_type_id(relid)))));
		concord_handler_check(relid, handler);
		return;
	}
	if (OidIsValid(handler))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a handler is only used by the custom resolver"),
				 errhint("Pass handler => NULL with resolver \"%s\".", resolver)));
}

static void
check_conflict_type(const char *type)
{
	if (concord_conflict_from_name(type) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown conflict type \"%s\"", type),
				 errhint("Valid types are insert_exists, update_exists, update_origin_differs, update_missing, update_deleted, delete_origin_differs, delete_missing, multiple_unique_conflicts and insert_deleted.")));
}

/* Only the table's owner (or a superuser) chooses how its conflicts end. */
static void
check_table(Oid relid)
{
	char		relkind = get_rel_relkind(relid);

	if (relkind == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", get_rel_name(relid))));
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, get_rel_name(relid));
}

Datum
concord_set_conflict_resolver(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_ARGISNULL(0) ? InvalidOid : PG_GETARG_OID(0);
	char	   *resolver = PG_ARGISNULL(1) ? NULL : TextDatumGetCString(PG_GETARG_DATUM(1));
	Oid			handler = PG_ARGISNULL(2) ? InvalidOid : PG_GETARG_OID(2);
	char	   *type = PG_ARGISNULL(3) ? "" : TextDatumGetCString(PG_GETARG_DATUM(3));
	ConcordResolverSetting setting;

	if (OidIsValid(relid))
		check_table(relid);
	else if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only a superuser may set the resolver of every table")));
	if (type[0] != '\0')
		check_conflict_type(type);
	concord_catalog_lock(CATALOG_RESOLVER);
	if (resolver == NULL)
		(void) concord_resolver_unset(relid, type);
	else
	{
		check_resolver_name(resolver, relid, handler);
		setting.relid = relid;
		setting.conflict_type = type;
		setting.resolver = resolver;
		setting.handler = handler;
		concord_resolver_set(&setting);
	}
	/* Apply workers re-read the settings of the tables concerned. */
	if (OidIsValid(relid))
		CacheInvalidateRelcacheByRelid(relid);
	else
		CacheInvalidateRelcacheAll();
	PG_RETURN_VOID();
}

/* concord.tombstone_gc(): the removal, now. */
Datum
concord_tombstone_gc_sql(PG_FUNCTION_ARGS pg_attribute_unused())
{
	PG_RETURN_INT64(concord_tombstone_gc());
}

/* The local node's name, once per query (fn_extra); NULL without one. */
static const char *
local_node_name(FunctionCallInfo fcinfo)
{
	if (fcinfo->flinfo->fn_extra == NULL)
	{
		ConcordNode *local = concord_node_get_local(true);

		fcinfo->flinfo->fn_extra =
			MemoryContextStrdup(fcinfo->flinfo->fn_mcxt, local ? local->name : "");
	}
	return *(char *) fcinfo->flinfo->fn_extra ? fcinfo->flinfo->fn_extra : NULL;
}

/*
 * concord.row_version(xmin xid) -> (commit_time, origin_node): the commit
 * timestamp of the transaction and the node it was first written on, as
 * conflict detection reads them (conflict.c): this node for a transaction
 * under no replication origin; for one under an origin that is not
 * concord's, that origin's name; NULL when the origin is not known any
 * more.  NULLs when the commit timestamp is not known.  The tombstone
 * removal judges versions with it.
 */
Datum
concord_row_version(PG_FUNCTION_ARGS)
{
	TransactionId xid = DatumGetTransactionId(PG_GETARG_DATUM(0));
	TimestampTz ts;
	const char *node;
	TupleDesc	desc;
	Datum		values[2] = {0};
	bool		nulls[2] = {true, true};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (track_commit_timestamp && TransactionIdIsNormal(xid) &&
		concord_xact_version(xid, local_node_name(fcinfo), &ts, &node))
	{
		values[0] = TimestampTzGetDatum(ts);
		nulls[0] = false;
		if (node != NULL)
		{
			values[1] = DirectFunctionCall1(namein, CStringGetDatum(node));
			nulls[1] = false;
		}
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
