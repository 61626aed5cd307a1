/*-------------------------------------------------------------------------
 *
 * diff.h
 *		Anti-entropy: concord.table_diff()'s background worker, and its
 *		access to the nodes it compares.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_DIFF_H
#define CONCORD_DIFF_H

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "libpq-fe.h"

/* A node of a run: this one (queried through SPI) or a peer (libpq). */
typedef struct DiffNode
{
	char	   *name;
	char	   *dsn;			/* NULL: this node */
	Oid			local_user;		/* this node: the role its steps run as */
	bool		password_required;
	PGconn	   *conn;
	/* the node's fence of the current round */
	char	   *fence_time;
	char	   *token;
	char	   *receives;		/* per node of the run: 't' if this one
								 * receives its changes (concord.fence()) */
} DiffNode;

/* What a node answered: nrows x ncols texts, NULL for an SQL NULL. */
typedef struct DiffResult
{
	int			nrows;
	int			ncols;
	char	  **cells;
} DiffResult;

#define DIFF_CELL(res, r, c)	((res)->cells[(r) * (res)->ncols + (c)])

/* diff_nodes.c */
extern int64 concord_diff_bytes_received;
extern void concord_diff_connect(DiffNode *node, TimestampTz deadline);
extern void concord_diff_disconnect(DiffNode *node);
extern DiffResult **concord_diff_query_all(DiffNode *nodes, int nnodes,
										   const char *sql, int ncols,
										   int nparams,
										   const char *const *params,
										   TimestampTz deadline);
extern char *concord_diff_interval_left(TimestampTz deadline);

/* diff.c */
extern PGDLLEXPORT void concord_diff_main(Datum main_arg);
extern bool concord_diff_start(int64 run_id, TransactionId creator,
								int cost_delay, int cost_limit, int *pid);

#endif							/* CONCORD_DIFF_H */
