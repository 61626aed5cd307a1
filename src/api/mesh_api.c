/*-------------------------------------------------------------------------
 *
 * mesh_api.c
 *		Joining a live mesh: join_mesh, and join_fence, which a joining
 *		node's copy calls on its peer (leaving: peer_api.c).
 *
 * join_mesh, on a new node N, with a peer P of a mesh whose members are P
 * and the providers P subscribes to (M1, M2, ...):
 *
 * 1. Every member subscribes to N, without a copy, before anything else:
 *    whatever N writes from then on reaches them.
 * 2. N's subscription to each Mi is made without a copy; its slot on Mi
 *    keeps every change Mi commits from the slot's start Li on.  N's
 *    subscription to P is made with a copy.
 * 3. join_mesh waits until P has applied every change each Mi committed
 *    before Li: the copy from P, taken later, has them all.
 * 4. The copy (sync.c) takes its snapshot on P inside join_fence: while
 *    it holds the fence, no transaction P applies is half committed, so
 *    the snapshot holds exactly the changes of each Mi up to the position
 *    Ci that P's origin for Mi shows then.  The copy's transaction records
 *    Ci (at least Li) as the start of N's subscription to Mi, which
 *    streams only from then on: a change of Mi reaches N through the copy
 *    (up to Ci) or through the subscription (after Ci), never both,
 *    never neither.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "utils/resowner.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "api/api.h"
#include "catalog/origin.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/seen.h"
#include "remote/remote.h"
#include "shmem/shmem.h"

PG_FUNCTION_INFO_V1(concord_join_fence);
PG_FUNCTION_INFO_V1(concord_join_mesh);

/* A member of the mesh, as the peer knows it. */
typedef struct Member
{
	char	   *node;
	char	   *dsn;			/* how the peer reaches it */
	char	   *peer_sub;		/* the peer's subscription to it */
} Member;

static const char *const NoParams[1] = {NULL};

static XLogRecPtr
lsn_from_text(const char *text)
{
	return DatumGetLSN(DirectFunctionCall1(pg_lsn_in, CStringGetDatum(text)));
}

/* The local subscription from the named node, or NULL. */
static ConcordSubscription *
sub_from_node(const char *node_name)
{
	ConcordNode *node = concord_node_get_by_name(node_name);
	ListCell   *lc;

	if (node == NULL)
		return NULL;
	foreach(lc, concord_subscription_get_all())
	{
		ConcordSubscription *sub = lfirst(lc);

		if (sub->provider_node_id == node->id)
			return sub;
	}
	return NULL;
}

/* ---------------------------------------------------------------------
 * join_fence: on the peer, for the copy of a joining node
 * ---------------------------------------------------------------------
 */

/* Waits until the worker of sub has said what it committed (seen.c). */
static void
wait_published(ConcordSubscription *sub, XLogRecPtr progress)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5000);

	for (;;)
	{
		ConcordSubState *st;
		XLogRecPtr	published = InvalidXLogRecPtr;

		LWLockAcquire(ConcordShmem->lock, LW_SHARED);
		st = concord_sub_state(MyDatabaseId, sub->id, false);
		if (st)
			published = st->caught_up_lsn;
		LWLockRelease(ConcordShmem->lock);
		if (st == NULL || published >= progress ||
			GetCurrentTimestamp() >= deadline)
			return;
		(void) concord_wait_tick(0);
	}
}

/* Waits until every transaction that has an XID now has ended. */
static void
wait_older_xids(TimestampTz deadline)
{
	TransactionId horizon = XidFromFullTransactionId(ReadNextFullTransactionId());

	while (TransactionIdPrecedes(GetOldestActiveTransactionId(), horizon))
	{
		if (!concord_wait_tick(deadline))
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("timed out waiting for the transactions running on node \"%s\" to end",
							concord_node_get_local(false)->name),
					 errhint("A long transaction, or a prepared one, holds up a joining node's copy; it is tried again.")));
	}
}

Datum
concord_join_fence(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	List	   *nodes = concord_text_array_to_list(DatumGetArrayTypeP(concord_required_arg(fcinfo, 0, "nodes")), "nodes");
	ArrayType  *lsn_arr = DatumGetArrayTypeP(concord_required_arg(fcinfo, 1, "positions"));
	TimestampTz deadline = concord_deadline_from(fcinfo, 2);
	Datum	   *lsns;
	bool	   *lsn_nulls;
	int			nlsns;
	List	   *subs = NIL;
	ListCell   *lc;
	LOCKTAG		fence;

	deconstruct_array(lsn_arr, PG_LSNOID, sizeof(XLogRecPtr), FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &lsns, &lsn_nulls, &nlsns);
	if (nlsns != list_length(nodes))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("nodes and positions must have as many elements")));
	if (!IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_NO_ACTIVE_SQL_TRANSACTION),
				 errmsg("concord.join_fence() holds the fence to the end of the transaction: call it in a transaction block")));

	/* Everything the slots of the joining node do not keep is applied here. */
	foreach(lc, nodes)
	{
		const char *node = lfirst(lc);
		ConcordSubscription *sub = sub_from_node(node);
		XLogRecPtr	target = DatumGetLSN(lsns[foreach_current_index(lc)]);

		if (sub == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("node \"%s\" does not subscribe to node \"%s\"",
							concord_node_get_local(false)->name, node),
					 errhint("A node joins a mesh through a peer that subscribes to every other member.")));
		if (!concord_wait_applied(sub, target, deadline))
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("timed out waiting for subscription \"%s\" to apply node \"%s\" up to %X/%X",
							sub->name, node, LSN_FORMAT_ARGS(target)),
					 errhint("Check concord.subscription_status on node \"%s\"; the joining node's copy tries again.",
							 concord_node_get_local(false)->name)));
		subs = lappend(subs, sub);
	}

	/*
	 * The caller's slot, made under the fence, waits for every transaction
	 * with an XID running when it starts: first, with the apply workers
	 * going on, wait for those running now, so that the fence is held
	 * only while the slot waits for transactions begun since.
	 */
	wait_older_xids(deadline);

	/*
	 * From here to our commit, no applied transaction commits; nor does
	 * another join_fence run (the mode conflicts with itself), so that a
	 * caller that holds the fence holds up the copies of joining nodes too.
	 */
	CONCORD_SET_FENCE_TAG(fence);
	(void) LockAcquire(&fence, ShareRowExclusiveLock, false, false);

	/*
	 * Not for long: a caller that stays idle in this transaction (its slot
	 * waiting for a long transaction begun meanwhile, or for one that
	 * waits for our apply; or the caller gone) loses its session, and the
	 * apply workers go on; the caller's commit then fails, and the copy
	 * is tried again.
	 */
	(void) set_config_option("idle_in_transaction_session_timeout", "60s",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
							 true, 0, false);

	InitMaterializedSRF(fcinfo, 0);
	/*
	 * No node named (a resynchronization's merge reads concord.seen()
	 * next): every subscription's last commit has noted its SEEN value.
	 */
	if (nodes == NIL)
		foreach(lc, concord_subscription_get_all())
		{
			ConcordSubscription *sub = lfirst(lc);

			wait_published(sub, concord_origin_sub_progress(sub->id));
		}
	foreach(lc, subs)
	{
		ConcordSubscription *sub = lfirst(lc);
		const char *node = list_nth(nodes, foreach_current_index(lc));
		XLogRecPtr	progress = concord_origin_sub_progress(sub->id);
		TimestampTz seen;
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		/* The last commit before the fence has noted its SEEN value. */
		wait_published(sub, progress);
		seen = concord_seen_local(node);
		values[0] = DirectFunctionCall1(namein, CStringGetDatum(node));
		values[1] = LSNGetDatum(progress);
		values[2] = TimestampTzGetDatum(seen);
		nulls[2] = seen == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * join_mesh: on the joining node
 * ---------------------------------------------------------------------
 */

static char *
remote_local_name(PGconn *conn)
{
	PGresult   *res = concord_remote_query(conn,
										   "SELECT node_name FROM concord.node WHERE is_local",
										   0, NoParams, PGRES_TUPLES_OK);
	char	   *name;

	if (PQntuples(res) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a member of the mesh is not a concord node"),
				 errhint("Run concord.create_node() there."),
				 errhidestmt(true)));
	name = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return name;
}

/* The peer's subscriptions: the other members of its mesh. */
static List *
mesh_members(PGconn *conn, const char *local_name, List *sets)
{
	const char *params[1] = {concord_remote_text_array(sets)};
	PGresult   *res = concord_remote_query(conn,
										   "SELECT n.node_name, s.provider_dsn, s.sub_name, "
										   "s.forward_origins = '{}', s.enabled, "
										   "s.replication_sets @> $1::pg_catalog.text[] "
										   "FROM concord.subscription s "
										   "JOIN concord.node n ON n.node_id = s.provider_node_id "
										   "ORDER BY 1, 3",
										   1, params, PGRES_TUPLES_OK);
	List	   *members = NIL;

	for (int i = 0; i < PQntuples(res); i++)
	{
		Member	   *m;
		const char *node = PQgetvalue(res, i, 0);

		/* The peer subscribes to us already: a join called again. */
		if (strcmp(node, local_name) == 0)
			continue;
		if (i > 0 && strcmp(node, PQgetvalue(res, i - 1, 0)) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the peer has two subscriptions to node \"%s\"", node),
					 errhint("concord.join_mesh() joins a mesh, where each node subscribes once to each other node."),
					 errhidestmt(true)));
		if (strcmp(PQgetvalue(res, i, 3), "t") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("the peer receives node \"%s\"'s changes with forward_origins", node),
					 errdetail("concord.join_mesh() joins a mesh, whose subscriptions forward nothing; rings and stars are built by hand."),
					 errhidestmt(true)));
		if (strcmp(PQgetvalue(res, i, 4), "t") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the peer's subscription to node \"%s\" is disabled", node),
					 errhint("Enable it there, or join through another peer."),
					 errhidestmt(true)));
		/* The copy brings the member's older changes only of these sets. */
		if (strcmp(PQgetvalue(res, i, 5), "t") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the peer's subscription to node \"%s\" does not receive every replication set asked for", node),
					 errhint("Join with the sets the peer receives from every member, or add them to its subscriptions."),
					 errhidestmt(true)));
		m = palloc0(sizeof(Member));
		m->node = pstrdup(node);
		m->dsn = pstrdup(PQgetvalue(res, i, 1));
		m->peer_sub = pstrdup(PQgetvalue(res, i, 2));
		members = lappend(members, m);
	}
	PQclear(res);
	return members;
}

/*
 * The tables of the sets on the peer must be here, empty, in the same
 * sets: the copy fills them, and this node's own changes of them reach
 * the members only through its sets.
 */
static void
check_local_tables(PGconn *conn, List *sets)
{
	const char *params[1] = {concord_remote_text_array(sets)};
	PGresult   *res = concord_remote_query(conn,
										   "SELECT s.set_name, n.nspname, c.relname "
										   "FROM concord.replication_set_table rst "
										   "JOIN concord.replication_set s ON s.set_id = rst.set_id "
										   "JOIN pg_catalog.pg_class c ON c.oid = rst.set_reloid "
										   "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
										   "WHERE s.set_name = ANY ($1::pg_catalog.text[]) ORDER BY 2, 3, 1",
										   1, params, PGRES_TUPLES_OK);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (int i = 0; i < PQntuples(res); i++)
	{
		const char *set_name = PQgetvalue(res, i, 0);
		char	   *qname = quote_qualified_identifier(PQgetvalue(res, i, 1),
													   PQgetvalue(res, i, 2));
		Oid			relid = RangeVarGetRelid(makeRangeVar(PQgetvalue(res, i, 1),
														  PQgetvalue(res, i, 2), -1),
											 AccessShareLock, true);
		ConcordSet *set = concord_set_get_by_name(set_name);

		if (!OidIsValid(relid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("table %s of replication set \"%s\" on the peer does not exist on this node",
							qname, set_name),
					 errhint("Create it here, as on the peer, and add it to the same set."),
					 errhidestmt(true)));
		if (set == NULL || !concord_set_table_exists(set->id, relid))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table %s is not in replication set \"%s\" on this node", qname, set_name),
					 errhint("Add it as on the peer: SELECT concord.replication_set_add_table(%s, %s);",
							 quote_literal_cstr(set_name), quote_literal_cstr(qname)),
					 errhidestmt(true)));
		if (SPI_execute(psprintf("SELECT FROM %s LIMIT 1", qname), true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read %s", qname);
		if (SPI_processed > 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table %s is not empty", qname),
					 errdetail("A node joins a mesh empty: the copy from the peer brings every row."),
					 errhint("Empty it, or build the mesh by hand (see \"Existing data\" in the manual)."),
					 errhidestmt(true)));
	}
	SPI_finish();
	PQclear(res);
}

/* On member X (reached with dsn), the subscription name to us, or NULL. */
static char *
member_check(const char *dsn, const char *expected, const char *local_name)
{
	PGconn	   *conn = concord_remote_connect(dsn, false, "concord join_mesh",
											  concord_check_dsn_for_user(dsn));
	char	   *sub = NULL;

	PG_TRY();
	{
		const char *params[1] = {local_name};
		char	   *name = remote_local_name(conn);
		PGresult   *res;

		if (strcmp(name, expected) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the peer's DSN for node \"%s\" reaches node \"%s\"", expected, name),
					 errhidestmt(true)));
		res = concord_remote_query(conn,
								   "SELECT s.sub_name FROM concord.subscription s "
								   "JOIN concord.node n ON n.node_id = s.provider_node_id "
								   "WHERE n.node_name = $1",
								   1, params, PGRES_TUPLES_OK);
		if (PQntuples(res) > 0)
			sub = pstrdup(PQgetvalue(res, 0, 0));
		PQclear(res);
	}
	PG_FINALLY();
	{
		concord_remote_finish(conn);
	}
	PG_END_TRY();
	return sub;
}

/* Makes member X subscribe to this node, without a copy. */
static void
member_subscribe(const char *dsn, const char *member, ConcordNode *local, List *sets)
{
	PGconn	   *conn = concord_remote_connect(dsn, false, "concord join_mesh",
											  concord_check_dsn_for_user(dsn));

	PG_TRY();
	{
		const char *params[3];

		params[0] = psprintf("%.*s_from_%s", NAMEDATALEN / 2 - 4, member, local->name);
		params[1] = local->dsn;
		params[2] = concord_remote_text_array(sets);
		/*
		 * The DSN is a parameter: kept out of the member's statement log
		 * where the role may change that (a superuser's).
		 */
		PQclear(concord_remote_exec(conn,
									"SELECT pg_catalog.set_config('log_statement', 'none', false), "
									"pg_catalog.set_config('log_parameter_max_length', '0', false), "
									"pg_catalog.set_config('log_min_duration_statement', '-1', false)",
									0, NULL));
		PQclear(concord_remote_query(conn,
									 "SELECT concord.create_subscription($1, $2, $3::pg_catalog.text[], "
									 "synchronize_data => false, forward_origins => '{}')",
									 3, params, PGRES_TUPLES_OK));
	}
	PG_FINALLY();
	{
		concord_remote_finish(conn);
	}
	PG_END_TRY();
}

/* Where a fresh slot on the provider begins (its confirmed position). */
static XLogRecPtr
slot_start(const ConcordSubscription *sub)
{
	PGconn	   *conn = concord_remote_connect(sub->provider_dsn, false, "concord join_mesh",
											  sub->password_required);
	XLogRecPtr	lsn = InvalidXLogRecPtr;

	PG_TRY();
	{
		const char *params[1] = {sub->slot_name};
		PGresult   *res = concord_remote_query(conn,
											   "SELECT confirmed_flush_lsn FROM pg_catalog.pg_replication_slots "
											   "WHERE slot_name = $1",
											   1, params, PGRES_TUPLES_OK);

		if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
			lsn = lsn_from_text(PQgetvalue(res, 0, 0));
		PQclear(res);
	}
	PG_FINALLY();
	{
		concord_remote_finish(conn);
	}
	PG_END_TRY();
	if (XLogRecPtrIsInvalid(lsn))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replication slot \"%s\" vanished from its provider", sub->slot_name)));
	return lsn;
}

/* On the peer: waits until its subscription to m applied up to lsn. */
static void
peer_wait_applied(PGconn *peer, Member *m, XLogRecPtr lsn, Interval *timeout)
{
	const char *params[3];
	PGresult   *res;
	bool		reached;

	params[0] = m->peer_sub;
	params[1] = psprintf("%X/%X", LSN_FORMAT_ARGS(lsn));
	params[2] = DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(timeout)));
	res = concord_remote_query(peer,
							   "SELECT concord.wait_for_apply($1, $2::pg_catalog.pg_lsn, $3::pg_catalog.interval)",
							   3, params, PGRES_TUPLES_OK);
	reached = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (!reached)
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("timed out waiting for the peer to apply node \"%s\"'s changes up to %X/%X",
						m->node, LSN_FORMAT_ARGS(lsn)),
				 errhint("Check concord.subscription_status on the peer, then call concord.join_mesh() again."),
				 errhidestmt(true)));
}

static ConcordSubscription *
new_join_sub(const char *provider, const char *dsn, List *sets, bool copy,
			 const char *local_name)
{
	ConcordSubscription *sub = palloc0(sizeof(ConcordSubscription));

	sub->name = psprintf("%.*s_from_%s", NAMEDATALEN / 2 - 4, local_name, provider);
	if (strlen(sub->name) >= NAMEDATALEN)
		sub->name[NAMEDATALEN - 1] = '\0';
	sub->provider_dsn = pstrdup(dsn);
	sub->replication_sets = sets;
	sub->synchronize_data = copy;
	return sub;
}

static int
name_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp(lfirst(a), lfirst(b));
}

/* The member names of a list of Members, sorted, for comparing. */
static char *
member_names(List *members)
{
	List	   *names = NIL;
	ListCell   *lc;

	foreach(lc, members)
		names = lappend(names, ((Member *) lfirst(lc))->node);
	list_sort(names, name_cmp);
	return concord_remote_text_array(names);
}

/* The peer runs 0.3.0's SQL objects: the copy calls them there. */
static void
check_peer_version(PGconn *peer)
{
	if (!concord_remote_has_function(peer, "concord.join_fence(text[], pg_lsn[], interval)"))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the peer's concord is older than 0.3.0"),
				 errhint("Run ALTER EXTENSION concord UPDATE on every member first."),
				 errhidestmt(true)));
}

/*
 * join_mesh's work, with the peer's connection; the caller closes it.
 * Returns the number of subscriptions made.
 */
static int
join_mesh_with(PGconn *peer, const char *peer_dsn, List *sets, Interval *timeout,
			   ConcordNode *local)
{
	char	   *peer_name;
	List	   *members;
	List	   *to_subscribe = NIL;
	List	   *made_here = NIL;
	ConcordSubscription *peer_sub;
	ConcordProviderInfo *infos;
	int			made = 0;
	int			here;
	ListCell   *lc;

	/* 1. The mesh, as the peer sees it; nothing is made before all is checked. */
	check_peer_version(peer);
	peer_name = remote_local_name(peer);
	if (strcmp(peer_name, local->name) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("node \"%s\" cannot join a mesh through itself", local->name)));
	members = mesh_members(peer, local->name, sets);
	here = (sub_from_node(peer_name) != NULL);
	foreach(lc, members)
		here += (sub_from_node(((Member *) lfirst(lc))->node) != NULL);
	if (here > 0 && here != list_length(members) + 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("node \"%s\" subscribes to some members of the mesh only", local->name),
				 errhint("Drop its subscriptions, empty its tables, and call concord.join_mesh() again.")));
	if (here == 0)
		check_local_tables(peer, sets);
	if (member_check(peer_dsn, peer_name, local->name) == NULL)
		to_subscribe = lappend(to_subscribe, list_make2(peer_name, (char *) peer_dsn));
	foreach(lc, members)
	{
		Member	   *m = lfirst(lc);

		if (member_check(m->dsn, m->node, local->name) == NULL)
			to_subscribe = lappend(to_subscribe, list_make2(m->node, m->dsn));
	}

	/* 2. Every member subscribes to this node, before this node writes. */
	foreach(lc, to_subscribe)
	{
		List	   *x = lfirst(lc);

		member_subscribe(lsecond(x), linitial(x), local, sets);
		made++;
	}

	/*
	 * A node that joined meanwhile, through any member, is a member this
	 * node does not know of: of two nodes joining at once, at least one
	 * sees the other here (each looks after making the members subscribe
	 * to it), and stops; called again, it joins the larger mesh.
	 */
	if (strcmp(member_names(members),
			   member_names(mesh_members(peer, local->name, sets))) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the mesh changed while node \"%s\" was joining it", local->name),
				 errdetail("Another node joined or left at the same time."),
				 errhint("Call concord.join_mesh() again: it goes on from where it stopped.")));
	if (here > 0)
		return made;

	/*
	 * 3. This node's slots on the members, then the wait until the peer
	 * has what they do not keep, then the subscription to the peer.  No
	 * write before the last slot is made.
	 */
	infos = palloc0(sizeof(ConcordProviderInfo) * (list_length(members) + 1));
	peer_sub = new_join_sub(peer_name, peer_dsn, sets, true, local->name);
	foreach(lc, members)
	{
		Member	   *m = lfirst(lc);
		ConcordSubscription *sub = new_join_sub(m->node, m->dsn, sets, false, local->name);
		bool		clash = strcmp(peer_sub->name, sub->name) == 0;
		ListCell   *lc2;

		/* Names cut to fit must still differ: checked before any slot. */
		foreach(lc2, made_here)
			clash |= strcmp(((ConcordSubscription *) lfirst(lc2))->name, sub->name) == 0;
		if (clash)
			ereport(ERROR,
						(errcode(ERRCODE_NAME_TOO_LONG),
						 errmsg("the subscriptions to two members would both be named \"%s\"", sub->name),
						 errhint("Give the nodes names that differ in their first %d characters.",
								 NAMEDATALEN / 2 - 4)));
		made_here = lappend(made_here, sub);
	}
	foreach(lc, made_here)
	{
		ConcordSubscription *sub = lfirst(lc);

		concord_subscription_prepare(sub, &infos[foreach_current_index(lc)]);
		sub->join_start_lsn = slot_start(sub);
	}
	foreach(lc, members)
		peer_wait_applied(peer, lfirst(lc),
						  ((ConcordSubscription *) list_nth(made_here, foreach_current_index(lc)))->join_start_lsn,
						  timeout);
	concord_subscription_prepare(peer_sub, &infos[list_length(members)]);

	/* 4. The catalogs: the members' subscriptions wait for the copy. */
	foreach(lc, made_here)
	{
		ConcordSubscription *sub = lfirst(lc);

		sub->join_copy_via = peer_sub->id;
		concord_subscription_record(sub, &infos[foreach_current_index(lc)]);
	}
	concord_subscription_record(peer_sub, &infos[list_length(members)]);
	return made + list_length(made_here) + 1;
}

Datum
concord_join_mesh(PG_FUNCTION_ARGS)
{
	char	   *peer_dsn = TextDatumGetCString(concord_required_arg(fcinfo, 0, "peer_dsn"));
	List	   *sets = concord_text_array_to_list(DatumGetArrayTypeP(concord_required_arg(fcinfo, 1, "replication_sets")), "replication_sets");
	Interval   *timeout = DatumGetIntervalP(concord_required_arg(fcinfo, 2, "timeout"));
	ConcordNode *local;
	PGconn	   *peer;
	int			made = 0;

	concord_redact_current_statement();
	PreventInTransactionBlock(true, "concord.join_mesh()");
	if (sets == NIL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("replication_sets must name at least one set")));
	concord_check_dsn(peer_dsn, "join_mesh");
	local = concord_node_get_local(false);
	if (local->dsn == NULL || local->dsn[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("node \"%s\" has no DSN for the members to reach it", local->name),
				 errhint("Set it with concord.alter_node().")));
	peer = concord_remote_connect(peer_dsn, false, "concord join_mesh",
								  concord_check_dsn_for_user(peer_dsn));
	PG_TRY();
	{
		made = join_mesh_with(peer, peer_dsn, sets, timeout, local);
	}
	PG_FINALLY();
	{
		concord_remote_finish(peer);
	}
	PG_END_TRY();
	PG_RETURN_INT32(made);
}

