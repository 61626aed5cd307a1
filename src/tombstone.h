/*-------------------------------------------------------------------------
 *
 * tombstone.h
 *		Records of deleted rows.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_TOMBSTONE_H
#define CONCORD_TOMBSTONE_H

#include "datatype/timestamp.h"
#include "executor/tuptable.h"
#include "utils/relcache.h"

extern void concord_tombstone_record(Relation rel, TupleTableSlot *slot);
extern bool concord_tombstone_find(Relation rel, TupleTableSlot *slot,
								   TransactionId *xmin);
extern void concord_tombstone_trigger_create(Relation rel);
extern bool concord_tombstone_possible(Oid relid, bool *known);
extern bool concord_tombstone_any(Oid relid);

/* tombstone_gc.c */
extern void concord_confirm_record(const char *writer, List *seen);
extern int64 concord_tombstone_gc(void);
extern void concord_tombstone_gc_periodic(void);
extern void concord_gap_check(const char *sub_name, const char *writer, List *seen);

#endif							/* CONCORD_TOMBSTONE_H */
