/*-------------------------------------------------------------------------
 *
 * repair_api.c
 *		concord.table_repair() and concord.repair_row(): mend the
 *		differences of a diff run (antientropy/repair.c), one key on one
 *		node at a time (antientropy/repair_row.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "replication/origin.h"
#include "utils/builtins.h"

#include "api/api.h"
#include "antientropy/repair.h"

PG_FUNCTION_INFO_V1(concord_table_repair);
PG_FUNCTION_INFO_V1(concord_repair_row);

/*
 * concord.table_repair(run_id bigint, source_node name DEFAULT NULL,
 * dry_run boolean DEFAULT false) RETURNS bigint
 */
Datum
concord_table_repair(PG_FUNCTION_ARGS)
{
	int64		run_id = DatumGetInt64(concord_required_arg(fcinfo, 0, "run_id"));
	bool		dry_run = DatumGetBool(concord_required_arg(fcinfo, 2, "dry_run"));
	const char *source = PG_ARGISNULL(1) ? NULL : pstrdup(NameStr(*PG_GETARG_NAME(1)));

	if (!dry_run && IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("concord.table_repair() cannot run inside a transaction block"),
				 errdetail("Each key is repaired on each node in a transaction of its own, which a rollback here would not undo."),
				 errhint("Run it on its own, or with dry_run => true.")));
	PG_RETURN_INT64(concord_repair_run(run_id, source, dry_run, concord_token_local_node(), false));
}

/*
 * concord.repair_row(relation text, key jsonb, expected jsonb, winner jsonb,
 * run_id bigint, coordinator name, subscription_name name DEFAULT NULL)
 * RETURNS text: run_id for a repair, subscription_name (run_id NULL) for a
 * resynchronization's merge (apply/sync_merge.c).
 *
 * Under the winner's origin, every write of the transaction is dated as
 * the winner: the call must be the transaction's first write, and the
 * transaction its own.
 */
static const char *const ArgNames[6] = {"relation", "key", "expected", "winner",
"run_id", "coordinator"};

Datum
concord_repair_row(PG_FUNCTION_ARGS)
{
	const char *local = concord_token_local_node();

	if (IsTransactionBlock() || TransactionIdIsValid(GetTopTransactionIdIfAny()) ||
		GetCurrentTransactionNestLevel() > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("concord.repair_row() must run in a transaction of its own"),
				 errdetail("The transaction commits with the winner's origin and commit time.")));
	if (replorigin_session_origin != InvalidRepOriginId)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this session already uses a replication origin")));
	for (int i = 0; i < 6; i++)
		if (i != 4)
			(void) concord_required_arg(fcinfo, i, ArgNames[i]);
	if (PG_ARGISNULL(4) == PG_ARGISNULL(6))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("concord.repair_row() needs either run_id or subscription_name")));
	PG_RETURN_TEXT_P(cstring_to_text(concord_repair_key(text_to_cstring(PG_GETARG_TEXT_PP(0)),
														PG_GETARG_DATUM(1), PG_GETARG_DATUM(2),
														PG_GETARG_DATUM(3),
														PG_ARGISNULL(4) ? 0 : PG_GETARG_INT64(4),
														NameStr(*PG_GETARG_NAME(5)), local,
														PG_ARGISNULL(6) ? NULL : NameStr(*PG_GETARG_NAME(6)))));
}
