/*-------------------------------------------------------------------------
 *
 * shmem.h
 *		Shared state of concord's background workers.
 *
 * One ConcordShared lives in shared memory.  It holds an entry per
 * database (its manager) and per subscription (its apply and sync
 * workers, progress and last error).  The subscription entry outlives its
 * workers: the status view reads it, and the manager uses it to restart a
 * failed apply worker with backoff.  Every field is protected by the
 * concord LWLock, except where a comment says otherwise.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_SHMEM_H
#define CONCORD_SHMEM_H

#include "access/transam.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "postmaster/bgworker.h"
#include "replication/origin.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/lwlock.h"

#define CONCORD_ERROR_LEN		1024

typedef enum ConcordPhase
{
	CONCORD_PHASE_INITIALIZING,
	CONCORD_PHASE_SYNCING,
	CONCORD_PHASE_REPLICATING
} ConcordPhase;

typedef struct ConcordDbState
{
	Oid			dboid;			/* InvalidOid: free */
	pid_t		manager_pid;
	Latch	   *manager_latch;
	bool		dormant;		/* no concord or no subscription here */
	uint64		requests;		/* counts concord_request_manager() calls */
	int			failures;
	TimestampTz restart_after;
} ConcordDbState;

#define CONCORD_GAVE_UP_SLOTS	4

/* concord.apply_workers_per_subscription's maximum (apply/parallel.h) */
#define CONCORD_MAX_APPLY_WORKERS	8

typedef struct ConcordSubState
{
	Oid			dboid;			/* InvalidOid: free */
	Oid			subid;
	pid_t		apply_pid;
	Latch	   *apply_latch;
	pid_t		apply_worker_pids[CONCORD_MAX_APPLY_WORKERS];	/* with
																 * several:
																 * apply/parallel.h */
	bool		apply_worker_unkeyed[CONCORD_MAX_APPLY_WORKERS];	/* as
																	 * apply_unkeyed,
																	 * per worker */
	pid_t		sync_pid;
	ConcordPhase phase;
	XLogRecPtr	received_lsn;	/* provider WAL seen */
	XLogRecPtr	provider_lsn;	/* the provider's latest WAL position known */
	pg_atomic_uint64 last_msg_at;	/* when the stream last delivered a
									 * message (a TimestampTz; written
									 * without the lock) */
	XLogRecPtr	caught_up_lsn;	/* every provider commit before it applied */
	bool		idle;			/* the provider's last message was a
								 * keepalive, everything before it applied */
	TimestampTz applied_commit_ts;	/* its commit time at the provider */
	TimestampTz held_commit_ts; /* that of the transaction apply holds
								 * (apply_delay, the clock), 0 if none */
	bool		has_error;
	XLogRecPtr	error_lsn;		/* commit LSN of the failed transaction */
	char		last_error[CONCORD_ERROR_LEN];
	TimestampTz last_error_at;
	int			failures;
	TimestampTz restart_after;
	TimestampTz careful_until;	/* apply looks for conflicts until then */
	bool		stop_requested; /* the subscription was disabled */
	bool		apply_unkeyed;	/* the apply worker's transactions lock no
								 * key (it was alone in its database when
								 * it began them: apply_xact.c) */
	XLogRecPtr	wake_lsn;		/* the lowest LSN a wait_for_apply() waits
								 * for; 0: nobody waits */
	XLogRecPtr	hold_lsn;		/* commit LSN of the remote transaction held
								 * for a missing cause (apply/causal.c) */
	TimestampTz hold_since;		/* when it was first held */
	/* origins apply gave up waiting for, each up to a commit timestamp */
	char		gave_up_origin[CONCORD_GAVE_UP_SLOTS][NAMEDATALEN];
	TimestampTz gave_up_upto[CONCORD_GAVE_UP_SLOTS];

	/*
	 * Last, and never cleared when the entry is handed to another
	 * subscription: a wait_for_apply() of the dropped one may still be
	 * asleep on it (it wakes, finds its subscription gone, and errors).
	 * Initialized once, with the segment.
	 */
	ConditionVariable progress_cv;	/* broadcast when caught_up_lsn reaches
									 * wake_lsn */
} ConcordSubState;

/*
 * What this node has applied from one origin node: the commit timestamp
 * of the latest of its transactions committed here (seen.c).
 */
typedef struct ConcordSeenState
{
	Oid			dboid;			/* InvalidOid: free */
	char		origin[NAMEDATALEN];
	TimestampTz commit_ts;
} ConcordSeenState;

#define CONCORD_SEEN_PER_ENTRY	4	/* seen entries per worker slot */

/*
 * The last transaction of an origin node applied through a subscription
 * that receives it forwarded (position.c): its end LSN on the provider
 * (path_lsn) and on the origin node (origin_lsn; origin_known false when
 * the provider did not send it).  pending_*: the transaction apply is
 * committing, set before its commit.  live: set since startup (else loaded
 * from the state file, and checked against the origin's progress).
 */
typedef struct ConcordPositionState
{
	Oid			dboid;			/* InvalidOid: free */
	Oid			subid;
	char		origin[NAMEDATALEN];
	XLogRecPtr	path_lsn;
	XLogRecPtr	origin_lsn;
	bool		origin_known;
	bool		live;
	XLogRecPtr	pending_path_lsn;	/* InvalidXLogRecPtr: none */
	XLogRecPtr	pending_origin_lsn;
	bool		pending_known;
	XLogRecPtr	mark_lsn;		/* the origin's latest MARK received through
								 * the subscription; since startup only */
} ConcordPositionState;

/*
 * Per database, the sessions' commits a causal token names of this node
 * (position.c): the end of the newest, and how many are committing now.
 * Taken once per database, never freed.
 */
typedef struct ConcordLocalCommits
{
	Oid			dboid;			/* InvalidOid: free; under the lock */
	pg_atomic_uint64 end_lsn;
	pg_atomic_uint32 committing;
	pg_atomic_uint64 last_mark;	/* the last MARK of this node logged */
} ConcordLocalCommits;

#define CONCORD_LOCAL_COMMITS_PER_ENTRY	8	/* databases per worker slot */

#define CONCORD_POSITIONS_PER_ENTRY	8	/* position entries per worker slot */

/*
 * What the writer of the remote transaction applied here as xact had seen
 * of origin, past what this node had applied of it (known.c): a ring of
 * CONCORD_NOTES_PER_ENTRY per worker slot, the oldest overwritten first.
 */
typedef struct ConcordCausalNote
{
	Oid			dboid;			/* InvalidOid: free */
	FullTransactionId xact;
	char		writer[NAMEDATALEN];	/* the remote transaction's origin */
	TimestampTz commit_ts;		/* and commit timestamp */
	char		origin[NAMEDATALEN];
	TimestampTz upto;
} ConcordCausalNote;

#define CONCORD_NOTES_PER_ENTRY	64


/*
 * What writer node had applied of origin node when it wrote its latest
 * transaction committed here (its SEEN vector): tombstone_gc.c.
 */
typedef struct ConcordConfirmState
{
	Oid			dboid;			/* InvalidOid: free */
	char		writer[NAMEDATALEN];
	char		origin[NAMEDATALEN];
	TimestampTz commit_ts;
} ConcordConfirmState;

#define CONCORD_CONFIRM_PER_ENTRY	16	/* confirm entries per worker slot */

/*
 * Transactions first .. first + count - 1, all committed by one apply
 * worker under origin (own_commits.c).
 */
typedef struct ConcordCommitRun
{
	FullTransactionId first;
	uint32		count;
	RepOriginId origin;
} ConcordCommitRun;

#define CONCORD_COMMIT_RUNS	8192	/* per subscription: 128 kB */

/* The latest commit runs of one subscription's apply worker, oldest first */
typedef struct ConcordCommitRuns
{
	LWLock	   *lock;			/* protects the rest */
	pid_t		owner;			/* the apply worker they are for; 0: none */
	int			nruns;
	ConcordCommitRun runs[CONCORD_COMMIT_RUNS];
} ConcordCommitRuns;

#define CONCORD_TOMBSTONE_SLOTS	1024

/*
 * A slot on a provider to drop, made by a transaction that then aborted
 * (create_subscription): the manager of its database drops it, so that
 * no backend waits on the network while it aborts (review #22).
 */
#define CONCORD_SLOT_DROPS			16
#define CONCORD_SLOT_DROP_DSN_LEN	2048
#define CONCORD_SLOT_DROP_TRIES		15	/* 1 s doubling to 60 s: ~10 min */

typedef struct ConcordSlotDrop
{
	Oid			dboid;			/* InvalidOid: free */
	bool		busy;			/* the manager is dropping it now */
	bool		password_required;
	int			failures;
	TimestampTz retry_after;
	char		slot_name[NAMEDATALEN];
	char		marker[NAMEDATALEN];	/* the node's marker slot when it was
										 * made ("" before 0.3.0's catalogs) */
	bool		loaded;			/* read from the state file at startup */
	char		dsn[CONCORD_SLOT_DROP_DSN_LEN];
} ConcordSlotDrop;

typedef enum ConcordSlotDropCancel
{
	CONCORD_SLOT_DROP_NONE,		/* no such drop is waiting */
	CONCORD_SLOT_DROP_TAKEN,	/* it was waiting: it is the caller's now */
	CONCORD_SLOT_DROP_BUSY		/* the manager is dropping it */
} ConcordSlotDropCancel;

/*
 * Apply lag of one subscription over a sliding window (lag.c): a slice
 * per CONCORD_LAG_SLICE_SECS seconds, the last CONCORD_LAG_SLICES of them.
 */
#define CONCORD_LAG_SLICES		60
#define CONCORD_LAG_SLICE_SECS	5	/* the window: 5 minutes */
#define CONCORD_LAG_BUCKETS		168 /* 4 per power of two of us, to 2^42 */

typedef struct ConcordLagSlice
{
	int64		number;			/* which slice since 2000; 0: unused */
	int64		max_us;
	uint32		counts[CONCORD_LAG_BUCKETS];
} ConcordLagSlice;

typedef struct ConcordLagHist
{
	ConcordLagSlice slices[CONCORD_LAG_SLICES];
} ConcordLagHist;

typedef struct ConcordLagSummary
{
	int64		count;
	int64		p50_us;
	int64		p90_us;
	int64		p99_us;
	int64		max_us;
} ConcordLagSummary;

/*
 * The apply fence: every transaction apply writes holds it (RowExclusive)
 * from before its first change to its end, and concord.join_fence() takes
 * it (ShareRowExclusive) while a joining node's copy takes its snapshot
 * (api/mesh_api.c).  A lock of the database's advisory kind, but in a
 * space SQL's advisory functions do not reach (their last field is 1 or
 * 2; the key locks' is 0xC0): DROP EXTENSION, which locks concord's
 * relations, never meets it, and no role can hold up apply with it.
 */
#define CONCORD_FENCE_KEY1		1668246115	/* "conc" */
#define CONCORD_FENCE_KEY2		1869767782	/* "ordf" */
#define CONCORD_SET_FENCE_TAG(tag) \
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, CONCORD_FENCE_KEY1, CONCORD_FENCE_KEY2, 0xC1)

typedef struct ConcordShared
{
	LWLock	   *lock;
	Latch	   *launcher_latch;
	int			max_entries;
	ConcordDbState *dbs;		/* max_entries of each, after the struct */
	ConcordSubState *subs;
	ConcordSeenState *seen;		/* max_entries * CONCORD_SEEN_PER_ENTRY */
	pg_atomic_uint64 seen_generation;	/* bumped when a seen entry moves */
	ConcordConfirmState *confirmed; /* max_entries * CONCORD_CONFIRM_PER_ENTRY */
	ConcordCausalNote *notes;	/* max_entries * CONCORD_NOTES_PER_ENTRY */
	uint32		next_note;		/* the ring's next slot, under lock */
	uint64		notes_written;	/* ever, under lock: when to save them */
	ConcordCommitRuns *commit_runs; /* max_entries, one per subs entry */
	ConcordLagHist *lag;		/* max_entries, one per subs entry */
	ConcordPositionState *positions;	/* max_entries *
										 * CONCORD_POSITIONS_PER_ENTRY */
	ConcordLocalCommits *local_commits; /* max_entries *
										 * CONCORD_LOCAL_COMMITS_PER_ENTRY */
	LWLock	   *state_file_lock;	/* serializes writers of position.c's file */
	pg_atomic_uint64 subs_generation;	/* bumped when a subs entry is taken
										 * or freed */
	pg_atomic_uint64 gap_generation;	/* bumped when concord.tombstone_gap changes */
	/* Tables that got a tombstone since startup, hashed by OID (tombstone.c) */
	pg_atomic_uint32 tombstoned[CONCORD_TOMBSTONE_SLOTS];
	ConcordSlotDrop slot_drops[CONCORD_SLOT_DROPS];	/* under lock */
} ConcordShared;

extern ConcordShared *ConcordShmem;

extern void concord_shmem_install_hooks(void);
extern ConcordDbState *concord_db_state(Oid dboid, bool create);
extern ConcordSubState *concord_sub_state(Oid dboid, Oid subid, bool create);
extern void concord_request_manager(Oid dboid);
extern ConcordCommitRuns *concord_sub_commit_runs(ConcordSubState *st);
extern ConcordLagHist *concord_sub_lag(ConcordSubState *st);
extern void concord_sub_state_free(ConcordSubState *st);
extern bool concord_sub_state_full(void);
extern void concord_no_room_error(int elevel, const char *sub_name);
extern char *concord_no_room_message(void);
extern void concord_wake_launcher(void);
extern TimestampTz concord_backoff_until(int failures);
extern bool concord_state_file_write(const char *path, const char *tmp,
									 uint32 magic, const void *data, Size size,
									 int count);
extern int	concord_state_file_read(const char *path, uint32 magic, void *data,
									Size size, int max);
extern void concord_sub_record_error(ConcordSubState *sub, const char *message);
extern void concord_record_current_error(ConcordSubState *sub);
extern bool concord_slot_drop_defer(const char *dsn, bool password_required,
									const char *slot_name, const char *marker);
extern ConcordSlotDropCancel concord_slot_drop_cancel(Oid dboid, const char *slot_name,
													  ConcordSlotDrop *out);
extern bool concord_slot_drop_claim(Oid dboid, ConcordSlotDrop *out);
extern bool concord_slot_drop_finish(Oid dboid, const char *slot_name, bool dropped);
extern bool concord_slot_drop_forget_one(Oid dboid, ConcordSlotDrop *out);
extern bool concord_slot_drops_waiting(Oid dboid);
extern void concord_slot_drops_unclaim(Oid dboid);
extern void concord_slot_drops_save(void);
extern void concord_slot_drops_load(void);
extern void concord_slot_drops_forget_dropped(void);
extern void concord_slot_drops_forget_foreign(void);

/* The start-up every concord background worker shares (shmem.c) */
extern Oid	concord_worker_connect(void);
extern void concord_fill_worker(BackgroundWorker *worker, const char *type,
								const char *function);
extern bool concord_start_worker(const char *type, const char *function,
								 Oid dboid, Oid subid,
								 BackgroundWorkerHandle **handle);

/* lag.c */
extern void concord_lag_reset(ConcordLagHist *hist);
extern void concord_lag_record(ConcordLagHist *hist, TimestampTz now, int64 lag_us);
extern void concord_lag_summary(const ConcordLagHist *hist, TimestampTz now,
								ConcordLagSummary *out);

#endif							/* CONCORD_SHMEM_H */
