/*-------------------------------------------------------------------------
 *
 * slots.c
 *		A subscription's replication slot on its provider: made and dropped.
 *
 * Neither is transactional: the slot is made in the middle of the
 * transaction of create_subscription, before it writes anything (making a
 * logical slot waits for every transaction with an XID to end), and
 * dropped at the end of the transaction of drop_subscription.  What to do
 * when those transactions abort or commit is the caller's (api/sub_api.c,
 * and the manager for the drops it is handed: workers/manager.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/builtins.h"
#include "utils/resowner.h"

#include "remote/remote.h"

/*
 * Creates a subscription's slot on the provider; an ERROR if a slot of
 * that name exists there.
 */
void
concord_slot_create(const char *dsn, bool password_required, const char *slot_name)
{
	PGconn	   *conn = concord_remote_connect(dsn, true, "concord create_subscription",
											  password_required);

	PG_TRY();
	{
		PGresult   *res;
		char	   *quoted = quote_literal_cstr(slot_name);

		/*
		 * A slot of this name may be another node's (a copy of this one,
		 * or a node restored from this one's dump): never drop or reuse a
		 * slot on the strength of its name.
		 */
		res = concord_remote_query(conn,
								   psprintf("SELECT active FROM pg_catalog.pg_replication_slots "
											"WHERE slot_name = %s", quoted),
								   0, NULL, PGRES_TUPLES_OK);
		if (PQntuples(res) > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("replication slot \"%s\" already exists on the provider", slot_name),
					 errdetail("It is %s; it may belong to a subscription of a copy of this node, or be left by an earlier subscription of this name.",
							   strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? "in use" : "not in use"),
					 errhint("If no subscription uses it, drop it on the provider with SELECT pg_drop_replication_slot('%s'), then try again.",
							 slot_name),
					 errhidestmt(true)));
		PQclear(res);
		res = concord_remote_query(conn,
								   psprintf("CREATE_REPLICATION_SLOT %s LOGICAL concord (SNAPSHOT 'nothing')",
											quote_identifier(slot_name)),
								   0, NULL, PGRES_TUPLES_OK);
		PQclear(res);
	}
	PG_FINALLY();
	{
		concord_remote_finish(conn);
	}
	PG_END_TRY();
}

/* DROP_REPLICATION_SLOT on conn; an ERROR unless dropped or not there. */
static void
drop_on(PGconn *conn, const char *slot_name, bool wait)
{
	PGresult   *res = concord_remote_exec(conn,
										  psprintf("DROP_REPLICATION_SLOT %s%s",
												   quote_identifier(slot_name),
												   wait ? " WAIT" : ""),
										  0, NULL);
	char	   *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (res == NULL || (PQresultStatus(res) != PGRES_COMMAND_OK &&
						(sqlstate == NULL || strcmp(sqlstate, "42704") != 0)))
		ereport(ERROR,
				(errmsg("%s", res ? pchomp(PQresultErrorMessage(res)) :
						concord_remote_error(conn))));
	PQclear(res);
}

/*
 * Drops the slot on the provider, connecting as appname; with wait, waits
 * for a walsender that uses it to let it go.  False (and a WARNING) if
 * that fails; a cancel or a shutdown is an ERROR (review #23).  Runs a
 * subtransaction: call it in a transaction.
 */
bool
concord_slot_drop(const char *dsn, bool password_required, const char *slot_name,
				  const char *appname, bool wait)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	PGconn	   *volatile conn = NULL;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		conn = concord_remote_connect(dsn, true, appname, password_required);
		drop_on(conn, slot_name, wait);
		concord_remote_finish(conn);
		conn = NULL;
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		concord_remote_finish(conn);
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
			ReThrowError(edata);
		ereport(WARNING,
				(errmsg("could not drop replication slot \"%s\" on the provider: %s",
						slot_name, edata->message),
				 errhint("Drop it on the provider with SELECT pg_drop_replication_slot('%s').",
						 slot_name)));
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	return ok;
}
