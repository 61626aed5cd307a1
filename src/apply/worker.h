/*-------------------------------------------------------------------------
 *
 * worker.h
 *		The state the apply worker's files share (apply.c, apply_xact.c).
 *
 * Private to src/apply/: one apply worker per process, so its state is one
 * global, named W in these files.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_APPLY_WORKER_H
#define CONCORD_APPLY_WORKER_H

#include "access/xlogdefs.h"
#include "libpq-fe.h"
#include "nodes/pg_list.h"
#include "replication/origin.h"

#include "apply/apply.h"
#include "catalog/tables.h"
#include "proto/proto.h"
#include "shmem/shmem.h"

#define FEEDBACK_INTERVAL_MS	1000

/* A remote commit applied here, waiting for its local commit to flush. */
typedef struct LsnMapping
{
	XLogRecPtr	remote_end;
	XLogRecPtr	local_end;
} LsnMapping;

typedef struct ApplyWorker
{
	ConcordSubscription *sub;
	char	   *local_node;
	char	   *provider_node;	/* its node name, NULL if not known */
	PGconn	   *conn;
	ConcordSubState *shared;
	XLogRecPtr	received;		/* provider WAL seen in the stream */
	XLogRecPtr	provider_lsn;	/* the provider's latest WAL position known */
	long		silent_ms;		/* waited on the stream since its last
								 * message */
	bool		pinged;			/* asked the provider for a reply since */
	XLogRecPtr	caught_up;		/* every provider commit before it applied */
	XLogRecPtr	flushed;		/* last flush position sent */
	XLogRecPtr	reported;		/* last written position sent */
	bool		sync_report;	/* a commit the provider may wait for was
								 * applied: report it once the stream's
								 * pending messages are handled */
	bool		sync_listed;	/* the last COMMIT said the provider's
								 * commits may wait for this node */
	bool		idle;			/* the last message was a keepalive, with
								 * nothing pending: caught up with the
								 * provider (shared: the lag views) */
	bool		in_remote_txn;
	bool		skip_txn;
	ConcordBeginMsg begin;
	List	   *lsn_map;		/* of LsnMapping, oldest first */
	TimestampTz last_feedback;
	List	   *seen;			/* the remote writer's vector (seen.c) */
	List	   *first_seen;		/* its first in the transaction (known.c) */
	bool		gaps_checked;	/* concord_gap_check() ran for this one */
	RepOriginId session_origin;
	char		session_origin_node[NAMEDATALEN];
	XLogRecPtr	provider_mark;	/* the provider's latest MARK passed on */
	bool		position_tracked;	/* committing a forwarded transaction
									 * whose position is announced
									 * (shmem/position.c) */
	TimestampTz careful_until;	/* conflict pre-checks on until then */
	TimestampTz stream_since;	/* when this connection began streaming */
	int			nworkers;		/* 1, or the workers of this leader */
} ApplyWorker;

extern ApplyWorker concord_apply_worker;
#define W concord_apply_worker

/* MemoryContexts: the worker's, and the one reset after each message */
extern MemoryContext concord_apply_cxt;
extern MemoryContext concord_apply_message_cxt;

/* apply.c */
extern List *concord_apply_load_subscription(Oid subid, bool *needs_sync);
extern void concord_apply_set_gucs(void);
extern void concord_apply_publish_progress(bool applied_commit, bool healthy);
extern void concord_apply_send_feedback(bool force, bool want_reply);
extern void concord_apply_report_sync(void);
extern void concord_apply_stop_if_disabled(void);
extern void concord_apply_reload_config(void);

/* apply_xact.c */
extern void concord_apply_dispatch(StringInfo s);
extern void concord_apply_read_commit(StringInfo s, ConcordCommitMsg *msg);
extern bool concord_apply_retry_carefully(void);
extern void concord_apply_prepare_origin(const char *origin_node);
extern void concord_apply_stay_careful(void);

#endif							/* CONCORD_APPLY_WORKER_H */
