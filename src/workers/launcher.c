/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The concord launcher: a static background worker, one per server.
 *
 * The launcher is registered from _PG_init and started by the postmaster
 * once recovery has finished.  It connects to no database (shared catalogs
 * only) and keeps one manager running per database that has concord: at
 * start it tries every database that accepts connections; a manager that
 * finds no extension says so in shared memory and is not tried again
 * until a concord function asks for it (concord_request_manager).  A
 * manager that fails is restarted with backoff.  SIGHUP reloads the
 * configuration and SIGTERM ends it.
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
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog/identity.h"
#include "concord.h"
#include "conflict/seen.h"
#include "shmem/shmem.h"
#include "workers/workers.h"

#define LAUNCHER_NAME			"concord launcher"
#define LAUNCHER_NAPTIME_MS		1000L
#define LAUNCHER_RESTART_SECS	5
#define SEEN_SAVE_MS			5000

void
concord_launcher_register(void)
{
	BackgroundWorker worker;

	concord_fill_worker(&worker, LAUNCHER_NAME, "concord_launcher_main");
	worker.bgw_restart_time = LAUNCHER_RESTART_SECS;
	RegisterBackgroundWorker(&worker);
}

/* The OIDs of the databases that accept connections. */
static List *
connectable_databases(void)
{
	List	   *result = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datallowconn && !db->datistemplate)
			result = lappend_oid(result, db->oid);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	return result;
}

/*
 * Databases whose manager found no concord or no subscription there.  Kept
 * here, not in shared memory, so that they hold no entry: there are only
 * max_worker_processes entries, and a server may have more databases.  A
 * backend that needs a manager again (concord_request_manager) makes an
 * entry that is not dormant, which takes the database off this list.
 */
static List *Dormant = NIL;

/*
 * The managers this launcher started, by database.  A manager shows in
 * shared memory only once it attached; until then its handle tells that
 * it is starting, so that a request made meanwhile (create_node, then
 * create_subscription at once) does not start a second one.
 */
typedef struct StartedManager
{
	Oid			dboid;
	BackgroundWorkerHandle *handle;
} StartedManager;

static List *Started = NIL;

/* Whether a manager this launcher started for the database may still run. */
static bool
manager_starting(Oid dboid)
{
	ListCell   *lc;

	foreach(lc, Started)
	{
		StartedManager *m = lfirst(lc);
		pid_t		pid;

		if (m->dboid != dboid)
			continue;
		if (GetBackgroundWorkerPid(m->handle, &pid) != BGWH_STOPPED)
			return true;
		pfree(m->handle);
		pfree(m);
		Started = foreach_delete_current(Started, lc);
	}
	return false;
}

/* Starts the manager of one database if it should run and does not. */
static void
launcher_start_manager(Oid dboid, TimestampTz now)
{
	ConcordDbState *db;
	bool		start = false;
	MemoryContext oldcxt;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	db = concord_db_state(dboid, false);
	if (db != NULL && db->dormant && db->manager_pid == 0)
	{
		/* Its manager went dormant: remember it here, free the entry. */
		oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		Dormant = list_append_unique_oid(Dormant, dboid);
		MemoryContextSwitchTo(oldcxt);
		db->dboid = InvalidOid;
		db = NULL;
	}
	else if (db != NULL)
		Dormant = list_delete_oid(Dormant, dboid);
	else if (!list_member_oid(Dormant, dboid))
		db = concord_db_state(dboid, true); /* NULL when full: next round */
	if (db && db->manager_pid == 0 && !db->dormant && db->restart_after <= now &&
		!manager_starting(dboid))
	{
		/* Counted as a failure until the manager reports it is up. */
		db->failures++;
		db->restart_after = concord_backoff_until(db->failures);
		start = true;
	}
	LWLockRelease(ConcordShmem->lock);
	if (start)
	{
		BackgroundWorkerHandle *handle;
		StartedManager *m;

		oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		if (concord_start_worker("concord manager", "concord_manager_main",
								 dboid, InvalidOid, &handle))
		{
			m = palloc(sizeof(StartedManager));
			m->dboid = dboid;
			m->handle = handle;
			Started = lappend(Started, m);
		}
		else
			ereport(WARNING,
					(errmsg("concord launcher could not start a manager"),
					 errhint("Increase max_worker_processes.")));
		MemoryContextSwitchTo(oldcxt);
	}
}

/*
 * Starts the managers that should run and do not; forgets the entries of
 * databases that are gone, subscriptions' included (DROP DATABASE ... WITH
 * (FORCE) ends their workers without anyone freeing them).
 */
static void
launcher_start_managers(List *dboids)
{
	TimestampTz now = GetCurrentTimestamp();
	ListCell   *lc;

	foreach(lc, dboids)
		launcher_start_manager(lfirst_oid(lc), now);

	foreach(lc, Dormant)
		if (!list_member_oid(dboids, lfirst_oid(lc)))
			Dormant = foreach_delete_current(Dormant, lc);

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ConcordShmem->max_entries; i++)
	{
		ConcordDbState *db = &ConcordShmem->dbs[i];
		ConcordSubState *sub = &ConcordShmem->subs[i];

		if (OidIsValid(db->dboid) && db->manager_pid == 0 &&
			!list_member_oid(dboids, db->dboid))
			db->dboid = InvalidOid;
		if (OidIsValid(sub->dboid) && sub->apply_pid == 0 && sub->sync_pid == 0 &&
			!list_member_oid(dboids, sub->dboid))
			concord_sub_state_free(sub);
	}
	LWLockRelease(ConcordShmem->lock);
}

static void
launcher_exit(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	LWLockReleaseAll();
	concord_seen_save();
	concord_slot_drops_save();
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
	TimestampTz last_save = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* No database: shared catalogs only, enough to list databases later. */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_activity(STATE_IDLE, NULL);
	ereport(LOG, (errmsg("concord launcher started")));
	ConcordShmem->launcher_latch = MyLatch;
	before_shmem_exit(launcher_exit, (Datum) 0);
	/* Before any manager runs the drops loaded with the state file. */
	concord_slot_drops_forget_foreign();

	for (;;)
	{
		launcher_start_managers(connectable_databases());
		concord_identity_sweep_dropped();
		concord_slot_drops_forget_dropped();
		if (TimestampDifferenceExceeds(last_save, GetCurrentTimestamp(), SEEN_SAVE_MS))
		{
			concord_seen_save();
			concord_slot_drops_save();
			last_save = GetCurrentTimestamp();
		}

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
