/*-------------------------------------------------------------------------
 *
 * sub_api.c
 *		SQL API for subscriptions and the status view.
 *
 * create_subscription checks the provider (wal_level, output plugin
 * allowed, concord node, sets), learns its node name and priority,
 * creates the slot there and the replication origin here; the manager
 * starts the apply worker once the transaction commits.  Functions that
 * take a DSN hide its password from the log and pg_stat_activity
 * (remote.c), and no message repeats a DSN.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"

#include <signal.h>

#include "access/xact.h"
#include "catalog/pg_replication_origin.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/resowner.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "api/api.h"
#include "catalog/identity.h"
#include "catalog/origin.h"
#include "catalog/tables.h"
#include "concord.h"
#include "remote/remote.h"
#include "shmem/shmem.h"

#define WAIT_POLL_MS	100

PG_FUNCTION_INFO_V1(concord_create_subscription);
PG_FUNCTION_INFO_V1(concord_drop_subscription);
PG_FUNCTION_INFO_V1(concord_alter_subscription_disable);
PG_FUNCTION_INFO_V1(concord_alter_subscription_enable);
PG_FUNCTION_INFO_V1(concord_alter_subscription_resynchronize_table);
PG_FUNCTION_INFO_V1(concord_subscription_status);



static bool WakeManagerAtCommit = false;

/* The slots created by this transaction, to drop if it aborts. */
typedef struct NewSlot
{
	char	   *dsn;
	char	   *name;
	char	   *marker;			/* the node's marker slot, "" if none */
	bool		password_required;
} NewSlot;

static List *NewSlots = NIL;	/* in TopMemoryContext */

/*
 * What drop_subscription leaves to the end of its transaction, in
 * TopTransactionContext: the subscription's slot on the provider and its
 * origins here go only once nothing else can make the transaction abort
 * (a DO block that raises after the call keeps the subscription whole).
 */
typedef struct DroppedSub
{
	Oid			subid;
	char	   *dsn;
	bool		password_required;
	char	   *slot_name;			/* NULL: leave the slot alone (a copy) */
} DroppedSub;

static List *DroppedSubs = NIL;

static void
forget_new_slots(void)
{
	ListCell   *lc;

	foreach(lc, NewSlots)
	{
		NewSlot    *n = lfirst(lc);

		pfree(n->dsn);
		pfree(n->name);
		pfree(n->marker);
		pfree(n);
	}
	list_free(NewSlots);
	NewSlots = NIL;
}

static void
remember_new_slot(const ConcordSubscription *sub, const char *marker)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	NewSlot    *n = palloc(sizeof(NewSlot));

	n->dsn = pstrdup(sub->provider_dsn);
	n->name = pstrdup(sub->slot_name);
	n->marker = pstrdup(marker);
	n->password_required = sub->password_required;
	NewSlots = lappend(NewSlots, n);
	MemoryContextSwitchTo(oldcxt);
}

/* The transaction that created slots aborts: the manager drops them. */
static void
defer_new_slot_drops(void)
{
	ListCell   *lc;

	foreach(lc, NewSlots)
	{
		NewSlot    *n = lfirst(lc);

		if (!concord_slot_drop_defer(n->dsn, n->password_required, n->name, n->marker))
			ereport(WARNING,
					(errmsg("replication slot \"%s\" on the provider outlives the transaction that made it",
							n->name),
					 errdetail("Too many slots of aborted transactions wait to be dropped, or the DSN is too long."),
					 errhint("Drop it on the provider with SELECT pg_drop_replication_slot('%s').",
							 n->name)));
	}
}

/*
 * At the end of drop_subscription's transaction: its origins, then its
 * slot, the one thing that cannot come back (origins dropped in a
 * transaction that then aborts come back without their progress: the
 * subscription applies again from what the slot had confirmed).
 */
static void
drop_dropped_subs(void)
{
	ListCell   *lc;

	foreach(lc, DroppedSubs)
		concord_origin_drop_all(((DroppedSub *) lfirst(lc))->subid);
	foreach(lc, DroppedSubs)
	{
		DroppedSub *d = lfirst(lc);

		if (d->slot_name)
			(void) concord_slot_drop(d->dsn, d->password_required, d->slot_name,
									 "concord drop_subscription", true);
	}
	DroppedSubs = NIL;
}

static void
sub_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	if (event == XACT_EVENT_PRE_PREPARE && (NewSlots || DroppedSubs))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot prepare a transaction that created or dropped a concord subscription"),
				 errdetail("The subscription's slot on the provider is made or dropped outside the transaction.")));
	if (event == XACT_EVENT_PRE_COMMIT && DroppedSubs)
		drop_dropped_subs();
	if (event == XACT_EVENT_COMMIT && WakeManagerAtCommit)
		concord_request_manager(MyDatabaseId);
	if (event == XACT_EVENT_ABORT && NewSlots)
		defer_new_slot_drops();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
	{
		WakeManagerAtCommit = false;
		DroppedSubs = NIL;
		forget_new_slots();
	}
}

/*
 * At load (_PG_init), before every other transaction callback of concord:
 * callbacks run newest first, so this one runs last at PRE_COMMIT, the
 * closest to the commit (drop_dropped_subs()).
 */
void
concord_sub_api_install(void)
{
	RegisterXactCallback(sub_xact_callback, NULL);
}

/* The manager reads the catalogs after this transaction commits. */
void
concord_sub_wake_manager_at_commit(void)
{
	WakeManagerAtCommit = true;
}

ConcordSubscription *
concord_sub_get_existing(const char *name)
{
	ConcordSubscription *sub = concord_subscription_get_by_name(name);

	if (sub == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("subscription \"%s\" does not exist", name),
				 errhint("The subscriptions are listed in concord.subscription_status.")));
	return sub;
}

/* A text[] argument as a List of C strings; a NULL element is refused. */
List *
concord_text_array_to_list(ArrayType *arr, const char *argname)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *result = NIL;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain NULL", argname)));
		result = lappend(result, TextDatumGetCString(elems[i]));
	}
	return result;
}

static void
check_forward_origins(List *origins)
{
	ListCell   *lc;

	foreach(lc, origins)
		if (strcmp(lfirst(lc), "all") == 0 && list_length(origins) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("forward_origins cannot combine \"all\" with node names"),
					 errhint("Use '{}' for a mesh, '{all}' for rings and stars, or a list of node names.")));
}

static bool
setting_lists(const char *value, const char *item)
{
	char	   *copy = pstrdup(value);
	List	   *items;
	ListCell   *lc;

	if (!SplitIdentifierString(copy, ',', &items))
		return false;
	foreach(lc, items)
		if (strcmp(lfirst(lc), item) == 0)
			return true;
	return false;
}

/* Checks the server settings of the provider that replication needs. */
static void
check_provider_settings(PGconn *conn)
{
	PGresult   *res = concord_remote_query(conn,
										   "SELECT pg_catalog.current_setting('wal_level'), "
										   "(SELECT setting FROM pg_catalog.pg_settings WHERE name = 'output_plugin_libraries'), "
										   "(SELECT count(*) FROM pg_catalog.pg_extension WHERE extname = 'concord')",
										   0, NULL, PGRES_TUPLES_OK);

	if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the provider has wal_level = %s, replication needs logical",
						PQgetvalue(res, 0, 0)),
				 errhint("Set wal_level = logical in the provider's postgresql.conf and restart it."),
				 errhidestmt(true)));
	if (!PQgetisnull(res, 0, 1) && !setting_lists(PQgetvalue(res, 0, 1), "concord"))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the provider does not allow the concord output plugin"),
				 errdetail("Its output_plugin_libraries is \"%s\".", PQgetvalue(res, 0, 1)),
				 errhint("Add concord to output_plugin_libraries in the provider's postgresql.conf and reload it."),
				 errhidestmt(true)));
	if (strcmp(PQgetvalue(res, 0, 2), "0") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the provider database has no concord extension"),
				 errhint("Run CREATE EXTENSION concord and concord.create_node() on the provider."),
				 errhidestmt(true)));
	PQclear(res);
}

/* Learns the provider's node, and checks the sets asked for exist there. */
static void
read_provider_node(PGconn *conn, List *sets, ConcordProviderInfo *info)
{
	PGresult   *res = concord_remote_query(conn,
										   "SELECT node_id, node_name, priority FROM concord.node WHERE is_local",
										   0, NULL, PGRES_TUPLES_OK);
	ListCell   *lc;

	if (PQntuples(res) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the provider database is not a concord node"),
				 errhint("Run concord.create_node() on the provider."),
				 errhidestmt(true)));
	info->node_id = (Oid) strtoul(PQgetvalue(res, 0, 0), NULL, 10);
	info->node_name = pstrdup(PQgetvalue(res, 0, 1));
	info->priority = atoi(PQgetvalue(res, 0, 2));
	PQclear(res);

	foreach(lc, sets)
	{
		const char *params[1] = {lfirst(lc)};

		res = concord_remote_query(conn,
								   "SELECT 1 FROM concord.replication_set WHERE set_name = $1",
								   1, params, PGRES_TUPLES_OK);
		if (PQntuples(res) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("replication set \"%s\" does not exist on provider node \"%s\"",
							(char *) lfirst(lc), info->node_name),
					 errhint("Create it there with concord.create_replication_set()."),
					 errhidestmt(true)));
		PQclear(res);
	}
}

static void
inspect_provider(const char *dsn, bool password_required, List *sets,
				 ConcordProviderInfo *info)
{
	PGconn	   *conn = concord_remote_connect(dsn, false, "concord create_subscription",
											  password_required);

	PG_TRY();
	{
		check_provider_settings(conn);
		read_provider_node(conn, sets, info);
	}
	PG_FINALLY();
	{
		concord_remote_finish(conn);
	}
	PG_END_TRY();
}

/*
 * Whether this database is a copy of the local node (catalog/identity.c):
 * then it must not touch the original's slots.  False without a node.
 */
static bool
local_is_copy(char **why)
{
	return !RecoveryInProgress() && concord_node_get_local(true) != NULL &&
		!concord_identity_check(why);
}

/*
 * The slot name of a subscription is made again the same way: an aborted
 * create_subscription of the same name may have left its slot for the
 * manager to drop.  Drop it now, where it was made.
 */
static void
take_back_slot_drop(const char *slot_name)
{
	ConcordSlotDrop pending;
	volatile bool dropped = false;

	switch (concord_slot_drop_cancel(MyDatabaseId, slot_name, &pending))
	{
		case CONCORD_SLOT_DROP_NONE:
			break;
		case CONCORD_SLOT_DROP_TAKEN:
			PG_TRY();
			{
				dropped = concord_slot_drop(pending.dsn, pending.password_required,
											slot_name, "concord create_subscription",
											false);
			}
			PG_CATCH();
			{
				/* A cancel: the manager drops it after all. */
				(void) concord_slot_drop_defer(pending.dsn, pending.password_required,
											   slot_name, pending.marker);
				PG_RE_THROW();
			}
			PG_END_TRY();
			if (!dropped &&
				!concord_slot_drop_defer(pending.dsn, pending.password_required, slot_name,
										 pending.marker))
				ereport(WARNING,
						(errmsg("replication slot \"%s\" of an aborted subscription is left on the provider",
								slot_name),
						 errhint("Drop it on the provider with SELECT pg_drop_replication_slot('%s').",
								 slot_name)));
			break;
		case CONCORD_SLOT_DROP_BUSY:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("replication slot \"%s\" of an aborted subscription of this name is being dropped",
							slot_name),
					 errhint("Try again in a moment."),
					 errhidestmt(true)));
	}
}

/* Records the provider as a peer, or refreshes its DSN and priority. */
static void
remember_provider(const ConcordProviderInfo *info, const char *dsn)
{
	ConcordNode *peer = concord_node_get_by_name(info->node_name);
	ConcordNode node;

	if (peer && peer->is_local)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot subscribe node \"%s\" to itself", info->node_name),
				 errhidestmt(true)));
	node.id = info->node_id;
	node.name = info->node_name;
	node.dsn = (char *) dsn;
	node.priority = info->priority;
	node.is_local = false;
	if (peer)
		concord_node_update(&node);
	else
		concord_node_insert(&node);
	concord_departed_forget(info->node_name);
}

/*
 * A subscription's id names its replication origins (concord_<id>_<node>),
 * which every database of the server shares: it must be unique server-wide,
 * not only in this database, or two databases' same-named subscriptions
 * would share origins and progress, and skip each other's transactions.
 * The first candidate is a hash of the name (stable, so that a subscription
 * made again the same way gets the same slot name); the next ones follow.
 * The candidate is locked (a lock on a shared object, held to the end of
 * the transaction) before it is checked, so that two databases creating
 * subscriptions at once cannot take the same one.
 */
static Oid
new_subscription_id(const char *name)
{
	uint32		h = hash_bytes((const unsigned char *) name, strlen(name));
	Oid			id = (Oid) Max(h, FirstNormalObjectId);

	for (;;)
	{
		LockSharedObject(ReplicationOriginRelationId, id, 0, ExclusiveLock);
		/* Origins committed while we waited must be seen. */
		InvalidateCatalogSnapshot();
		if (concord_subscription_get_by_id(id) == NULL &&
			!concord_origin_sub_id_in_use(id))
			return id;
		UnlockSharedObject(ReplicationOriginRelationId, id, 0, ExclusiveLock);
		id = id + 1 < FirstNormalObjectId ? FirstNormalObjectId : id + 1;
	}
}

/*
 * Checks a new subscription and its provider, and makes its slot there,
 * before this transaction writes anything: making a logical slot waits
 * for every transaction with an XID to end, ours included when the
 * provider is another database of this instance.  The caller fills sub's
 * arguments; this fills the rest.  If the transaction aborts, the slot
 * goes too.
 */
void
concord_subscription_prepare(ConcordSubscription *sub, ConcordProviderInfo *info)
{
	ConcordNode *local;
	char	   *why;
	char	   *marker;

	if (sub->name[0] == '\0')
		ereport(ERROR, (errcode(ERRCODE_INVALID_NAME),
						errmsg("subscription name must not be empty")));
	if (sub->replication_sets == NIL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("replication_sets must name at least one set"),
						errhidestmt(true)));
	if (sub->apply_delay.time < 0 || sub->apply_delay.day < 0 || sub->apply_delay.month < 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("apply_delay must not be negative"), errhidestmt(true)));
	check_forward_origins(sub->forward_origins);
	if (strlen(sub->provider_dsn) == 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("provider_dsn must not be empty"), errhidestmt(true)));
	concord_check_dsn(sub->provider_dsn, psprintf("subscription \"%s\"", sub->name));
	sub->password_required = concord_check_dsn_for_user(sub->provider_dsn);
	sub->enabled = true;
	sub->sync_done = !sub->synchronize_data;

	concord_catalog_lock(CATALOG_SUBSCRIPTION);
	concord_catalog_lock(CATALOG_NODE);
	local = concord_node_get_local(false);
	if (local_is_copy(&why))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this database is a copy of node \"%s\", not that node", local->name),
				 errdetail("%s.", why),
				 errhint(COPY_HINT),
				 errhidestmt(true)));
	if (concord_subscription_get_by_name(sub->name) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("subscription \"%s\" already exists", sub->name),
				 errhidestmt(true)));

	inspect_provider(sub->provider_dsn, sub->password_required, sub->replication_sets, info);
	if (strcmp(info->node_name, local->name) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot subscribe node \"%s\" to itself", info->node_name),
				 errhidestmt(true)));
	sub->id = new_subscription_id(sub->name);
	sub->provider_node_id = info->node_id;
	sub->slot_name = psprintf("concord_%u_%u", local->id, sub->id);

	concord_sub_wake_manager_at_commit();
	take_back_slot_drop(sub->slot_name);
	marker = concord_identity_marker();
	concord_slot_create(sub->provider_dsn, sub->password_required, sub->slot_name);
	remember_new_slot(sub, marker);
}

/* Writes the subscription that concord_subscription_prepare() checked. */
void
concord_subscription_record(const ConcordSubscription *sub,
							const ConcordProviderInfo *info)
{
	remember_provider(info, sub->provider_dsn);
	(void) concord_origin_ensure(sub->id, info->node_name);
	concord_subscription_insert(sub);
}

Datum
concord_create_subscription(PG_FUNCTION_ARGS)
{
	ConcordSubscription sub;
	ConcordProviderInfo info;

	concord_redact_current_statement();
	memset(&sub, 0, sizeof(sub));
	sub.name = concord_required_name(fcinfo, 0, "subscription_name");
	sub.provider_dsn = TextDatumGetCString(concord_required_arg(fcinfo, 1, "provider_dsn"));
	sub.replication_sets = concord_text_array_to_list(DatumGetArrayTypeP(concord_required_arg(fcinfo, 2, "replication_sets")),
											  "replication_sets");
	sub.synchronize_data = DatumGetBool(concord_required_arg(fcinfo, 3, "synchronize_data"));
	sub.forward_origins = concord_text_array_to_list(DatumGetArrayTypeP(concord_required_arg(fcinfo, 4, "forward_origins")),
											 "forward_origins");
	sub.apply_delay = *DatumGetIntervalP(concord_required_arg(fcinfo, 5, "apply_delay"));
	concord_subscription_prepare(&sub, &info);
	concord_subscription_record(&sub, &info);
	PG_RETURN_OID(sub.id);
}

static void
read_worker_pids(Oid subid, pid_t *apply_pid, pid_t *sync_pid)
{
	ConcordSubState *st;

	*apply_pid = *sync_pid = 0;
	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	st = concord_sub_state(MyDatabaseId, subid, false);
	if (st)
	{
		*apply_pid = st->apply_pid;
		*sync_pid = st->sync_pid;
	}
	LWLockRelease(ConcordShmem->lock);
}

/*
 * Stops the subscription's running workers and waits until they are gone.
 * Workers started meanwhile block on the subscription's lock, which the
 * caller holds, so only the ones running now need to end.
 */
void
concord_sub_stop_workers(Oid subid)
{
	pid_t		old_apply;
	pid_t		old_sync;

	read_worker_pids(subid, &old_apply, &old_sync);
	for (;;)
	{
		pid_t		apply_pid;
		pid_t		sync_pid;
		bool		waiting = false;

		read_worker_pids(subid, &apply_pid, &sync_pid);
		if (old_apply > 0 && apply_pid == old_apply)
		{
			kill(old_apply, SIGTERM);
			waiting = true;
		}
		if (old_sync > 0 && sync_pid == old_sync)
		{
			kill(old_sync, SIGTERM);
			waiting = true;
		}
		if (!waiting)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 WAIT_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* Leaves the slot (unless !drop_slot) and origins of sub to the commit. */
static void
drop_at_commit(ConcordSubscription *sub, bool drop_slot)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	DroppedSub *d = palloc0(sizeof(DroppedSub));

	d->subid = sub->id;
	d->dsn = pstrdup(sub->provider_dsn);
	d->password_required = sub->password_required;
	d->slot_name = drop_slot ? pstrdup(sub->slot_name) : NULL;
	DroppedSubs = lappend(DroppedSubs, d);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * Stops the subscription's workers and removes it; its slot on the
 * provider (unless this database is a copy of the node) and its origins
 * go at the end of the transaction.  The caller holds the catalog lock.
 */
void
concord_subscription_drop(ConcordSubscription *sub)
{
	char	   *why;

	/* New workers block on this lock until we are done. */
	LockDatabaseObject(concord_catalog_relid(CATALOG_SUBSCRIPTION, false),
					   sub->id, 0, AccessExclusiveLock);
	concord_sub_stop_workers(sub->id);
	if (local_is_copy(&why))
		ereport(NOTICE,
				(errmsg("replication slot \"%s\" on the provider is left alone: this database is a copy of node \"%s\"",
						sub->slot_name, concord_node_get_local(false)->name),
				 errdetail("The slot belongs to the original node, which may still use it. %s.", why)));
	concord_subscription_delete(sub->id);
	drop_at_commit(sub, !local_is_copy(&why));
	concord_sub_wake_manager_at_commit();
}

Datum
concord_drop_subscription(PG_FUNCTION_ARGS)
{
	char	   *name = concord_required_name(fcinfo, 0, "subscription_name");
	bool		ifexists = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
	ConcordSubscription *sub;

	/*
	 * The provider's slot is dropped at the end of the transaction and
	 * cannot come back: as DROP SUBSCRIPTION, it runs in a transaction of
	 * its own.
	 */
	PreventInTransactionBlock(true, "concord.drop_subscription()");
	concord_catalog_lock(CATALOG_SUBSCRIPTION);
	sub = concord_subscription_get_by_name(name);
	if (sub == NULL && ifexists)
	{
		ereport(NOTICE,
				(errmsg("subscription \"%s\" does not exist, skipping", name)));
		PG_RETURN_BOOL(false);
	}
	if (sub == NULL)
		sub = concord_sub_get_existing(name);
	concord_subscription_drop(sub);
	PG_RETURN_BOOL(true);
}

/* The subscription's workers start again without waiting out their backoff. */
void
concord_sub_retry_now(Oid subid)
{
	ConcordSubState *st;

	LWLockAcquire(ConcordShmem->lock, LW_EXCLUSIVE);
	st = concord_sub_state(MyDatabaseId, subid, false);
	if (st)
		st->restart_after = 0;
	LWLockRelease(ConcordShmem->lock);
}

static Datum
set_enabled(FunctionCallInfo fcinfo, bool enabled)
{
	char	   *name = concord_required_name(fcinfo, 0, "subscription_name");
	ConcordSubscription *sub;

	concord_catalog_lock(CATALOG_SUBSCRIPTION);
	sub = concord_sub_get_existing(name);
	sub->enabled = enabled;
	concord_subscription_update(sub);
	/* An explicit enable retries at once. */
	if (enabled)
		concord_sub_retry_now(sub->id);
	concord_sub_wake_manager_at_commit();
	PG_RETURN_BOOL(true);
}

Datum
concord_alter_subscription_disable(PG_FUNCTION_ARGS)
{
	return set_enabled(fcinfo, false);
}

Datum
concord_alter_subscription_enable(PG_FUNCTION_ARGS)
{
	return set_enabled(fcinfo, true);
}

Datum
concord_alter_subscription_resynchronize_table(PG_FUNCTION_ARGS)
{
	char	   *name = concord_required_name(fcinfo, 0, "subscription_name");
	Oid			relid = DatumGetObjectId(concord_required_arg(fcinfo, 1, "relation"));
	ConcordSubscription *sub;
	ConcordSubTable st;
	char	   *relname = get_rel_name(relid);

	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	concord_catalog_lock(CATALOG_SUBSCRIPTION);
	sub = concord_sub_get_existing(name);
	st.sub_id = sub->id;
	st.nspname = get_namespace_name(get_rel_namespace(relid));
	st.relname = relname;
	st.pending = true;
	st.sync_lsn = InvalidXLogRecPtr;
	concord_sub_table_set(&st);

	/*
	 * The apply worker restarts, after this commits, and hands the copy to
	 * a sync worker.
	 */
	LockDatabaseObject(concord_catalog_relid(CATALOG_SUBSCRIPTION, false),
					   sub->id, 0, AccessExclusiveLock);
	concord_sub_stop_workers(sub->id);
	concord_sub_wake_manager_at_commit();
	PG_RETURN_BOOL(true);
}

static const char *
status_name(const ConcordSubscription *sub, const ConcordSubState *st,
			bool no_room, const char *copy_error)
{
	if (!sub->enabled)
		return "disabled";
	if (no_room || copy_error)
		return "down";
	if (st == NULL)
		return "initializing";
	if (st->has_error)
		return "down";
	if (st->phase == CONCORD_PHASE_SYNCING || st->sync_pid > 0)
		return "syncing";
	if (st->phase == CONCORD_PHASE_REPLICATING && st->apply_pid > 0)
		return "replicating";
	return "initializing";
}

static void
status_row(Tuplestorestate *store, TupleDesc desc, ConcordSubscription *sub,
		   const char *copy_error)
{
	Datum		values[11];
	bool		nulls[11];
	ConcordSubState copy;
	ConcordSubState *st;
	ConcordNode *provider = concord_node_get_by_id(sub->provider_node_id);
	bool		no_room;

	memset(nulls, 0, sizeof(nulls));
	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	st = concord_sub_state(MyDatabaseId, sub->id, false);
	if (st)
		copy = *st;
	/* Without an entry, and none free: its workers cannot start. */
	no_room = st == NULL && sub->enabled && concord_sub_state_full();
	LWLockRelease(ConcordShmem->lock);
	if (st)
		st = &copy;

	values[0] = CStringGetDatum(sub->name);
	values[0] = DirectFunctionCall1(namein, values[0]);
	if (provider)
		values[1] = DirectFunctionCall1(namein, CStringGetDatum(provider->name));
	else
		nulls[1] = true;
	values[2] = CStringGetTextDatum(status_name(sub, st, no_room, copy_error));
	values[3] = DirectFunctionCall1(namein, CStringGetDatum(sub->slot_name));
	if (st && st->received_lsn != InvalidXLogRecPtr)
	{
		/* Behind the provider's own position, not only what arrived. */
		XLogRecPtr	provider = Max(st->provider_lsn, st->received_lsn);
		bool		behind = st->caught_up_lsn < provider;
		TimestampTz since = st->applied_commit_ts != 0 ?
			st->applied_commit_ts : st->held_commit_ts;

		values[4] = LSNGetDatum(provider);
		values[5] = LSNGetDatum(st->caught_up_lsn);
		values[6] = Int64GetDatum(behind ? (int64) (provider - st->caught_up_lsn) : 0);
		if (behind && since != 0)
			values[7] = DirectFunctionCall2(timestamp_mi,
											TimestampTzGetDatum(GetCurrentTimestamp()),
											TimestampTzGetDatum(since));
		else
			values[7] = DirectFunctionCall2(timestamp_mi,
											TimestampTzGetDatum(0), TimestampTzGetDatum(0));
	}
	else
		nulls[4] = nulls[5] = nulls[6] = nulls[7] = true;
	if (copy_error && sub->enabled)
	{
		/* Its workers do not start: the manager checks it every second. */
		values[8] = CStringGetTextDatum(copy_error);
		values[9] = TimestampTzGetDatum(GetCurrentTimestamp());
	}
	else if (st && st->has_error)
	{
		values[8] = CStringGetTextDatum(st->last_error);
		values[9] = TimestampTzGetDatum(st->last_error_at);
	}
	else if (no_room)
	{
		/* The manager meets it at every attempt, once a second. */
		values[8] = CStringGetTextDatum(concord_no_room_message());
		values[9] = TimestampTzGetDatum(GetCurrentTimestamp());
	}
	else
		nulls[8] = nulls[9] = true;
	if (st && pg_atomic_read_u64(&st->last_msg_at) != 0)
		values[10] = TimestampTzGetDatum((TimestampTz) pg_atomic_read_u64(&st->last_msg_at));
	else
		nulls[10] = true;
	tuplestore_putvalues(store, desc, values, nulls);
}

Datum
concord_subscription_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ListCell   *lc;
	List	   *subs;
	char	   *why;
	char	   *copy_error = NULL;

	InitMaterializedSRF(fcinfo, 0);
	/* concord.node, .subscription, then .node_identity (manager.c) */
	(void) concord_node_get_local(true);
	subs = concord_subscription_get_all();
	if (local_is_copy(&why))
		copy_error = psprintf("this database is a copy of node \"%s\", not that node. %s. Hint: %s",
							  concord_node_get_local(false)->name, why, COPY_HINT);
	foreach(lc, subs)
		status_row(rsinfo->setResult, rsinfo->setDesc, lfirst(lc), copy_error);
	return (Datum) 0;
}
