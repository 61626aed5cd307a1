/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The concord launcher: a static background worker, one per server.
 *
 * The launcher is registered from _PG_init and started by the postmaster
 * once recovery has finished.  It connects to no database (shared catalogs
 * only) and sleeps on its latch; SIGHUP reloads the configuration and
 * SIGTERM ends it.  Starting the per-database managers is its job once
 * replication is in place.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"

#include "concord.h"

#define LAUNCHER_NAME			"concord launcher"
#define LAUNCHER_NAPTIME_MS		(60 * 1000L)
#define LAUNCHER_RESTART_SECS	5

void
concord_launcher_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = LAUNCHER_RESTART_SECS;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, CONCORD_LIBRARY_NAME);
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "concord_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, LAUNCHER_NAME);
	snprintf(worker.bgw_type, BGW_MAXLEN, LAUNCHER_NAME);
	RegisterBackgroundWorker(&worker);
}

static void
launcher_reload_config(void)
{
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
}

void
concord_launcher_main(Datum main_arg pg_attribute_unused())
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* No database: shared catalogs only, enough to list databases later. */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_activity(STATE_IDLE, NULL);
	ereport(LOG, (errmsg("concord launcher started")));

	for (;;)
	{
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LAUNCHER_NAPTIME_MS,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
			launcher_reload_config();
	}
}
