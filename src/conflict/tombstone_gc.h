/*-------------------------------------------------------------------------
 *
 * tombstone_gc.h
 *		Removing tombstones once every peer confirmed them, and refusing the
 *		peers that a forced removal left behind.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_TOMBSTONE_GC_H
#define CONCORD_TOMBSTONE_GC_H

#include "nodes/pg_list.h"

extern void concord_confirm_record(const char *writer, List *seen);
extern int64 concord_tombstone_gc(void);
extern void concord_gap_check(const char *sub_name, const char *writer, List *seen);

#endif							/* CONCORD_TOMBSTONE_GC_H */
