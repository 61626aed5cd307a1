/*-------------------------------------------------------------------------
 *
 * unsent.c
 *		The values a remote UPDATE did not carry: out-of-line values it left
 *		unchanged.
 *
 * WAL holds no value for a column an UPDATE left unchanged when that
 * value is stored out of line (TOAST): the new tuple only points to it.
 * The provider ships such a column as "unchanged", and apply keeps the
 * local row's value, which is the same value when the local row is the
 * version the UPDATE changed.  When the conflict engine needs the remote
 * row whole (the row is missing here, or was written here concurrently
 * and the remote version wins, or a handler or the skip resolver's replay
 * takes it), the value comes from elsewhere (issue 16):
 *
 *  - under REPLICA IDENTITY FULL, from the old tuple, which carries every
 *    value (PostgreSQL inlines them into WAL), unchanged ones included;
 *  - otherwise from the provider: the current value of the row with the
 *    UPDATE's key (its new key if it changed it) in the provider's own
 *    table (tableoid), read over an ordinary connection kept for the
 *    purpose, with row-level security off (a hidden row is an error, not
 *    a row that is gone).  It is the UPDATE's own value, or one a later
 *    change on the provider wrote; that change reaches this node too and
 *    writes it again, so every node ends with the winner's row.  If the
 *    provider no longer has the row (or the table, or the column), a later
 *    change there deleted it or moved it to another key, and reaches this
 *    node too: the UPDATE is skipped, with a message in the history that
 *    says so, and a local row it wins over is deleted (apply_row.c), so
 *    that the later change finds here what it found there.
 *
 * A provider that cannot be asked (no connection, no SELECT right) stops
 * the subscription with an ERROR that names the column and the fix, and
 * the change is retried: nothing is written with a NULL in place of the
 * value, nothing is skipped silently.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "apply/apply.h"
#include "apply/worker.h"
#include "concord.h"
#include "remote/remote.h"

/* The connection to the provider for these reads, opened when needed. */
static PGconn *UnsentConn = NULL;

/* True if the tuple carries every column's value. */
bool
concord_apply_tuple_complete(ConcordTuple *tup)
{
	for (int i = 0; i < tup->ncols; i++)
		if (tup->kinds[i] == CONCORD_COL_UNCHANGED)
			return false;
	return true;
}

/*
 * Under REPLICA IDENTITY FULL the old tuple has every value: an unchanged
 * column of the new tuple takes the old one's.
 */
void
concord_apply_unsent_from_old(ConcordTuple *newtup, ConcordTuple *oldtup)
{
	if (oldtup->ncols != newtup->ncols)
		return;
	for (int i = 0; i < newtup->ncols; i++)
	{
		if (newtup->kinds[i] != CONCORD_COL_UNCHANGED ||
			oldtup->kinds[i] != CONCORD_COL_TEXT)
			continue;
		newtup->kinds[i] = CONCORD_COL_TEXT;
		newtup->values[i] = oldtup->values[i];
	}
}

/* The names of the columns the tuple lacks, for the history's marker. */
List *
concord_apply_unsent_names(ApplyRel *arel, ConcordTuple *tup)
{
	List	   *names = NIL;

	for (int i = 0; i < tup->ncols && i < arel->remote->natts; i++)
		if (tup->kinds[i] == CONCORD_COL_UNCHANGED)
			names = lappend(names, arel->remote->atts[i].name);
	return names;
}

/* '"a", "b"': the unsent columns, for messages. */
static char *
unsent_list(ApplyRel *arel, ConcordTuple *tup)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	foreach(lc, concord_apply_unsent_names(arel, tup))
		appendStringInfo(&buf, "%s\"%s\"", buf.len ? ", " : "", (char *) lfirst(lc));
	return buf.data;
}

/*
 * SELECT <unsent columns> FROM ONLY <table> WHERE <key> = $n ..., with the
 * key's values in params.  False (and why) if the key has no value to
 * search by.
 */
static bool
build_query(ApplyRel *arel, ConcordTuple *keytup, ConcordTuple *newtup,
			StringInfo sql, const char **params, int *nparams, char **why)
{
	int			ncols = 0;

	appendStringInfoString(sql, "SELECT ");
	for (int i = 0; i < newtup->ncols; i++)
		if (newtup->kinds[i] == CONCORD_COL_UNCHANGED)
			appendStringInfo(sql, "%s%s", ncols++ ? ", " : "",
							 quote_identifier(arel->remote->atts[i].name));
	/* The provider's table itself, not one renamed into its place. */
	appendStringInfo(sql, " FROM ONLY %s WHERE tableoid = $1", arel->qualname);
	params[0] = psprintf("%u", arel->remoteid);
	*nparams = 1;
	for (int i = 0; i < keytup->ncols && i < arel->remote->natts; i++)
	{
		ConcordTuple *tup = newtup;

		if (!arel->remote->atts[i].is_key)
			continue;
		/* The row's key now: the new one, where the UPDATE sent it. */
		if (i >= newtup->ncols || newtup->kinds[i] != CONCORD_COL_TEXT)
			tup = keytup;
		if (tup->kinds[i] != CONCORD_COL_TEXT)
		{
			*why = psprintf("the value of %s was not sent (the UPDATE left it unchanged and it is stored out of line), and the provider's key column \"%s\" has no value to look the row up by",
							unsent_list(arel, newtup), arel->remote->atts[i].name);
			return false;
		}
		appendStringInfo(sql, " AND %s = $%d",
						 quote_identifier(arel->remote->atts[i].name), *nparams + 1);
		params[(*nparams)++] = tup->values[i].data;
	}
	if (*nparams == 1)
	{
		*why = psprintf("the value of %s was not sent (the UPDATE left it unchanged and it is stored out of line), and the provider sends no key to look the row up by",
						unsent_list(arel, newtup));
		return false;
	}
	return true;
}

static void
unsent_error(ApplyRel *arel, ConcordTuple *newtup, const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("subscription \"%s\": could not read the value of %s of relation %s from the provider: %s",
					concord_remote_txn->sub_name, unsent_list(arel, newtup),
					arel->qualname, problem),
			 errdetail("A remote UPDATE left that out-of-line value unchanged, so the provider did not send it, and a conflict here needs the whole row."),
			 errhint("Let the subscription's user connect to the provider without replication and SELECT the table, or set REPLICA IDENTITY FULL on the table on the provider; the subscription retries the change."),
			 errhidestmt(true)));
}

/* The provider's connection for these reads, connected if it is not. */
static PGconn *
unsent_conn(ApplyRel *arel, ConcordTuple *newtup)
{
	MemoryContext oldcxt;

	if (UnsentConn && PQstatus(UnsentConn) == CONNECTION_OK)
		return UnsentConn;
	if (UnsentConn)
		concord_remote_finish(UnsentConn);
	UnsentConn = NULL;
	oldcxt = MemoryContextSwitchTo(concord_apply_cxt);
	PG_TRY();
	{
		UnsentConn = concord_remote_connect(W.sub->provider_dsn, false,
											psprintf("%s values", W.sub->name),
											W.sub->password_required);

		/*
		 * A row hidden by row-level security is an error, not a row that
		 * is gone; a read that waits (a lock) ends on the provider too.
		 */
		{
			PGresult   *res = concord_remote_exec_within(UnsentConn,
														 psprintf("SET row_security = off; SET statement_timeout = %d",
																  concord_receive_timeout > 0 ?
																  concord_receive_timeout : 60000),
														 0, NULL);

			if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("the provider refused a setting: %s",
								res ? PQresultErrorMessage(res) : concord_remote_error(UnsentConn))));
			PQclear(res);
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		unsent_error(arel, newtup, edata->message);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	return UnsentConn;
}

/*
 * Runs the read; one more time on a new connection if the kept one was
 * lost while idle (the provider's idle_session_timeout, a pooler).
 */
static PGresult *
run_read(ApplyRel *arel, ConcordTuple *newtup, const char *sql, int nparams,
		 const char **params)
{
	for (int attempt = 0;; attempt++)
	{
		PGconn	   *conn = unsent_conn(arel, newtup);
		PGresult   *res = concord_remote_exec_within(conn, sql, nparams, params);
		char	   *msg;

		if (res && PQresultStatus(res) == PGRES_TUPLES_OK)
			return res;
		if (PQstatus(conn) == CONNECTION_BAD && attempt == 0)
		{
			if (res)
				PQclear(res);
			continue;
		}
		if (res && PQresultErrorField(res, PG_DIAG_SQLSTATE) &&
			(strcmp(PQresultErrorField(res, PG_DIAG_SQLSTATE), "42P01") == 0 ||
			 strcmp(PQresultErrorField(res, PG_DIAG_SQLSTATE), "42703") == 0))
			return res;			/* the table or a column is gone there */
		if (res && PQresultErrorField(res, PG_DIAG_SQLSTATE) &&
			strcmp(PQresultErrorField(res, PG_DIAG_SQLSTATE), "57014") == 0)
		{
			/* Its statement_timeout, the same bound as ours. */
			PQclear(res);
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("the provider did not answer within %d ms",
							concord_receive_timeout > 0 ? concord_receive_timeout : 60000),
					 errdetail("It was asked for the value of %s of relation %s, which a remote UPDATE left unchanged and did not send.",
							   unsent_list(arel, newtup), arel->qualname)));
		}
		msg = res && PQresultErrorMessage(res)[0] ?
			pstrdup(PQresultErrorMessage(res)) : concord_remote_error(conn);
		if (res)
			PQclear(res);
		unsent_error(arel, newtup, pchomp(msg));
	}
}

/*
 * Fills the unsent columns of newtup from the provider's row with newtup's
 * key (keytup's columns where newtup did not send them).  Otherwise
 * returns why not, with a message in why: the provider has no such row
 * (GONE), or no such table or column, or there is no key to look the row
 * up by (UNREADABLE).
 * An ERROR if the provider cannot be asked.
 */
ConcordUnsent
concord_apply_fetch_unsent(ApplyRel *arel, ConcordTuple *keytup,
						   ConcordTuple *newtup, char **why)
{
	StringInfoData sql;
	const char **params = palloc0(sizeof(char *) * (keytup->ncols + 1));
	int			nparams;
	int			nfields = 0;
	PGresult   *res;

	initStringInfo(&sql);
	if (!build_query(arel, keytup, newtup, &sql, params, &nparams, why))
		return CONCORD_UNSENT_UNREADABLE;
	for (int i = 0; i < newtup->ncols; i++)
		nfields += newtup->kinds[i] == CONCORD_COL_UNCHANGED;
	res = run_read(arel, newtup, sql.data, nparams, params);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		*why = psprintf("the value of %s was not sent (the UPDATE left it unchanged and it is stored out of line), and the provider no longer has the table or the column: %s",
						unsent_list(arel, newtup), pchomp(PQresultErrorMessage(res)));
		PQclear(res);
		return CONCORD_UNSENT_UNREADABLE;
	}
	if (PQnfields(res) != nfields || PQntuples(res) > 1)
	{
		int			ntuples = PQntuples(res);

		PQclear(res);
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("subscription \"%s\": the provider answered %d rows of %d columns for one key of relation %s",
						concord_remote_txn->sub_name, ntuples, nfields, arel->qualname)));
	}
	if (PQntuples(res) == 0)
	{
		PQclear(res);
		*why = psprintf("the value of %s was not sent (the UPDATE left it unchanged and it is stored out of line), and the provider no longer has the row: a later change there deleted it or changed its key, and reaches this node too",
						unsent_list(arel, newtup));
		return CONCORD_UNSENT_GONE;
	}
	for (int i = 0, f = 0; i < newtup->ncols; i++)
	{
		int			len;

		if (newtup->kinds[i] != CONCORD_COL_UNCHANGED)
			continue;
		if (PQgetisnull(res, 0, f))
		{
			/* NULL now: a later change wrote it, and comes here too. */
			newtup->kinds[i] = CONCORD_COL_NULL;
			f++;
			continue;
		}
		len = PQgetlength(res, 0, f);
		newtup->values[i].data = palloc(len + 1);
		memcpy(newtup->values[i].data, PQgetvalue(res, 0, f), len + 1);
		newtup->values[i].len = len;
		newtup->values[i].maxlen = len + 1;
		newtup->values[i].cursor = 0;
		newtup->kinds[i] = CONCORD_COL_TEXT;
		f++;
	}
	PQclear(res);
	return CONCORD_UNSENT_READ;
}
