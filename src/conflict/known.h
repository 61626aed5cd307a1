/*-------------------------------------------------------------------------
 *
 * known.h
 *		What the writers of applied transactions had seen: older changes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_KNOWN_H
#define CONCORD_KNOWN_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

extern void concord_known_note(List *seen, const char *writer,
							   TimestampTz commit_ts, const char *local_node);
extern TimestampTz concord_known_by(TransactionId xid, const char *writer,
									TimestampTz commit_ts, const char *origin);
extern void concord_known_save(void);
extern void concord_known_load(void);

#endif							/* CONCORD_KNOWN_H */
