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

#include "fmgr.h"

/* node_api.c: an argument that must not be NULL, or an error naming it */
extern Datum concord_required_arg(FunctionCallInfo fcinfo, int argno,
								  const char *argname);
#define concord_required_name(fcinfo, argno, argname) \
	NameStr(*DatumGetName(concord_required_arg(fcinfo, argno, argname)))

/* sub_api.c */
extern void concord_sub_api_install(void);

#endif							/* CONCORD_API_H */
