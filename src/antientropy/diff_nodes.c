/*-------------------------------------------------------------------------
 *
 * diff_nodes.c
 *		How a diff run asks its nodes: this node through SPI, each
 *		statement in a transaction of its own (no snapshot outlives a
 *		step), a peer over libpq with the DSN of this node's subscription
 *		to it.  Every statement is bounded by the run's deadline, and an
 *		error names the node it came from.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "remote/remote.h"
#include "antientropy/diff.h"

/* Bytes of the peers' answers received by this process. */
int64		concord_diff_bytes_received = 0;

/* The run's remaining time as an interval literal, at least 1 ms. */
char *
concord_diff_interval_left(TimestampTz deadline)
{
	long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

	return psprintf("%ld milliseconds", Max(left, 1));
}

/* Re-raises the error being handled, naming the node it came from. */
static void
rethrow_for_node(DiffNode *node, MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	ereport(ERROR,
			(errcode(edata->sqlerrcode),
			 errmsg("node \"%s\": %s", node->name,
					concord_redact_dsn(edata->message)),
			 edata->detail ? errdetail_internal("%s", concord_redact_dsn(edata->detail)) : 0,
			 edata->hint ? errhint("%s", edata->hint) : 0));
}

void
concord_diff_connect(DiffNode *node, TimestampTz deadline)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (node->dsn == NULL || node->conn != NULL)
		return;
	PG_TRY();
	{
		node->conn = concord_remote_connect_until(node->dsn, false, "concord diff",
												  node->password_required, deadline);
	}
	PG_CATCH();
	{
		rethrow_for_node(node, cxt);
	}
	PG_END_TRY();
}

/* Closes the connection, cancelling what the peer still runs for the run. */
void
concord_diff_disconnect(DiffNode *node)
{
	if (node->conn == NULL)
		return;
	if (PQtransactionStatus(node->conn) == PQTRANS_ACTIVE)
	{
		PGcancel   *cancel = PQgetCancel(node->conn);
		char		errbuf[256];

		if (cancel != NULL)
		{
			(void) PQcancel(cancel, errbuf, sizeof(errbuf));
			PQfreeCancel(cancel);
		}
	}
	concord_remote_finish(node->conn);
	node->conn = NULL;
}

static DiffResult *
result_alloc(int nrows, int ncols)
{
	DiffResult *res = palloc(sizeof(DiffResult));

	res->nrows = nrows;
	res->ncols = ncols;
	res->cells = palloc_extended(sizeof(char *) * Max((Size) nrows * ncols, 1),
								 MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	return res;
}

/* The rows of a peer's answer, or the ERROR it sent. */
static DiffResult *
remote_result(DiffNode *node, PGresult *pgres)
{
	DiffResult *res;

	if (pgres == NULL || PQresultStatus(pgres) != PGRES_TUPLES_OK)
	{
		char	   *msg = pgres && PQresultErrorMessage(pgres)[0] ?
			pstrdup(PQresultErrorMessage(pgres)) : concord_remote_error(node->conn);
		char	   *sqlstate = pgres ? PQresultErrorField(pgres, PG_DIAG_SQLSTATE) : NULL;
		int			code = sqlstate && strlen(sqlstate) == 5 ?
			MAKE_SQLSTATE(sqlstate[0], sqlstate[1], sqlstate[2], sqlstate[3], sqlstate[4]) :
			ERRCODE_CONNECTION_FAILURE;

		if (pgres)
			PQclear(pgres);
		ereport(ERROR, (errcode(code), errmsg("%s", pchomp(msg))));
	}
	res = result_alloc(PQntuples(pgres), PQnfields(pgres));
	for (int r = 0; r < res->nrows; r++)
		for (int c = 0; c < res->ncols; c++)
			if (!PQgetisnull(pgres, r, c))
			{
				DIFF_CELL(res, r, c) = pstrdup(PQgetvalue(pgres, r, c));
				concord_diff_bytes_received += PQgetlength(pgres, r, c);
			}
	PQclear(pgres);
	return res;
}

/*
 * Runs a step on this node, as the role that asked for the run (the table
 * is read with its privileges, and with no more).  Its waits (fence,
 * wait_for_token) are bounded by their own timeouts; a scan is not.
 */
static DiffResult *
query_local(DiffNode *node, const char *sql, int nparams,
			const char *const *params)
{
	Oid			saved_user;
	int			saved_context;
	MemoryContext cxt = CurrentMemoryContext;
	Oid		   *types = palloc(sizeof(Oid) * Max(nparams, 1));
	Datum	   *values = palloc(sizeof(Datum) * Max(nparams, 1));
	char	   *nulls = palloc(Max(nparams, 1));
	DiffResult *res;

	for (int i = 0; i < nparams; i++)
	{
		types[i] = TEXTOID;
		values[i] = params[i] ? CStringGetTextDatum(params[i]) : (Datum) 0;
		nulls[i] = params[i] ? ' ' : 'n';
	}
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	GetUserIdAndSecContext(&saved_user, &saved_context);
	/* restricted: no temporary object, no deferred trigger outlives it */
	SetUserIdAndSecContext(node->local_user, saved_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (SPI_execute_with_args(sql, nparams, types, values, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not run a step of the diff on this node");
	SetUserIdAndSecContext(saved_user, saved_context);
	MemoryContextSwitchTo(cxt);
	res = result_alloc((int) SPI_processed, SPI_tuptable->tupdesc->natts);
	for (int r = 0; r < res->nrows; r++)
		for (int c = 0; c < res->ncols; c++)
			DIFF_CELL(res, r, c) = SPI_getvalue(SPI_tuptable->vals[r],
												SPI_tuptable->tupdesc, c + 1);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return res;
}

/*
 * The same statement on every node, with each node's parameters
 * (params[i * nparams ...]): sent to the peers first, so that they work
 * while this node does; the answers in the nodes' order, each of ncols
 * columns.
 */
DiffResult **
concord_diff_query_all(DiffNode *nodes, int nnodes, const char *sql,
					   int ncols, int nparams, const char *const *params,
					   TimestampTz deadline)
{
	MemoryContext cxt = CurrentMemoryContext;
	DiffResult **res = palloc0(sizeof(DiffResult *) * nnodes);
	volatile int at = 0;

	PG_TRY();
	{
		for (at = 0; at < nnodes; at++)
			if (nodes[at].dsn != NULL &&
				!concord_remote_send_until(nodes[at].conn, sql, nparams,
										   params + at * nparams, deadline))
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("%s", pchomp(concord_remote_error(nodes[at].conn)))));
		for (at = 0; at < nnodes; at++)
			if (nodes[at].dsn == NULL)
				res[at] = query_local(&nodes[at], sql, nparams, params + at * nparams);
		for (at = 0; at < nnodes; at++)
			if (nodes[at].dsn != NULL)
				res[at] = remote_result(&nodes[at],
										concord_remote_collect_until(nodes[at].conn, deadline));
	}
	PG_CATCH();
	{
		rethrow_for_node(&nodes[at], cxt);
	}
	PG_END_TRY();
	for (int i = 0; i < nnodes; i++)
		if (res[i]->ncols != ncols)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("node \"%s\" returned %d columns instead of %d",
							nodes[i].name, res[i]->ncols, ncols)));
	return res;
}
