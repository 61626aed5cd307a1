/*-------------------------------------------------------------------------
 *
 * node_api.c
 *		SQL API for nodes: create_node, alter_node, drop_node.
 *
 * A DSN may hold a password, so no error raised here repeats the DSN, and
 * errors raised while a DSN is among the arguments hide the statement from
 * the server log (errhidestmt).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"

#include "common/hashfn.h"
#include "commands/dbcommands.h"
#include "libpq-fe.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "api/api.h"
#include "catalog/identity.h"
#include "catalog/row_filter.h"
#include "catalog/tables.h"
#include "concord.h"
#include "remote/remote.h"
#include "shmem/shmem.h"

#define DEFAULT_SET_NAME	"default"

PG_FUNCTION_INFO_V1(concord_create_node);
PG_FUNCTION_INFO_V1(concord_alter_node);
PG_FUNCTION_INFO_V1(concord_drop_node);
PG_FUNCTION_INFO_V1(concord_reclaim_node_identity);
PG_FUNCTION_INFO_V1(concord_node_status);

/* Returns argument argno, or raises an error naming it when it is NULL. */
Datum
concord_required_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", argname)));
	return PG_GETARG_DATUM(argno);
}

/*
 * A node's id is a hash of its name, so that every node of a mesh knows a
 * peer by the same id.
 */
static Oid
node_id_for_name(const char *node_name)
{
	Oid			h = concord_node_id_for_name(node_name);
	ConcordNode *clash;

	clash = concord_node_get_by_id(h);
	if (clash != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("node name \"%s\" hashes to the id of node \"%s\"",
						node_name, clash->name),
				 errhint("Choose another node name.")));
	return h;
}

static void
check_node_name(const char *node_name)
{
	if (node_name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("node name must not be empty")));
}

/*
 * Marker slots are not transactional, the identity row is.  A transaction
 * that changes the identity leaves a marker no row names: the old one
 * once it commits, the new one if it rolls back.  The manager drops it
 * (concord_identity_sweep), woken here (a node without subscriptions has
 * no manager running) once the outcome is durable: dropping the old
 * marker before, a failure between that and the commit record would leave
 * the node without its marker (review).  Such a transaction cannot be
 * prepared: the sweep of another session would take the new marker for a
 * leftover.
 */
static bool IdentityChangedInXact = false;
static bool NodeXactCallbackRegistered = false;

static void
node_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	if (event == XACT_EVENT_PRE_PREPARE && IdentityChangedInXact)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot prepare a transaction that changed concord's node identity")));
	if ((event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT) &&
		IdentityChangedInXact)
		concord_request_manager(MyDatabaseId);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
		IdentityChangedInXact = false;
}

static void
identity_changes(void)
{
	if (!NodeXactCallbackRegistered)
	{
		RegisterXactCallback(node_xact_callback, NULL);
		NodeXactCallbackRegistered = true;
	}
	IdentityChangedInXact = true;
}

static void
record_identity(bool reclaim)
{
	identity_changes();
	if (reclaim)
		concord_identity_reclaim();
	else
		concord_identity_record();
}

/* Creates the set "default", shipping every operation, as pglogical does. */
static void
create_default_set(void)
{
	ConcordSet	set;

	if (concord_set_get_by_name(DEFAULT_SET_NAME) != NULL)
		return;
	set.id = concord_set_new_id();
	set.name = DEFAULT_SET_NAME;
	set.replicate_insert = true;
	set.replicate_update = true;
	set.replicate_delete = true;
	set.replicate_truncate = true;
	set.capture = "logical";
	concord_set_insert(&set);
}

Datum
concord_create_node(PG_FUNCTION_ARGS)
{
	char	   *node_name = concord_required_name(fcinfo, 0, "node_name");
	char	   *dsn = TextDatumGetCString(concord_required_arg(fcinfo, 1, "dsn"));
	int32		priority = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2);
	ConcordNode *local;
	ConcordNode node;

	check_node_name(node_name);
	concord_catalog_lock(CATALOG_NODE);
	concord_catalog_lock(CATALOG_SET);

	local = concord_node_get_local(true);
	if (local != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("database \"%s\" is already concord node \"%s\"",
						get_database_name(MyDatabaseId), local->name),
				 errhint("Use concord.alter_node() to change it, or concord.drop_node() first."),
				 errhidestmt(true)));
	if (concord_node_get_by_name(node_name) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("node \"%s\" already exists as a peer of this node", node_name),
				 errhint("Choose another name, or drop the peer with concord.drop_node() first."),
				 errhidestmt(true)));
	concord_check_dsn(dsn, psprintf("node \"%s\"", node_name));

	node.id = node_id_for_name(node_name);
	node.name = node_name;
	node.dsn = dsn;
	node.priority = priority;
	node.is_local = true;
	concord_node_insert(&node);
	create_default_set();
	/* This database of this server, from now on (catalog/identity.c). */
	record_identity(false);

	PG_RETURN_OID(node.id);
}

static ConcordNode *
node_get_existing(const char *node_name)
{
	ConcordNode *node = concord_node_get_by_name(node_name);

	if (node == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("node \"%s\" does not exist", node_name),
				 errhint("The nodes are listed in concord.node."),
				 errhidestmt(true)));
	return node;
}

Datum
concord_alter_node(PG_FUNCTION_ARGS)
{
	char	   *node_name = concord_required_name(fcinfo, 0, "node_name");
	ConcordNode *node;

	concord_catalog_lock(CATALOG_NODE);
	node = node_get_existing(node_name);
	if (!PG_ARGISNULL(1))
	{
		node->dsn = TextDatumGetCString(PG_GETARG_DATUM(1));
		concord_check_dsn(node->dsn, psprintf("node \"%s\"", node_name));
	}
	if (!PG_ARGISNULL(2))
		node->priority = PG_GETARG_INT32(2);
	concord_node_update(node);
	PG_RETURN_VOID();
}

/* Removes the local node's replication sets and their memberships. */
static void
drop_local_sets(void)
{
	ListCell   *lc;

	concord_catalog_lock(CATALOG_SET);
	foreach(lc, concord_set_get_all())
		concord_set_delete(((ConcordSet *) lfirst(lc))->id);
}

Datum
concord_drop_node(PG_FUNCTION_ARGS)
{
	char	   *node_name = concord_required_name(fcinfo, 0, "node_name");
	bool		ifexists = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
	ConcordNode *node;

	concord_catalog_lock(CATALOG_NODE);
	concord_catalog_lock(CATALOG_SUBSCRIPTION);
	node = concord_node_get_by_name(node_name);
	if (node == NULL && ifexists)
	{
		ereport(NOTICE,
				(errmsg("node \"%s\" does not exist, skipping", node_name)));
		PG_RETURN_BOOL(false);
	}
	if (node == NULL)
		node = node_get_existing(node_name);

	if (concord_subscription_exists(node->is_local ? InvalidOid : node->id))
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("cannot drop node \"%s\" because subscriptions exist", node_name),
				 errdetail(node->is_local ?
						   "This node has subscriptions." :
						   "This node subscribes to node \"%s\".", node_name),
				 errhint("Drop the subscriptions with concord.drop_subscription() first.")));

	if (node->is_local)
	{
		drop_local_sets();
		identity_changes();
		concord_identity_forget();
	}
	concord_node_delete(node->id);
	PG_RETURN_BOOL(true);
}

/*
 * concord.reclaim_node_identity(): records this database of this server as
 * the local node again, for the operator who knows it is (pg_upgrade keeps
 * no slots, a promoted standby has not its primary's).  false when it
 * already was.
 */
Datum
concord_reclaim_node_identity(PG_FUNCTION_ARGS pg_attribute_unused())
{
	ConcordNode *local;
	char	   *why;

	concord_catalog_lock(CATALOG_NODE);
	local = concord_node_get_local(false);
	if (concord_identity_check(&why))
	{
		ereport(NOTICE,
				(errmsg("this database is node \"%s\" already", local->name)));
		PG_RETURN_BOOL(false);
	}
	record_identity(true);
	/* A restored dump numbers the tables' columns anew. */
	concord_row_filter_reanalyse_all(false);
	ereport(NOTICE,
			(errmsg("this database is node \"%s\" from now on", local->name),
			 errdetail("Before: %s.", why)));
	PG_RETURN_BOOL(true);
}

/*
 * concord.node_status: the local node, and whether this database is that
 * node or a copy of it (catalog/identity.c).
 */
Datum
concord_node_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ConcordNode *local;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	char	   *why;

	InitMaterializedSRF(fcinfo, 0);
	local = concord_node_get_local(true);
	if (local == NULL)
		return (Datum) 0;
	values[0] = DirectFunctionCall1(namein, CStringGetDatum(local->name));
	if (RecoveryInProgress())
	{
		/* A standby has not its primary's slots: it is no copy for that. */
		values[1] = CStringGetTextDatum("standby");
		values[2] = CStringGetTextDatum("This server is a standby in recovery: concord's workers do not run here");
		values[3] = CStringGetTextDatum("If it is promoted to take the node's place, run SELECT concord.reclaim_node_identity() there.");
	}
	else if (concord_identity_check(&why))
	{
		values[1] = CStringGetTextDatum("this node");
		nulls[2] = nulls[3] = true;
	}
	else
	{
		values[1] = CStringGetTextDatum("copy");
		values[2] = CStringGetTextDatum(why);
		values[3] = CStringGetTextDatum(COPY_HINT);
	}
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}
