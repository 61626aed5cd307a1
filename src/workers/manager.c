/*-------------------------------------------------------------------------
 *
 * manager.c
 *		The manager: one per database with concord, started by the launcher.
 *
 * Every second, or when woken (a subscription was created, enabled,
 * disabled, resynchronised or dropped), it reads concord.subscription and
 * makes the apply workers match: one per enabled subscription, started
 * once the subscription's backoff has passed, stopped (SIGTERM) when the
 * subscription is disabled or gone.  It forgets the shared state of
 * subscriptions that no longer exist.  It exits when the database has no
 * subscription left (so that it does not stand in the way of DROP
 * DATABASE), or when the extension is dropped, stopping the workers of
 * the database first; the subscription functions ask the launcher for a
 * manager again when they need one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog/identity.h"
#include "catalog/origin.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/seen.h"
#include "conflict/tombstone.h"
#include "conflict/tombstone_gc.h"
#include "remote/remote.h"
#include "shmem/shmem.h"
#include "workers/workers.h"

#define MANAGER_NAPTIME_MS	1000L

static Oid	ManagerDb = InvalidOid;
static MemoryContext CycleContext = NULL;

/* Apply workers started and not yet seen attached. */
typedef struct Starting
{
	Oid			subid;
	BackgroundWorkerHandle *handle;
} Starting;
static List *StartingWorkers = NIL;

/* When the periodic tasks last ran (periodic()). */
static TimestampTz LastTombstoneGc = 0;
static TimestampTz LastRepairOriginDrop = 0;
static TimestampTz LastCheck = 0;

static void
manager_detach(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	ConcordDbState *db;

	/* An error may have left concord's lock held: we are leaving anyway. */
	LWLockReleaseAll();
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	db = concord_db_state(ManagerDb, false);
	if (db && db->manager_pid == MyProcPid)
	{
		db->manager_pid = 0;
		db->manager_latch = NULL;
	}
	LWLockRelease(ConcordShmem->lock);
	concord_wake_launcher();
}

/*
 * The subscriptions of this database, or NIL with *gone if concord is.
 * In a copy of the local node (catalog/identity.c) every subscription
 * counts as disabled: no worker of a copy touches the original's slots.
 * *swept is false when the markers could not be swept yet (identity.c).
 */
static List *
read_subscriptions(bool *gone, bool *swept)
{
	static bool warned_copy = false;
	List	   *subs = NIL;
	char	   *why = NULL;
	bool		copy = false;

	*swept = true;
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	*gone = !OidIsValid(get_extension_oid("concord", true)) ||
		!OidIsValid(concord_catalog_relid(CATALOG_SUBSCRIPTION, true));
	if (!*gone)
	{
		MemoryContext oldcxt;
		ListCell   *lc;
		bool		has_node;

		MemoryContextReset(CycleContext);
		oldcxt = MemoryContextSwitchTo(CycleContext);
		/*
		 * concord's catalogs in the order they were created, as DROP
		 * EXTENSION locks them: concord.node, concord.subscription, then
		 * concord.node_identity, which the sweep reads (read first, it
		 * deadlocked with a DROP EXTENSION that followed a
		 * drop_subscription).
		 */
		has_node = concord_node_get_local(true) != NULL;
		subs = concord_subscription_get_all();
		copy = subs != NIL && has_node && !concord_identity_check(&why);
		*swept = concord_identity_sweep();
		foreach(lc, subs)
			if (copy)
				((ConcordSubscription *) lfirst(lc))->enabled = false;
		MemoryContextSwitchTo(oldcxt);
	}
	if (copy && !warned_copy)
		ereport(WARNING,
				(errmsg("concord starts no worker in database \"%s\": it is a copy of its node",
						get_database_name(MyDatabaseId)),
				 errdetail("%s.", why),
				 errhint(COPY_HINT)));
	warned_copy = copy;
	PopActiveSnapshot();
	CommitTransactionCommand();
	return subs;
}

static ConcordSubscription *
find_sub(List *subs, Oid subid)
{
	ListCell   *lc;

	foreach(lc, subs)
		if (((ConcordSubscription *) lfirst(lc))->id == subid)
			return lfirst(lc);
	return NULL;
}

/*
 * Subscriptions that found no room in shared memory: each is logged once,
 * until it has an entry again (the status view shows them as down).
 */
static List *NoRoomWarned = NIL;

static void
warn_no_room(List *subs)
{
	ListCell   *lc;

	foreach(lc, subs)
	{
		ConcordSubscription *sub = lfirst(lc);
		MemoryContext oldcxt;

		if (list_member_oid(NoRoomWarned, sub->id))
			continue;
		concord_no_room_error(WARNING, sub->name);
		oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		NoRoomWarned = lappend_oid(NoRoomWarned, sub->id);
		MemoryContextSwitchTo(oldcxt);
	}
}

/*
 * Stops workers of subscriptions that are disabled or gone, forgets the
 * state of those gone; returns the subscriptions to start workers for.
 */
static List *
reconcile(List *subs)
{
	TimestampTz now = GetCurrentTimestamp();
	List	   *to_start = NIL;
	List	   *no_room = NIL;
	ListCell   *lc;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ConcordShmem->max_entries; i++)
	{
		ConcordSubState *st = &ConcordShmem->subs[i];
		ConcordSubscription *sub;

		if (st->dboid != ManagerDb)
			continue;
		sub = find_sub(subs, st->subid);
		if (sub != NULL && !sub->enabled && st->apply_pid > 0 &&
			st->phase == CONCORD_PHASE_REPLICATING && st->apply_latch)
		{
			/* Streaming: it stops by itself between two transactions. */
			st->stop_requested = true;
			SetLatch(st->apply_latch);
		}
		else if (sub == NULL || !sub->enabled)
		{
			if (st->apply_pid > 0)
				kill(st->apply_pid, SIGTERM);
			if (st->sync_pid > 0)
				kill(st->sync_pid, SIGTERM);
			if (sub == NULL && st->apply_pid == 0 && st->sync_pid == 0)
				concord_sub_state_free(st);
		}
	}
	foreach(lc, subs)
	{
		ConcordSubscription *sub = lfirst(lc);
		ConcordSubState *st;

		if (!sub->enabled)
			continue;
		st = concord_sub_state(ManagerDb, sub->id, true);
		if (st == NULL)
		{
			/* Reported once the lock is released; the view shows it. */
			no_room = lappend(no_room, sub);
			continue;
		}
		NoRoomWarned = list_delete_oid(NoRoomWarned, sub->id);
		if (st->apply_pid == 0 && st->sync_pid == 0 && st->restart_after <= now)
		{
			/* Reserved until the worker attaches or fails to start. */
			st->apply_pid = InvalidPid;
			to_start = lappend_oid(to_start, sub->id);
		}
	}
	LWLockRelease(ConcordShmem->lock);
	warn_no_room(no_room);
	return to_start;
}

/*
 * A reserved slot goes back to "not running", with backoff; with error, the
 * subscription also shows it as its last error.
 */
static void
release_reservation(Oid subid, const char *error)
{
	ConcordSubState *st;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	st = concord_sub_state(ManagerDb, subid, false);
	if (st && st->apply_pid == InvalidPid)
	{
		st->apply_pid = 0;
		st->failures++;
		st->restart_after = concord_backoff_until(st->failures);
		if (error)
		{
			st->has_error = true;
			strlcpy(st->last_error, error, CONCORD_ERROR_LEN);
			st->last_error_at = GetCurrentTimestamp();
		}
	}
	LWLockRelease(ConcordShmem->lock);
}

static void
start_apply(Oid subid)
{
	BackgroundWorkerHandle *handle;
	MemoryContext oldcxt;
	Starting   *s;

	if (!concord_start_worker("concord apply", "concord_apply_main",
							  ManagerDb, subid, &handle))
	{
		/* No free background worker slot: say so, retry with backoff. */
		release_reservation(subid,
							"could not start the apply worker: every background worker slot is taken Hint: Increase max_worker_processes (and restart).");
		return;
	}
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	s = palloc(sizeof(Starting));
	s->subid = subid;
	s->handle = handle;
	StartingWorkers = lappend(StartingWorkers, s);
	MemoryContextSwitchTo(oldcxt);
}

/* Forgets started workers that attached; releases those that died first. */
static void
check_starting(void)
{
	ListCell   *lc;

	foreach(lc, StartingWorkers)
	{
		Starting   *s = lfirst(lc);
		pid_t		pid;
		ConcordSubState *st;
		bool		attached;

		LWLockAcquire(ConcordShmem->lock, LW_SHARED);
		st = concord_sub_state(ManagerDb, s->subid, false);
		attached = st == NULL || st->apply_pid != InvalidPid;
		LWLockRelease(ConcordShmem->lock);

		if (!attached && GetBackgroundWorkerPid(s->handle, &pid) != BGWH_STOPPED)
			continue;
		if (!attached)
			release_reservation(s->subid, NULL);
		pfree(s->handle);
		pfree(s);
		StartingWorkers = foreach_delete_current(StartingWorkers, lc);
	}
}

/*
 * Keeps concord.conflict_history within concord.conflict_history_retention,
 * once a minute at most.
 */
static void
trim_history(void)
{
	static TimestampTz last_trim = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (concord_history_retention <= 0 ||
		!TimestampDifferenceExceeds(last_trim, now, 60 * 1000))
		return;
	last_trim = now;
	SetCurrentStatementStartTimestamp();	/* now() of this transaction */
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute(psprintf("DELETE FROM concord.conflict_history "
							 "WHERE detected_at < pg_catalog.now() - '%d min'::pg_catalog.interval",
							 concord_history_retention), false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not trim concord.conflict_history");
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * Runs work in a transaction of its own, every interval_ms at most.  A
 * failure is logged and does not stop the manager (it has workers to look
 * after); the next round tries again.
 */
static void
periodic(TimestampTz *last, int interval_ms, void (*work) (void))
{
	TimestampTz now = GetCurrentTimestamp();
	MemoryContext oldcxt = CurrentMemoryContext;

	if (!TimestampDifferenceExceeds(*last, now, interval_ms))
		return;
	*last = now;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		work();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
}

/* Tombstones every peer confirmed go, once a minute (tombstone_gc.c). */
static void
remove_tombstones(void)
{
	(void) concord_tombstone_gc();
}

/* Repair origins no repair holds go, once a minute (catalog/origin.c). */
static void
drop_repair_origins(void)
{
	concord_origin_drop_idle_repairs();
}

/*
 * Starts a diff of relid at the pace of scheduled diffs (set for this
 * transaction only), with a timeout of ten minutes plus twice what its
 * reads take at that pace by the table's statistics (10 ms of work per
 * step), so that the pace does not fail the run of a large table.
 */
static void
start_scheduled_diff(Datum relid)
{
	int			delay = concord_check_cost_delay >= 0 ? concord_check_cost_delay :
		concord_diff_cost_delay;
	int			limit = concord_check_cost_limit > 0 ? concord_check_cost_limit :
		concord_diff_cost_limit;
	Oid			types[3] = {OIDOID, INT4OID, INT4OID};
	Datum		values[3] = {relid, Int32GetDatum(delay), Int32GetDatum(limit)};

	if (SPI_execute(psprintf("SELECT pg_catalog.set_config('concord.diff_cost_delay', '%d', true),"
							 " pg_catalog.set_config('concord.diff_cost_limit', '%d', true)",
							 delay, limit),
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not set the pace of a scheduled diff");
	if (SPI_execute_with_args("SELECT concord.table_diff($1::pg_catalog.regclass, NULL,"
							  " pg_catalog.make_interval(secs => 600 + 2 * 2 * ("
							  "   SELECT pg_catalog.sum(GREATEST(c.reltuples, 0))"
							  "     FROM pg_catalog.pg_class c"
							  "    WHERE c.oid IN (SELECT $1 UNION ALL SELECT p.relid"
							  "                    FROM pg_catalog.pg_partition_tree($1::pg_catalog.regclass) p))"
							  "   / $3 * ($2 + 10) / 1000.0))",
							  3, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not start a scheduled diff");
}

/*
 * A scheduled check (concord.check_interval): a diff of the replicated
 * table whose last diff started the longest ago, unless one runs.
 * Tables without a key, which a diff refuses, are left out.  Of a table's
 * clean runs only the latest is kept (the others said nothing more).
 */
static void
scheduled_check(void)
{
	bool		isnull;
	Datum		relid;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT st.set_reloid::pg_catalog.oid"
					"  FROM concord.replication_set_table st"
					"  JOIN pg_catalog.pg_class c ON c.oid = st.set_reloid"
					" WHERE c.relkind IN ('r', 'p')"
					"   AND EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid"
					"               AND (i.indisreplident OR i.indisprimary))"
					"   AND EXISTS (SELECT FROM concord.subscription)"
					"   AND NOT EXISTS (SELECT FROM concord.diff_run WHERE status = 'running')"
					" GROUP BY st.set_reloid"
					" ORDER BY (SELECT pg_catalog.max(d.started_at) FROM concord.diff_run d"
					"           WHERE d.relid = st.set_reloid::pg_catalog.oid) NULLS FIRST, 1"
					" LIMIT 1", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not choose a table to check");
	if (SPI_processed == 1)
	{
		Oid			types[1] = {OIDOID};

		relid = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		/* of the table's clean runs, only the last is kept */
		if (SPI_execute_with_args("DELETE FROM concord.diff_run d WHERE d.relid = $1 AND d.status = 'clean'"
								  " AND d.run_id < (SELECT pg_catalog.max(l.run_id) FROM concord.diff_run l"
								  "                  WHERE l.relid = $1 AND l.status = 'clean')",
								  1, types, &relid, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not remove earlier clean runs");
		start_scheduled_diff(relid);
	}
	SPI_finish();
}

/* True while a worker of this database still runs. */
static bool
workers_running(void)
{
	bool		running = false;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < ConcordShmem->max_entries; i++)
	{
		ConcordSubState *st = &ConcordShmem->subs[i];

		if (st->dboid == ManagerDb && (st->apply_pid != 0 || st->sync_pid != 0))
			running = true;
	}
	LWLockRelease(ConcordShmem->lock);
	return running;
}

/* The extension was dropped: stop this database's workers and leave. */
static void
manager_shutdown(void)
{
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ConcordShmem->max_entries; i++)
	{
		ConcordSubState *st = &ConcordShmem->subs[i];

		if (st->dboid != ManagerDb)
			continue;
		if (st->apply_pid > 0)
			kill(st->apply_pid, SIGTERM);
		if (st->sync_pid > 0)
			kill(st->sync_pid, SIGTERM);
		concord_sub_state_free(st);
	}
	LWLockRelease(ConcordShmem->lock);
}

static void
manager_attach(void)
{
	ConcordDbState *db;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	db = concord_db_state(ManagerDb, true);
	db->manager_pid = MyProcPid;
	db->manager_latch = MyLatch;
	LWLockRelease(ConcordShmem->lock);
	concord_slot_drops_unclaim(ManagerDb);
	before_shmem_exit(manager_detach, (Datum) 0);
}

/* The WARNING for a slot of an aborted transaction that stays. */
static void
warn_slot_left(const ConcordSlotDrop *d, const char *why)
{
	ereport(WARNING,
			(errmsg("replication slot \"%s\" on the provider, made by a transaction that aborted, is left there: %s",
					d->slot_name, why),
			 errhint("Drop it on the provider with SELECT pg_drop_replication_slot('%s').",
					 d->slot_name)));
}

/*
 * Why a drop waiting in the queue is not to be run, or NULL.  An entry
 * loaded from the state file may be stale (shmem/slot_drops.c): the slot
 * of that name may be a live subscription's by now (taken back by a
 * create_subscription that committed after the last save), or the entry
 * the original's, in a copy of the node.  In a transaction; the catalogs
 * are read in the order DROP EXTENSION locks them.
 */
static char *
drop_unwanted(const ConcordSlotDrop *d, bool *leaves)
{
	ConcordNode *local = concord_node_get_local(true);
	char	   *why = NULL;
	ListCell   *lc;

	*leaves = false;
	foreach(lc, concord_subscription_get_all())
	{
		ConcordSubscription *sub = lfirst(lc);

		if (strcmp(sub->slot_name, d->slot_name) == 0)
			return psprintf("subscription \"%s\" uses it", sub->name);
	}
	/* One made in this server's life is this node's whatever came since. */
	if (!d->loaded)
		return NULL;
	*leaves = true;
	if (local != NULL && !concord_identity_check(&why))
		return pstrdup("this database is a copy of its node");
	if (d->marker[0] != '\0' && strcmp(d->marker, concord_identity_marker()) != 0)
		return pstrdup("the node's identity changed since its subscription was made");
	*leaves = false;
	return NULL;
}

/*
 * Drops one of the slots that aborted create_subscription calls of this
 * database made on providers (shmem/slot_drops.c), with its DSN; one that
 * cannot be dropped now is tried again later, with backoff, then given up.
 * One per pass, so that unreachable providers do not hold up the rest of
 * the manager's work.
 */
static void
drop_deferred_slot(void)
{
	ConcordSlotDrop d;
	bool		dropped;
	bool		leaves;
	char	   *unwanted;

	if (!concord_slot_drop_claim(ManagerDb, &d))
		return;
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	unwanted = drop_unwanted(&d, &leaves);
	PopActiveSnapshot();
	if (unwanted && leaves)
		warn_slot_left(&d, psprintf("concord does not drop it: %s", unwanted));
	else if (unwanted)
		ereport(LOG,
				(errmsg("concord does not drop replication slot \"%s\" on the provider: %s",
						d.slot_name, unwanted)));
	if (unwanted)
	{
		CommitTransactionCommand();
		(void) concord_slot_drop_finish(ManagerDb, d.slot_name, true);
		return;
	}
	dropped = concord_slot_drop(d.dsn, d.password_required, d.slot_name,
								"concord manager", false);
	CommitTransactionCommand();
	if (concord_slot_drop_finish(ManagerDb, d.slot_name, dropped))
		warn_slot_left(&d, psprintf("%d attempts to drop it failed", d.failures + 1));
	else if (dropped)
		ereport(LOG,
				(errmsg("dropped replication slot \"%s\" on the provider: the transaction that made it aborted",
						d.slot_name)));
}

/*
 * The database has no concord any more, and the manager leaves: each
 * waiting drop is tried once more, then given up.
 */
static void
forget_deferred_slots(void)
{
	ConcordSlotDrop d;

	while (concord_slot_drop_forget_one(ManagerDb, &d))
	{
		bool		dropped;

		StartTransactionCommand();
		dropped = concord_slot_drop(d.dsn, d.password_required, d.slot_name,
									"concord manager", false);
		CommitTransactionCommand();
		if (!dropped)
			warn_slot_left(&d, "the database no longer has concord, and its manager leaves");
	}
}

static uint64
current_requests(void)
{
	ConcordDbState *db;
	uint64		requests = 0;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	db = concord_db_state(ManagerDb, false);
	if (db)
		requests = db->requests;
	LWLockRelease(ConcordShmem->lock);
	return requests;
}

/*
 * Marks the database dormant, unless someone asked for a manager since
 * the subscriptions were read (seen_requests): then keep going.
 */
static bool
go_dormant(uint64 seen_requests)
{
	ConcordDbState *db;
	bool		dormant = false;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	db = concord_db_state(ManagerDb, true);
	db->failures = 0;
	if (db->requests == seen_requests)
		db->dormant = dormant = true;
	LWLockRelease(ConcordShmem->lock);
	return dormant;
}

void
concord_manager_main(Datum main_arg pg_attribute_unused())
{
	bool		gone;
	bool		swept;
	List	   *subs;

	ManagerDb = concord_worker_connect();
	/* Its writes are concord's catalogs: no SEEN vector for them (seen.c). */
	concord_is_worker = true;
	/* Its SQL (history, tombstones) resolves names in pg_catalog only. */
	SetConfigOption("search_path", "", PGC_SUSET, PGC_S_OVERRIDE);
	CycleContext = AllocSetContextCreate(TopMemoryContext, "concord manager cycle",
										 ALLOCSET_DEFAULT_SIZES);
	manager_attach();

	pgstat_report_activity(STATE_IDLE, NULL);
	for (;;)
	{
		uint64		seen_requests = current_requests();
		ListCell   *lc;

		subs = read_subscriptions(&gone, &swept);
		if (gone)
		{
			forget_deferred_slots();
			manager_shutdown();
		}
		else
		{
			check_starting();
			foreach(lc, reconcile(subs))
				start_apply(lfirst_oid(lc));
			trim_history();
			periodic(&LastTombstoneGc, 60 * 1000, remove_tombstones);
			periodic(&LastRepairOriginDrop, 60 * 1000, drop_repair_origins);
			if (concord_check_interval > 0)
				periodic(&LastCheck, (int) Min((int64) concord_check_interval * 1000, PG_INT32_MAX),
						 scheduled_check);
			drop_deferred_slot();
		}
		if ((gone || (subs == NIL && StartingWorkers == NIL && !workers_running() &&
					  swept && !concord_slot_drops_waiting(ManagerDb))) &&
			go_dormant(seen_requests))
			proc_exit(0);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 MANAGER_NAPTIME_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}
