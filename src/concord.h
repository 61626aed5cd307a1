/*-------------------------------------------------------------------------
 *
 * concord.h
 *		Declarations shared by every part of concord: the library's name and
 *		the settings (concord.* GUCs, defined in config.c).
 *
 *		This header and compat.h are the only ones at the top of src/: every
 *		folder may include them, and they include no folder's header.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_H
#define CONCORD_H

#include "fmgr.h"

#include "compat.h"

#define CONCORD_LIBRARY_NAME	"concord"

/* Settings (config.c) */
extern int	concord_conflict_resolver;
extern int	concord_max_clock_skew;
extern int	concord_history_retention;
extern int	concord_check_interval;
extern int	concord_diff_cost_delay;
extern int	concord_diff_cost_limit;
extern int	concord_check_cost_delay;
extern int	concord_check_cost_limit;
extern int	concord_handler_timeout;
extern int	concord_tombstone_gc_delay;
extern int	concord_tombstone_retention;
extern int	concord_receive_timeout;
extern int	concord_causal_wait;
extern int	concord_apply_workers;

extern void concord_define_gucs(void);

#endif							/* CONCORD_H */
