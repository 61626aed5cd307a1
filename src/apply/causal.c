/*-------------------------------------------------------------------------
 *
 * causal.c
 *		A remote UPDATE that overtook the change it follows.
 *
 * With more than two nodes a change can travel faster than the change it
 * depends on: node_b updates a row node_a inserted, and node_c receives
 * the UPDATE before the INSERT, its link from node_a being slower or down.
 * The UPDATE finds no row.  Its transaction's SEEN vector (conflict/seen.c)
 * says what its writer had applied of every origin; when that is more of
 * some origin than this node has applied, and this node receives that
 * origin (a subscription to it, or one that forwards it, enabled or not),
 * the cause is on its way.  Apply then holds the UPDATE: it fails the
 * remote transaction with an error that says what it waits for, and the
 * subscription retries it with backoff (showing down meanwhile) until the
 * cause has been applied; the UPDATE then finds its row and applies like
 * any other, with no conflict at all.
 *
 * A cause that does not come within concord.causal_wait (its node lost,
 * its link down for long) is not waited for any longer: the UPDATE is
 * applied as the newer version, its whole row inserted (apply_row.c), so
 * that the cause, if it comes later, meets a newer version and loses to
 * it under last_update_wins.  Having given up on an origin, apply does
 * not wait for it again until this node has applied more of it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "apply/apply.h"
#include "apply/worker.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/seen.h"
#include "shmem/shmem.h"

/* Whether a subscription of this node brings origin's changes. */
static bool
receives_origin(const char *origin)
{
	ListCell   *lc;

	foreach(lc, concord_subscription_get_all())
	{
		ConcordSubscription *sub = lfirst(lc);
		ConcordNode *provider = concord_node_get_by_id(sub->provider_node_id);
		ListCell   *lc2;

		if (provider && strcmp(provider->name, origin) == 0)
			return true;
		foreach(lc2, sub->forward_origins)
			if (strcmp(lfirst(lc2), "all") == 0 ||
				strcmp(lfirst(lc2), origin) == 0)
				return true;
	}
	return false;
}

static const char *
ts_text(TimestampTz ts)
{
	return ts == 0 ? "none of them" : pstrdup(timestamptz_to_str(ts));
}

/*
 * A remote UPDATE found no row (and no tombstone).  Raises the ERROR that
 * holds it while the change it follows may still come; returns NULL if
 * there is nothing to wait for, or, once apply gave up waiting, why (for
 * the history), and the UPDATE is to be applied as the newer version.
 */
char *
concord_apply_wait_for_cause(ApplyRel *arel, const char *key_text)
{
	const char *origin = NULL;
	TimestampTz wanted = 0;
	TimestampTz have = 0;
	TimestampTz since;
	ListCell   *lc;

	if (concord_causal_wait <= 0)
		return NULL;
	foreach(lc, concord_remote_txn->seen)
	{
		ConcordSeenEntry *e = lfirst(lc);

		if (strcmp(e->origin, concord_remote_txn->origin_name) == 0 ||
			strcmp(e->origin, concord_remote_txn->local_node) == 0)
			continue;
		have = concord_seen_local(e->origin);
		if (have < e->commit_ts && receives_origin(e->origin))
		{
			origin = e->origin;
			wanted = e->commit_ts;
			break;
		}
	}
	if (origin == NULL)
		return NULL;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	if (strcmp(W.shared->gave_up_origin, origin) == 0 && W.shared->gave_up_at == have)
	{
		LWLockRelease(ConcordShmem->lock);
		return psprintf("node \"%s\"'s changes up to %s, which this UPDATE follows, had not arrived after concord.causal_wait (this node had applied %s): applied as the newer version",
						origin, ts_text(wanted), ts_text(have));
	}
	if (W.shared->hold_lsn != concord_remote_txn->commit_lsn)
	{
		W.shared->hold_lsn = concord_remote_txn->commit_lsn;
		W.shared->hold_since = GetCurrentTimestamp();
	}
	since = W.shared->hold_since;
	if (!TimestampDifferenceExceeds(since, GetCurrentTimestamp(), concord_causal_wait))
	{
		LWLockRelease(ConcordShmem->lock);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("subscription \"%s\": waiting for the changes of node \"%s\" up to %s, which a remote UPDATE from node \"%s\" follows",
						concord_remote_txn->sub_name, origin, ts_text(wanted),
						concord_remote_txn->origin_name),
				 errdetail("The UPDATE of %s (%s) found no row; this node has applied node \"%s\"'s changes up to %s.",
						   arel->qualname, key_text ? key_text : "its key", origin,
						   ts_text(have)),
				 errhint("The subscription retries the change until they are applied, for concord.causal_wait at most (held since %s); then it applies the UPDATE as the newer version. Check the subscription that brings node \"%s\"'s changes.",
						 timestamptz_to_str(since), origin)));
	}
	strlcpy(W.shared->gave_up_origin, origin, NAMEDATALEN);
	W.shared->gave_up_at = have;
	LWLockRelease(ConcordShmem->lock);
	return psprintf("node \"%s\"'s changes up to %s, which this UPDATE follows, had not arrived after concord.causal_wait (this node had applied %s): applied as the newer version",
					origin, ts_text(wanted), ts_text(have));
}
