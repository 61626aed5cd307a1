/*-------------------------------------------------------------------------
 *
 * versions.h
 *		A key's version as anti-entropy and resynchronization compare and
 *		send it (versions.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_VERSIONS_H
#define CONCORD_VERSIONS_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "datatype/timestamp.h"

#include "conflict/conflict.h"

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

/* Microseconds from 1970 to 2000, the epoch of a TimestampTz. */
#define CONCORD_UNIX_EPOCH_USECS \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC)

extern int	concord_version_compare(ConcordResolver resolver,
									const ConcordRepairVersion *a,
									const ConcordRepairVersion *b);
extern char *concord_version_json(const ConcordRepairVersion *v);
extern void concord_version_from_spi(HeapTuple tup, TupleDesc desc, bool with_row,
									 ConcordRepairVersion *v);

#endif							/* CONCORD_VERSIONS_H */
