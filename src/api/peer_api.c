/*-------------------------------------------------------------------------
 *
 * peer_api.c
 *		Leaving a mesh: part_mesh on the leaving node, drop_peer on the
 *		others.
 *
 * part_mesh waits until every subscriber has confirmed this node's WAL up
 * to now, then drops this node's subscriptions and, on each peer, has the
 * peer drop_peer() this node.  drop_peer forgets a node here: its
 * subscriptions, the slots it used here, its node row; the node is listed
 * in concord.departed_node, which tombstone removal no longer waits for.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "replication/message.h"
#include "utils/builtins.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "api/api.h"
#include "catalog/tables.h"
#include "concord.h"
#include "remote/remote.h"

PG_FUNCTION_INFO_V1(concord_part_mesh);
PG_FUNCTION_INFO_V1(concord_drop_peer);

/* Runs one SPI statement with text parameters; the rows it returned. */
static uint64
spi_run(const char *sql, int nargs, const char *const *args)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	int			rc;

	Assert(nargs <= 3);
	for (int i = 0; i < nargs; i++)
		values[i] = CStringGetTextDatum(args[i]);
	rc = SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0);
	if (rc < 0)
		elog(ERROR, "SPI_execute_with_args failed: %d", rc);
	return SPI_processed;
}

/*
 * Drops one slot here; false if it is in use, or already gone, meanwhile
 * (its WAL sender not gone yet; the peer's own drop of it at the end of
 * its drop_subscription).  A cancel is an error.
 */
static bool
try_drop_slot(const char *slot_name)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool dropped = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		const char *args[1] = {slot_name};

		(void) spi_run("SELECT pg_catalog.pg_drop_replication_slot($1::pg_catalog.name)",
					   1, args);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		if (edata->sqlerrcode != ERRCODE_OBJECT_IN_USE &&
			edata->sqlerrcode != ERRCODE_UNDEFINED_OBJECT)
			ReThrowError(edata);
		dropped = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	return dropped;
}

/*
 * The replication slots here that the node used (its subscriptions' and
 * their copies'), dropped once their WAL senders are gone.
 */
static void
drop_slots_of(ConcordNode *node)
{
	const char *args[1] = {psprintf("^concord_(sync_)?%u_[0-9]+$", node->id)};
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 30000);

	for (;;)
	{
		List	   *slots = NIL;
		ListCell   *lc;

		/* Its WAL senders may not have noticed yet that it is gone. */
		(void) spi_run("SELECT pg_catalog.pg_terminate_backend(active_pid) "
					   "FROM pg_catalog.pg_replication_slots "
					   "WHERE slot_name::text ~ $1 AND active_pid IS NOT NULL "
					   "AND database = pg_catalog.current_database()", 1, args);
		(void) spi_run("SELECT slot_name FROM pg_catalog.pg_replication_slots "
					   "WHERE slot_name::text ~ $1 "
					   "AND database = pg_catalog.current_database()", 1, args);
		for (uint64 i = 0; i < SPI_processed; i++)
			slots = lappend(slots, SPI_getvalue(SPI_tuptable->vals[i],
												SPI_tuptable->tupdesc, 1));
		if (slots == NIL)
			return;
		if (GetCurrentTimestamp() >= deadline)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("the replication slots of node \"%s\" here stay in use", node->name),
					 errhint("Try again in a moment.")));
		foreach(lc, slots)
			(void) try_drop_slot(lfirst(lc));
		(void) concord_wait_tick(0);
	}
}

/*
 * Runs one SPI statement on a catalog as the catalog's owner: concord
 * writes its catalogs whatever the rights of the role that called it
 * (a subscription administrator, say).
 */
static void
spi_run_as_owner(const char *catalog, const char *sql, int nargs, const char *const *args)
{
	Oid			saved_user;
	int			saved_context;

	concord_catalog_become_owner(catalog, &saved_user, &saved_context);
	(void) spi_run(sql, nargs, args);
	SetUserIdAndSecContext(saved_user, saved_context);
}

/* A node subscribed to again is no longer departed. */
void
concord_departed_forget(const char *name)
{
	const char *args[1] = {name};

	if (!OidIsValid(concord_catalog_relid("departed_node", true)))
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	spi_run_as_owner("departed_node",
					 "DELETE FROM concord.departed_node WHERE node_name = $1::name", 1, args);
	SPI_finish();
}

/* Forgets the node here; true if it was known. */
static bool
forget_node(const char *name)
{
	ConcordNode *node = concord_node_get_by_name(name);
	const char *args[1] = {name};
	ListCell   *lc;

	if (node == NULL)
		return false;
	if (node->is_local)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("node \"%s\" is this node", name),
				 errhint("A node leaves the mesh with concord.part_mesh().")));
	foreach(lc, concord_subscription_get_all())
	{
		ConcordSubscription *sub = lfirst(lc);

		if (sub->provider_node_id == node->id)
			concord_subscription_drop(sub);
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	drop_slots_of(node);
	spi_run_as_owner("tombstone_gap",
					 "DELETE FROM concord.tombstone_gap WHERE peer = $1::name", 1, args);
	spi_run_as_owner("departed_node",
					 "INSERT INTO concord.departed_node (node_name) VALUES ($1::name) "
					 "ON CONFLICT (node_name) DO UPDATE SET departed_at = pg_catalog.now()",
					 1, args);
	SPI_finish();
	concord_node_delete(node->id);
	return true;
}

Datum
concord_drop_peer(PG_FUNCTION_ARGS)
{
	char	   *name = concord_required_name(fcinfo, 0, "node_name");
	bool		known;

	PreventInTransactionBlock(true, "concord.drop_peer()");
	if (!OidIsValid(concord_catalog_relid("departed_node", true)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("concord.drop_peer() needs concord's catalogs of 0.3.0"),
				 errhint("Run ALTER EXTENSION concord UPDATE.")));
	concord_catalog_lock(CATALOG_SUBSCRIPTION);
	concord_catalog_lock(CATALOG_NODE);
	known = forget_node(name);
	if (!known)
		ereport(NOTICE,
				(errmsg("node \"%s\" is not known here, skipping", name)));
	PG_RETURN_BOOL(known);
}

/* Waits until every subscriber of this node has confirmed target. */
static void
wait_subscribers(XLogRecPtr target, TimestampTz deadline)
{
	const char *args[1] = {psprintf("%X/%X", LSN_FORMAT_ARGS(target))};

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (;;)
	{
		if (spi_run("SELECT FROM pg_catalog.pg_replication_slots "
					"WHERE plugin = 'concord' AND database = pg_catalog.current_database() "
					"AND slot_name::text ~ '^concord_[0-9]+_[0-9]+$' "
					"AND (confirmed_flush_lsn IS NULL OR confirmed_flush_lsn < $1::pg_catalog.pg_lsn)",
					1, args) == 0)
			break;
		if (GetCurrentTimestamp() >= deadline)
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("timed out waiting for every subscriber to confirm this node's changes up to %s",
							args[0]),
					 errhint("concord.subscriber_status shows who is behind; nothing was dropped.")));
		(void) concord_wait_tick(0);
	}
	SPI_finish();
}

/* On the peer: drop_peer() of this node. */
static void
peer_forget(const ConcordSubscription *sub, const char *local_name)
{
	PGconn	   *conn = concord_remote_connect(sub->provider_dsn, false, "concord part_mesh",
											  sub->password_required);

	PG_TRY();
	{
		const char *params[1] = {local_name};

		PQclear(concord_remote_query(conn, "SELECT concord.drop_peer($1)",
									 1, params, PGRES_TUPLES_OK));
	}
	PG_FINALLY();
	{
		concord_remote_finish(conn);
	}
	PG_END_TRY();
}

Datum
concord_part_mesh(PG_FUNCTION_ARGS)
{
	TimestampTz deadline = concord_deadline_from(fcinfo, 0);
	ConcordNode *local;
	List	   *subs;
	List	   *peers = NIL;
	ListCell   *lc;
	XLogRecPtr	target;

	PreventInTransactionBlock(true, "concord.part_mesh()");
	local = concord_node_get_local(false);
	/*
	 * Every change written here so far has reached every subscriber: up
	 * to the end of a record written now (a message no subscriber is
	 * sent; the insert position may lie past a page header, where no WAL
	 * sender ever reports).
	 */
	target = LogLogicalMessage("concord.part_mesh", "", 0, false);
	XLogFlush(target);
	wait_subscribers(target, deadline);

	concord_catalog_lock(CATALOG_SUBSCRIPTION);
	concord_catalog_lock(CATALOG_NODE);
	subs = concord_subscription_get_all();
	/* Our workers stop first: the peers then drop the slots we used. */
	foreach(lc, subs)
	{
		ConcordSubscription *sub = lfirst(lc);
		ConcordNode *provider = concord_node_get_by_id(sub->provider_node_id);

		concord_subscription_drop(sub);
		if (provider)
			peers = lappend(peers, provider->name);
	}
	foreach(lc, subs)
		peer_forget(lfirst(lc), local->name);
	/* Nobody here waits for the others any more either. */
	foreach(lc, peers)
		(void) forget_node(lfirst(lc));
	PG_RETURN_INT32(list_length(subs));
}
