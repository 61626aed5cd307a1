/*-------------------------------------------------------------------------
 *
 * repair.h
 *		Shared by concord.table_repair() (repair.c) and the per-node part
 *		it calls, concord.repair_row() (repair_row.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_REPAIR_H
#define CONCORD_REPAIR_H

#include "datatype/timestamp.h"
#include "fmgr.h"

/*
 * A node's version of a key, as concord.diff_row.rows records it: a row
 * (with its digest), a delete (a tombstone) or nothing, and the commit
 * time and origin node of the row or the tombstone.
 */
typedef struct ConcordRepairVersion
{
	bool		present;
	bool		deleted;		/* absent, with a tombstone */
	char	   *digest;
	bool		known;			/* commit_time is known */
	TimestampTz commit_time;
	char	   *origin_node;
	char	   *row;			/* the row as jsonb text; NULL if absent */
} ConcordRepairVersion;

/* repair.c */
extern int64 concord_repair_run(int64 run_id, const char *source, bool dry_run,
								const char *local, bool only_local);

/* repair_row.c */
extern const char *concord_repair_key(const char *relation, Datum key,
									  Datum expected_json, Datum winner_json,
									  int64 run_id, const char *coordinator,
									  const char *local);

#endif							/* CONCORD_REPAIR_H */
