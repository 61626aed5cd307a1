/*-------------------------------------------------------------------------
 *
 * diff.c
 *		concord.table_diff()'s background worker: an exact comparison of a
 *		table across nodes while writes and replication go on.
 *
 * A run (one row of concord.diff_run, made by concord.table_diff) goes:
 *	1. a fence on every node (concord.fence()), then the barrier: every
 *	   node waits until it holds every other node's changes up to that
 *	   node's fence (concord.wait_for_token()).  A row version older than
 *	   its origin's fence has then reached every node: it has settled;
 *	   any newer one is in flight.
 *	2. per node, the digests of the settled rows by bucket of key hash
 *	   (as concord.table_digest() gives them); buckets whose count or
 *	   digest differ between nodes hold a difference, or a row in flight.
 *	3. per node, the rows of those buckets (as concord.table_digest_rows()
 *	   lists them): a key absent from some node, or whose digests differ,
 *	   is a candidate, unless it is in flight on some node.
 *	   Steps 2 and 3 read each node's table in steps of its own
 *	   statements (concord.table_digest_step(), read_in_steps()), with a
 *	   pause of concord.diff_cost_delay after each: a row that an update
 *	   moved between two steps (a version in flight) may be missed or
 *	   read twice there, and is then met in flight at step 4.
 *	4. a second fence and barrier, then each candidate's row (or
 *	   tombstone) on every node (concord.table_digest_keys()): a key still
 *	   settled everywhere and still different is a difference.  A key
 *	   deleted on a node after the first fence is in flight there at the
 *	   first round, and at the second either settled (then every node has
 *	   received the delete) or in flight again.
 * The differences and the run's counts are written in one transaction at
 * the end: a run that fails has none, only its error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "remote/remote.h"
#include "shmem/shmem.h"
#include "antientropy/diff.h"

/* Keys asked for per call of concord.table_digest_keys(). */
#define DIFF_KEYS_PER_CALL	500

typedef struct DiffRun
{
	int64		run_id;
	char	   *relation;		/* qualified, quoted name, for the peers */
	char	   *local_relation; /* its OID here, as text */
	int			buckets;
	char	   *buckets_text;	/* the same, as the digests' parameter */
	int			cost_delay;		/* ms between two steps of a read */
	int			cost_limit;		/* rows a node reads per step */
	TimestampTz deadline;
	char	   *timeout;		/* the run's timeout, for messages */
	int			nnodes;
	DiffNode   *nodes;			/* [0]: this node */
	char	   *names_literal;	/* their names, as a name[] literal */
	/* results */
	int64		rows_settled;
	int64		in_flight;
	int			buckets_differing;
	int64		keys_compared;
	int64		keys_in_flight;
	int64		differences;
	char	   *fences;
	char	   *confirm_fences;
	List	   *candidates;		/* key texts (jsonb) */
	List	   *findings;		/* DiffFinding */
} DiffRun;

typedef struct DiffFinding
{
	char	   *key;
	const char *kind;
	char	   *rows;			/* jsonb text: per node, row and version */
} DiffFinding;

/* One row of a node, as concord.table_digest_rows() listed it. */
typedef struct DiffEntry
{
	char	   *key;
	int			node;
	char	   *digest;
	bool		settled;
} DiffEntry;

static void
check_deadline(DiffRun *run)
{
	CHECK_FOR_INTERRUPTS();
	if (GetCurrentTimestamp() >= run->deadline)
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("the diff did not end within its timeout (%s)", run->timeout)));
}

/*
 * The parameters of a step on the table, as concord_diff_query_all takes
 * them: the table first (this node's by OID, the one the caller was
 * checked for; the peers' by name), then the same values for every node.
 */
static const char **
table_params(DiffRun *run, int nparams,...)
{
	const char **params = palloc(sizeof(char *) * nparams * run->nnodes);
	va_list		args;

	for (int i = 0; i < run->nnodes; i++)
		params[i * nparams] = run->nodes[i].dsn == NULL ? run->local_relation : run->relation;
	va_start(args, nparams);
	for (int p = 1; p < nparams; p++)
	{
		const char *value = va_arg(args, const char *);

		for (int i = 0; i < run->nnodes; i++)
			params[i * nparams + p] = value;
	}
	va_end(args);
	return params;
}

/*
 * A fence on every node; returns the fences as concord.table_digest()
 * takes them ({"node": "fence time", ...}).
 */
static char *
take_fences(DiffRun *run)
{
	StringInfoData fences;
	const char **params = palloc(sizeof(char *) * 2 * run->nnodes);
	DiffResult **res;

	check_deadline(run);
	for (int i = 0; i < run->nnodes; i++)
	{
		params[2 * i] = concord_diff_interval_left(run->deadline);
		params[2 * i + 1] = run->names_literal;
	}
	res = concord_diff_query_all(run->nodes, run->nnodes,
								 "SELECT f.fence_time, f.token,"
								 " (SELECT pg_catalog.string_agg(CASE WHEN n.name = ANY (f.receives_from)"
								 " OR 'all' = ANY (f.receives_from) THEN 't' ELSE 'f' END, '' ORDER BY n.ord)"
								 " FROM pg_catalog.unnest($2::pg_catalog.name[]) WITH ORDINALITY n(name, ord))"
								 " FROM concord.fence($1::pg_catalog.interval) f",
								 3, 2, params, run->deadline);
	initStringInfo(&fences);
	appendStringInfoChar(&fences, '{');
	for (int i = 0; i < run->nnodes; i++)
	{
		DiffNode   *node = &run->nodes[i];

		if (res[i]->nrows != 1 || DIFF_CELL(res[i], 0, 0) == NULL ||
			DIFF_CELL(res[i], 0, 1) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("node \"%s\" returned no fence", node->name)));
		node->fence_time = DIFF_CELL(res[i], 0, 0);
		node->token = DIFF_CELL(res[i], 0, 1);
		node->receives = DIFF_CELL(res[i], 0, 2);
		if (node->receives == NULL || (int) strlen(node->receives) != run->nnodes)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("node \"%s\" did not say whose changes it receives", node->name)));
		if (i > 0)
			appendStringInfoString(&fences, ", ");
		escape_json(&fences, node->name);
		appendStringInfoString(&fences, ": ");
		escape_json(&fences, node->fence_time);
	}
	appendStringInfoChar(&fences, '}');
	return fences.data;
}

/*
 * The causal tokens of every node but one, as one token: the fences that
 * node waits for.  A node does not wait for the fence of a node whose
 * changes no subscription of it brings (one-way replication): that
 * node's rows never reach it, and count as settled once older than their
 * fence, like the rest.
 */
static char *
tokens_but(DiffRun *run, int skip)
{
	StringInfoData token;
	bool		first = true;

	initStringInfo(&token);
	appendStringInfoChar(&token, '{');
	for (int i = 0; i < run->nnodes; i++)
	{
		const char *t = run->nodes[i].token;
		size_t		len = strlen(t);

		/* nor the fence of a node whose changes it never receives */
		if (i == skip || run->nodes[skip].receives[i] != 't')
			continue;
		/* a token is a JSON object: its members, without the braces */
		if (len < 2 || t[0] != '{' || t[len - 1] != '}')
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("node \"%s\" returned a malformed causal token",
							run->nodes[i].name)));
		if (len == 2)
			continue;
		if (!first)
			appendStringInfoString(&token, ", ");
		appendBinaryStringInfo(&token, t + 1, len - 2);
		first = false;
	}
	appendStringInfoChar(&token, '}');
	return token.data;
}

/*
 * The barrier: every node holds every other node's changes up to that
 * node's fence, from whichever path they arrive (if any does).
 */
static void
wait_for_fences(DiffRun *run)
{
	const char **params = palloc(sizeof(char *) * 2 * run->nnodes);
	DiffResult **res;

	check_deadline(run);
	for (int j = 0; j < run->nnodes; j++)
	{
		params[2 * j] = tokens_but(run, j);
		params[2 * j + 1] = concord_diff_interval_left(run->deadline);
	}
	res = concord_diff_query_all(run->nodes, run->nnodes,
								 "SELECT concord.wait_for_token($1, $2::pg_catalog.interval)",
								 1, 2, params, run->deadline);
	for (int j = 0; j < run->nnodes; j++)
	{
		DiffNode   *node = &run->nodes[j];

		if (res[j]->nrows != 1 || DIFF_CELL(res[j], 0, 0) == NULL ||
			strcmp(DIFF_CELL(res[j], 0, 0), "t") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("node \"%s\" did not receive the other nodes' changes up to their fences within the diff's timeout (%s)",
							node->name, run->timeout),
					 errdetail("It waited for %s.", params[2 * j]),
					 errhint("Check its subscriptions (concord.subscription_status on \"%s\"), or run the diff with a longer timeout.",
							 node->name)));
	}
}

static uint64
hex64(const char *hex)
{
	char		buf[17];

	memcpy(buf, hex, 16);
	buf[16] = '\0';
	return strtou64(buf, NULL, 16);
}

/* Rows a node reads per step when the diff does not pause. */
#define DIFF_STEP_ROWS_UNPACED	100000

/* The pause between two steps of a read (concord.diff_cost_delay). */
static void
pause_between_steps(DiffRun *run)
{
	long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), run->deadline);

	if (run->cost_delay <= 0)
		return;
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 Min(run->cost_delay, Max(left, 1)), PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	check_deadline(run);
}

/*
 * Reads the table on every node in steps (concord.table_digest_step()),
 * each a statement of its own, with a pause between steps; then asks
 * every node for the read's result (result_sql, of ncols columns).
 * only_buckets: NULL (the buckets summed) or the buckets whose rows are
 * listed.
 */
static DiffResult **
read_in_steps(DiffRun *run, const char *only_buckets, const char *result_sql,
			  int ncols)
{
	char	  **next = palloc(sizeof(char *) * run->nnodes);
	DiffNode   *active = palloc(sizeof(DiffNode) * run->nnodes);
	int		   *which = palloc(sizeof(int) * run->nnodes);
	const char **params = palloc(sizeof(char *) * 6 * run->nnodes);
	char	   *max_rows = psprintf("%d", run->cost_delay > 0 ? run->cost_limit :
									Max(run->cost_limit, DIFF_STEP_ROWS_UNPACED));

	for (int i = 0; i < run->nnodes; i++)
		next[i] = "0";
	for (;;)
	{
		int			n = 0;
		bool		more = false;
		DiffResult **res;

		for (int i = 0; i < run->nnodes; i++)
		{
			if (next[i] == NULL)
				continue;
			active[n] = run->nodes[i];
			which[n] = i;
			params[6 * n] = run->nodes[i].dsn == NULL ? run->local_relation : run->relation;
			params[6 * n + 1] = run->fences;
			params[6 * n + 2] = run->buckets_text;
			params[6 * n + 3] = only_buckets;
			params[6 * n + 4] = next[i];
			params[6 * n + 5] = max_rows;
			n++;
		}
		if (n == 0)
			break;
		check_deadline(run);
		res = concord_diff_query_all(active, n,
									 "SELECT concord.table_digest_step(pg_catalog.regclassin($1::pg_catalog.cstring),"
									 " $2::pg_catalog.jsonb, $3::pg_catalog.int4, $4::pg_catalog.int4[],"
									 " $5::pg_catalog.int8, $6::pg_catalog.int8)",
									 1, 6, params, run->deadline);
		for (int k = 0; k < n; k++)
		{
			if (res[k]->nrows != 1)
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg("node \"%s\" returned no step of its read",
								run->nodes[which[k]].name)));
			next[which[k]] = DIFF_CELL(res[k], 0, 0);
			if (next[which[k]] != NULL)
				more = true;
		}
		if (more)
			pause_between_steps(run);
	}
	check_deadline(run);
	return concord_diff_query_all(run->nodes, run->nnodes, result_sql, ncols,
								  0, params, run->deadline);
}

/*
 * Step 2: the digests of every node by bucket; returns the buckets that
 * differ, as an int[] literal, or NULL if none does.
 */
static char *
differing_buckets(DiffRun *run)
{
	MemoryContext runcxt = CurrentMemoryContext;
	MemoryContext step = AllocSetContextCreate(runcxt, "concord diff step",
											   ALLOCSET_DEFAULT_SIZES);
	int64	   *counts;
	uint64	   *digests;
	StringInfoData list;
	DiffResult **answers;

	initStringInfo(&list);
	MemoryContextSwitchTo(step);
	counts = palloc0(sizeof(int64) * run->buckets * run->nnodes);
	digests = palloc0(sizeof(uint64) * 2 * run->buckets * run->nnodes);

	check_deadline(run);
	answers = read_in_steps(run, NULL,
							"SELECT bucket, row_count, digest, in_flight"
							" FROM concord.table_digest_step_buckets()", 4);
	for (int i = 0; i < run->nnodes; i++)
	{
		DiffResult *res = answers[i];

		for (int r = 0; r < res->nrows; r++)
		{
			const char *digest = DIFF_CELL(res, r, 2);
			int			b;
			int64		count;
			int			at;

			if (DIFF_CELL(res, r, 0) == NULL || DIFF_CELL(res, r, 1) == NULL ||
				DIFF_CELL(res, r, 3) == NULL || digest == NULL || strlen(digest) != 32 ||
				(b = pg_strtoint32(DIFF_CELL(res, r, 0))) < 0 || b >= run->buckets)
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg("node \"%s\" returned a malformed digest", run->nodes[i].name)));
			count = pg_strtoint64(DIFF_CELL(res, r, 1));
			at = i * run->buckets + b;
			counts[at] = count;
			digests[2 * at] = hex64(digest);
			digests[2 * at + 1] = hex64(digest + 16);
			run->in_flight += pg_strtoint64(DIFF_CELL(res, r, 3));
			if (i == 0)
				run->rows_settled += count;
		}
	}

	MemoryContextSwitchTo(runcxt);
	for (int b = 0; b < run->buckets; b++)
	{
		for (int i = 1; i < run->nnodes; i++)
		{
			int			at = i * run->buckets + b;

			if (counts[at] != counts[b] || digests[2 * at] != digests[2 * b] ||
				digests[2 * at + 1] != digests[2 * b + 1])
			{
				appendStringInfo(&list, "%s%d", list.len ? "," : "{", b);
				run->buckets_differing++;
				break;
			}
		}
	}
	MemoryContextDelete(step);
	if (list.len == 0)
		return NULL;
	appendStringInfoChar(&list, '}');
	return list.data;
}

static int
entry_cmp(const void *a, const void *b)
{
	const DiffEntry *ea = (const DiffEntry *) a;
	const DiffEntry *eb = (const DiffEntry *) b;
	int			c = strcmp(ea->key, eb->key);

	return c != 0 ? c : ea->node - eb->node;
}

/*
 * Step 3: the rows of the differing buckets on every node; the keys
 * absent from a node or of differing digests, settled everywhere, become
 * candidates.
 */
static void
find_candidates(DiffRun *run, const char *only_buckets)
{
	MemoryContext runcxt = CurrentMemoryContext;
	MemoryContext step = AllocSetContextCreate(runcxt, "concord diff step",
											   ALLOCSET_DEFAULT_SIZES);
	DiffEntry  *entries = NULL;
	int			nentries = 0;
	int			maxentries = 0;
	DiffResult **answers;

	MemoryContextSwitchTo(step);

	check_deadline(run);
	answers = read_in_steps(run, only_buckets,
							"SELECT key, digest, settled"
							" FROM concord.table_digest_step_rows()", 3);
	for (int i = 0; i < run->nnodes; i++)
	{
		DiffResult *res = answers[i];

		if (nentries + res->nrows > maxentries)
		{
			maxentries = Max(nentries + res->nrows, 2 * maxentries);
			entries = entries ? repalloc_huge(entries, sizeof(DiffEntry) * maxentries) :
				palloc_extended(sizeof(DiffEntry) * Max(maxentries, 1), MCXT_ALLOC_HUGE);
		}
		for (int r = 0; r < res->nrows; r++)
		{
			DiffEntry  *e = &entries[nentries++];

			e->key = DIFF_CELL(res, r, 0);
			e->digest = DIFF_CELL(res, r, 1);
			e->settled = DIFF_CELL(res, r, 2) && strcmp(DIFF_CELL(res, r, 2), "t") == 0;
			e->node = i;
			if (e->key == NULL || e->digest == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg("node \"%s\" returned a row with no key or digest",
								run->nodes[i].name)));
		}
	}
	if (nentries > 0)
		qsort(entries, nentries, sizeof(DiffEntry), entry_cmp);
	for (int start = 0, end; start < nentries; start = end)
	{
		bool		settled = true;
		bool		same = true;

		for (end = start; end < nentries && strcmp(entries[end].key, entries[start].key) == 0; end++)
		{
			settled &= entries[end].settled;
			same &= strcmp(entries[end].digest, entries[start].digest) == 0;
			/* read twice: an update moved its row between two steps */
			if (end > start && entries[end].node == entries[end - 1].node)
				settled = false;
		}
		run->keys_compared++;
		if (!settled)
			run->keys_in_flight++;
		else if (!same || end - start != run->nnodes)
		{
			MemoryContextSwitchTo(runcxt);
			run->candidates = lappend(run->candidates, pstrdup(entries[start].key));
			MemoryContextSwitchTo(step);
		}
	}
	MemoryContextSwitchTo(runcxt);
	MemoryContextDelete(step);
}

/* A node's row and version of a key, for concord.diff_row.rows. */
static void
append_node_row(StringInfo out, DiffNode *node, DiffResult *res, int r)
{
	const char *row = DIFF_CELL(res, r, 1);

	escape_json(out, node->name);
	appendStringInfo(out, ": {\"row\": %s, \"digest\": ", row ? row : "null");
	if (DIFF_CELL(res, r, 2))
		escape_json(out, DIFF_CELL(res, r, 2));
	else
		appendStringInfoString(out, "null");
	appendStringInfoString(out, ", \"commit_time\": ");
	if (DIFF_CELL(res, r, 3))
		escape_json(out, DIFF_CELL(res, r, 3));
	else
		appendStringInfoString(out, "null");
	appendStringInfoString(out, ", \"origin_node\": ");
	if (DIFF_CELL(res, r, 4))
		escape_json(out, DIFF_CELL(res, r, 4));
	else
		appendStringInfoString(out, "null");
	appendStringInfo(out, ", \"deleted\": %s}",
					 DIFF_CELL(res, r, 6) && strcmp(DIFF_CELL(res, r, 6), "t") == 0 ?
					 "true" : "false");
}

/* Classifies one key from every node's answer (row r of each). */
static void
classify(DiffRun *run, DiffResult **answers, int r, const char *key)
{
	int			present = 0;
	bool		same = true;
	const char *digest = NULL;
	DiffFinding *finding;
	StringInfoData rows;

	for (int i = 0; i < run->nnodes; i++)
	{
		const char *settled = DIFF_CELL(answers[i], r, 5);
		const char *d = DIFF_CELL(answers[i], r, 2);

		if (settled == NULL || strcmp(settled, "t") != 0)
		{
			run->keys_in_flight++;
			return;
		}
		if (DIFF_CELL(answers[i], r, 1) == NULL)
			continue;
		present++;
		if (digest != NULL && d != NULL && strcmp(d, digest) != 0)
			same = false;
		digest = d;
	}
	if (present == 0 || (present == run->nnodes && same))
		return;					/* mended since the first round */

	finding = palloc(sizeof(DiffFinding));
	finding->key = pstrdup(key);
	if (DIFF_CELL(answers[0], r, 1) == NULL)
		finding->kind = "missing";
	else
		finding->kind = present == run->nnodes ? "differs" : "extra";
	initStringInfo(&rows);
	appendStringInfoChar(&rows, '{');
	for (int i = 0; i < run->nnodes; i++)
	{
		if (i > 0)
			appendStringInfoString(&rows, ", ");
		append_node_row(&rows, &run->nodes[i], answers[i], r);
	}
	appendStringInfoChar(&rows, '}');
	finding->rows = rows.data;
	run->findings = lappend(run->findings, finding);
	run->differences++;
}

/* Step 4: each candidate again, after a second fence. */
static void
confirm_candidates(DiffRun *run)
{
	MemoryContext runcxt = CurrentMemoryContext;
	MemoryContext batch = AllocSetContextCreate(runcxt, "concord diff batch",
												ALLOCSET_DEFAULT_SIZES);
	DiffResult **answers;
	int			ncand = list_length(run->candidates);

	run->confirm_fences = take_fences(run);
	wait_for_fences(run);
	for (int first = 0; first < ncand; first += DIFF_KEYS_PER_CALL)
	{
		int			last = Min(first + DIFF_KEYS_PER_CALL, ncand);
		StringInfoData keys;

		MemoryContextReset(batch);
		MemoryContextSwitchTo(batch);

		initStringInfo(&keys);
		appendStringInfoChar(&keys, '[');
		for (int k = first; k < last; k++)
		{
			if (k > first)
				appendStringInfoString(&keys, ", ");
			appendStringInfoString(&keys, list_nth(run->candidates, k));
		}
		appendStringInfoChar(&keys, ']');
		check_deadline(run);
		answers = concord_diff_query_all(run->nodes, run->nnodes,
										 "SELECT key, row_data, digest, commit_time, origin_node, settled, deleted"
										 " FROM concord.table_digest_keys(pg_catalog.regclassin($1::pg_catalog.cstring), $2::pg_catalog.jsonb, $3::pg_catalog.jsonb)",
										 7, 3, table_params(run, 3, run->confirm_fences, keys.data),
										 run->deadline);
		for (int i = 0; i < run->nnodes; i++)
		{
			if (answers[i]->nrows != last - first)
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg("node \"%s\" returned %d rows for %d keys",
								run->nodes[i].name, answers[i]->nrows, last - first)));
		}
		MemoryContextSwitchTo(runcxt);
		for (int k = first; k < last; k++)
			classify(run, answers, k - first, list_nth(run->candidates, k));
	}
	MemoryContextDelete(batch);
}

/*
 * Runs an SQL statement of the worker's own, in the current transaction;
 * nulls as SPI takes them (NULL: none).
 */
static void
run_sql(const char *sql, int nparams, Oid *types, Datum *values,
		const char *nulls, int expected)
{
	if (SPI_execute_with_args(sql, nparams, types, values, nulls, false, 0) != expected)
		elog(ERROR, "could not record the diff's result");
}

/* Writes the differences and the run's end, in one transaction. */
static void
record_result(DiffRun *run)
{
	ListCell   *lc;
	Oid			types[12] = {INT8OID, TEXTOID, TEXTOID, INT8OID, INT8OID,
	INT4OID, INT8OID, INT8OID, INT8OID, TEXTOID, TEXTOID, INT8OID};
	Datum		values[12];
	char		nulls[13] = "  n         ";

	Oid			rtypes[5] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	SPIPlanPtr	insert = NULL;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	if (run->findings != NIL &&
		(insert = SPI_prepare("INSERT INTO concord.diff_row (run_id, relation, key, kind, rows)"
							  " VALUES ($1, $2, $3::pg_catalog.jsonb, $4, $5::pg_catalog.jsonb)"
							  " ON CONFLICT DO NOTHING", 5, rtypes)) == NULL)
		elog(ERROR, "could not prepare the recording of the differences");
	foreach(lc, run->findings)
	{
		DiffFinding *f = lfirst(lc);
		Datum		rvalues[5];

		rvalues[0] = Int64GetDatum(run->run_id);
		rvalues[1] = CStringGetTextDatum(run->relation);
		rvalues[2] = CStringGetTextDatum(f->key);
		rvalues[3] = CStringGetTextDatum(f->kind);
		rvalues[4] = CStringGetTextDatum(f->rows);
		if (SPI_execute_plan(insert, rvalues, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record the diff's result");
	}
	values[0] = Int64GetDatum(run->run_id);
	values[1] = CStringGetTextDatum(run->differences > 0 ? "divergent" : "clean");
	values[2] = (Datum) 0;
	values[3] = Int64GetDatum(run->rows_settled);
	values[4] = Int64GetDatum(run->in_flight);
	values[5] = Int32GetDatum(run->buckets_differing);
	values[6] = Int64GetDatum(run->keys_compared);
	values[7] = Int64GetDatum(run->keys_in_flight);
	values[8] = Int64GetDatum(run->differences);
	values[9] = run->fences ? CStringGetTextDatum(run->fences) : (Datum) 0;
	values[10] = run->confirm_fences ? CStringGetTextDatum(run->confirm_fences) : (Datum) 0;
	nulls[10] = run->confirm_fences ? ' ' : 'n';
	values[11] = Int64GetDatum(concord_diff_bytes_received);
	run_sql("UPDATE concord.diff_run SET status = $2, error = $3,"
			" finished_at = pg_catalog.clock_timestamp(),"
			" seconds = pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - started_at),"
			" rows_settled = $4, in_flight = $5, buckets_differing = $6,"
			" keys_compared = $7, keys_in_flight = $8, differences = $9,"
			" fences = $10::pg_catalog.jsonb, confirm_fences = $11::pg_catalog.jsonb, bytes_received = $12"
			" WHERE run_id = $1 AND status = 'running'",
			12, types, values, nulls, SPI_OK_UPDATE);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* Records the run as failed with the error being handled. */
static void
record_failure(int64 run_id, const char *message)
{
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2];

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	values[0] = Int64GetDatum(run_id);
	values[1] = CStringGetTextDatum(message);
	run_sql("UPDATE concord.diff_run SET status = 'failed', error = $2,"
			" finished_at = pg_catalog.clock_timestamp(),"
			" seconds = pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - started_at)"
			" WHERE run_id = $1 AND status = 'running'",
			2, types, values, NULL, SPI_OK_UPDATE);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* The run's node names as a name[] literal, each quoted. */
static char *
names_literal(DiffRun *run)
{
	StringInfoData out;

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	for (int i = 0; i < run->nnodes; i++)
	{
		if (i > 0)
			appendStringInfoChar(&out, ',');
		appendStringInfoChar(&out, '"');
		for (const char *c = run->nodes[i].name; *c; c++)
		{
			if (*c == '"' || *c == '\\')
				appendStringInfoChar(&out, '\\');
			appendStringInfoChar(&out, *c);
		}
		appendStringInfoChar(&out, '"');
	}
	appendStringInfoChar(&out, '}');
	return out.data;
}

/*
 * Reads the run (once its creator's transaction ended) and the DSNs of
 * its peers: NULL if the run is not there (its creator rolled back).
 */
static DiffRun *
load_run(int64 run_id, MemoryContext cxt)
{
	DiffRun    *run = NULL;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run_id)};

	SPI_connect();
	run_sql("SELECT relation, buckets, timeout::pg_catalog.text, pg_catalog.clock_timestamp() + timeout,"
			" nodes::pg_catalog.text[], relid::pg_catalog.text, started_by"
			" FROM concord.diff_run WHERE run_id = $1 AND status = 'running'",
			1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		ArrayType  *nodes;
		Datum	   *names;
		int			nnames;

		MemoryContextSwitchTo(cxt);
		run = palloc0(sizeof(DiffRun));
		run->run_id = run_id;
		run->relation = SPI_getvalue(tup, desc, 1);
		run->buckets = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		run->buckets_text = psprintf("%d", run->buckets);
		run->timeout = SPI_getvalue(tup, desc, 3);
		run->deadline = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
		nodes = DatumGetArrayTypePCopy(SPI_getbinval(tup, desc, 5, &isnull));
		deconstruct_array(nodes, TEXTOID, -1, false, TYPALIGN_INT, &names, NULL, &nnames);
		run->nnodes = nnames;
		run->nodes = palloc0(sizeof(DiffNode) * nnames);
		for (int i = 0; i < nnames; i++)
			run->nodes[i].name = TextDatumGetCString(names[i]);
		run->names_literal = names_literal(run);
		run->local_relation = SPI_getvalue(tup, desc, 6);
		run->nodes[0].local_user = DatumGetObjectId(SPI_getbinval(tup, desc, 7, &isnull));
		for (int i = 1; i < nnames; i++)
		{
			Oid			ntypes[1] = {TEXTOID};
			Datum		nvalues[1] = {names[i]};

			run_sql("SELECT s.provider_dsn, s.password_required"
					" FROM concord.subscription s JOIN concord.node n ON n.node_id = s.provider_node_id"
					" WHERE n.node_name = $1::pg_catalog.name ORDER BY s.enabled DESC, s.sub_name LIMIT 1",
					1, ntypes, nvalues, NULL, SPI_OK_SELECT);
			if (SPI_processed != 1)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("this node no longer subscribes to node \"%s\"", run->nodes[i].name)));
			MemoryContextSwitchTo(cxt);
			run->nodes[i].dsn = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			run->nodes[i].password_required =
				DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		}
	}
	SPI_finish();
	MemoryContextSwitchTo(cxt);
	return run;
}

static void
diff_run(DiffRun *run)
{
	char	   *only_buckets;

	for (int i = 1; i < run->nnodes; i++)
	{
		check_deadline(run);
		concord_diff_connect(&run->nodes[i], run->deadline);
	}
	run->fences = take_fences(run);
	wait_for_fences(run);
	only_buckets = differing_buckets(run);
	if (only_buckets != NULL)
		find_candidates(run, only_buckets);
	if (run->candidates != NIL)
		confirm_candidates(run);
	for (int i = 1; i < run->nnodes; i++)
		concord_diff_disconnect(&run->nodes[i]);
	record_result(run);
	ereport(LOG,
			(errmsg("concord diff run " INT64_FORMAT " of %s: %s, " INT64_FORMAT " differences, " INT64_FORMAT " keys in flight",
					run->run_id, run->relation,
					run->differences > 0 ? "divergent" : "clean",
					run->differences, run->keys_in_flight)));
}

void
concord_diff_main(Datum main_arg)
{
	int64		run_id = DatumGetInt64(main_arg);
	TransactionId creator;
	int			cost_delay;
	int			cost_limit;
	MemoryContext cxt;
	DiffRun    *volatile run = NULL;

	memcpy(&creator, MyBgworkerEntry->bgw_extra + sizeof(Oid), sizeof(TransactionId));
	memcpy(&cost_delay, MyBgworkerEntry->bgw_extra + sizeof(Oid) + sizeof(TransactionId),
		   sizeof(int));
	memcpy(&cost_limit, MyBgworkerEntry->bgw_extra + sizeof(Oid) + sizeof(TransactionId) +
		   sizeof(int), sizeof(int));
	(void) concord_worker_connect();
	/* fence times travel as text: read back alike on every node */
	SetConfigOption("datestyle", "ISO, YMD", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("timezone", "UTC", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("intervalstyle", "postgres", PGC_SUSET, PGC_S_OVERRIDE);
	/* names of its own statements: none of a user's schemas, temp last */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	cxt = AllocSetContextCreate(TopMemoryContext, "concord diff run",
								ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);

	/* The run is there once the transaction that asked for it committed. */
	StartTransactionCommand();
	if (TransactionIdIsValid(creator))
		XactLockTableWait(creator, NULL, NULL, XLTW_None);
	PushActiveSnapshot(GetTransactionSnapshot());
	PG_TRY();
	{
		run = load_run(run_id, cxt);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		record_failure(run_id, edata->message);
		proc_exit(0);
	}
	PG_END_TRY();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	if (run == NULL)
		proc_exit(0);
	run->cost_delay = cost_delay;
	run->cost_limit = Max(cost_limit, 1);
	pgstat_report_activity(STATE_RUNNING, psprintf("diff run " INT64_FORMAT " of %s",
												   run_id, run->relation));

	PG_TRY();
	{
		diff_run(run);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		for (int i = 1; i < run->nnodes; i++)
			concord_diff_disconnect(&run->nodes[i]);
		ereport(LOG,
				(errmsg("concord diff run " INT64_FORMAT " of %s failed: %s",
						run_id, run->relation, concord_redact_dsn(edata->message))));
		record_failure(run_id, concord_redact_dsn(edata->message));
	}
	PG_END_TRY();
	proc_exit(0);
}

/*
 * Starts the worker of a run; it waits for the creator's transaction to
 * end.  Returns false if no worker slot is free; *pid is the worker's.
 */
bool
concord_diff_start(int64 run_id, TransactionId creator, int cost_delay,
				   int cost_limit, int *pid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	pid_t		worker_pid;
	BgwHandleStatus status;

	concord_fill_worker(&worker, "concord diff", "concord_diff_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "concord diff " INT64_FORMAT, run_id);
	worker.bgw_main_arg = Int64GetDatum(run_id);
	memcpy(worker.bgw_extra, &MyDatabaseId, sizeof(Oid));
	memcpy(worker.bgw_extra + sizeof(Oid), &creator, sizeof(TransactionId));
	memcpy(worker.bgw_extra + sizeof(Oid) + sizeof(TransactionId), &cost_delay, sizeof(int));
	memcpy(worker.bgw_extra + sizeof(Oid) + sizeof(TransactionId) + sizeof(int),
		   &cost_limit, sizeof(int));
	worker.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		return false;
	status = WaitForBackgroundWorkerStartup(handle, &worker_pid);
	if (status == BGWH_POSTMASTER_DIED)
		ereport(ERROR,
				(errcode(ERRCODE_ADMIN_SHUTDOWN),
				 errmsg("the postmaster died while the diff worker started")));
	if (status != BGWH_STARTED)
		return false;
	*pid = (int) worker_pid;
	return true;
}
