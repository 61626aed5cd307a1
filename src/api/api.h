/*-------------------------------------------------------------------------
 *
 * api.h
 *		Helpers shared by concord's SQL-callable functions.
 *
 * The functions of this folder are thin: they check their arguments and
 * the caller's rights, then call the subsystem that does the work.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_API_H
#define CONCORD_API_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/array.h"

/* node_api.c: an argument that must not be NULL, or an error naming it */
extern Datum concord_required_arg(FunctionCallInfo fcinfo, int argno,
								  const char *argname);
#define concord_required_name(fcinfo, argno, argname) \
	NameStr(*DatumGetName(concord_required_arg(fcinfo, argno, argname)))

/* sub_api.c: what create_subscription learns of the provider */
typedef struct ConcordProviderInfo
{
	Oid			node_id;
	char	   *node_name;
	int32		priority;
} ConcordProviderInfo;

struct ConcordSubscription;
extern void concord_sub_api_install(void);
extern struct ConcordSubscription *concord_sub_get_existing(const char *name);
extern List *concord_text_array_to_list(ArrayType *arr, const char *argname);
extern void concord_subscription_prepare(struct ConcordSubscription *sub,
										 ConcordProviderInfo *info);
extern void concord_subscription_record(const struct ConcordSubscription *sub,
										const ConcordProviderInfo *info);
extern void concord_subscription_drop(struct ConcordSubscription *sub);
extern void concord_sub_stop_workers(Oid subid);
extern void concord_sub_wake_manager_at_commit(void);
extern void concord_sub_retry_now(Oid subid);

/* diff_api.c, for sub_repair_api.c */
extern Datum concord_table_diff(PG_FUNCTION_ARGS);
extern Datum concord_wait_for_diff(PG_FUNCTION_ARGS);

/* mesh_api.c */
extern void concord_departed_forget(const char *name);

/* wait_api.c */
extern TimestampTz concord_deadline_from(FunctionCallInfo fcinfo, int argno);

/* token_api.c, for fence_api.c */
extern char *concord_token_local_node(void);
extern void concord_token_mark(const char *local, XLogRecPtr lsn);
extern void concord_token_append(StringInfo out, const char *node, XLogRecPtr lsn);
extern bool concord_wait_tick(TimestampTz deadline);
extern bool concord_wait_applied(const struct ConcordSubscription *sub,
								 XLogRecPtr target, TimestampTz deadline);

#endif							/* CONCORD_API_H */
