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

#endif							/* CONCORD_TOMBSTONE_H */
