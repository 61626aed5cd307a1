/*-------------------------------------------------------------------------
 *
 * concord.h
 *		Declarations shared by every part of concord.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_H
#define CONCORD_H

#include "fmgr.h"

#include "compat.h"

#define CONCORD_LIBRARY_NAME	"concord"

/* GUCs (concord.c) */
extern int	concord_conflict_resolver;
extern int	concord_max_clock_skew;
extern int	concord_history_retention;
extern int	concord_handler_timeout;
extern int	concord_tombstone_gc_delay;
extern int	concord_tombstone_retention;

/* launcher.c */
extern void concord_launcher_register(void);
extern PGDLLEXPORT void concord_launcher_main(Datum main_arg);

/* node_api.c, set_api.c: argument helpers shared by the SQL API */
extern Datum concord_required_arg(FunctionCallInfo fcinfo, int argno,
								  const char *argname);
#define concord_required_name(fcinfo, argno, argname) \
	NameStr(*DatumGetName(concord_required_arg(fcinfo, argno, argname)))

#endif							/* CONCORD_H */
