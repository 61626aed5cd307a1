/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		concord's shared memory: per-database and per-subscription state.
 *
 * Sized at startup by max_worker_processes (no more managers or apply
 * workers can run than that).  Entries are found by linear search: there
 * are few, and they are looked up a few times a second at most.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "tcop/tcopprot.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "lib/stringinfo.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "concord.h"
#include "shmem/shmem.h"

#define CONCORD_TRANCHE		"concord"
#define BACKOFF_FIRST_MS	1000
#define BACKOFF_MAX_MS		60000

ConcordShared *ConcordShmem = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(ConcordShared));

	size = add_size(size, mul_size(max_worker_processes, sizeof(ConcordDbState)));
	size = add_size(size, mul_size(max_worker_processes, sizeof(ConcordSubState)));
	size = add_size(size, mul_size(max_worker_processes * CONCORD_SEEN_PER_ENTRY,
								   sizeof(ConcordSeenState)));
	size = add_size(size, mul_size(max_worker_processes * CONCORD_CONFIRM_PER_ENTRY,
								   sizeof(ConcordConfirmState)));
	size = add_size(size, mul_size(max_worker_processes, sizeof(ConcordCommitRuns)));
	size = add_size(size, mul_size(max_worker_processes * CONCORD_NOTES_PER_ENTRY,
								   sizeof(ConcordCausalNote)));
	size = add_size(size, mul_size(max_worker_processes, sizeof(ConcordLagHist)));
	size = add_size(size, mul_size(max_worker_processes * CONCORD_POSITIONS_PER_ENTRY,
								   sizeof(ConcordPositionState)));
	size = add_size(size, mul_size(max_worker_processes * CONCORD_LOCAL_COMMITS_PER_ENTRY,
								   sizeof(ConcordLocalCommits)));
	return size;
}

static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shmem_size());
	/*
	 * The main lock, one per subscription entry's commit runs, and the
	 * state file lock of position.c.
	 */
	RequestNamedLWLockTranche(CONCORD_TRANCHE, 2 + max_worker_processes);
}

static void
shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ConcordShmem = ShmemInitStruct("concord", shmem_size(), &found);
	if (!found)
	{
		memset(ConcordShmem, 0, shmem_size());
		ConcordShmem->lock = &(GetNamedLWLockTranche(CONCORD_TRANCHE))->lock;
		ConcordShmem->max_entries = max_worker_processes;
		pg_atomic_init_u64(&ConcordShmem->seen_generation, 0);
		pg_atomic_init_u64(&ConcordShmem->gap_generation, 0);
		pg_atomic_init_u64(&ConcordShmem->subs_generation, 0);
		for (int i = 0; i < CONCORD_TOMBSTONE_SLOTS; i++)
			pg_atomic_init_u32(&ConcordShmem->tombstoned[i], 0);
		found = false;
	}
	/* Pointers into the segment are the same in every process. */
	ConcordShmem->dbs = (ConcordDbState *)
		((char *) ConcordShmem + MAXALIGN(sizeof(ConcordShared)));
	ConcordShmem->subs = (ConcordSubState *)
		(ConcordShmem->dbs + ConcordShmem->max_entries);
	ConcordShmem->seen = (ConcordSeenState *)
		(ConcordShmem->subs + ConcordShmem->max_entries);
	ConcordShmem->confirmed = (ConcordConfirmState *)
		(ConcordShmem->seen + ConcordShmem->max_entries * CONCORD_SEEN_PER_ENTRY);
	ConcordShmem->commit_runs = (ConcordCommitRuns *)
		(ConcordShmem->confirmed + ConcordShmem->max_entries * CONCORD_CONFIRM_PER_ENTRY);
	ConcordShmem->notes = (ConcordCausalNote *)
		(ConcordShmem->commit_runs + ConcordShmem->max_entries);
	ConcordShmem->lag = (ConcordLagHist *)
		(ConcordShmem->notes + ConcordShmem->max_entries * CONCORD_NOTES_PER_ENTRY);
	ConcordShmem->positions = (ConcordPositionState *)
		(ConcordShmem->lag + ConcordShmem->max_entries);
	ConcordShmem->local_commits = (ConcordLocalCommits *)
		(ConcordShmem->positions + ConcordShmem->max_entries * CONCORD_POSITIONS_PER_ENTRY);
	if (!found)
	{
		LWLockPadded *locks = GetNamedLWLockTranche(CONCORD_TRANCHE);

		ConcordShmem->state_file_lock = &locks[1 + ConcordShmem->max_entries].lock;
		for (int i = 0; i < ConcordShmem->max_entries * CONCORD_LOCAL_COMMITS_PER_ENTRY; i++)
		{
			pg_atomic_init_u64(&ConcordShmem->local_commits[i].end_lsn, 0);
			pg_atomic_init_u32(&ConcordShmem->local_commits[i].committing, 0);
			pg_atomic_init_u64(&ConcordShmem->local_commits[i].last_mark, 0);
		}
		for (int i = 0; i < ConcordShmem->max_entries; i++)
		{
			ConcordShmem->commit_runs[i].lock = &locks[1 + i].lock;
			ConditionVariableInit(&ConcordShmem->subs[i].progress_cv);
			pg_atomic_init_u64(&ConcordShmem->subs[i].last_msg_at, 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
	/* The postmaster, once the segment is made: what a restart keeps. */
	if (!IsUnderPostmaster)
		concord_slot_drops_load();
}

void
concord_shmem_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;
}

/* Caller holds the lock (exclusively when create). */
ConcordDbState *
concord_db_state(Oid dboid, bool create)
{
	ConcordDbState *free_entry = NULL;

	for (int i = 0; i < ConcordShmem->max_entries; i++)
	{
		ConcordDbState *db = &ConcordShmem->dbs[i];

		if (db->dboid == dboid)
			return db;
		if (!OidIsValid(db->dboid) && free_entry == NULL)
			free_entry = db;
	}
	if (!create || free_entry == NULL)
		return NULL;
	memset(free_entry, 0, sizeof(ConcordDbState));
	free_entry->dboid = dboid;
	return free_entry;
}

/*
 * Empties the commit runs (conflict/own_commits.c) of an entry that is
 * handed to another subscription: none of them is that one's.
 */
static void
commit_runs_reset(ConcordCommitRuns *runs)
{
	LWLockAcquire(runs->lock, LW_EXCLUSIVE);
	runs->owner = 0;
	runs->nruns = 0;
	LWLockRelease(runs->lock);
}

/*
 * The entry of a subscription; with create, a new one when there is none.
 * NULL when there is none, or no room for one (every entry is taken): the
 * caller reports that with concord_no_room_error() once it has released
 * the lock, which it holds (exclusively when create).
 */
ConcordSubState *
concord_sub_state(Oid dboid, Oid subid, bool create)
{
	ConcordSubState *free_entry = NULL;

	for (int i = 0; i < ConcordShmem->max_entries; i++)
	{
		ConcordSubState *sub = &ConcordShmem->subs[i];

		if (sub->dboid == dboid && sub->subid == subid)
			return sub;
		if (!OidIsValid(sub->dboid) && free_entry == NULL)
			free_entry = sub;
	}
	if (!create || free_entry == NULL)
		return NULL;
	memset(free_entry, 0, offsetof(ConcordSubState, progress_cv));
	pg_atomic_init_u64(&free_entry->last_msg_at, 0);
	free_entry->dboid = dboid;
	free_entry->subid = subid;
	pg_atomic_fetch_add_u64(&ConcordShmem->subs_generation, 1);
	commit_runs_reset(concord_sub_commit_runs(free_entry));
	concord_lag_reset(concord_sub_lag(free_entry));
	return free_entry;
}

/* Frees subscription entry st; the caller holds the lock exclusively. */
void
concord_sub_state_free(ConcordSubState *st)
{
	st->dboid = InvalidOid;
	pg_atomic_fetch_add_u64(&ConcordShmem->subs_generation, 1);
}

/* Whether every subscription entry is taken; caller holds the lock. */
bool
concord_sub_state_full(void)
{
	for (int i = 0; i < ConcordShmem->max_entries; i++)
		if (!OidIsValid(ConcordShmem->subs[i].dboid))
			return false;
	return true;
}

#define NO_ROOM_MSG		"too many concord subscriptions"
#define NO_ROOM_DETAIL	"This server has room for %d concord subscriptions, all databases together."
#define NO_ROOM_HINT	"Increase max_worker_processes (and restart), or drop subscriptions."

/* The error of a subscription that found no room in shared memory. */
void
concord_no_room_error(int elevel, const char *sub_name)
{
	ereport(elevel,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg(NO_ROOM_MSG),
			 errdetail(NO_ROOM_DETAIL, ConcordShmem->max_entries),
			 errhint(NO_ROOM_HINT),
			 sub_name ? errcontext("subscription \"%s\"", sub_name) : 0));
}

/* The same, as the status view's last_error shows an error. */
char *
concord_no_room_message(void)
{
	return psprintf(NO_ROOM_MSG ": " NO_ROOM_DETAIL " Hint: " NO_ROOM_HINT,
					ConcordShmem->max_entries);
}

/* The apply lag histogram (lag.c) of subscription entry st. */
ConcordLagHist *
concord_sub_lag(ConcordSubState *st)
{
	return &ConcordShmem->lag[st - ConcordShmem->subs];
}

/* The commit runs (own_commits.c) of subscription entry st. */
ConcordCommitRuns *
concord_sub_commit_runs(ConcordSubState *st)
{
	return &ConcordShmem->commit_runs[st - ConcordShmem->subs];
}

void
concord_wake_launcher(void)
{
	if (ConcordShmem->launcher_latch)
		SetLatch(ConcordShmem->launcher_latch);
}

/* Asks the launcher for a manager in the database, even after a refusal. */
void
concord_request_manager(Oid dboid)
{
	ConcordDbState *db;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	db = concord_db_state(dboid, true);
	if (db)
	{
		db->dormant = false;
		db->requests++;
		db->restart_after = 0;
		if (db->manager_latch)
			SetLatch(db->manager_latch);
	}
	LWLockRelease(ConcordShmem->lock);
	concord_wake_launcher();
}

/* 1 s after the first failure, doubling up to 60 s. */
TimestampTz
concord_backoff_until(int failures)
{
	int64		ms = BACKOFF_FIRST_MS;

	for (int i = 1; i < failures && ms < BACKOFF_MAX_MS; i++)
		ms *= 2;
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
									   Min(ms, BACKOFF_MAX_MS));
}

/* Records a failure of the subscription's workers; takes the lock. */
void
concord_sub_record_error(ConcordSubState *sub, const char *message)
{
	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	sub->has_error = true;
	strlcpy(sub->last_error, message, CONCORD_ERROR_LEN);
	sub->last_error_at = GetCurrentTimestamp();
	sub->failures++;
	sub->restart_after = concord_backoff_until(sub->failures);
	LWLockRelease(ConcordShmem->lock);
}

/* The parts every concord background worker shares. */
void
concord_fill_worker(BackgroundWorker *worker, const char *type,
					const char *function)
{
	memset(worker, 0, sizeof(BackgroundWorker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, CONCORD_LIBRARY_NAME);
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker->bgw_name, BGW_MAXLEN, "%s", type);
	snprintf(worker->bgw_type, BGW_MAXLEN, "%s", type);
}

/*
 * Start-up shared by the manager, apply and sync workers: signals, then
 * a connection to the database the starter put in bgw_extra.
 */
Oid
concord_worker_connect(void)
{
	Oid			dboid;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	/*
	 * No worker's commit waits for synchronous standbys: a node that lists
	 * its peers' subscriptions in synchronous_standby_names would wait for
	 * peers that wait for it (the apply, the copy, the manager's chores).
	 * What a worker commits is made durable where it matters (apply.c).
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	return dboid;
}

/*
 * Starts a dynamic worker of the given type for a database (and
 * subscription), reporting to the calling process.
 */
bool
concord_start_worker(const char *type, const char *function, Oid dboid,
					 Oid subid, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	concord_fill_worker(&worker, type, function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s %u/%u", type, dboid, subid);
	worker.bgw_main_arg = ObjectIdGetDatum(subid);
	memcpy(worker.bgw_extra, &dboid, sizeof(Oid));
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/*
 * From a PG_CATCH block: records the error being handled as the
 * subscription's last error ("message: detail Hint: hint (context)").
 */
void
concord_record_current_error(ConcordSubState *sub)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	ErrorData  *edata = CopyErrorData();
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, edata->message ? edata->message : "unknown error");
	if (edata->detail)
		appendStringInfo(&buf, ": %s", edata->detail);
	if (edata->hint)
		appendStringInfo(&buf, " Hint: %s", edata->hint);
	if (edata->context)
		appendStringInfo(&buf, " (%s)", edata->context);
	for (char *p = buf.data; *p; p++)
		if (*p == '\n')
			*p = ' ';
	if (sub)
		concord_sub_record_error(sub, buf.data);
	FreeErrorData(edata);
	pfree(buf.data);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * State kept in shared memory across restarts (seen.c, known.c) lives in
 * files of the data directory: a magic number, then fixed-size entries.
 * Writes count entries of size bytes from data to tmp, then renames it
 * over path; false, with a LOG line, if it could not.
 */
bool
concord_state_file_write(const char *path, const char *tmp, uint32 magic,
						 const void *data, Size size, int count)
{
	FILE	   *f = AllocateFile(tmp, PG_BINARY_W);
	bool		ok;

	if (f == NULL)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not write \"%s\": %m", tmp)));
		return false;
	}
	fwrite(&magic, sizeof(magic), 1, f);
	if (count > 0)
		fwrite(data, size, count, f);
	ok = !ferror(f);
	if (FreeFile(f) != 0 || !ok)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not write \"%s\": %m", tmp)));
		return false;
	}
	return durable_rename(tmp, path, LOG) == 0;
}

/*
 * Reads up to max entries of size bytes from path into data, if the file
 * is there and starts with magic; returns how many it read.
 */
int
concord_state_file_read(const char *path, uint32 magic, void *data, Size size,
						int max)
{
	FILE	   *f = AllocateFile(path, PG_BINARY_R);
	uint32		found = 0;
	int			count = 0;

	if (f == NULL)
		return 0;
	if (fread(&found, sizeof(found), 1, f) == 1 && found == magic)
		while (count < max && fread((char *) data + count * size, size, 1, f) == 1)
			count++;
	FreeFile(f);
	return count;
}
