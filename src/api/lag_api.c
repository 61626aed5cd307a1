/*-------------------------------------------------------------------------
 *
 * lag_api.c
 *		The lag views: concord.subscription_lag (apply lag percentiles per
 *		subscription, shmem/lag.c) and concord.replication_lag (per origin
 *		node, its latest transaction applied here and how far behind that
 *		is now).
 *
 * An origin whose every subscription here is caught up with its provider
 * (the provider's keepalives tell its latest position when it writes
 * nothing: they are the heartbeat) is not behind, however old its latest
 * transaction; otherwise it is behind by the age of that transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "api/api.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/seen.h"
#include "proto/proto.h"
#include "shmem/shmem.h"

PG_FUNCTION_INFO_V1(concord_subscription_lag);
PG_FUNCTION_INFO_V1(concord_replication_lag);

/* As subscription_status shows a lag: days, then hours. */
static Datum
interval_us(int64 us)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = us;
	return DirectFunctionCall1(interval_justify_hours, IntervalPGetDatum(iv));
}

Datum
concord_subscription_lag(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz now = GetCurrentTimestamp();
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	foreach(lc, concord_subscription_get_all())
	{
		ConcordSubscription *sub = lfirst(lc);
		ConcordSubState *st;
		ConcordLagSummary sum;
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};

		memset(&sum, 0, sizeof(sum));
		LWLockAcquire(ConcordShmem->lock, LW_SHARED);
		st = concord_sub_state(MyDatabaseId, sub->id, false);
		if (st)
			concord_lag_summary(concord_sub_lag(st), now, &sum);
		LWLockRelease(ConcordShmem->lock);
		values[0] = DirectFunctionCall1(namein, CStringGetDatum(sub->name));
		values[1] = Int64GetDatum(sum.count);
		values[2] = interval_us(sum.p50_us);
		values[3] = interval_us(sum.p90_us);
		values[4] = interval_us(sum.p99_us);
		values[5] = interval_us(sum.max_us);
		if (sum.count == 0)
			nulls[2] = nulls[3] = nulls[4] = nulls[5] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * Whether the subscription streams, without an error, and has applied
 * everything its provider had sent when it last said it had nothing more
 * (a keepalive, with no data after it).
 */
static bool
sub_caught_up(ConcordSubscription *sub)
{
	ConcordSubState *st;
	bool		caught_up = false;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	st = concord_sub_state(MyDatabaseId, sub->id, false);
	if (sub->enabled && st && st->phase == CONCORD_PHASE_REPLICATING &&
		st->apply_pid > 0 && !st->has_error && st->idle)
		caught_up = st->caught_up_lsn >= Max(st->provider_lsn, st->received_lsn);
	LWLockRelease(ConcordShmem->lock);
	return caught_up;
}

/* Whether the subscription brings the node's changes: its provider's, or forwarded. */
static bool
carries(ConcordSubscription *sub, const char *node)
{
	ConcordNode *provider = concord_node_get_by_id(sub->provider_node_id);
	ListCell   *lc;

	if (provider && strcmp(provider->name, node) == 0)
		return true;
	foreach(lc, sub->forward_origins)
		if (strcmp(lfirst(lc), "all") == 0 || strcmp(lfirst(lc), node) == 0)
			return true;
	return false;
}

Datum
concord_replication_lag(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz now = GetCurrentTimestamp();
	List	   *subs = concord_subscription_get_all();
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	foreach(lc, concord_seen_vector())
	{
		ConcordSeenEntry *o = lfirst(lc);
		bool		carried = false;
		bool		caught_up = true;
		ListCell   *lc2;
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		/* The subscriptions that bring its changes. */
		foreach(lc2, subs)
		{
			ConcordSubscription *sub = lfirst(lc2);

			if (!carries(sub, o->origin))
				continue;
			carried = true;
			caught_up &= sub_caught_up(sub);
		}
		/* No longer replicated here (dropped, departed): no row. */
		if (!carried)
			continue;
		values[0] = DirectFunctionCall1(namein, CStringGetDatum(o->origin));
		values[1] = TimestampTzGetDatum(o->commit_ts);
		values[2] = BoolGetDatum(caught_up);
		values[3] = interval_us(caught_up ? 0 : Max(now - o->commit_ts, 0));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
