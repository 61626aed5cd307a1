/*-------------------------------------------------------------------------
 *
 * sync.h
 *		The sync worker's tables, shared by sync.c (the copy in one
 *		transaction), sync_versions.c (a joining node's copy, rows with
 *		their versions), sync_merge.c and sync_groups.c (a
 *		resynchronization's merge).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_SYNC_H
#define CONCORD_SYNC_H

#include "datatype/timestamp.h"
#include "libpq-fe.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/relcache.h"

#include "conflict/versions.h"

/* One provider table to copy, with its sets' columns and filters merged. */
typedef struct SyncTable
{
	char	   *nspname;
	char	   *relname;
	bool		partitioned;
	bool		all_columns;
	char	   *columns;		/* text[] literal of listed columns */
	bool		unfiltered;
	StringInfoData filter;		/* (f1) OR (f2) ... */
	bool		merged;			/* resynchronized by a merge (sync_merge.c) */
} SyncTable;

/* sync.c */
extern List *concord_sync_provider_columns(PGconn *conn, SyncTable *t);
extern Relation concord_sync_open_table(SyncTable *t);
extern void concord_sync_check_columns(Relation rel, SyncTable *t, List *names);
extern void concord_sync_empty(Relation rel, const char *sub_name);
extern void concord_sync_end_copy(PGconn *conn, SyncTable *t);

/* sync_versions.c */
extern void concord_sync_copy_versions(PGconn *conn, Oid subid,
									   const char *sub_name,
									   const char *provider, List *tables);
extern void concord_sync_versions_seen(void);
extern void concord_sync_use_version(Oid subid, const char *node, TimestampTz ts);

/* sync_merge.c */
extern bool concord_sync_merge_prepare(PGconn *conn, const char *provider);
extern bool concord_sync_merge_usable(void);
extern void concord_sync_merge_clock(TimestampTz clock);
extern int64 concord_sync_merge_table(PGconn *conn, Oid subid, const char *subname,
									  SyncTable *t);

/* sync_groups.c: a row of a group, its key and the local version read */
typedef struct ConcordGroupRow
{
	const char *key;
	const char *row;
	const ConcordRepairVersion *here;
} ConcordGroupRow;

extern uint64 concord_sync_write_group(Oid subid, const char *subname, const char *local,
									   SyncTable *t, const char *relation, bool update,
									   List *rows, const ConcordRepairVersion *v);

#endif							/* CONCORD_SYNC_H */
