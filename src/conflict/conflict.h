/*-------------------------------------------------------------------------
 *
 * conflict.h
 *		Conflict resolvers: the enum and its name table.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_CONFLICT_H
#define CONCORD_CONFLICT_H

#include "access/htup.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "executor/tuptable.h"
#include "nodes/pg_list.h"
#include "utils/guc.h"
#include "utils/relcache.h"

typedef enum ConcordResolver
{
	CONCORD_RESOLVER_LAST_UPDATE_WINS,
	CONCORD_RESOLVER_FIRST_UPDATE_WINS,
	CONCORD_RESOLVER_REPLICA_PRIORITY,
	CONCORD_RESOLVER_KEEP_LOCAL,
	CONCORD_RESOLVER_APPLY_REMOTE,
	CONCORD_RESOLVER_SKIP,
	CONCORD_RESOLVER_ERROR,
	CONCORD_RESOLVER_CUSTOM
} ConcordResolver;

/* The conflict types of the SPEC (PostgreSQL 18's names, plus update_deleted). */
typedef enum ConcordConflictType
{
	CONCORD_CONFLICT_INSERT_EXISTS,
	CONCORD_CONFLICT_UPDATE_EXISTS,
	CONCORD_CONFLICT_UPDATE_ORIGIN_DIFFERS,
	CONCORD_CONFLICT_UPDATE_MISSING,
	CONCORD_CONFLICT_UPDATE_DELETED,
	CONCORD_CONFLICT_DELETE_ORIGIN_DIFFERS,
	CONCORD_CONFLICT_DELETE_MISSING,
	CONCORD_CONFLICT_MULTIPLE_UNIQUE_CONFLICTS,
	CONCORD_CONFLICT_INSERT_DELETED		/* concord's: remote INSERT of a key deleted here */
} ConcordConflictType;

/*
 * Values accepted by the GUC concord.conflict_resolver.  "custom" is not
 * among them: it needs a handler, which only set_conflict_resolver() gives.
 */
extern const struct config_enum_entry concord_resolver_guc_options[];

#define CONCORD_NUM_CONFLICT_TYPES	(CONCORD_CONFLICT_INSERT_DELETED + 1)

/* How a conflict ended, as conflict_history.resolution says it. */
typedef enum ConcordResolution
{
	CONCORD_RESOLUTION_APPLY_REMOTE,
	CONCORD_RESOLUTION_KEEP_LOCAL,
	CONCORD_RESOLUTION_SKIP,
	CONCORD_RESOLUTION_HANDLER_ROW	/* the handler's row was written */
} ConcordResolution;

/* The remote transaction being applied, for conflict decisions. */
typedef struct ConcordRemoteTxn
{
	const char *sub_name;
	const char *local_node;
	const char *origin_name;
	int32		origin_priority;
	TimestampTz commit_time;
	XLogRecPtr	commit_lsn;
	List	   *seen;			/* what the writer had applied (seen.c) */
} ConcordRemoteTxn;

/* One conflict: what apply found, and what the resolver decided. */
typedef struct ConcordConflict
{
	ConcordConflictType type;
	ConcordResolver resolver;
	Oid			handler;		/* the custom resolver's function */
	Relation	rel;
	const char *relname;		/* as the provider names it */
	List	   *key_columns;	/* names, for the history's key */
	const char *key_text;		/* "col=value, ...", for messages */
	TupleTableSlot *local;		/* the local row, or NULL */
	TupleTableSlot *target;		/* the row a handler's row replaces (NULL:
								 * it is inserted) */
	TupleTableSlot *remote;		/* the remote row (DELETE: the old one) */
	char	   *local_origin;
	TimestampTz local_commit_ts;
	bool		local_known;	/* local_origin, local_commit_ts read */
	bool		local_deleted;	/* the local version is a delete */
	TransactionId local_xid;	/* the transaction that wrote it */
	bool		local_here;		/* a local transaction's, not apply's */
	TupleTableSlot *handler_row;	/* what the handler wrote */
	char	   *error_message;	/* why the handler's decision failed, or
								 * why the remote change was skipped */
	List	   *unsent_columns; /* columns remote lacks (out-of-line values
								 * a remote UPDATE left unchanged) */
} ConcordConflict;

extern ConcordRemoteTxn *concord_remote_txn;

extern const char *concord_resolver_name(ConcordResolver resolver);
extern int	concord_resolver_from_name(const char *name);
extern void concord_resolvers_of(Oid relid, ConcordResolver *resolver,
								 Oid *handler);
extern int	concord_conflict_from_name(const char *name);
extern ConcordResolution concord_conflict_resolve(ConcordConflict *c);
extern bool concord_conflict_concurrent(ConcordConflict *c);
extern bool concord_conflict_remote_older(ConcordConflict *c);
extern bool concord_conflict_local_unknown(ConcordConflict *c);
extern TransactionId concord_xmin_version_xid(HeapTupleHeader tuple);
extern bool concord_xids_wrapped(void);

/*
 * The commit timestamp of an initial copy's transaction (1 µs after
 * 2000-01-01): copied rows are the common baseline, older than any
 * version written by a node.
 */
#define CONCORD_BASELINE_TS ((TimestampTz) 1)
extern void concord_conflict_set_deleted(ConcordConflict *c,
										 TransactionId deleter);
extern void concord_conflict_record(ConcordConflict *c,
									ConcordResolution resolution,
									TupleTableSlot *applied);
extern const char *concord_conflict_name(ConcordConflictType type);
extern void concord_conflict_error(ConcordConflictType type,
								   const char *relname, const char *key);

#endif							/* CONCORD_CONFLICT_H */
