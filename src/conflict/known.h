/*-------------------------------------------------------------------------
 *
 * known.h
 *		Knowledge of changes that have not arrived yet: older changes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_KNOWN_H
#define CONCORD_KNOWN_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

extern List *concord_known_excess(void);
extern List *concord_known_merge(List *applied, List *known);
extern void concord_known_note(List *knowledge, const char *writer,
							   const char *local_node);
extern TimestampTz concord_known_by(TransactionId xid, bool written_here,
									const char *origin);
extern void concord_known_save(FILE *f);
extern void concord_known_load(FILE *f);

#endif							/* CONCORD_KNOWN_H */
