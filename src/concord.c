/*-------------------------------------------------------------------------
 *
 * concord.c
 *		Library entry point: load checks, then every subsystem's start-up
 *		(settings, shared memory, hooks, the launcher worker).
 *
 *		The top of the source tree: it calls into the folders below it, and
 *		nothing calls into it.
 *
 * concord must be loaded through shared_preload_libraries: its launcher is
 * a static background worker and, later, its workers share memory.  Any
 * other way of loading the library (CREATE EXTENSION, LOAD) fails here with
 * a HINT, before anything half-initialised can run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "api/api.h"
#include "concord.h"
#include "conflict/seen.h"
#include "shmem/shmem.h"
#include "workers/workers.h"

PG_MODULE_MAGIC;

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("concord must be loaded via shared_preload_libraries"),
				 errhint("Add concord to shared_preload_libraries in postgresql.conf "
						 "and restart the server.")));

	concord_define_gucs();
	/* first: its transaction callback runs after every other of concord */
	concord_sub_api_install();
	concord_shmem_install_hooks();
	concord_seen_install_hooks();
	concord_launcher_register();
}
