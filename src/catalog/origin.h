/*-------------------------------------------------------------------------
 *
 * origin.h
 *		Naming and use of concord's replication origins.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_ORIGIN_H
#define CONCORD_ORIGIN_H

#include "access/transam.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "replication/origin.h"

extern char *concord_origin_name(Oid subid, const char *node_name);
extern char *concord_origin_prefix(Oid subid);
extern const char *concord_origin_node_name(const char *origin_name);
extern char *concord_origin_node_by_id(RepOriginId origin);
extern const char *concord_origin_node_of_xact(RepOriginId origin, TransactionId xid);
extern FullTransactionId concord_recent_full_xid(TransactionId xid);
extern bool concord_xact_version(TransactionId xid, const char *local_node,
								 TimestampTz *commit_time, const char **node);

extern RepOriginId concord_origin_ensure(Oid subid, const char *node_name);
extern int	concord_origin_count(Oid subid);

typedef struct ConcordSubOrigin
{
	RepOriginId id;
	char	   *node;
} ConcordSubOrigin;
extern List *concord_origin_sub_list(Oid subid);
extern bool concord_origin_exists(Oid subid, const char *node_name);

/* Origins one subscription may receive transactions of ({all}). */
#define CONCORD_MAX_FORWARDED_ORIGINS 64
/*
 * Replication origin states (max_replication_slots of them, shared by the
 * server) that a forwarded origin never takes: they stay for providers'
 * own origins.
 */
#define CONCORD_ORIGIN_STATES_KEPT_FREE 2
extern int	concord_origin_states_used(void);
extern bool concord_origin_sub_id_in_use(Oid subid);
extern XLogRecPtr concord_origin_sub_progress(Oid subid);
extern void concord_origin_drop_all(Oid subid);

/* The origins repairs write under (antientropy/repair_row.c). */
extern char *concord_repair_origin_name(const char *node_name);
extern void concord_repair_origin_lock(const char *origin_name);
extern void concord_origin_drop_idle_repairs(void);

#endif							/* CONCORD_ORIGIN_H */
