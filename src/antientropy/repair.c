/*-------------------------------------------------------------------------
 *
 * repair.c
 *		concord.table_repair(): mends the differences a diff run found.
 *
 * For every key of the run (concord.diff_row) the winner is chosen among
 * the versions the diff read on each node, by the table's resolver of
 * update_exists (last_update_wins, first_update_wins, replica_priority:
 * the ones that decide alike on every node), or is source_node's version
 * when given (needed under the other resolvers).  A delete recorded by a
 * tombstone is a version like a row; an absence with no tombstone has no
 * version and never wins, except as source_node's, when it is written as
 * a delete dated with the repair's start.  Equal versions holding
 * different rows (both of unknown age, say) are decided by the larger
 * digest, so that every node would decide alike.
 *
 * Then each node whose row (or absence) is not the winner's is sent
 * concord.repair_row() (repair_row.c) over libpq, one key per call and
 * transaction, with the version the diff saw there: the node writes the
 * winner with its origin and commit time unless a write changed the key
 * since the diff, which then stands and meets the other nodes' through
 * replication's resolver.  This node is reached like the peers, with its
 * own DSN (concord.node), since each write needs a transaction of its
 * own; the peers with the DSN of this node's subscription to them, as the
 * diff reached them.
 *
 * A repair stopped half-way (a node down, the caller cancelled) leaves
 * each key repaired or not on each node, recorded in that node's
 * concord.repair_history; running it again finishes it (keys already
 * repaired answer "already").
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rls.h"
#include "utils/timestamp.h"

#include "antientropy/repair.h"
#include "catalog/tables.h"
#include "conflict/conflict.h"
#include "remote/remote.h"

/* The run being repaired. */
typedef struct RepairRun
{
	int64		run_id;
	char	   *relation;		/* qualified name, as the peers know it */
	Oid			relid;
	char	   *local;			/* this node's name */
	char	  **nodes;
	int			nnodes;
	ConcordResolver resolver;
	const char *source;			/* NULL: the resolver decides */
	bool		only_local;		/* repair this node only */
	TimestampTz fenced;			/* the latest of the diff's first fences */
} RepairRun;

/* One node's state of one key, from diff_row.rows. */
typedef struct NodeState
{
	ConcordRepairVersion v;
	char	   *json;			/* the node's entry of diff_row.rows */
} NodeState;

/* A row write to send: the key on a node, from what to what. */
typedef struct RepairEntry
{
	int			node;			/* index in run->nodes */
	char	   *key;
	const char *expected;
	char	   *winner;
	const char *planned;		/* insert, update or delete */
	ConcordRepairVersion *wv;
} RepairEntry;

static void
load_run(RepairRun *run)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run->run_id)};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	char	   *status;
	Datum	   *names;
	Oid			saved_user;
	int			saved_context;

	concord_catalog_become_owner("diff_run", &saved_user, &saved_context);
	if (SPI_execute_with_args("SELECT relation, relid, nodes, status,"
							  " (SELECT pg_catalog.max(f.value::pg_catalog.timestamptz)"
							  " FROM pg_catalog.jsonb_each_text(fences) f)"
							  " FROM concord.diff_run WHERE run_id = $1",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the diff run");
	SetUserIdAndSecContext(saved_user, saved_context);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("diff run " INT64_FORMAT " does not exist", run->run_id),
				 errhint("The runs are in concord.diff_run of the node that ran them.")));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	run->relation = SPI_getvalue(tup, desc, 1);
	run->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	deconstruct_array(DatumGetArrayTypePCopy(SPI_getbinval(tup, desc, 3, &isnull)),
					  NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR, &names, NULL, &run->nnodes);
	run->nodes = palloc(sizeof(char *) * run->nnodes);
	for (int i = 0; i < run->nnodes; i++)
		run->nodes[i] = pstrdup(NameStr(*DatumGetName(names[i])));
	status = SPI_getvalue(tup, desc, 4);
	run->fenced = DatumGetTimestampTz(SPI_getbinval(tup, desc, 5, &isnull));
	if (strcmp(status, "running") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("diff run " INT64_FORMAT " has not ended", run->run_id),
				 errhint("Wait for it with concord.wait_for_diff().")));
	if (strcmp(status, "failed") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("diff run " INT64_FORMAT " failed", run->run_id),
				 errhint("Run a new diff with concord.table_diff().")));
	if (get_rel_name(run->relid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table %s of diff run " INT64_FORMAT " no longer exists",
						run->relation, run->run_id)));
}

static void
check_caller(RepairRun *run)
{
	AclMode		needed[] = {ACL_SELECT, ACL_INSERT, ACL_UPDATE, ACL_DELETE};

	for (int i = 0; i < (int) lengthof(needed); i++)
		if (pg_class_aclcheck(run->relid, GetUserId(), needed[i]) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for table %s", get_rel_name(run->relid)),
					 errdetail("A repair inserts, updates and deletes the table's rows on every node: it needs SELECT, INSERT, UPDATE and DELETE on it.")));
	if (check_enable_rls(run->relid, InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("table %s has row-level security for this role", get_rel_name(run->relid)),
				 errdetail("A repair writes any row of the table, as its owner."),
				 errhint("Run it as the table's owner or as a role with BYPASSRLS.")));
}

static void
choose_resolver(RepairRun *run)
{
	ConcordResolver resolvers[CONCORD_NUM_CONFLICT_TYPES];
	Oid			handlers[CONCORD_NUM_CONFLICT_TYPES];
	bool		known = false;

	concord_resolvers_of(run->relid, resolvers, handlers);
	run->resolver = resolvers[CONCORD_CONFLICT_UPDATE_EXISTS];
	if (run->source != NULL)
	{
		for (int i = 0; i < run->nnodes; i++)
			known |= strcmp(run->nodes[i], run->source) == 0;
		if (!known)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("node \"%s\" took no part in diff run " INT64_FORMAT,
							run->source, run->run_id),
					 errhint("Name one of the run's nodes (concord.diff_run.nodes).")));
		return;
	}
	if (run->resolver != CONCORD_RESOLVER_LAST_UPDATE_WINS &&
		run->resolver != CONCORD_RESOLVER_FIRST_UPDATE_WINS &&
		run->resolver != CONCORD_RESOLVER_REPLICA_PRIORITY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("table %s resolves conflicts with %s, which does not choose one version for every node",
						run->relation, concord_resolver_name(run->resolver)),
				 errhint("Give source_node: the node whose rows the others are to take.")));
}

static int
node_index(RepairRun *run, const char *name)
{
	for (int i = 0; i < run->nnodes; i++)
		if (strcmp(run->nodes[i], name) == 0)
			return i;
	elog(ERROR, "node \"%s\" is not one of the run's", name);
	return -1;					/* keep compiler quiet */
}

/*
 * The winner among a key's states, as a version to send; NULL when no
 * node has a version (cannot be: a difference has a row somewhere).
 */
static ConcordRepairVersion *
winner_of(RepairRun *run, NodeState *states)
{
	ConcordRepairVersion *best = NULL;

	if (run->source != NULL)
	{
		best = &states[node_index(run, run->source)].v;
		if (!best->present && !best->deleted)
		{
			/*
			 * An absence without a version: a delete dated with the diff's
			 * fence, after every row the diff compared, before any write
			 * made since (which then wins over it, on every node).
			 */
			best = palloc0(sizeof(ConcordRepairVersion));
			best->deleted = true;
			best->known = true;
			best->commit_time = run->fenced;
			best->origin_node = pstrdup(run->source);
		}
		else if (best->origin_node == NULL)
			best->origin_node = pstrdup(run->source);	/* age unknown */
		return best;
	}
	for (int i = 0; i < run->nnodes; i++)
	{
		ConcordRepairVersion *v = &states[i].v;

		if (!v->present && !v->deleted)
			continue;
		if (v->origin_node == NULL)
			v->origin_node = pstrdup(run->nodes[i]);	/* age unknown: its holder's */
		if (best == NULL || concord_version_compare(run->resolver, v, best) > 0)
			best = v;
	}
	return best;
}

static bool
same_content(const ConcordRepairVersion *a, const ConcordRepairVersion *b)
{
	return a->present == b->present &&
		(!a->present || (a->digest && b->digest && strcmp(a->digest, b->digest) == 0));
}

/* The entries of one key: a write on each node that lacks the winner. */
static List *
plan_key(RepairRun *run, const char *key, NodeState *states, List *entries)
{
	ConcordRepairVersion *w = winner_of(run, states);
	char	   *wjson;

	if (w == NULL)
		return entries;
	wjson = concord_version_json(w);
	for (int i = 0; i < run->nnodes; i++)
	{
		RepairEntry *e;

		if (states[i].json == NULL || same_content(&states[i].v, w) ||
			(run->only_local && strcmp(run->nodes[i], run->local) != 0))
			continue;
		e = palloc0(sizeof(RepairEntry));
		e->node = i;
		e->key = pstrdup(key);
		e->expected = states[i].json;
		e->winner = wjson;
		e->wv = w;
		e->planned = !w->present ? "delete" : states[i].v.present ? "update" : "insert";
		entries = lappend(entries, e);
	}
	return entries;
}

/* Reads the run's differences and plans their repair, key by key. */
static List *
plan(RepairRun *run)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run->run_id)};
	List	   *entries = NIL;
	NodeState  *states = NULL;
	char	   *key = NULL;
	Oid			saved_user;
	int			saved_context;
	uint64		n;
	SPITupleTable *tuptable;

	concord_catalog_become_owner("diff_row", &saved_user, &saved_context);
	if (SPI_execute_with_args("SELECT d.key::pg_catalog.text, n.key,"
							  " pg_catalog.jsonb_typeof(n.value->'row') = 'object',"
							  " n.value->>'digest', (n.value->>'commit_time')::pg_catalog.timestamptz,"
							  " n.value->>'origin_node', coalesce((n.value->>'deleted')::pg_catalog.bool, false),"
							  " (n.value->'row')::pg_catalog.text, n.value::pg_catalog.text"
							  " FROM concord.diff_row d, pg_catalog.jsonb_each(d.rows) n"
							  " WHERE d.run_id = $1 ORDER BY d.key, n.key",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the run's differences");
	SetUserIdAndSecContext(saved_user, saved_context);
	tuptable = SPI_tuptable;
	n = SPI_processed;
	for (uint64 r = 0; r < n; r++)
	{
		HeapTuple	tup = tuptable->vals[r];
		TupleDesc	desc = tuptable->tupdesc;
		char	   *k = SPI_getvalue(tup, desc, 1);
		NodeState  *s;
		bool		isnull;

		if (key == NULL || strcmp(k, key) != 0)
		{
			if (key != NULL)
				entries = plan_key(run, key, states, entries);
			key = k;
			states = palloc0(sizeof(NodeState) * run->nnodes);
		}
		s = &states[node_index(run, SPI_getvalue(tup, desc, 2))];
		s->v.present = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull)) && !isnull;
		s->v.digest = SPI_getvalue(tup, desc, 4);
		s->v.commit_time = DatumGetTimestampTz(SPI_getbinval(tup, desc, 5, &isnull));
		s->v.known = !isnull;
		s->v.origin_node = SPI_getvalue(tup, desc, 6);
		s->v.deleted = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
		s->v.row = SPI_getvalue(tup, desc, 8);
		s->json = SPI_getvalue(tup, desc, 9);
	}
	if (key != NULL)
		entries = plan_key(run, key, states, entries);
	return entries;
}

/* A dry run: the plan, in this node's concord.repair_history. */
static void
record_plan(RepairRun *run, List *entries)
{
	Oid			types[8] = {INT8OID, NAMEOID, NAMEOID, TEXTOID, JSONBOID, TEXTOID,
	NAMEOID, TIMESTAMPTZOID};
	Oid			saved_user;
	int			saved_context;
	SPIPlanPtr	insert;
	ListCell   *lc;

	concord_catalog_become_owner("repair_history", &saved_user, &saved_context);
	insert = SPI_prepare("INSERT INTO concord.repair_history"
						 " (run_id, coordinator, node_name, relation, key, action, origin_node, commit_time, dry_run)"
						 " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, true)", 8, types);
	if (insert == NULL)
		elog(ERROR, "could not prepare the plan's record");
	foreach(lc, entries)
	{
		RepairEntry *e = lfirst(lc);
		Datum		values[8];
		char		nulls[8] = "        ";

		values[0] = Int64GetDatum(run->run_id);
		values[1] = DirectFunctionCall1(namein, CStringGetDatum(run->local));
		values[2] = DirectFunctionCall1(namein, CStringGetDatum(run->nodes[e->node]));
		values[3] = CStringGetTextDatum(run->relation);
		values[4] = DirectFunctionCall1(jsonb_in, CStringGetDatum(e->key));
		values[5] = CStringGetTextDatum(e->planned);
		values[6] = DirectFunctionCall1(namein, CStringGetDatum(e->wv->origin_node));
		values[7] = TimestampTzGetDatum(e->wv->commit_time);
		if (!e->wv->known)
			nulls[7] = 'n';
		if (SPI_execute_plan(insert, values, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record the plan");
	}
	SetUserIdAndSecContext(saved_user, saved_context);
}

/* How this node reaches a node of the run: its DSN and password rule. */
static char *
dsn_of(RepairRun *run, int node, bool *password_required)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(run->nodes[node])};
	bool		local = strcmp(run->nodes[node], run->local) == 0;
	bool		isnull;
	Oid			saved_user;
	int			saved_context;
	char	   *dsn;

	concord_catalog_become_owner("node", &saved_user, &saved_context);
	if (SPI_execute_with_args(local ?
							  "SELECT dsn, false FROM concord.node WHERE node_name = $1::pg_catalog.name" :
							  "SELECT s.provider_dsn, s.password_required"
							  " FROM concord.subscription s JOIN concord.node n ON n.node_id = s.provider_node_id"
							  " WHERE n.node_name = $1::pg_catalog.name ORDER BY s.enabled DESC, s.sub_name LIMIT 1",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not look up node \"%s\"", run->nodes[node]);
	SetUserIdAndSecContext(saved_user, saved_context);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("this node no longer subscribes to node \"%s\"", run->nodes[node]),
				 errhint("A repair reaches each node with the DSN of this node's subscription to it.")));
	dsn = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	*password_required = local ? !superuser() :
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return dsn;
}

/* Sends one node its entries; raises an error that names the node. */
static void
repair_node(RepairRun *run, int node, List *entries)
{
	bool		password_required;
	char	   *dsn;
	bool		local = strcmp(run->nodes[node], run->local) == 0;
	const char *relation = local ? psprintf("%u", run->relid) : run->relation;
	char	   *run_id = psprintf(INT64_FORMAT, run->run_id);
	PGconn	   *volatile conn = NULL;
	MemoryContext cxt = CurrentMemoryContext;
	ListCell   *lc;
	bool		any = false;

	foreach(lc, entries)
		any |= ((RepairEntry *) lfirst(lc))->node == node;
	if (!any)
		return;
	dsn = dsn_of(run, node, &password_required);
	PG_TRY();
	{
		conn = concord_remote_connect(dsn, false, "concord repair", password_required);
		foreach(lc, entries)
		{
			RepairEntry *e = lfirst(lc);
			const char *params[6] = {relation, e->key, e->expected, e->winner, run_id, run->local};
			PGresult   *res;

			if (e->node != node)
				continue;
			CHECK_FOR_INTERRUPTS();
			res = concord_remote_exec(conn, "SELECT concord.repair_row($1, $2::pg_catalog.jsonb,"
									  " $3::pg_catalog.jsonb, $4::pg_catalog.jsonb, $5::pg_catalog.int8,"
									  " $6::pg_catalog.name)", 6, params);
			if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
			{
				char	   *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
				char	   *msg = primary ? pstrdup(primary) : concord_remote_error(conn);
				char	   *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
				int			code = state && strlen(state) == 5 ?
					MAKE_SQLSTATE(state[0], state[1], state[2], state[3], state[4]) :
					ERRCODE_CONNECTION_FAILURE;

				if (res)
					PQclear(res);
				ereport(ERROR, (errcode(code), errmsg("%s", msg)));
			}
			PQclear(res);
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		if (conn != NULL)
			concord_remote_finish(conn);
		ereport(ERROR,
				(errcode(edata->sqlerrcode),
				 errmsg("node \"%s\": %s", run->nodes[node],
						concord_redact_dsn(edata->message)),
				 edata->detail ? errdetail_internal("%s", concord_redact_dsn(edata->detail)) : 0,
				 errhint("%s", edata->hint ? edata->hint :
						 "The keys repaired so far stay repaired; run the repair again to finish it.")));
	}
	PG_END_TRY();
	concord_remote_finish(conn);
}

/*
 * Repairs (or, with dry_run, plans the repair of) the differences of a run
 * of this node, local (only this node with only_local: a subscription's
 * repair); returns how many row writes it sent or planned.
 */
int64
concord_repair_run(int64 run_id, const char *source, bool dry_run, const char *local,
				   bool only_local)
{
	RepairRun	run;
	List	   *entries;
	int64		count;

	memset(&run, 0, sizeof(run));
	run.run_id = run_id;
	run.source = source;
	run.only_local = only_local;
	run.local = pstrdup(local);

	SPI_connect();
	load_run(&run);
	check_caller(&run);
	choose_resolver(&run);
	entries = plan(&run);
	if (dry_run)
		record_plan(&run, entries);
	else
		for (int i = 0; i < run.nnodes; i++)
			repair_node(&run, i, entries);
	count = list_length(entries);
	SPI_finish();
	return count;
}
