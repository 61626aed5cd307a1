/*-------------------------------------------------------------------------
 *
 * handler.c
 *		User-defined conflict handlers (the custom resolver).
 *
 * A handler is a SQL function
 *
 *		handler(local tbl, remote tbl, info concord.conflict_info) RETURNS tbl
 *
 * set with concord.set_conflict_resolver(tbl, 'custom', handler).  Its
 * signature is checked when it is set and again before each call (the
 * function may have been dropped or replaced since).  It runs as the
 * table's owner, inside a security-restricted operation, with search_path
 * 'pg_catalog, pg_temp' and under concord.handler_timeout; the caller
 * (apply_row.c) runs it in a subtransaction, so that whatever the handler
 * raises, or a timeout, ends as a skipped change in the history and never
 * stops the subscription.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/tupconvert.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/typcache.h"

#include "concord.h"
#include "conflict/conflict.h"
#include "conflict/handler.h"

/* The search_path handlers run with. */
#define HANDLER_SEARCH_PATH "pg_catalog, pg_temp"

/* The OID of type concord.conflict_info. */
static Oid
conflict_info_type(void)
{
	Oid			nsp = get_namespace_oid("concord", false);
	Oid			typid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
										CStringGetDatum("conflict_info"),
										ObjectIdGetDatum(nsp));

	if (!OidIsValid(typid))
		elog(ERROR, "type concord.conflict_info does not exist");
	return typid;
}

/*
 * Why handler cannot decide the conflicts of a table of row type
 * rowtype, or NULL if it can.
 */
static char *
signature_problem(Oid handler, Oid rowtype)
{
	HeapTuple	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	Form_pg_proc proc;
	char	   *problem = NULL;
	char	   *rowname = format_type_be(rowtype);

	if (!HeapTupleIsValid(tuple))
		return psprintf("function %u does not exist", handler);
	proc = (Form_pg_proc) GETSTRUCT(tuple);
	if (proc->prokind != PROKIND_FUNCTION || proc->proretset)
		problem = psprintf("%s is not a plain function returning one row",
						   format_procedure(handler));
	else if (proc->pronargs != 3 ||
			 proc->proargtypes.values[0] != rowtype ||
			 proc->proargtypes.values[1] != rowtype ||
			 proc->proargtypes.values[2] != conflict_info_type())
		problem = psprintf("%s does not take (%s, %s, concord.conflict_info)",
						   format_procedure(handler), rowname, rowname);
	else if (proc->prorettype != rowtype)
		problem = psprintf("%s does not return %s",
						   format_procedure(handler), rowname);
	ReleaseSysCache(tuple);
	return problem;
}

/*
 * Refuses a handler that does not fit table relid, or that the table's
 * owner may not execute.
 */
void
concord_handler_check(Oid relid, Oid handler)
{
	Oid			rowtype = get_rel_type_id(relid);
	HeapTuple	reltup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;
	char	   *problem = signature_problem(handler, rowtype);

	if (!HeapTupleIsValid(reltup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(reltup))->relowner;
	ReleaseSysCache(reltup);

	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("%s cannot be the conflict handler of table \"%s\"",
						format_procedure(handler), get_rel_name(relid)),
				 errdetail("%s.", problem),
				 errhint("A handler is declared as FUNCTION h(local %s, remote %s, info concord.conflict_info) RETURNS %s.",
						 format_type_be(rowtype), format_type_be(rowtype),
						 format_type_be(rowtype))));
	if (pg_proc_aclcheck(handler, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the owner of table \"%s\" may not execute %s",
						get_rel_name(relid), format_procedure(handler)),
				 errhint("Handlers run as the table's owner; grant it EXECUTE on the function.")));
}

/* The row of slot as a composite datum of type rowtype (NULL if none). */
static Datum
row_datum(TupleTableSlot *slot, TupleDesc reldesc, TupleDesc handdesc,
		  bool *isnull)
{
	TupleConversionMap *map;
	TupleTableSlot *conv;

	*isnull = slot == NULL || TTS_EMPTY(slot);
	if (*isnull)
		return (Datum) 0;
	if (handdesc->tdtypeid == reldesc->tdtypeid)
		return ExecFetchSlotHeapTupleDatum(slot);
	/* A partition's row for its parent's handler. */
	conv = MakeSingleTupleTableSlot(handdesc, &TTSOpsVirtual);
	map = convert_tuples_by_name(reldesc, handdesc);
	if (map)
		execute_attr_map_slot(map->attrMap, slot, conv);
	else
	{
		slot_getallattrs(slot);
		memcpy(conv->tts_values, slot->tts_values, sizeof(Datum) * handdesc->natts);
		memcpy(conv->tts_isnull, slot->tts_isnull, sizeof(bool) * handdesc->natts);
		ExecStoreVirtualTuple(conv);
	}
	return ExecFetchSlotHeapTupleDatum(conv);
}

/* The concord.conflict_info value describing c. */
static Datum
info_datum(ConcordConflict *c, Oid infotype)
{
	TupleDesc	desc = lookup_rowtype_tupdesc_copy(infotype, -1);
	Datum		values[8];
	bool		nulls[8] = {false};

	if (desc->natts != 8)
		elog(ERROR, "type concord.conflict_info has %d attributes, expected 8",
			 desc->natts);
	values[0] = CStringGetTextDatum(concord_conflict_name(c->type));
	values[1] = ObjectIdGetDatum(RelationGetRelid(c->rel));
	values[2] = DirectFunctionCall1(namein, CStringGetDatum(concord_remote_txn->sub_name));
	values[3] = DirectFunctionCall1(namein, CStringGetDatum(c->local_origin));
	values[4] = TimestampTzGetDatum(c->local_commit_ts);
	nulls[4] = c->local_commit_ts == 0;
	values[5] = DirectFunctionCall1(namein, CStringGetDatum(concord_remote_txn->origin_name));
	values[6] = TimestampTzGetDatum(concord_remote_txn->commit_time);
	values[7] = LSNGetDatum(concord_remote_txn->commit_lsn);
	return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls));
}

/* Stores the handler's result (type handdesc) into out (the table's type). */
static void
store_result(Datum result, TupleDesc handdesc, TupleTableSlot *out)
{
	HeapTupleHeader td = DatumGetHeapTupleHeader(result);
	HeapTupleData tuple;
	TupleConversionMap *map;

	tuple.t_len = HeapTupleHeaderGetDatumLength(td);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = td;
	map = convert_tuples_by_name(handdesc, out->tts_tupleDescriptor);
	if (map == NULL)
	{
		ExecForceStoreHeapTuple(heap_copytuple(&tuple), out, true);
		return;
	}
	else
	{
		TupleTableSlot *in = MakeSingleTupleTableSlot(handdesc, &TTSOpsHeapTuple);

		ExecStoreHeapTuple(heap_copytuple(&tuple), in, true);
		execute_attr_map_slot(map->attrMap, in, out);
		ExecMaterializeSlot(out);
	}
}

/*
 * The owner of the table whose row type the handler takes: rel's, or that
 * of the partitioned ancestor the handler was set on.  The handler runs as
 * that owner, who chose it, never as the owner of a partition someone else
 * created (review #13: as a superuser's, when a superuser's job made it).
 */
static Oid
handler_owner(Relation rel, Oid rowtype)
{
	ListCell   *lc;

	if (RelationGetForm(rel)->relispartition &&
		rowtype != RelationGetForm(rel)->reltype)
		foreach(lc, get_partition_ancestors(RelationGetRelid(rel)))
			if (get_rel_type_id(lfirst_oid(lc)) == rowtype)
			{
				HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(lfirst_oid(lc)));
				Oid			owner;

				if (!HeapTupleIsValid(tup))
					elog(ERROR, "cache lookup failed for relation %u", lfirst_oid(lc));
				owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
				ReleaseSysCache(tup);
				return owner;
			}
	return RelationGetForm(rel)->relowner;
}

/* True if rowtype is the row type of rel or of a partitioned ancestor. */
static bool
row_type_of_table_or_ancestor(Relation rel, Oid rowtype)
{
	ListCell   *lc;

	if (!OidIsValid(rowtype))
		return false;
	if (rowtype == RelationGetForm(rel)->reltype)
		return true;
	if (!RelationGetForm(rel)->relispartition)
		return false;
	foreach(lc, get_partition_ancestors(RelationGetRelid(rel)))
		if (get_rel_type_id(lfirst_oid(lc)) == rowtype)
			return true;
	return false;
}

/* Calls the handler with the arguments ready, under the timeout. */
static Datum
invoke(Oid handler, Datum *args, bool *argnulls, bool *isnull)
{
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, 3);
	volatile Datum result = (Datum) 0;

	fmgr_info(handler, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 3, InvalidOid, NULL, NULL);
	for (int i = 0; i < 3; i++)
	{
		fcinfo->args[i].value = args[i];
		fcinfo->args[i].isnull = argnulls[i];
	}
	if (concord_handler_timeout > 0)
		enable_timeout_after(STATEMENT_TIMEOUT, concord_handler_timeout);
	PG_TRY();
	{
		result = FunctionCallInvoke(fcinfo);
	}
	PG_FINALLY();
	{
		/* Keep the indicator: a timeout still pending reports as one. */
		disable_timeout(STATEMENT_TIMEOUT, true);
	}
	PG_END_TRY();
	/* A timeout that fired just as the handler returned still counts. */
	CHECK_FOR_INTERRUPTS();
	*isnull = fcinfo->isnull;
	return result;
}

/*
 * Runs c's handler.  Returns true with the row to write in out, false if
 * the handler returned NULL (the local row stays).  Anything wrong raises
 * an error; the caller runs this in a subtransaction.
 */
bool
concord_handler_call(ConcordConflict *c, TupleTableSlot *out)
{
	Oid			rowtype = RelationGetForm(c->rel)->reltype;
	Oid			handtype;
	TupleDesc	handdesc;
	char	   *problem;
	Oid			owner;
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	Datum		args[3];
	bool		argnulls[3];
	Datum		result;
	bool		isnull;

	if (!OidIsValid(c->handler))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("the custom resolver of relation \"%s\" has no handler",
						c->relname)));
	if (!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(c->handler)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("the conflict handler of relation \"%s\" was dropped", c->relname),
				 errhint("Set another resolver with concord.set_conflict_resolver().")));
	/* A handler set on a partitioned table takes the parent's row type. */
	handtype = get_func_rettype(c->handler);
	if (!row_type_of_table_or_ancestor(c->rel, handtype))
		handtype = rowtype;
	owner = handler_owner(c->rel, handtype);
	problem = signature_problem(c->handler, handtype);
	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("conflict handler of relation \"%s\" is not usable", c->relname),
				 errdetail("%s.", problem)));
	if (pg_proc_aclcheck(c->handler, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the owner of relation \"%s\" may not execute %s",
						c->relname, format_procedure(c->handler))));

	handdesc = lookup_rowtype_tupdesc_copy(handtype, -1);
	args[0] = row_datum(c->local, RelationGetDescr(c->rel), handdesc, &argnulls[0]);
	args[1] = row_datum(c->remote, RelationGetDescr(c->rel), handdesc, &argnulls[1]);
	args[2] = info_datum(c, conflict_info_type());
	argnulls[2] = false;

	/* As the table's owner, restricted, with a safe search_path. */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", HANDLER_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	/* Not apply's replica role: the owner's writes fire its triggers and FKs. */
	(void) set_config_option("session_replication_role", "origin",
							 PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	result = invoke(c->handler, args, argnulls, &isnull);
	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);

	if (isnull)
		return false;
	store_result(result, handdesc, out);
	return true;
}

/*
 * Whether a failure of the handler (or of writing its row) is the
 * handler's, to be recorded as a skipped change: not a deadlock or
 * serialization failure, a shortage of resources, an operator's cancel
 * or shutdown, a system or internal error, which the apply transaction
 * must retry as a whole.  The handler's own timeout is a cancel too, and
 * it does skip: told from an operator's cancel (the same SQLSTATE) by the
 * error itself, which ProcessInterrupts() raises with its own message for
 * each, and not by the clock: a handler that caught its timeout and went
 * on can be cancelled by an operator after the deadline.  The message is
 * compared untranslated (message_id); only concord.handler_timeout arms
 * the statement timeout in an apply worker.
 */
bool
concord_handler_error_skips(ErrorData *edata)
{
	int			class = ERRCODE_TO_CATEGORY(edata->sqlerrcode);

	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		return edata->message_id != NULL &&
			strcmp(edata->message_id, "canceling statement due to statement timeout") == 0;
	return class != ERRCODE_TO_CATEGORY(ERRCODE_T_R_SERIALIZATION_FAILURE) &&
		class != ERRCODE_TO_CATEGORY(ERRCODE_INSUFFICIENT_RESOURCES) &&
		class != ERRCODE_TO_CATEGORY(ERRCODE_OPERATOR_INTERVENTION) &&
		class != ERRCODE_TO_CATEGORY(ERRCODE_SYSTEM_ERROR) &&
		class != ERRCODE_TO_CATEGORY(ERRCODE_INTERNAL_ERROR);
}
