/*-------------------------------------------------------------------------
 *
 * position.h
 *		What this node holds of each origin node, by the origin's own WAL
 *		positions: the ground of causal tokens (api/token_api.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_POSITION_H
#define CONCORD_POSITION_H

#include "access/xlogdefs.h"
#include "nodes/pg_list.h"

#include "shmem/shmem.h"

extern void concord_position_committing(Oid subid, const char *origin,
										XLogRecPtr path_lsn, XLogRecPtr origin_lsn,
										bool has_origin_lsn,
										XLogRecPtr prev_progress);
extern void concord_position_committed(Oid subid, const char *origin);
extern bool concord_position_marked(Oid subid, const char *origin, XLogRecPtr lsn);
extern bool concord_position_lookup(Oid subid, const char *origin,
									ConcordPositionState *out);
extern List *concord_position_origins(Oid subid);
extern bool concord_position_mark_due(XLogRecPtr lsn);
extern void concord_position_committing_locally(bool start);
extern void concord_position_local_commit(XLogRecPtr end_lsn);
extern XLogRecPtr concord_position_local_end(void);
extern XLogRecPtr concord_wal_position_trimmed(XLogRecPtr lsn);
extern void concord_position_save(void);
extern void concord_position_load(void);

#endif							/* CONCORD_POSITION_H */
