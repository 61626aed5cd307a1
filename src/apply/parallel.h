/*-------------------------------------------------------------------------
 *
 * parallel.h
 *		Several apply workers for one subscription: the leader that reads
 *		the stream (apply_leader.c), the workers that apply its remote
 *		transactions (apply_pworker.c), and the keys that order them
 *		(apply_deps.c).
 *
 * With concord.apply_workers_per_subscription above 1, the subscription's
 * apply worker becomes a leader: it reads the stream, cuts it into units
 * (a remote transaction, or a MARK between transactions), numbers them
 * in the stream's order, and hands each to a free worker through a
 * shm_mq of a DSM segment it owns.  A unit carries the number of the
 * latest earlier unit it depends on: one that touched a key of a unique
 * index of the same local table (hashed from the values received), or
 * every earlier unit for a change whose keys are not known.  A worker
 * applies its unit as one local transaction when its dependency is done,
 * and commits it only when every earlier unit is done: each origin's
 * transactions become visible here in their commit order, the origin's
 * progress is always the end of a prefix of the stream, and a crash or
 * error restarts from there with nothing lost and nothing applied twice.
 *
 * Every wait of a worker for another goes through the lock manager (a
 * unit's lock, held by its worker from before its first change until it
 * is done), so that a cycle through row locks of local sessions is
 * found by the deadlock detector; the error restarts the subscription.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_APPLY_PARALLEL_H
#define CONCORD_APPLY_PARALLEL_H

#include "access/xlogdefs.h"
#include "lib/stringinfo.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/dsm.h"
#include "storage/latch.h"
#include "storage/spin.h"

#include "proto/proto.h"
#include "shmem/shmem.h"

/* A unit's header in the queue; the protocol messages follow it. */
typedef struct ConcordUnitHeader
{
	uint64		seq;			/* the unit's number, from 1 */
	uint64		dep;			/* the latest earlier unit it waits for */
	uint32		flags;
} ConcordUnitHeader;

#define CONCORD_UNIT_MORE		0x01	/* more chunks of the unit follow */
#define CONCORD_UNIT_CONT		0x02	/* a chunk after the first */
#define CONCORD_UNIT_SERIAL		0x04	/* after every earlier unit, before
										 * every later one */

/* Why the workers stop (ConcordApplyCtl.failure). */
#define CONCORD_PAPPLY_OK		0
#define CONCORD_PAPPLY_FAILED	1	/* a worker failed; its error is recorded */
#define CONCORD_PAPPLY_CAREFUL	2	/* replay with conflict look-ups */
#define CONCORD_PAPPLY_STOPPED	3	/* a worker left quietly (the subscription
									 * is disabled or gone) */

/* The DSM segment of one leader: this struct, then a queue per worker. */
typedef struct ConcordApplyCtl
{
	Oid			dboid;
	Oid			subid;
	int			nworkers;
	pid_t		leader_pid;
	Latch	   *leader_latch;
	pg_atomic_uint64 done;		/* every unit up to this one is done */
	pg_atomic_uint64 locked[CONCORD_MAX_APPLY_WORKERS];	/* the latest unit
														 * whose lock each
														 * worker took */
	pg_atomic_uint32 failure;	/* CONCORD_PAPPLY_* */
	pg_atomic_uint32 sync_pending;	/* a commit the provider may wait for */
	pg_atomic_uint32 leader_waiting;	/* the leader waits for a free
										 * worker: set its latch */
	slock_t		mutex;			/* protects the three below */
	XLogRecPtr	commit_remote_end;	/* the latest remote commit applied */
	XLogRecPtr	commit_local_end;	/* and the end of its local commit */
	XLogRecPtr	caught_up;		/* every provider commit before it done */
	ConditionVariable cv;		/* broadcast when done or locked moves */
} ConcordApplyCtl;

#define CONCORD_APPLY_QUEUE_SIZE	(1024 * 1024)

/* apply_leader.c */
extern bool concord_leader_active(void);
extern void concord_leader_start(int nworkers);
extern void concord_leader_messages(StringInfo s);
extern void concord_leader_collect(void);
extern bool concord_leader_idle(void);
extern void concord_leader_check(void);
extern void concord_leader_stop_workers(void);

/* apply_pworker.c */
extern bool concord_pworker_active(void);
extern void concord_pworker_take_turn(bool bind_origin);
extern void concord_pworker_in_turn(void);
extern int	concord_pworker_index(void);
extern bool concord_pworker_alone(void);
extern void concord_pworker_committed(XLogRecPtr remote_end,
									  XLogRecPtr local_end, bool sync);
extern void concord_pworker_caught_up(XLogRecPtr lsn, bool sync);
extern PGDLLEXPORT void concord_apply_pworker_main(Datum main_arg);

/* apply_deps.c */
extern void concord_deps_init(void);
extern void concord_deps_begin(uint64 seq);
extern void concord_deps_change(Oid remoteid, char type, char oldkind,
								ConcordTuple *oldtup, ConcordTuple *newtup);
extern void concord_deps_serial(void);
extern uint64 concord_deps_end(bool *serial);
extern void concord_deps_forget(Oid remoteid);
extern void concord_deps_poll_invalidations(void);

#endif							/* CONCORD_APPLY_PARALLEL_H */
