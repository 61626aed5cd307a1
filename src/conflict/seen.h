/*-------------------------------------------------------------------------
 *
 * seen.h
 *		What each transaction's writer had applied: causality for conflicts.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_SEEN_H
#define CONCORD_SEEN_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

#define CONCORD_SEEN_PREFIX		"concord.seen"

extern bool concord_is_worker;

extern void concord_seen_install_hooks(void);
extern void concord_seen_applied(const char *origin, TimestampTz commit_ts);
extern TimestampTz concord_seen_lookup(List *seen, const char *origin);
extern TimestampTz concord_seen_local(const char *origin);
extern List *concord_seen_vector(void);
extern void concord_seen_save(void);

#endif							/* CONCORD_SEEN_H */
