/*-------------------------------------------------------------------------
 *
 * seen.c
 *		Causality: what a transaction's writer had already applied.
 *
 * A remote UPDATE or DELETE of a row last written by another node is a
 * conflict only if the two writes were concurrent, that is, if the remote
 * writer had not yet applied the local version when it wrote.  To know,
 * every node keeps in shared memory, per origin node, the commit timestamp
 * of the latest transaction of that origin it has applied (apply commits
 * in each origin's commit order, so that is all it has seen of it).  A
 * local transaction that writes logs that vector as a transactional
 * logical decoding message ("concord.seen") before its first change; the
 * output plugin ships it as a SEEN message right after BEGIN, and apply
 * logs the same bytes again in the transaction it applies, so that a
 * forwarded transaction keeps its writer's vector.  On the receiving
 * node, the local row version (origin O, commit timestamp T, read from
 * the commit timestamp of its xmin) was seen by the remote writer iff its
 * vector holds O with a timestamp >= T.
 *
 * The hooks catch the writing statements of a transaction: the executor
 * (INSERT, UPDATE, DELETE, MERGE, data-modifying WITH) and COPY FROM /
 * TRUNCATE; the vector is logged before the first one, and again before a
 * later one when the node applied more in between.
 * A transaction without the message (no vector yet after a restart, or
 * the subtransaction that logged it rolled back) counts as having seen
 * nothing: its changes may show conflicts that were not, never the
 * reverse.  The vector lives in shared memory; the launcher saves it to
 * a file in the data directory every few seconds and at shutdown, and the
 * postmaster loads it at startup, so a restart keeps what was applied (a
 * crash may lose the last seconds: older values only make more changes
 * look concurrent).  known.c's notes are saved and loaded with it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parsetree.h"
#include "replication/message.h"
#include "storage/ipc.h"
#include "tcop/utility.h"
#include "utils/syscache.h"

#include "conflict/known.h"
#include "conflict/seen.h"
#include "proto/proto.h"
#include "shmem/position.h"
#include "shmem/shmem.h"

/* Apply and sync workers log the vectors they receive, not their own. */
bool		concord_is_worker = false;

static shmem_startup_hook_type prev_shmem_startup = NULL;
static ExecutorStart_hook_type prev_executor_start = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;

static void seen_load(void);

/* Nesting level of the (sub)transaction that logged the vector; 0: none. */
static int	SeenLoggedLevel = 0;

/* The vector's generation when this transaction last logged it. */
static uint64 SeenLoggedGeneration = 0;

/*
 * This transaction ran a statement writing a table whose changes are
 * decoded (not a temporary or unlogged one): its commit is one a causal
 * token names (shmem/position.c).
 */
static bool TxnWrote = false;

/* This transaction is counted as committing (shmem/position.c). */
static bool TxnCounted = false;

/* Whose commits a causal token names: sessions', not workers'. */
static bool
commits_named(void)
{
	return !concord_is_worker && MyBackendType != B_AUTOVAC_WORKER &&
		ConcordShmem != NULL;
}

static bool
seen_entry_is(ConcordSeenState *e, const char *origin)
{
	return e->dboid == MyDatabaseId && strcmp(e->origin, origin) == 0;
}

/* Records that a transaction of origin committed at commit_ts was applied. */
void
concord_seen_applied(const char *origin, TimestampTz commit_ts)
{
	/* An apply worker applies one origin's transactions after another. */
	static ConcordSeenState *last_entry = NULL;
	int			n = ConcordShmem->max_entries * CONCORD_SEEN_PER_ENTRY;
	ConcordSeenState *entry = NULL;
	ConcordSeenState *free_entry = NULL;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	if (last_entry && seen_entry_is(last_entry, origin))
		entry = last_entry;
	for (int i = 0; i < n && entry == NULL; i++)
	{
		ConcordSeenState *e = &ConcordShmem->seen[i];

		if (seen_entry_is(e, origin))
			entry = e;
		else if (!OidIsValid(e->dboid) && free_entry == NULL)
			free_entry = e;
	}
	if (entry)
	{
		if (commit_ts > entry->commit_ts)
		{
			entry->commit_ts = commit_ts;
			pg_atomic_fetch_add_u64(&ConcordShmem->seen_generation, 1);
		}
	}
	else if (free_entry)
	{
		entry = free_entry;
		entry->dboid = MyDatabaseId;
		strlcpy(entry->origin, origin, NAMEDATALEN);
		entry->commit_ts = commit_ts;
		pg_atomic_fetch_add_u64(&ConcordShmem->seen_generation, 1);
	}
	last_entry = entry;
	LWLockRelease(ConcordShmem->lock);
}

/*
 * This database's vector, as ConcordSeenEntry (proto.h); NIL if nothing
 * was applied here yet.
 */
List *
concord_seen_vector(void)
{
	int			n = ConcordShmem->max_entries * CONCORD_SEEN_PER_ENTRY;
	List	   *entries = NIL;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < n; i++)
	{
		ConcordSeenState *e = &ConcordShmem->seen[i];
		ConcordSeenEntry *copy;

		if (e->dboid != MyDatabaseId)
			continue;
		copy = palloc(sizeof(ConcordSeenEntry));
		copy->origin = pstrdup(e->origin);
		copy->commit_ts = e->commit_ts;
		entries = lappend(entries, copy);
	}
	LWLockRelease(ConcordShmem->lock);
	return entries;
}

/*
 * What this database has applied of origin: the commit timestamp of its
 * latest transaction applied here, 0 if none.
 */
TimestampTz
concord_seen_local(const char *origin)
{
	int			n = ConcordShmem->max_entries * CONCORD_SEEN_PER_ENTRY;
	TimestampTz ts = 0;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < n; i++)
		if (seen_entry_is(&ConcordShmem->seen[i], origin))
			ts = ConcordShmem->seen[i].commit_ts;
	LWLockRelease(ConcordShmem->lock);
	return ts;
}

/* The vector's timestamp for origin, or 0 if it has none. */
TimestampTz
concord_seen_lookup(List *seen, const char *origin)
{
	ListCell   *lc;

	foreach(lc, seen)
	{
		ConcordSeenEntry *e = lfirst(lc);

		if (strcmp(e->origin, origin) == 0)
			return e->commit_ts;
	}
	return 0;
}

/*
 * Logs the vector before a writing statement: before the transaction's
 * first change, and again before a later statement if this node applied
 * more in between (the later statement may have read it).  A later
 * message of a transaction supersedes the earlier ones on the receiver.
 */
static void
log_seen(void)
{
	List	   *vector;
	StringInfoData payload;
	uint64		generation;

	if (concord_is_worker || ConcordShmem == NULL ||
		!XLogLogicalInfoActive() || !IsTransactionState() ||
		RecoveryInProgress())
		return;
	generation = pg_atomic_read_u64(&ConcordShmem->seen_generation);
	if (SeenLoggedLevel > 0 && generation == SeenLoggedGeneration)
		return;
	vector = concord_seen_vector();
	if (vector == NIL)
		return;
	initStringInfo(&payload);
	concord_encode_seen(&payload, vector);
	(void) LogLogicalMessage(CONCORD_SEEN_PREFIX, payload.data, payload.len, true);
	if (SeenLoggedLevel == 0 || GetCurrentTransactionNestLevel() < SeenLoggedLevel)
		SeenLoggedLevel = GetCurrentTransactionNestLevel();
	SeenLoggedGeneration = generation;
	pfree(payload.data);
}

/*
 * Whether a relation's changes are decoded: not those of temporary and
 * unlogged tables, which a causal token need not name (and through
 * forwarding could wait for for ever).  One not found counts.
 */
static bool
relation_logged(Oid relid)
{
	HeapTuple	tup;
	bool		logged = true;

	if (!OidIsValid(relid))
		return true;
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (HeapTupleIsValid(tup))
	{
		logged = ((Form_pg_class) GETSTRUCT(tup))->relpersistence == RELPERSISTENCE_PERMANENT;
		ReleaseSysCache(tup);
	}
	return logged;
}

/* Whether the statement writes a table whose changes are decoded. */
static bool
writes_logged_table(PlannedStmt *stmt)
{
	ListCell   *lc;

	if (stmt->resultRelations == NIL)
		return true;
	foreach(lc, stmt->resultRelations)
	{
		RangeTblEntry *rte = rt_fetch(lfirst_int(lc), stmt->rtable);

		if (relation_logged(rte->relid))
			return true;
	}
	return false;
}

/* Whether COPY FROM or TRUNCATE names a table whose changes are decoded. */
static bool
names_logged_table(Node *stmt)
{
	ListCell   *lc;

	if (IsA(stmt, CopyStmt))
		return ((CopyStmt *) stmt)->relation == NULL ||
			relation_logged(RangeVarGetRelid(((CopyStmt *) stmt)->relation,
											 NoLock, true));
	foreach(lc, ((TruncateStmt *) stmt)->relations)
	{
		RangeVar   *rv = lfirst(lc);
		Oid			relid = RangeVarGetRelid(rv, NoLock, true);

		/* its children too, which may be logged tables */
		if (relation_logged(relid) || (rv->inh && has_subclass(relid)))
			return true;
	}
	return false;
}

static void
seen_executor_start(QueryDesc *queryDesc, int eflags)
{
	/* EXPLAIN without ANALYZE writes nothing (review #26). */
	if ((queryDesc->operation != CMD_SELECT ||
		 queryDesc->plannedstmt->hasModifyingCTE) &&
		(eflags & EXEC_FLAG_EXPLAIN_ONLY) == 0)
	{
		if (!TxnWrote && writes_logged_table(queryDesc->plannedstmt))
			TxnWrote = true;
		log_seen();
	}
	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

static void
seen_process_utility(PlannedStmt *pstmt, const char *queryString,
					 bool readOnlyTree, ProcessUtilityContext context,
					 ParamListInfo params, QueryEnvironment *queryEnv,
					 DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if ((IsA(stmt, CopyStmt) && ((CopyStmt *) stmt)->is_from) ||
		IsA(stmt, TruncateStmt))
	{
		if (!TxnWrote && names_logged_table(stmt))
			TxnWrote = true;
		log_seen();
	}
	else if (IsA(stmt, TransactionStmt) &&
			 ((TransactionStmt *) stmt)->kind == TRANS_STMT_COMMIT_PREPARED &&
			 commits_named() && !TxnCounted)
	{
		/* The prepared transaction becomes visible inside the statement. */
		concord_position_committing_locally(true);
		TxnCounted = true;
	}
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
	/* This backend's last record: the prepared transaction's commit. */
	if (IsA(stmt, TransactionStmt) &&
		((TransactionStmt *) stmt)->kind == TRANS_STMT_COMMIT_PREPARED &&
		TxnCounted)
		concord_position_local_commit(XactLastRecEnd);
}

/*
 * The commit of a session's transaction that wrote rows (not of concord's
 * workers, not of autovacuum's ANALYZE) and a commit record
 * (XactLastCommitEnd moved): what a causal token names of this node
 * (shmem/position.c).  It counts as committing from before its commit
 * record is written (PRE_COMMIT) until its end is noted, so that a token
 * taken once its rows are visible covers them.
 */
static void
seen_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	static XLogRecPtr noted_end = InvalidXLogRecPtr;

	if (event == XACT_EVENT_PRE_COMMIT && TxnWrote && !TxnCounted &&
		commits_named())
	{
		concord_position_committing_locally(true);
		TxnCounted = true;
	}
	if (event == XACT_EVENT_COMMIT && TxnWrote && commits_named() &&
		XactLastCommitEnd != noted_end)
	{
		noted_end = XactLastCommitEnd;
		concord_position_local_commit(XactLastCommitEnd);
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		if (TxnCounted)
			concord_position_committing_locally(false);
		TxnCounted = false;
		SeenLoggedLevel = 0;
		TxnWrote = false;
	}
}

/*
 * Once the postmaster has made concord's shared memory (shmem.c, whose hook
 * runs first), the vectors are loaded from the state file.  Backends of an
 * EXEC_BACKEND build attach to the segment: they load nothing.
 */
static void
seen_shmem_startup(void)
{
	if (prev_shmem_startup)
		prev_shmem_startup();
	if (!IsUnderPostmaster)
	{
		seen_load();
		concord_known_load();
		concord_position_load();
	}
}
/* A rolled back subtransaction takes the message with it: log it again. */
static void
seen_subxact_callback(SubXactEvent event,
					  SubTransactionId mySubid pg_attribute_unused(),
					  SubTransactionId parentSubid pg_attribute_unused(),
					  void *arg pg_attribute_unused())
{
	if (event == SUBXACT_EVENT_ABORT_SUB &&
		SeenLoggedLevel >= GetCurrentTransactionNestLevel())
		SeenLoggedLevel = 0;
}

void
concord_seen_install_hooks(void)
{
	prev_shmem_startup = shmem_startup_hook;
	shmem_startup_hook = seen_shmem_startup;
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = seen_executor_start;
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = seen_process_utility;
	RegisterXactCallback(seen_xact_callback, NULL);
	RegisterSubXactCallback(seen_subxact_callback, NULL);
}

#define SEEN_FILE		"concord_seen.state"
#define SEEN_FILE_TMP	"concord_seen.state.tmp"
#define SEEN_MAGIC		0x434F4E53	/* "CONS" */

static uint64 SavedGeneration = 0;

/* Writes the vectors of every database to the state file, if they moved. */
void
concord_seen_save(void)
{
	int			n = ConcordShmem->max_entries * CONCORD_SEEN_PER_ENTRY;
	uint64		generation = pg_atomic_read_u64(&ConcordShmem->seen_generation);
	ConcordSeenState *copy;
	int			used = 0;

	concord_known_save();
	concord_position_save();
	if (generation == SavedGeneration)
		return;
	copy = palloc(sizeof(ConcordSeenState) * n);
	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	for (int i = 0; i < n; i++)
		if (OidIsValid(ConcordShmem->seen[i].dboid))
			copy[used++] = ConcordShmem->seen[i];
	LWLockRelease(ConcordShmem->lock);
	if (concord_state_file_write(SEEN_FILE, SEEN_FILE_TMP, SEEN_MAGIC, copy,
								 sizeof(ConcordSeenState), used))
		SavedGeneration = generation;
	pfree(copy);
}

/* At startup (postmaster): the vectors saved last. */
static void
seen_load(void)
{
	int			n = concord_state_file_read(SEEN_FILE, SEEN_MAGIC, ConcordShmem->seen,
											sizeof(ConcordSeenState),
											ConcordShmem->max_entries * CONCORD_SEEN_PER_ENTRY);

	for (int i = 0; i < n; i++)
		ConcordShmem->seen[i].origin[NAMEDATALEN - 1] = '\0';
}
