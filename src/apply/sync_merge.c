/*-------------------------------------------------------------------------
 *
 * sync_merge.c
 *		Resynchronizing a table as a repair: the provider's rows merged in,
 *		key by key, with their versions, nothing truncated.
 *
 * A resynchronization (concord.alter_subscription_resynchronize_table)
 * used to empty the table and copy the provider's rows in as new writes:
 * changes still on their way (this node's own, not yet applied by the
 * provider; a third node's, applied here before the provider) were lost,
 * and every row got a new version (review finding #5).  Now the sync
 * worker compares the table with the provider's copy in the slot's
 * snapshot (the key and digest of every row, concord.table_digest_rows())
 * and, for each key that differs, decides between this node's version and
 * the provider's:
 *
 * - a local version the provider had already received (its own, committed
 *	 before the snapshot; one its causality vector, concord.seen(), read
 *	 before the snapshot, covers; one of unknown age; one of this node's
 *	 that the provider never receives, in a one-way subscription) is
 *	 superseded by the provider's row, tombstone or absence: the provider
 *	 decided after it;
 * - any other local version (in flight to the provider, or from a node it
 *	 does not hear from) meets the provider's through the table's resolver
 *	 of update_exists (last_update_wins when it is not one that decides
 *	 alike everywhere); a local row the provider lacks altogether stays.
 *
 * The winner is written by concord.repair_row() (antientropy/repair_row.c),
 * called here through SPI, a transaction per key: under the winner's
 * origin and commit time, the row locked, the local version read again; a
 * write that landed since (a "stale" answer) is read and decided again.
 * Each write is recorded in concord.repair_history with the subscription's
 * name.  The subscription's other tables, and the changes apply brings
 * from other subscriptions meanwhile, are left alone; the provider's
 * changes after the snapshot arrive through apply once the sync is done
 * (the table's sync_lsn, sync.c).  A merge cut short is made again by the
 * next attempt: keys already merged no longer differ.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "replication/origin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "apply/apply.h"
#include "apply/sync.h"
#include "catalog/tables.h"
#include "conflict/conflict.h"
#include "conflict/seen.h"
#include "conflict/versions.h"
#include "remote/remote.h"

/* Keys fetched from the provider per round trip. */
#define MERGE_FETCH		10000
#define MERGE_BATCH		200
/* A key rewritten this often while being merged is an error. */
#define MERGE_TRIES		50

/* What the provider had received when its snapshot was taken. */
typedef struct ProviderView
{
	bool		usable;			/* the provider lets its role merge */
	char	   *provider;
	TimestampTz clock;			/* its clock before the snapshot */
	TimestampTz created_at;		/* its create_node */
	char	   *local;
	TimestampTz local_created_at;
	List	   *seen;			/* of SeenFrom */
	bool		receives_all;
	List	   *nodes;			/* the names of the nodes this node knows */
} ProviderView;

typedef struct SeenFrom
{
	char	   *node;
	TimestampTz ts;				/* 0: applied nothing of it yet */
	bool		receives;		/* receives its changes now */
} SeenFrom;

static ProviderView View;

/* A timestamp in microseconds since 1970, as the queries below give them. */
#define EPOCH_USECS(col) \
	"(EXTRACT(epoch FROM " col ") * 1000000)::pg_catalog.int8"

static TimestampTz
epoch_usecs(const char *text)
{
	return (TimestampTz) (strtoll(text, NULL, 10) - CONCORD_UNIX_EPOCH_USECS);
}

/*
 * What the merge asks of the provider, as the subscription's role: a
 * provider whose concord predates 0.3.0, or a role without these rights,
 * gets its tables copied as before.
 */
static const char *const MergeRights =
"SELECT pg_catalog.to_regprocedure('concord.seen()') IS NOT NULL AND "
"pg_catalog.has_function_privilege('concord.seen()', 'EXECUTE') AND "
"pg_catalog.has_function_privilege('concord.join_fence(text[], pg_lsn[], interval)', 'EXECUTE') AND "
"pg_catalog.has_function_privilege('concord.table_digest_rows(regclass, jsonb, integer, integer[])', 'EXECUTE') AND "
"pg_catalog.has_function_privilege('concord.table_digest_keys(regclass, jsonb, jsonb)', 'EXECUTE') AND "
"pg_catalog.has_function_privilege('concord.key_columns(regclass)', 'EXECUTE') AND "
"pg_catalog.has_function_privilege('concord.row_version(xid)', 'EXECUTE') AND "
"pg_catalog.has_table_privilege('concord.tombstone', 'SELECT') AND "
"pg_catalog.has_table_privilege('concord.node', 'SELECT') AND "
"pg_catalog.has_table_privilege('concord.departed_node', 'SELECT')";

/*
 * On the provider, in a transaction of conn that the caller ends once the
 * copy's slot (and snapshot) is made: holds the provider's apply commits
 * (concord.join_fence() with no node to wait for) and reads its causality
 * vector, which the snapshot then matches exactly.  Returns whether the
 * provider lets this subscription's role merge; if not, the caller copies.
 */
bool
concord_sync_merge_prepare(PGconn *conn, const char *provider)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	PGresult   *res;
	ConcordNode *local;

	View.usable = false;
	View.provider = pstrdup(provider);
	View.seen = NIL;
	View.receives_all = false;
	res = concord_remote_query(conn, MergeRights, 0, NULL, PGRES_TUPLES_OK);
	View.usable = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (!View.usable)
	{
		MemoryContextSwitchTo(oldcxt);
		return false;
	}
	PQclear(concord_remote_query(conn, "BEGIN", 0, NULL, PGRES_COMMAND_OK));
	PQclear(concord_remote_query(conn, "SELECT FROM concord.join_fence('{}', '{}', NULL)",
								 0, NULL, PGRES_TUPLES_OK));
	res = concord_remote_query(conn,
							   "SELECT origin_node, " EPOCH_USECS("commit_time") ", receives "
							   "FROM concord.seen()",
							   0, NULL, PGRES_TUPLES_OK);
	for (int i = 0; i < PQntuples(res); i++)
	{
		SeenFrom   *s = palloc0(sizeof(SeenFrom));

		s->node = pstrdup(PQgetvalue(res, i, 0));
		s->ts = PQgetisnull(res, i, 1) ? 0 : epoch_usecs(PQgetvalue(res, i, 1));
		s->receives = strcmp(PQgetvalue(res, i, 2), "t") == 0;
		View.receives_all |= strcmp(s->node, "all") == 0;
		View.seen = lappend(View.seen, s);
	}
	PQclear(res);
	res = concord_remote_query(conn,
							   "SELECT " EPOCH_USECS("created_at") " FROM concord.node WHERE is_local",
							   0, NULL, PGRES_TUPLES_OK);
	if (PQntuples(res) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the provider is no concord node any more")));
	View.created_at = epoch_usecs(PQgetvalue(res, 0, 0));
	PQclear(res);
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	local = concord_node_get_local(false);
	View.local = MemoryContextStrdup(TopMemoryContext, local->name);
	View.local_created_at = local->created_at;
	/* read once: the merge asks per key whether an origin is a node's */
	View.nodes = NIL;
	if (SPI_connect() != SPI_OK_CONNECT ||
		SPI_execute("SELECT node_name::pg_catalog.text FROM concord.node", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the nodes");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		MemoryContext spi = MemoryContextSwitchTo(TopMemoryContext);

		View.nodes = lappend(View.nodes, pstrdup(name));
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(oldcxt);
	return true;
}

/* Whether the provider let its tables be merged (sync.c). */
bool
concord_sync_merge_usable(void)
{
	return View.usable;
}

/* The provider's clock read before its snapshot (sync.c). */
void
concord_sync_merge_clock(TimestampTz clock)
{
	View.clock = clock;
}

/*
 * A version of unknown age: none kept, the baseline of an initial copy,
 * or a node's own write from before its create_node.
 */
static void
normalize(ConcordRepairVersion *v)
{
	if (!v->known)
		return;
	if (v->commit_time <= CONCORD_BASELINE_TS ||
		(v->origin_node && strcmp(v->origin_node, View.provider) == 0 &&
		 v->commit_time < View.created_at) ||
		(v->origin_node && strcmp(v->origin_node, View.local) == 0 &&
		 v->commit_time < View.local_created_at))
		v->known = false;
}

/* Whether an origin name is a node's (else a write by hand, or another tool's). */
static bool
is_node(const char *name)
{
	ListCell   *lc;

	foreach(lc, View.nodes)
		if (strcmp(lfirst(lc), name) == 0)
			return true;
	return false;
}

/* The provider's entry for a node: NULL if it does not receive it. */
static SeenFrom *
provider_seen(const char *node)
{
	ListCell   *lc;

	foreach(lc, View.seen)
	{
		SeenFrom   *s = lfirst(lc);

		if (strcmp(s->node, node) == 0)
			return (s->receives || View.receives_all) ? s : NULL;
	}
	return NULL;
}

/* Whether the provider had received the local version at its snapshot. */
static bool
covered(const ConcordRepairVersion *l)
{
	SeenFrom   *s;

	if (!l->known || l->origin_node == NULL)
		return true;
	if (strcmp(l->origin_node, View.provider) == 0)
		return l->commit_time <= View.clock;
	/* written by hand under an origin of no node's: the provider's wins */
	if (!is_node(l->origin_node))
		return true;
	s = provider_seen(l->origin_node);
	if (s != NULL)
		return s->ts != 0 && l->commit_time <= s->ts;
	if (View.receives_all)
		return false;
	/* never to reach the provider: this node's own are overruled */
	return strcmp(l->origin_node, View.local) == 0;
}

/*
 * Whether this node applied the provider's version already: then what it
 * holds is what came of it here (a later write, or a conflict resolved),
 * and the provider's snapshot brings nothing new for the key.
 */
static bool
applied_here(const ConcordRepairVersion *p)
{
	if (!p->known || p->origin_node == NULL || strcmp(p->origin_node, View.local) == 0)
		return true;
	return concord_seen_local(p->origin_node) >= p->commit_time;
}

static bool
same_content(const ConcordRepairVersion *a, const ConcordRepairVersion *b)
{
	return a->present == b->present &&
		(!a->present || (a->digest && b->digest && strcmp(a->digest, b->digest) == 0));
}

/*
 * The version to write here, or NULL to keep the local one (l: as read
 * here, p: the provider's, both normalized).  In a transaction (the
 * resolver may read the nodes' priorities).
 */
static ConcordRepairVersion *
merge_winner(ConcordResolver resolver, const ConcordRepairVersion *l,
			 ConcordRepairVersion *p)
{
	bool		p_versioned = p->present || p->deleted;

	if (same_content(l, p))
		return NULL;
	if (!l->present && !l->deleted)
		return p->present ? p : NULL;
	if (covered(l))
	{
		ConcordRepairVersion *d;

		if (p_versioned)
			return p;
		/*
		 * Gone from the provider with no trace: deleted there, or kept out
		 * by a filter of its own subscription.  Only its own rows, those of
		 * unknown age and this node's own are known to be deleted.
		 */
		if (!l->present ||
			(l->known && strcmp(l->origin_node, View.provider) != 0 &&
			 strcmp(l->origin_node, View.local) != 0 &&
			 is_node(l->origin_node)))
			return NULL;
		/* a delete dated after the row */
		d = palloc0(sizeof(ConcordRepairVersion));
		d->deleted = true;
		d->known = true;
		d->commit_time = View.clock;
		if (l->known && l->commit_time >= d->commit_time)
			d->commit_time = l->commit_time + 1;
		d->origin_node = View.provider;
		return d;
	}
	/* a write the provider has not received: concurrent only with news */
	if (!p_versioned || applied_here(p))
		return NULL;
	return concord_version_compare(resolver, p, l) > 0 ? p : NULL;
}

/* The same, from the provider's answer (commit time in microseconds since 1970). */
static void
version_from_result(PGresult *res, int i, ConcordRepairVersion *v)
{
	v->present = strcmp(PQgetvalue(res, i, 1), "t") == 0;
	v->digest = PQgetisnull(res, i, 2) ? NULL : pstrdup(PQgetvalue(res, i, 2));
	v->known = !PQgetisnull(res, i, 3);
	v->commit_time = v->known ? epoch_usecs(PQgetvalue(res, i, 3)) : 0;
	v->origin_node = PQgetisnull(res, i, 4) ? NULL : pstrdup(PQgetvalue(res, i, 4));
	v->deleted = strcmp(PQgetvalue(res, i, 5), "t") == 0;
	v->row = PQgetisnull(res, i, 6) ? NULL : pstrdup(PQgetvalue(res, i, 6));
}

/* A transaction with SPI; spi_end() ends both and goes back to the caller's context. */
static MemoryContext
spi_begin(void)
{
	MemoryContext caller = CurrentMemoryContext;

	StartTransactionCommand();
	/* deferred constraint triggers fire as the table's owner, not at commit */
	concord_constraints_immediate();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	return caller;
}

static void
spi_end(MemoryContext caller)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
}

/* The provider's keys and digests, in a temporary table here. */
static void
load_provider_keys(PGconn *conn, const char *relation)
{
	const char *params[1] = {relation};
	PGresult   *res;
	MemoryContext caller = spi_begin();
	if (SPI_execute("CREATE TEMP TABLE IF NOT EXISTS concord_resync_keys "
					"(key text PRIMARY KEY, digest text NOT NULL)", false, 0) != SPI_OK_UTILITY ||
		SPI_execute("TRUNCATE pg_temp.concord_resync_keys", false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not make the table of the provider's keys");
	spi_end(caller);
	PQclear(concord_remote_query(conn,
								 "DECLARE concord_resync NO SCROLL CURSOR FOR "
								 "SELECT key::pg_catalog.text, digest "
								 "FROM concord.table_digest_rows($1::pg_catalog.regclass, NULL, 1)",
								 1, params, PGRES_COMMAND_OK));
	do
	{
		List	   *keys = NIL;
		List	   *digests = NIL;
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2];

		CHECK_FOR_INTERRUPTS();
		res = concord_remote_query(conn, "FETCH " CppAsString2(MERGE_FETCH) " FROM concord_resync",
								   0, NULL, PGRES_TUPLES_OK);
		if (PQntuples(res) == 0)
			break;
		(void) spi_begin();
		for (int i = 0; i < PQntuples(res); i++)
		{
			keys = lappend(keys, PQgetvalue(res, i, 0));
			digests = lappend(digests, PQgetvalue(res, i, 1));
		}
		values[0] = CStringGetTextDatum(concord_remote_text_array(keys));
		values[1] = CStringGetTextDatum(concord_remote_text_array(digests));
		if (SPI_execute_with_args("INSERT INTO pg_temp.concord_resync_keys "
								  "SELECT * FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text::pg_catalog.text[]),"
								  " pg_catalog.unnest($2::pg_catalog.text::pg_catalog.text[]))",
								  2, types, values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not keep the provider's keys");
		spi_end(caller);
		PQclear(res);
	} while (true);
	PQclear(res);
	PQclear(concord_remote_query(conn, "CLOSE concord_resync", 0, NULL, PGRES_COMMAND_OK));
}

/* The keys whose row here differs from the provider's (or exists on one side only). */
static List *
differing_keys(const char *relation)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	List	   *keys = NIL;
	MemoryContext cxt = spi_begin();

	values[0] = CStringGetTextDatum(relation);
	if (SPI_execute_with_args("SELECT coalesce(p.key, l.key::pg_catalog.text) "
							  "FROM pg_temp.concord_resync_keys p "
							  "FULL JOIN concord.table_digest_rows($1::pg_catalog.regclass, NULL, 1) l "
							  "ON l.key::pg_catalog.text = p.key "
							  "WHERE p.digest IS DISTINCT FROM l.digest",
							  1, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not compare the table with the provider's");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *key = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		MemoryContext spi = MemoryContextSwitchTo(cxt);

		keys = lappend(keys, pstrdup(key));
		MemoryContextSwitchTo(spi);
	}
	spi_end(cxt);
	return keys;
}

/* Reads this node's versions of keys (a JSON array), in their order, into versions. */
static void
local_versions(const char *relation, const char *keys, ConcordRepairVersion *versions,
			   int nkeys)
{
	Oid			types[2] = {TEXTOID, JSONBOID};
	Datum		values[2];
	MemoryContext caller = spi_begin();

	values[0] = CStringGetTextDatum(relation);
	values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(keys));
	if (SPI_execute_with_args("SELECT k.row_data IS NOT NULL, k.digest, k.commit_time,"
							  " k.origin_node, k.deleted, k.row_data::pg_catalog.text"
							  " FROM concord.table_digest_keys($1::pg_catalog.regclass, NULL, $2) k",
							  2, types, values, NULL, false, 0) != SPI_OK_SELECT ||
		SPI_processed != (uint64) nkeys)
		elog(ERROR, "could not read the versions of keys here");
	for (int i = 0; i < nkeys; i++)
	{
		MemoryContext spi = MemoryContextSwitchTo(caller);

		concord_version_from_spi(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, true, &versions[i]);
		MemoryContextSwitchTo(spi);
	}
	spi_end(caller);
}

/*
 * Merges one key (a JSON object) whose local version was read as raw:
 * decides, has repair_row write the winner; if a write landed meanwhile,
 * reads the key's version again and decides again.  Returns whether it
 * wrote.
 */
static bool
merge_key(const char *relation, const char *subname, ConcordResolver resolver,
		  const char *key, ConcordRepairVersion raw, ConcordRepairVersion *p)
{
	char	   *array = psprintf("[%s]", key);

	for (int tries = 0; tries < MERGE_TRIES; tries++)
	{
		ConcordRepairVersion l = raw;
		ConcordRepairVersion *w;
		Oid			types[7] = {TEXTOID, JSONBOID, JSONBOID, JSONBOID, INT8OID, NAMEOID, NAMEOID};
		Datum		values[7];
		char		nulls[7] = "    n  ";
		char	   *action;
		bool		stale;
		bool		wrote;
		MemoryContext caller;

		CHECK_FOR_INTERRUPTS();
		if (tries > 0)
			local_versions(relation, array, &raw, 1);
		l = raw;
		normalize(&l);
		caller = spi_begin();
		w = merge_winner(resolver, &l, p);
		if (w == NULL)
		{
			spi_end(caller);
			return false;
		}
		values[0] = CStringGetTextDatum(relation);
		values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(key));
		values[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(concord_version_json(&raw)));
		values[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(concord_version_json(w)));
		values[5] = DirectFunctionCall1(namein, CStringGetDatum(View.local));
		values[6] = DirectFunctionCall1(namein, CStringGetDatum(subname));
		if (SPI_execute_with_args("SELECT concord.repair_row($1, $2, $3, $4, $5, $6, $7)",
								  7, types, values, nulls, false, 0) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "could not merge a key");
		action = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		stale = strcmp(action, "stale") == 0;
		wrote = !stale && strcmp(action, "already") != 0;
		spi_end(caller);
		if (!stale)
			return wrote;
	}
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("key %s of table %s changed %d times while it was being resynchronized",
					key, relation, MERGE_TRIES),
			 errhint("The resynchronization is tried again.")));
	return false;				/* keep compiler quiet */
}

/* A batch of keys as a JSON array. */
static char *
keys_array(List *batch)
{
	StringInfoData keys;
	ListCell   *lc;

	initStringInfo(&keys);
	appendStringInfoChar(&keys, '[');
	foreach(lc, batch)
		appendStringInfo(&keys, "%s%s", foreach_current_index(lc) ? ", " : "",
						 (char *) lfirst(lc));
	appendStringInfoChar(&keys, ']');
	return keys.data;
}

/* The provider's versions of a batch of keys, in its snapshot. */
static PGresult *
provider_versions(PGconn *conn, const char *relation, const char *keys)
{
	const char *params[2];

	params[0] = relation;
	params[1] = keys;
	return concord_remote_query(conn,
								"SELECT k.key::pg_catalog.text, k.row_data IS NOT NULL, k.digest, "
								EPOCH_USECS("k.commit_time") ", k.origin_node, k.deleted, "
								"k.row_data::pg_catalog.text "
								"FROM concord.table_digest_keys($1::pg_catalog.regclass, NULL, $2::pg_catalog.jsonb) k",
								2, params, PGRES_TUPLES_OK);
}

static bool
same_version(const ConcordRepairVersion *a, const ConcordRepairVersion *b)
{
	return a->known == b->known && (!a->known || a->commit_time == b->commit_time) &&
		strcmp(a->origin_node, b->origin_node) == 0;
}

/* How a key of a batch is written. */
typedef enum MergeWay
{
	WAY_NONE,					/* the local version stays */
	WAY_ALONE,				/* by concord.repair_row(), one key */
	WAY_INSERT,				/* in a group of inserts (sync_groups.c) */
	WAY_UPDATE				/* in a group of updates */
} MergeWay;

/*
 * Merges a batch of n keys, keys[i] with the provider's version p[i] and
 * the local one here[i]: the inserts and updates by groups of one version
 * (sync_groups.c), the others one by one (merge_key); a key a group left
 * out is read and merged again on its own.  Returns the keys written.
 */
static int64
merge_batch(Oid subid, const char *subname, SyncTable *t, const char *relation,
			ConcordResolver resolver, int n, char **keys, ConcordRepairVersion *p,
			ConcordRepairVersion *here)
{
	MergeWay   *way = palloc(sizeof(MergeWay) * n);
	bool	   *grouped = palloc0(sizeof(bool) * n);
	int64		written = 0;

	MemoryContext caller = CurrentMemoryContext;

	StartTransactionCommand();
	for (int i = 0; i < n; i++)
	{
		ConcordRepairVersion l = here[i];
		ConcordRepairVersion *w;

		normalize(&l);
		w = merge_winner(resolver, &l, &p[i]);
		if (w != &p[i] || !p[i].present)
			way[i] = w == NULL ? WAY_NONE : WAY_ALONE;
		else if (!here[i].present && !here[i].deleted)
			way[i] = WAY_INSERT;
		else if (here[i].present)
			way[i] = WAY_UPDATE;
		else
			way[i] = WAY_ALONE;
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	for (int i = 0; i < n; i++)
	{
		MergeWay	gw = way[i];
		List	   *rows = NIL;
		uint64		done;

		if (grouped[i] || (gw != WAY_INSERT && gw != WAY_UPDATE))
			continue;
		for (int j = i; j < n; j++)
		{
			ConcordGroupRow *g;

			if (grouped[j] || way[j] != gw || !same_version(&p[i], &p[j]))
				continue;
			g = palloc(sizeof(ConcordGroupRow));
			g->key = keys[j];
			g->row = p[j].row;
			g->here = &here[j];
			rows = lappend(rows, g);
			grouped[j] = true;
		}
		done = concord_sync_write_group(subid, subname, View.local, t, relation,
										gw == WAY_UPDATE, rows, &p[i]);
		written += done;
		if (done == (uint64) list_length(rows))
			continue;
		/*
		 * Keys taken, rows changed or locked meanwhile: each on its own,
		 * read again (those the group wrote are found alike, and left).
		 */
		for (int j = i; j < n; j++)
			if (grouped[j] && way[j] == gw && same_version(&p[i], &p[j]))
			{
				local_versions(relation, psprintf("[%s]", keys[j]), &here[j], 1);
				if (merge_key(relation, subname, resolver, keys[j], here[j], &p[j]))
					written++;
			}
	}
	for (int i = 0; i < n; i++)
		if (way[i] == WAY_ALONE &&
			merge_key(relation, subname, resolver, keys[i], here[i], &p[i]))
			written++;
	return written;
}

/* Merges the differing keys of the table, by batches. */
static int64
merge_keys(PGconn *conn, Oid subid, const char *subname, SyncTable *t, const char *relation,
		   ConcordResolver resolver, MemoryContext cxt)
{
	MemoryContext batchcxt = AllocSetContextCreate(cxt, "concord resync batch",
												   ALLOCSET_DEFAULT_SIZES);
	List	   *keys;
	int64		written = 0;

	load_provider_keys(conn, relation);
	keys = differing_keys(relation);
	for (int start = 0; start < list_length(keys); start += MERGE_BATCH)
	{
		List	   *batch;
		char	   *array;
		PGresult   *res;
		ConcordRepairVersion *here;
		ConcordRepairVersion *p;
		char	  **batch_keys;

		MemoryContextSwitchTo(batchcxt);
		batch = NIL;
		for (int i = start; i < list_length(keys) && i < start + MERGE_BATCH; i++)
			batch = lappend(batch, list_nth(keys, i));
		array = keys_array(batch);
		res = provider_versions(conn, relation, array);
		here = palloc(sizeof(ConcordRepairVersion) * list_length(batch));
		local_versions(relation, array, here, list_length(batch));
		if (PQntuples(res) != list_length(batch))
			elog(ERROR, "the provider gave %d versions for %d keys",
				 PQntuples(res), list_length(batch));
		p = palloc(sizeof(ConcordRepairVersion) * list_length(batch));
		batch_keys = palloc(sizeof(char *) * list_length(batch));
		for (int i = 0; i < PQntuples(res); i++)
		{
			version_from_result(res, i, &p[i]);
			normalize(&p[i]);
			if (p[i].origin_node == NULL)
				p[i].origin_node = View.provider;	/* age unknown: the provider's */
			batch_keys[i] = pstrdup(PQgetvalue(res, i, 0));
		}
		PQclear(res);
		written += merge_batch(subid, subname, t, relation, resolver, list_length(batch),
							   batch_keys, p, here);
		MemoryContextSwitchTo(cxt);
		MemoryContextReset(batchcxt);
	}
	return written;
}

/*
 * Whether the error names the table (or one of its partitions, whose
 * indexes raise it), as a constraint violation of this node's does; a
 * violation elsewhere, or one the provider sent back, is not the merge's
 * clash.  Outside any transaction: reads in one of its own.
 */
static bool
clash_on(SyncTable *t, ErrorData *edata)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	bool		on = false;
	MemoryContext caller;

	if (edata->schema_name == NULL || edata->table_name == NULL)
		return false;
	caller = spi_begin();
	values[0] = CStringGetTextDatum(quote_qualified_identifier(t->nspname, t->relname));
	values[1] = CStringGetTextDatum(edata->schema_name);
	values[2] = CStringGetTextDatum(edata->table_name);
	if (SPI_execute_with_args("SELECT EXISTS (SELECT FROM pg_catalog.pg_class c"
							  " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
							  " WHERE n.nspname = $2 AND c.relname = $3"
							  " AND c.oid IN (SELECT $1::pg_catalog.regclass UNION ALL"
							  " SELECT p.relid FROM pg_catalog.pg_partition_tree($1::pg_catalog.regclass) p))",
							  3, types, values, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;

		on = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	spi_end(caller);
	return on;
}

/*
 * Whether an error of the merge is a clash on a unique or exclusion
 * constraint other than the key (the provider's rows moved a value from
 * one key to another, which a merge key by key cannot write in order):
 * then the table is copied instead, and the error left behind.
 */
static bool
clash_left(MemoryContext cxt, const char *subname, SyncTable *t, const char *relation)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION &&
		edata->sqlerrcode != ERRCODE_EXCLUSION_VIOLATION)
		return false;
	FlushErrorState();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(cxt);
	/* a group's origin (concord.repair_row()'s goes at its abort) */
	if (replorigin_session_origin != InvalidRepOriginId)
	{
		replorigin_session_reset();
		replorigin_session_origin = InvalidRepOriginId;
		replorigin_session_origin_timestamp = 0;
	}
	if (!clash_on(t, edata))
		ReThrowError(edata);
	ereport(LOG,
			(errmsg("concord subscription \"%s\": resynchronizing %s by a copy: %s",
					subname, relation, edata->message)));
	return true;
}

/*
 * Merges the provider's copy of table t (in the snapshot conn holds) into
 * this node's.  Runs with no replication origin set up in this session.
 * Returns the number of keys written, or -1 if the table is to be copied
 * instead (clash_left).
 */
int64
concord_sync_merge_table(PGconn *conn, Oid subid, const char *subname, SyncTable *t)
{
	char	   *relation = quote_qualified_identifier(t->nspname, t->relname);
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "concord resync merge",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
	ConcordResolver resolvers[CONCORD_NUM_CONFLICT_TYPES];
	Oid			handlers[CONCORD_NUM_CONFLICT_TYPES];
	ConcordResolver resolver;
	volatile int64 written = 0;
	char	   *sync_commit;

	pgstat_report_activity(STATE_RUNNING, psprintf("resynchronizing %s", relation));
	StartTransactionCommand();
	{
		Relation	rel = concord_sync_open_table(t);

		concord_resolvers_of(RelationGetRelid(rel), resolvers, handlers);
		table_close(rel, NoLock);
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	resolver = resolvers[CONCORD_CONFLICT_UPDATE_EXISTS];
	if (resolver != CONCORD_RESOLVER_FIRST_UPDATE_WINS &&
		resolver != CONCORD_RESOLVER_REPLICA_PRIORITY)
		resolver = CONCORD_RESOLVER_LAST_UPDATE_WINS;

	/*
	 * A merge cut short is made again: its keys' commits need not wait
	 * for the disk (the sync's last transaction, which does, flushes
	 * them all).
	 */
	sync_commit = pstrdup(GetConfigOption("synchronous_commit", false, false));
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	PG_TRY();
	{
		written = merge_keys(conn, subid, subname, t, relation, resolver, cxt);
	}
	PG_CATCH();
	{
		if (!clash_left(cxt, subname, t, relation))
			PG_RE_THROW();
		written = -1;
	}
	PG_END_TRY();
	SetConfigOption("synchronous_commit", sync_commit, PGC_SUSET, PGC_S_OVERRIDE);
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
	return written;
}
