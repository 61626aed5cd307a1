/*-------------------------------------------------------------------------
 *
 * conflict.c
 *		Conflicts: types, resolvers, the decision and the history.
 *
 * apply_row.c detects a conflict and describes it (ConcordConflict);
 * concord_conflict_resolve() decides with the resolver chosen for the
 * table and type, from what every node sees alike: the commit timestamps
 * of the two versions (the local one read from the commit timestamp of
 * the row's xmin, which for an applied row is the origin's), their origin
 * node names and priorities.  Ties go to the higher node name, so both
 * sides of a concurrent pair reach the same result.
 * concord_conflict_record() writes the history row inside the apply
 * transaction, so that it commits, or not, with the resolution.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/commit_ts.h"
#include "access/htup_details.h"
#include "access/sysattr.h"
#include "access/transam.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "catalog/origin.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/conflict.h"
#include "conflict/known.h"
#include "conflict/own_commits.h"
#include "conflict/seen.h"

ConcordRemoteTxn *concord_remote_txn = NULL;

static const char *const resolver_names[] = {
	[CONCORD_RESOLVER_LAST_UPDATE_WINS] = "last_update_wins",
	[CONCORD_RESOLVER_FIRST_UPDATE_WINS] = "first_update_wins",
	[CONCORD_RESOLVER_REPLICA_PRIORITY] = "replica_priority",
	[CONCORD_RESOLVER_KEEP_LOCAL] = "keep_local",
	[CONCORD_RESOLVER_APPLY_REMOTE] = "apply_remote",
	[CONCORD_RESOLVER_SKIP] = "skip",
	[CONCORD_RESOLVER_ERROR] = "error",
	[CONCORD_RESOLVER_CUSTOM] = "custom",
};

const struct config_enum_entry concord_resolver_guc_options[] = {
	{"last_update_wins", CONCORD_RESOLVER_LAST_UPDATE_WINS, false},
	{"first_update_wins", CONCORD_RESOLVER_FIRST_UPDATE_WINS, false},
	{"replica_priority", CONCORD_RESOLVER_REPLICA_PRIORITY, false},
	{"keep_local", CONCORD_RESOLVER_KEEP_LOCAL, false},
	{"apply_remote", CONCORD_RESOLVER_APPLY_REMOTE, false},
	{"skip", CONCORD_RESOLVER_SKIP, false},
	{"error", CONCORD_RESOLVER_ERROR, false},
	{NULL, 0, false}
};

static const char *const conflict_names[] = {
	[CONCORD_CONFLICT_INSERT_EXISTS] = "insert_exists",
	[CONCORD_CONFLICT_UPDATE_EXISTS] = "update_exists",
	[CONCORD_CONFLICT_UPDATE_ORIGIN_DIFFERS] = "update_origin_differs",
	[CONCORD_CONFLICT_UPDATE_MISSING] = "update_missing",
	[CONCORD_CONFLICT_UPDATE_DELETED] = "update_deleted",
	[CONCORD_CONFLICT_DELETE_ORIGIN_DIFFERS] = "delete_origin_differs",
	[CONCORD_CONFLICT_DELETE_MISSING] = "delete_missing",
	[CONCORD_CONFLICT_MULTIPLE_UNIQUE_CONFLICTS] = "multiple_unique_conflicts",
	[CONCORD_CONFLICT_INSERT_DELETED] = "insert_deleted",
};

const char *
concord_conflict_name(ConcordConflictType type)
{
	if ((int) type < 0 || (int) type >= (int) lengthof(conflict_names))
		elog(ERROR, "unknown concord conflict type %d", (int) type);
	return conflict_names[type];
}

/*
 * The error resolver: stops the apply with an error that names the
 * conflict.  The subscription goes down, keeps its position and retries.
 */
void
concord_conflict_error(ConcordConflictType type, const char *relname,
					   const char *key)
{
	ereport(ERROR,
			(errcode(type == CONCORD_CONFLICT_INSERT_EXISTS ||
					 type == CONCORD_CONFLICT_UPDATE_EXISTS ||
					 type == CONCORD_CONFLICT_MULTIPLE_UNIQUE_CONFLICTS ?
					 ERRCODE_UNIQUE_VIOLATION : ERRCODE_NO_DATA_FOUND),
			 errmsg("conflict %s on relation \"%s\"",
					concord_conflict_name(type), relname),
			 key ? errdetail("Key %s.", key) : 0,
			 errhint("Fix the row on this node; the subscription retries the change.")));
}

const char *
concord_resolver_name(ConcordResolver resolver)
{
	if ((int) resolver < 0 || (int) resolver >= (int) lengthof(resolver_names))
		elog(ERROR, "unknown concord resolver %d", (int) resolver);
	return resolver_names[resolver];
}

int
concord_resolver_from_name(const char *name)
{
	for (int i = 0; i < (int) lengthof(resolver_names); i++)
		if (strcmp(resolver_names[i], name) == 0)
			return i;
	return -1;
}

int
concord_conflict_from_name(const char *name)
{
	for (int i = 0; i < (int) lengthof(conflict_names); i++)
		if (strcmp(conflict_names[i], name) == 0)
			return i;
	return -1;
}

static const char *
resolution_name(ConcordResolution resolution)
{
	switch (resolution)
	{
		case CONCORD_RESOLUTION_APPLY_REMOTE:
			return "apply_remote";
		case CONCORD_RESOLUTION_KEEP_LOCAL:
			return "keep_local";
		case CONCORD_RESOLUTION_SKIP:
			return "skip";
		case CONCORD_RESOLUTION_HANDLER_ROW:
			return "handler_row";
	}
	return "unknown";
}

/* Origin id -> node name, for the few origins a node has. */
/*
 * The transaction whose commit gives a row version its timestamp and
 * origin: the tuple's raw xmin, which VACUUM FREEZE keeps.  But the xid
 * counter wraps around: once it has (its epoch is not 0), a frozen tuple's
 * raw xmin may be the number of another, later transaction, whose commit
 * timestamp and origin the commit-timestamp module now keeps (review #10).
 * Before the first wraparound every xid was given out once, so the raw
 * xmin is exact; after it, a frozen tuple's version is unknown
 * (InvalidTransactionId), which the conflict rules treat as old: seen by
 * every peer.  Autovacuum freezes only tuples older than
 * vacuum_freeze_min_age transactions; a VACUUM FREEZE of rows that other
 * nodes still change concurrently loses their versions (docs: limits).
 */
TransactionId
concord_xmin_version_xid(HeapTupleHeader tuple)
{
	if (HeapTupleHeaderXminFrozen(tuple) && concord_xids_wrapped())
		return InvalidTransactionId;
	return HeapTupleHeaderGetRawXmin(tuple);
}

/* Whether the server's xid counter has wrapped around since initdb. */
bool
concord_xids_wrapped(void)
{
	return EpochFromFullTransactionId(ReadNextFullTransactionId()) > 0;
}

/*
 * When the local node was created: the rows written here before are the
 * common baseline (SPEC §4), the data each node held before they were
 * connected.  It moves only with drop_node and create_node, which no apply
 * worker outlives (a node with subscriptions cannot be dropped): read once.
 */
static TimestampTz
baseline_horizon(void)
{
	static TimestampTz horizon = -1;

	if (horizon < 0)
	{
		ConcordNode *local = concord_node_get_local(true);

		horizon = local ? local->created_at : 0;
	}
	return horizon;
}

/*
 * The version written by transaction xid: its commit timestamp (0 if not
 * known, or of the common baseline) and origin node.  The common baseline
 * is not a version any node wrote concurrently with a later change: the
 * rows this node wrote before create_node (loaded on every node alike
 * before they were connected), and those an initial copy wrote (committed
 * with CONCORD_BASELINE_TS, apply/sync.c).
 */
static void
version_of_xid(ConcordConflict *c, TransactionId xid)
{
	RepOriginId origin = InvalidRepOriginId;

	c->local_known = true;
	c->local_commit_ts = 0;
	c->local_origin = (char *) concord_remote_txn->local_node;
	c->local_xid = xid;
	c->local_here = false;
	/* Without track_commit_timestamp the local version stays unknown. */
	if (!track_commit_timestamp || !TransactionIdIsNormal(xid) ||
		!TransactionIdGetCommitTsData(xid, &c->local_commit_ts, &origin))
		return;
	if (origin != InvalidRepOriginId)
	{
		const char *node = concord_origin_node_of_xact(origin, xid);

		if (node)
			c->local_origin = (char *) node;
	}
	else
		c->local_here = true;
	/* The baseline keeps its writer (replica_priority compares it). */
	if (c->local_commit_ts == CONCORD_BASELINE_TS ||
		(origin == InvalidRepOriginId && c->local_commit_ts < baseline_horizon()))
		c->local_commit_ts = 0;
}

/* Who wrote the local row, and when (0 if the commit time is not known). */
static void
local_version(ConcordConflict *c)
{
	HeapTuple	tuple;
	bool		should_free;

	if (c->local_known)
		return;
	if (c->local == NULL)
	{
		version_of_xid(c, InvalidTransactionId);
		return;
	}
	tuple = ExecFetchSlotHeapTuple(c->local, false, &should_free);
	version_of_xid(c, concord_xmin_version_xid(tuple->t_data));
	if (should_free)
		heap_freetuple(tuple);
}

/*
 * True if this apply worker wrote the local row, in a transaction of the
 * origin it applies now (own_commits.c): the same answer as the commit
 * timestamp record would give, without reading it.
 */
static bool
written_here_by_this_origin(ConcordConflict *c)
{
	HeapTuple	tuple;
	bool		should_free;
	TransactionId xmin;
	RepOriginId origin;

	if (c->local_known || c->local == NULL || !track_commit_timestamp ||
		replorigin_session_origin == InvalidRepOriginId)
		return false;
	tuple = ExecFetchSlotHeapTuple(c->local, false, &should_free);
	xmin = concord_xmin_version_xid(tuple->t_data);
	if (should_free)
		heap_freetuple(tuple);
	return TransactionIdIsValid(xmin) &&
		concord_own_commit_origin(xmin, &origin) &&
		origin == replorigin_session_origin;
}

/* The local version is a delete, written by transaction deleter. */
void
concord_conflict_set_deleted(ConcordConflict *c, TransactionId deleter)
{
	version_of_xid(c, deleter);
	c->local_deleted = true;
}

static int32
node_priority(const char *name)
{
	ConcordNode *node = concord_node_get_by_name(name);

	return node ? node->priority : 0;
}

/*
 * True if the local row's version was written concurrently with the remote
 * change: by another origin, and not yet applied by the remote writer when
 * it wrote (seen.c).  A version of unknown age is old enough to have been
 * seen everywhere.
 */
bool
concord_conflict_concurrent(ConcordConflict *c)
{
	if (written_here_by_this_origin(c))
		return false;
	local_version(c);
	if (c->local_commit_ts == 0 ||
		strcmp(c->local_origin, concord_remote_txn->origin_name) == 0)
		return false;
	return concord_seen_lookup(concord_remote_txn->seen, c->local_origin) <
		c->local_commit_ts;
}

/* True if the local version's age is not known (the common baseline). */
bool
concord_conflict_local_unknown(ConcordConflict *c)
{
	local_version(c);
	return c->local_commit_ts == 0;
}

/*
 * True if the writer of the local version had seen the remote change,
 * which arrives late, having travelled a slower path than the version that
 * followed it (known.c): the remote change is older, and its writer's node
 * and every other applied it before that version.  Asked of a version
 * concord_conflict_concurrent() found concurrent: the two cannot both have
 * seen each other.
 */
bool
concord_conflict_remote_older(ConcordConflict *c)
{
	local_version(c);
	if (c->local_commit_ts == 0 || c->local_here ||
		strcmp(c->local_origin, concord_remote_txn->origin_name) == 0)
		return false;
	return concord_known_by(c->local_xid, c->local_origin, c->local_commit_ts,
							concord_remote_txn->origin_name) >=
		concord_remote_txn->commit_time;
}

/* 1 if the remote version is the later one, -1 if the earlier; never 0. */
static int
compare_versions(ConcordConflict *c)
{
	TimestampTz remote_ts = concord_remote_txn->commit_time;

	if (remote_ts != c->local_commit_ts)
		return remote_ts > c->local_commit_ts ? 1 : -1;
	return strcmp(concord_remote_txn->origin_name, c->local_origin) > 0 ? 1 : -1;
}

static ConcordResolution
remote_if(bool remote_wins)
{
	return remote_wins ? CONCORD_RESOLUTION_APPLY_REMOTE :
		CONCORD_RESOLUTION_KEEP_LOCAL;
}

/* The decision when both versions exist. */
static ConcordResolution
decide_between_versions(ConcordConflict *c)
{
	int32		remote_priority;
	int32		local_priority;

	/*
	 * A forwarded initial copy (committed as the common baseline) never
	 * replaces a row that is here: it is older than any version.
	 */
	if (concord_remote_txn->commit_time == CONCORD_BASELINE_TS)
		return CONCORD_RESOLUTION_KEEP_LOCAL;
	switch (c->resolver)
	{
		case CONCORD_RESOLVER_LAST_UPDATE_WINS:
			return remote_if(compare_versions(c) > 0);
		case CONCORD_RESOLVER_FIRST_UPDATE_WINS:
			if (concord_remote_txn->commit_time != c->local_commit_ts)
				return remote_if(concord_remote_txn->commit_time < c->local_commit_ts);
			return remote_if(compare_versions(c) > 0);
		case CONCORD_RESOLVER_REPLICA_PRIORITY:
			remote_priority = concord_remote_txn->origin_priority;
			local_priority = node_priority(c->local_origin);
			if (remote_priority != local_priority)
				return remote_if(remote_priority > local_priority);
			return remote_if(compare_versions(c) > 0);
		default:
			return CONCORD_RESOLUTION_KEEP_LOCAL;
	}
}

/*
 * Decides a conflict.  Raises the error of the error resolver.  A delete
 * recorded by a tombstone (update_deleted) is a version like a row.  With
 * no local row and no tombstone (update_missing, delete_missing) there is
 * nothing to compare:
 * the timestamp and priority resolvers keep the local state (the row
 * stays absent), apply_remote applies what can be applied.
 */
ConcordResolution
concord_conflict_resolve(ConcordConflict *c)
{
	local_version(c);
	/* Keep the name: the origin cache may be reset meanwhile. */
	c->local_origin = pstrdup(c->local_origin);
	switch (c->resolver)
	{
		case CONCORD_RESOLVER_ERROR:
			concord_conflict_error(c->type, c->relname, c->key_text);
			break;
		case CONCORD_RESOLVER_CUSTOM:
			/* The caller asks the handler (handler.c). */
			return CONCORD_RESOLUTION_KEEP_LOCAL;
		case CONCORD_RESOLVER_SKIP:
			return CONCORD_RESOLUTION_SKIP;
		case CONCORD_RESOLVER_APPLY_REMOTE:
			return CONCORD_RESOLUTION_APPLY_REMOTE;
		case CONCORD_RESOLVER_KEEP_LOCAL:
			return CONCORD_RESOLUTION_KEEP_LOCAL;
		default:
			break;
	}
	if (c->local == NULL && !c->local_deleted)
		return CONCORD_RESOLUTION_KEEP_LOCAL;
	return decide_between_versions(c);
}

static Datum
slot_row(TupleTableSlot *slot, bool *isnull)
{
	*isnull = slot == NULL || TTS_EMPTY(slot);
	if (*isnull)
		return (Datum) 0;
	return ExecFetchSlotHeapTupleDatum(slot);
}

static Datum
text_array(List *names)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(names), 1));
	ListCell   *lc;

	foreach(lc, names)
		elems[foreach_current_index(lc)] = CStringGetTextDatum(lfirst(lc));
	return PointerGetDatum(construct_array(elems, list_length(names), TEXTOID,
										   -1, false, TYPALIGN_INT));
}

#define HISTORY_NARGS 16

/*
 * What remote_row shows for a value the remote change did not carry (an
 * out-of-line value an UPDATE left unchanged, which this node did not
 * need to read: docs/conflicts.md).
 */
#define UNSENT_MARKER "{\"concord_unchanged\": true}"

#define HISTORY_SQL \
	"INSERT INTO concord.conflict_history (subscription_name, relation, " \
	"conflict_type, resolver, resolution, key, local_row, local_origin, " \
	"local_commit_ts, remote_row, remote_origin, remote_commit_ts, " \
	"remote_lsn, resolved_row, error_message) " \
	"SELECT $1, $2, $3, $4, $5, " \
	"(SELECT pg_catalog.jsonb_object_agg(k, r -> k) " \
	"   FROM pg_catalog.unnest($6) k, " \
	"        (SELECT COALESCE(pg_catalog.to_jsonb($8), pg_catalog.to_jsonb($7)) r) x), " \
	"pg_catalog.to_jsonb($7), $9, $10, " \
	"pg_catalog.to_jsonb($8) OPERATOR(pg_catalog.||) (SELECT COALESCE(pg_catalog.jsonb_object_agg(u, " \
	"   '" UNSENT_MARKER "'::pg_catalog.jsonb), '{}') FROM pg_catalog.unnest($16) u), " \
	"$11, $12, $13, pg_catalog.to_jsonb($14), $15"

/* The history INSERT, planned once per row type (conflicts come in runs). */
typedef struct HistoryPlan
{
	Oid			rowtype;		/* hash key */
	SPIPlanPtr	plan;
} HistoryPlan;

static HTAB *HistoryPlans = NULL;

static SPIPlanPtr
history_plan(Oid rowtype, Oid *types)
{
	HistoryPlan *entry;
	bool		found;

	if (HistoryPlans == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(HistoryPlan);
		HistoryPlans = hash_create("concord history plans", 16, &ctl,
								   HASH_ELEM | HASH_BLOBS);
	}
	entry = hash_search(HistoryPlans, &rowtype, HASH_ENTER, &found);
	if (!found)
	{
		SPIPlanPtr	plan = SPI_prepare(HISTORY_SQL, HISTORY_NARGS, types);

		if (plan == NULL || SPI_keepplan(plan) != 0)
		{
			hash_search(HistoryPlans, &rowtype, HASH_REMOVE, NULL);
			elog(ERROR, "could not prepare the conflict history insert: %s",
				 SPI_result_code_string(SPI_result));
		}
		entry->plan = plan;
	}
	return entry->plan;
}

/*
 * Writes the conflict's history row, in the current (apply) transaction.
 * applied is the row written when the remote change was applied (NULL for
 * a delete); the resolved row follows from the resolution.
 */
void
concord_conflict_record(ConcordConflict *c, ConcordResolution resolution,
						TupleTableSlot *applied)
{
	TupleTableSlot *resolved =
		resolution == CONCORD_RESOLUTION_APPLY_REMOTE ? applied :
		resolution == CONCORD_RESOLUTION_KEEP_LOCAL ? c->local :
		resolution == CONCORD_RESOLUTION_HANDLER_ROW ? c->handler_row : NULL;
	Oid			rowtype = c->rel->rd_rel->reltype;
	Oid			types[HISTORY_NARGS] = {NAMEOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTARRAYOID, rowtype, rowtype, NAMEOID, TIMESTAMPTZOID, NAMEOID,
	TIMESTAMPTZOID, LSNOID, rowtype, TEXTOID, TEXTARRAYOID};
	Datum		values[HISTORY_NARGS];
	char		nulls[HISTORY_NARGS];
	bool		isnull;
	int			ret;
	Oid			saved_user;
	int			saved_context;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = DirectFunctionCall1(namein, CStringGetDatum(concord_remote_txn->sub_name));
	values[1] = CStringGetTextDatum(c->relname);
	values[2] = CStringGetTextDatum(concord_conflict_name(c->type));
	values[3] = CStringGetTextDatum(concord_resolver_name(c->resolver));
	values[4] = CStringGetTextDatum(resolution_name(resolution));
	values[5] = text_array(c->key_columns);
	values[6] = slot_row(c->local, &isnull);
	nulls[6] = isnull ? 'n' : ' ';
	values[7] = slot_row(c->remote, &isnull);
	nulls[7] = isnull ? 'n' : ' ';
	values[8] = DirectFunctionCall1(namein, CStringGetDatum(c->local_origin));
	values[9] = TimestampTzGetDatum(c->local_commit_ts);
	nulls[9] = c->local_commit_ts == 0 ? 'n' : ' ';
	values[10] = DirectFunctionCall1(namein, CStringGetDatum(concord_remote_txn->origin_name));
	values[11] = TimestampTzGetDatum(concord_remote_txn->commit_time);
	values[12] = LSNGetDatum(concord_remote_txn->commit_lsn);
	values[13] = slot_row(resolved, &isnull);
	nulls[13] = isnull ? 'n' : ' ';
	values[14] = c->error_message ? CStringGetTextDatum(c->error_message) : (Datum) 0;
	nulls[14] = c->error_message ? ' ' : 'n';
	values[15] = c->unsent_columns ? text_array(c->unsent_columns) : (Datum) 0;
	nulls[15] = c->unsent_columns ? ' ' : 'n';

	/* As concord's owner: apply may be running as the table's owner. */
	concord_catalog_become_owner("conflict_history", &saved_user, &saved_context);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute_plan(history_plan(rowtype, types), values, nulls, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not record a conflict: %s", SPI_result_code_string(ret));
	SPI_finish();
	SetUserIdAndSecContext(saved_user, saved_context);
}

/*
 * The resolver of each conflict type: the table's setting for the type,
 * else the table's for every type, else the default of every table for
 * the type, else for every type, else the GUC concord.conflict_resolver.
 * A partition without settings of its own follows its ancestors'.
 */
void
concord_resolvers_of(Oid relid, ConcordResolver *resolver, Oid *handler)
{
	List	   *settings = concord_resolver_settings(relid);
	ListCell   *lc0;

	if (get_rel_relispartition(relid))
	{
		bool		own = false;

		foreach(lc0, settings)
			own |= ((ConcordResolverSetting *) lfirst(lc0))->relid == relid;
		foreach(lc0, own ? NIL : get_partition_ancestors(relid))
		{
			List	   *up = concord_resolver_settings(lfirst_oid(lc0));
			ListCell   *lc1;
			bool		found = false;

			foreach(lc1, up)
				found |= OidIsValid(((ConcordResolverSetting *) lfirst(lc1))->relid);
			if (!found)
				continue;
			/* Count the ancestor's settings as the partition's own. */
			foreach(lc1, up)
				if (OidIsValid(((ConcordResolverSetting *) lfirst(lc1))->relid))
					((ConcordResolverSetting *) lfirst(lc1))->relid = relid;
			settings = up;
			break;
		}
	}

	for (int t = 0; t < CONCORD_NUM_CONFLICT_TYPES; t++)
	{
		const char *type = concord_conflict_name(t);
		int			best_rank = 0;
		ListCell   *lc;

		resolver[t] = concord_conflict_resolver;
		handler[t] = InvalidOid;
		foreach(lc, settings)
		{
			ConcordResolverSetting *rs = lfirst(lc);
			bool		for_type = strcmp(rs->conflict_type, type) == 0;
			int			rank;

			if (!for_type && rs->conflict_type[0] != '\0')
				continue;
			rank = (OidIsValid(rs->relid) ? 2 : 0) + (for_type ? 1 : 0) + 1;
			if (rank > best_rank && concord_resolver_from_name(rs->resolver) >= 0)
			{
				best_rank = rank;
				resolver[t] = concord_resolver_from_name(rs->resolver);
				handler[t] = rs->handler;
			}
		}
	}
}
