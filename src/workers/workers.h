/*-------------------------------------------------------------------------
 *
 * workers.h
 *		The launcher and the per-database manager: the processes that start
 *		every other concord worker.
 *
 * The launcher (a static background worker, registered by _PG_init) starts
 * one manager per database that has the extension and subscriptions; the
 * manager starts an apply worker per enabled subscription (apply/), and
 * does the database's periodic chores (tombstone removal, history trim).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_WORKERS_H
#define CONCORD_WORKERS_H

#include "fmgr.h"

/* launcher.c */
extern void concord_launcher_register(void);
extern PGDLLEXPORT void concord_launcher_main(Datum main_arg);

/* manager.c */
extern PGDLLEXPORT void concord_manager_main(Datum main_arg);

#endif							/* CONCORD_WORKERS_H */
