/*-------------------------------------------------------------------------
 *
 * causal.c
 *		A remote UPDATE or INSERT that overtook the change it follows.
 *
 * With more than two nodes a change can travel faster than the change it
 * depends on: node_b updates a row node_a inserted, and node_c receives
 * the UPDATE before the INSERT, its link from node_a being slower or down.
 * The UPDATE finds no row (or the tombstone of a delete its writer had
 * seen: the row was inserted again since).  Its transaction's SEEN vector
 * (conflict/seen.c)
 * says what its writer had applied of every origin; when that is more of
 * some origin than this node has applied, and another subscription of
 * this node brings that origin's changes of the table (one to that node,
 * or one that forwards it; enabled or not), the cause is on its way.  Apply then holds the UPDATE: it fails the
 * remote transaction with an error that says what it waits for, and the
 * subscription retries it with backoff (showing down meanwhile) until the
 * cause has been applied; the UPDATE then finds its row and applies like
 * any other, with no conflict at all.
 *
 * A remote INSERT overtakes its cause the same way when it finds a row of
 * the common baseline (whose age is unknown): node_a deletes the row,
 * node_b applies the DELETE and inserts the key again, node_c receives the
 * INSERT first.  Held until node_a's changes have come, the INSERT then
 * finds the DELETE's tombstone, which its writer had seen, and applies
 * with no conflict.
 *
 * A cause that does not come within concord.causal_wait (its node lost,
 * its link down for long) is not waited for any longer: the UPDATE is
 * applied as the newer version, its whole row inserted (apply_row.c), so
 * that the cause, if it comes later, meets a newer version and loses to
 * it under last_update_wins.  Having given up on an origin's changes up
 * to a point, apply does not wait for them again (a few origins are
 * remembered per subscription, in shared memory).  Holding is rare, and
 * costs what an apply error costs: the worker exits, and the manager
 * starts it again with backoff.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "apply/apply.h"
#include "apply/parallel.h"
#include "apply/worker.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/seen.h"
#include "shmem/shmem.h"

/*
 * Whether sub carries the table's changes: it lists the table among those
 * it copied, or lists none (not known: it may).
 */
static bool
carries_table(ConcordSubscription *sub, ApplyRel *arel)
{
	List	   *tables = concord_sub_table_get(sub->id);
	ListCell   *lc;

	foreach(lc, tables)
	{
		ConcordSubTable *st = lfirst(lc);

		if (strcmp(st->nspname, arel->remote->nspname) == 0 &&
			strcmp(st->relname, arel->remote->relname) == 0)
			return true;
	}
	return tables == NIL;
}

/*
 * The answers of brings_origin() for the remote transaction being applied
 * ("<relid> <origin>" strings, in the worker's context): a transaction
 * whose rows are all missing asks once per table and origin, not per row.
 */
static XLogRecPtr CachedLsn = InvalidXLogRecPtr;
static List *CachedBrings = NIL;
static List *CachedNot = NIL;

static bool
cached_answer(ApplyRel *arel, const char *origin, bool *brings)
{
	char	   *key = psprintf("%u %s", arel->localid, origin);
	ListCell   *lc;

	if (CachedLsn != concord_remote_txn->commit_lsn)
	{
		list_free_deep(CachedBrings);
		list_free_deep(CachedNot);
		CachedBrings = CachedNot = NIL;
		CachedLsn = concord_remote_txn->commit_lsn;
	}
	foreach(lc, CachedBrings)
	{
		if (strcmp(lfirst(lc), key) == 0)
		{
			*brings = true;
			return true;
		}
	}
	foreach(lc, CachedNot)
	{
		if (strcmp(lfirst(lc), key) == 0)
		{
			*brings = false;
			return true;
		}
	}
	return false;
}

static void
cache_answer(ApplyRel *arel, const char *origin, bool brings)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(concord_apply_cxt);
	char	   *key = psprintf("%u %s", arel->localid, origin);

	if (brings)
		CachedBrings = lappend(CachedBrings, key);
	else
		CachedNot = lappend(CachedNot, key);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * Whether another subscription of this node (this one is held: it brings
 * nothing meanwhile) brings origin's changes of the table: one to origin,
 * or one that forwards it.
 */
static bool
brings_origin_uncached(ApplyRel *arel, const char *origin)
{
	ListCell   *lc;

	foreach(lc, concord_subscription_get_all())
	{
		ConcordSubscription *sub = lfirst(lc);
		ConcordNode *provider = concord_node_get_by_id(sub->provider_node_id);
		bool		brings = provider && strcmp(provider->name, origin) == 0;
		ListCell   *lc2;

		if (sub->id == W.sub->id)
			continue;
		foreach(lc2, sub->forward_origins)
			brings |= strcmp(lfirst(lc2), "all") == 0 ||
				strcmp(lfirst(lc2), origin) == 0;
		if (brings && carries_table(sub, arel))
			return true;
	}
	return false;
}

static bool
brings_origin(ApplyRel *arel, const char *origin)
{
	bool		brings;

	if (!cached_answer(arel, origin, &brings))
	{
		brings = brings_origin_uncached(arel, origin);
		cache_answer(arel, origin, brings);
	}
	return brings;
}

/* Whether apply gave up waiting for origin's changes up to upto. */
static bool
gave_up(const char *origin, TimestampTz upto)
{
	for (int i = 0; i < CONCORD_GAVE_UP_SLOTS; i++)
		if (strcmp(W.shared->gave_up_origin[i], origin) == 0 &&
			upto <= W.shared->gave_up_upto[i])
			return true;
	return false;
}

/* Remembers it, in place of the origin given up on longest ago. */
static void
give_up(const char *origin, TimestampTz upto)
{
	int			slot = 0;

	for (int i = 0; i < CONCORD_GAVE_UP_SLOTS; i++)
	{
		if (strcmp(W.shared->gave_up_origin[i], origin) == 0)
		{
			slot = i;
			break;
		}
		if (W.shared->gave_up_upto[i] < W.shared->gave_up_upto[slot])
			slot = i;
	}
	strlcpy(W.shared->gave_up_origin[slot], origin, NAMEDATALEN);
	W.shared->gave_up_upto[slot] = Max(W.shared->gave_up_upto[slot], upto);
}

static const char *
ts_text(TimestampTz ts)
{
	return ts == 0 ? "none of them" : pstrdup(timestamptz_to_str(ts));
}

/* The history's message for a change apply no longer holds. */
static char *
gave_up_message(const char *origin, TimestampTz wanted, TimestampTz have,
				const char *kind)
{
	return psprintf("node \"%s\"'s changes up to %s, which this %s follows, had not arrived after concord.causal_wait (this node had applied %s): applied as the newer version",
					origin, ts_text(wanted), kind, ts_text(have));
}

/*
 * A remote UPDATE found no row (and no tombstone, or one of a delete its
 * writer had seen: the row was inserted again), or a remote INSERT (insert
 * true) found a row of the common baseline.  Raises the ERROR that holds
 * it while the change it follows may still come; returns NULL if there is
 * nothing to wait for, or, once apply gave up waiting, why (for the
 * history), and the change is to be applied as the newer version.
 */
char *
concord_apply_wait_for_cause(ApplyRel *arel, const char *key_text, bool insert)
{
	const char *kind = insert ? "INSERT" : "UPDATE";
	const char *origin = NULL;
	const char *given_up = NULL;
	TimestampTz wanted = 0;
	TimestampTz have = 0;
	TimestampTz since;
	ListCell   *lc;

	/* What this node has applied includes every earlier unit (parallel.h). */
	concord_pworker_in_turn();
	if (concord_causal_wait <= 0)
		return NULL;
	foreach(lc, concord_remote_txn->seen)
	{
		ConcordSeenEntry *e = lfirst(lc);
		TimestampTz local;
		bool		skip;

		if (strcmp(e->origin, concord_remote_txn->origin_name) == 0 ||
			strcmp(e->origin, concord_remote_txn->local_node) == 0)
			continue;
		local = concord_seen_local(e->origin);
		if (local >= e->commit_ts || !brings_origin(arel, e->origin))
			continue;
		LWLockAcquire(ConcordShmem->lock, LW_SHARED);
		skip = gave_up(e->origin, e->commit_ts);
		LWLockRelease(ConcordShmem->lock);
		if (skip)
		{
			given_up = gave_up_message(e->origin, e->commit_ts, local, kind);
			continue;
		}
		origin = e->origin;
		wanted = e->commit_ts;
		have = local;
		break;
	}
	if (origin == NULL)
		return (char *) given_up;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
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
				 errmsg("subscription \"%s\": waiting for the changes of node \"%s\" up to %s, which a remote %s from node \"%s\" follows",
						concord_remote_txn->sub_name, origin, ts_text(wanted),
						kind, concord_remote_txn->origin_name),
				 insert ?
				 errdetail("The INSERT into %s (%s) found a row of the common baseline, which its writer no longer had; this node has applied node \"%s\"'s changes up to %s.",
						   arel->qualname, key_text ? key_text : "its key", origin,
						   ts_text(have)) :
				 errdetail("The UPDATE of %s (%s) found no row; this node has applied node \"%s\"'s changes up to %s.",
						   arel->qualname, key_text ? key_text : "its key", origin,
						   ts_text(have)),
				 errhint("The subscription retries the change until they are applied, for concord.causal_wait at most (held since %s); then it applies the %s as the newer version. Check the subscription that brings node \"%s\"'s changes.",
						 timestamptz_to_str(since), kind, origin)));
	}
	give_up(origin, wanted);
	LWLockRelease(ConcordShmem->lock);
	return gave_up_message(origin, wanted, have, kind);
}
