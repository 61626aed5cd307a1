/*-------------------------------------------------------------------------
 *
 * digest.c
 *		Anti-entropy's read of a table on one node: per row, its bucket
 *		(a hash of its key, the same on every node), its digest and its
 *		version, summed per bucket (concord.table_digest()) or listed
 *		(concord.table_digest_rows()).
 *
 * A row's digest is the MD5 of its to_jsonb() text as UTF-8: independent
 * of the order of the columns, telling NULL from an empty string, and,
 * under the settings the SQL functions pin, of the session's.  Its bucket
 * is the first 32 bits of the MD5 of its key's jsonb text, modulo the
 * number of buckets; a bucket's digest is the XOR of the 128-bit digests
 * of its settled rows.  A row is settled when its version is older than
 * the fence of its origin (see concord.table_digest()), else in flight.
 *
 * The one-shot SQL functions read the table (with its partitions or
 * children) in one query.  A diff reads it in steps instead
 * (concord.table_digest_step()), each a statement of its own, so that no
 * snapshot lasts longer than a step and the diff may pause between steps
 * (concord.diff_cost_delay): a step reads ranges of blocks, a query per
 * range (a TID range scan of every table of the tree), until it has read
 * max_rows rows, and says where it stopped.  A row that an update moved
 * from a range not read yet to one read already is missed, one moved the
 * other way read twice: either is a version newer than the fence, in
 * flight, and a diff confirms every difference by key, in one snapshot,
 * before it reports it.  A rewrite of a table of the tree (VACUUM FULL,
 * CLUSTER), which moves settled rows, or a change of its partitions
 * between two steps fails the read; a tree with a foreign table or a
 * table of another access method, whose TIDs are not blocks of its own,
 * is not read in steps.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/commit_ts.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "catalog/origin.h"
#include "catalog/tables.h"
#include "antientropy/digest.h"

/* Rows fetched from a range's cursor at a time. */
#define DIGEST_FETCH		1000
/* The most buckets a digest has. */
#define DIGEST_MAX_BUCKETS	1048576

/* A table of the tree read by ranges, as the read began. */
typedef struct TreeTable
{
	Oid			relid;
	Oid			filenode;
} TreeTable;

typedef struct DigestFence
{
	char	   *node;
	TimestampTz fence;
} DigestFence;

struct ConcordDigestScan
{
	MemoryContext cxt;
	Oid			relid;
	Oid			userid;
	int			buckets;
	bool		fenced;			/* fences given: else every row settled */
	int			nfences;
	DigestFence *fences;
	TimestampTz min_fence;
	int			nnodes;			/* the nodes (not departed) */
	char	  **nodes;
	char	   *local_node;
	bool	   *only;			/* buckets listed; NULL: all */
	bool		list_rows;
	bool		whole;			/* in one query, not by ranges */
	char	   *key;			/* jsonb_build_object()'s arguments */
	List	   *tree;			/* TreeTable: the tables read by ranges */
	BlockNumber next_block;
	double		rows_per_block; /* of the last range with rows */
	SPIPlanPtr	row_plan;		/* a row by table and ctid, in a step */
	/* the sums per bucket */
	int64	   *count;
	int64	   *in_flight;
	uint64	   *sum;			/* two halves per bucket */
	/* the version of the last transaction looked up */
	TransactionId last_xid;
	bool		last_known;
	TimestampTz last_time;
	const char *last_node;
	List	   *names;			/* the origin names met */
};

static void
check_arguments(Jsonb *fences, int buckets)
{
	if (buckets < 1 || buckets > DIGEST_MAX_BUCKETS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("buckets must be between 1 and %d", DIGEST_MAX_BUCKETS)));
	if (fences != NULL && !JB_ROOT_IS_OBJECT(fences))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("fences must be a JSON object of node names to fence times")));
	if (fences != NULL && !track_commit_timestamp)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("rows cannot be told settled with track_commit_timestamp off")));
}

/* The key as jsonb_build_object() arguments: 'col', t.col, ... */
static char *
key_arguments(Oid relid)
{
	Oid			types[1] = {REGCLASSOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	StringInfoData buf;

	if (SPI_execute_with_args("SELECT c FROM pg_catalog.unnest(concord.key_columns($1)) c ORDER BY c",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the key of a table");
	initStringInfo(&buf);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *col = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		appendStringInfo(&buf, "%s%s, t.%s", i > 0 ? ", " : "",
						 quote_literal_cstr(col), quote_identifier(col));
	}
	return buf.data;
}

static void
read_fences(ConcordDigestScan *scan, Jsonb *fences)
{
	Oid			types[1] = {JSONBOID};
	Datum		values[1] = {JsonbPGetDatum(fences)};
	int			n = 0;

	if (SPI_execute_with_args("SELECT e.key, e.value::pg_catalog.timestamptz"
							  " FROM pg_catalog.jsonb_each_text($1) e",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the fences");
	scan->fenced = true;
	scan->fences = MemoryContextAllocZero(scan->cxt, sizeof(DigestFence) * Max(SPI_processed, 1));
	scan->min_fence = DT_NOEND;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		Datum		fence = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull);

		if (isnull)
			continue;			/* a null fence: as if the node had none */
		scan->fences[n].node = MemoryContextStrdup(scan->cxt,
												   SPI_getvalue(tup, SPI_tuptable->tupdesc, 1));
		scan->fences[n].fence = DatumGetTimestampTz(fence);
		scan->min_fence = Min(scan->min_fence, scan->fences[n].fence);
		n++;
	}
	scan->nfences = n;
}

/* The nodes, but those that left: a row of any other origin settles at the earliest fence. */
static void
read_nodes(ConcordDigestScan *scan)
{
	ConcordNode *local = concord_node_get_local(true);

	if (SPI_execute("SELECT n.node_name::pg_catalog.text FROM concord.node n"
					" WHERE NOT EXISTS (SELECT FROM concord.departed_node d"
					"                   WHERE d.node_name = n.node_name)",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the nodes");
	scan->nnodes = (int) SPI_processed;
	scan->nodes = MemoryContextAlloc(scan->cxt, sizeof(char *) * Max(scan->nnodes, 1));
	for (int i = 0; i < scan->nnodes; i++)
		scan->nodes[i] = MemoryContextStrdup(scan->cxt,
											 SPI_getvalue(SPI_tuptable->vals[i],
														  SPI_tuptable->tupdesc, 1));
	scan->local_node = local ? MemoryContextStrdup(scan->cxt, local->name) : NULL;
}

static bool *
read_only_buckets(ConcordDigestScan *scan, ArrayType *only_buckets)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	bool	   *only = MemoryContextAllocZero(scan->cxt, sizeof(bool) * scan->buckets);

	deconstruct_array(only_buckets, INT4OID, sizeof(int32), true, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		int32		b = nulls[i] ? -1 : DatumGetInt32(elems[i]);

		if (b >= 0 && b < scan->buckets)
			only[b] = true;
	}
	return only;
}

/*
 * The tables of the tree of relid that hold rows (relid itself, its
 * partitions or inheritance children), locked; with by_ranges, a table
 * whose TIDs are not blocks of its own is refused.
 */
static List *
read_tree(Oid relid, bool by_ranges)
{
	List	   *rels;
	List	   *tree = NIL;
	ListCell   *lc;

	LockRelationOid(relid, AccessShareLock);
	rels = find_all_inheritors(relid, AccessShareLock, NULL);
	foreach(lc, rels)
	{
		Relation	r = table_open(lfirst_oid(lc), NoLock);

		if (r->rd_rel->relkind == RELKIND_FOREIGN_TABLE ||
			(RELKIND_HAS_STORAGE(r->rd_rel->relkind) && r->rd_rel->relam != HEAP_TABLE_AM_OID))
		{
			if (by_ranges)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("table %s cannot be read in steps", get_rel_name(relid)),
						 errdetail("Table %s of its tree is a foreign table or not a heap table.",
								   RelationGetRelationName(r)),
						 errhint("Leave it out of diffs, or compare it with concord.table_digest().")));
		}
		else if (RELKIND_HAS_STORAGE(r->rd_rel->relkind))
		{
			TreeTable  *t = palloc(sizeof(TreeTable));

			t->relid = RelationGetRelid(r);
			t->filenode = r->rd_rel->relfilenode;
			tree = lappend(tree, t);
		}
		table_close(r, NoLock);
	}
	list_free(rels);
	return tree;
}

/* The rows per block of the tree, as its statistics say (50 if unknown). */
static double
tree_density(List *tree)
{
	double		tuples = 0;
	double		pages = 0;
	ListCell   *lc;

	foreach(lc, tree)
	{
		HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(((TreeTable *) lfirst(lc))->relid));

		if (!HeapTupleIsValid(tup))
			continue;
		if (((Form_pg_class) GETSTRUCT(tup))->reltuples > 0)
		{
			tuples += ((Form_pg_class) GETSTRUCT(tup))->reltuples;
			pages += ((Form_pg_class) GETSTRUCT(tup))->relpages;
		}
		ReleaseSysCache(tup);
	}
	return pages > 0 ? Max(tuples / pages, 1.0) : 50.0;
}

/*
 * Starts a read of the table relid (as the current user, who needs
 * SELECT on it), in a context of its own under parent.  fences: NULL, or
 * the fences of concord.fence() by node name; only_buckets: NULL, or the
 * buckets whose rows are listed (list_rows) and the others skipped;
 * whole: read in one query (concord_digest_step() once, with any
 * max_rows), else by ranges of blocks.  Needs a transaction; the scan
 * outlives it.
 */
ConcordDigestScan *
concord_digest_begin(MemoryContext parent, Oid relid, Jsonb *fences,
					 int buckets, ArrayType *only_buckets, bool list_rows,
					 bool whole)
{
	MemoryContext cxt;
	MemoryContext old;
	ConcordDigestScan *scan;

	check_arguments(fences, buckets);
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", get_rel_name(relid))));
	cxt = AllocSetContextCreate(parent, "concord digest", ALLOCSET_DEFAULT_SIZES);
	scan = MemoryContextAllocZero(cxt, sizeof(ConcordDigestScan));
	scan->cxt = cxt;
	scan->relid = relid;
	scan->userid = GetUserId();
	scan->buckets = buckets;
	scan->list_rows = list_rows;
	scan->whole = whole;
	scan->last_xid = InvalidTransactionId;
	scan->count = MemoryContextAllocZero(cxt, sizeof(int64) * buckets);
	scan->in_flight = MemoryContextAllocZero(cxt, sizeof(int64) * buckets);
	scan->sum = MemoryContextAllocZero(cxt, sizeof(uint64) * 2 * buckets);
	if (list_rows && only_buckets != NULL)
		scan->only = read_only_buckets(scan, only_buckets);
	old = MemoryContextSwitchTo(cxt);
	scan->tree = read_tree(relid, !whole);
	MemoryContextSwitchTo(old);
	scan->rows_per_block = tree_density(scan->tree);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	scan->key = MemoryContextStrdup(cxt, key_arguments(relid));
	if (fences != NULL)
		read_fences(scan, fences);
	read_nodes(scan);
	SPI_finish();
	return scan;
}

/*
 * The blocks to read: the most any table of the tree has now.  A table
 * rewritten, or added to the tree or taken out of it, since the read
 * began fails it: its settled rows moved.
 */
static BlockNumber
tree_blocks(ConcordDigestScan *scan)
{
	List	   *now = read_tree(scan->relid, true);
	BlockNumber blocks = 0;
	ListCell   *lc;
	bool		same = list_length(now) == list_length(scan->tree);

	/* find_all_inheritors() lists a tree in the same order each time */
	foreach(lc, now)
	{
		TreeTable  *t = lfirst(lc);
		TreeTable  *then = same ? list_nth(scan->tree, foreach_current_index(lc)) : NULL;
		Relation	r = table_open(t->relid, NoLock);

		same &= then != NULL && then->relid == t->relid && then->filenode == t->filenode;
		blocks = Max(blocks, RelationGetNumberOfBlocks(r));
		table_close(r, NoLock);
	}
	if (!same)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table %s was rewritten, or its partitions changed, while it was read",
						get_rel_name(scan->relid)),
				 errhint("Run the diff again.")));
	list_free_deep(now);
	return blocks;
}

/* MD5 of text as UTF-8, whatever the database's encoding. */
static void
md5_utf8(const char *str, int len, uint8 *out)
{
	char	   *utf8 = pg_server_to_any(str, len, PG_UTF8);

	if (utf8 != str)
		len = strlen(utf8);
	concord_md5(utf8, len, out);
	if (utf8 != str)
		pfree(utf8);
}

static uint64
be64(const uint8 *b)
{
	uint64		v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | b[i];
	return v;
}

static bool
is_node(ConcordDigestScan *scan, const char *name)
{
	for (int i = 0; i < scan->nnodes; i++)
		if (strcmp(scan->nodes[i], name) == 0)
			return true;
	return false;
}

/*
 * Settled: no fences; a version of unknown age, or of an initial copy
 * (the baseline, 2000-01-01); one older than its origin's fence; of an
 * origin no fence names, older than the earliest fence if that origin is
 * not a node (written by another replication, or by a node that left),
 * else never (a node no fence names: in flight).
 */
static bool
settled(ConcordDigestScan *scan, bool known, TimestampTz time, const char *origin)
{
	if (!scan->fenced || !known || time <= 1)
		return true;
	if (origin != NULL)
		for (int i = 0; i < scan->nfences; i++)
			if (strcmp(scan->fences[i].node, origin) == 0)
				return time < scan->fences[i].fence;
	if (origin == NULL || !is_node(scan, origin))
		return scan->nfences > 0 && time < scan->min_fence;
	return false;
}

/* A node name kept by the scan, once each. */
static const char *
intern(ConcordDigestScan *scan, const char *name)
{
	ListCell   *lc;

	if (name == NULL)
		return NULL;
	foreach(lc, scan->names)
		if (strcmp(lfirst(lc), name) == 0)
			return lfirst(lc);
	{
		MemoryContext old = MemoryContextSwitchTo(scan->cxt);
		char	   *copy = pstrdup(name);

		scan->names = lappend(scan->names, copy);
		MemoryContextSwitchTo(old);
		return copy;
	}
}

static void
version_of(ConcordDigestScan *scan, TransactionId xid)
{
	if (TransactionIdEquals(xid, scan->last_xid))
		return;
	scan->last_xid = xid;
	scan->last_known = concord_xact_version(xid, scan->local_node,
											&scan->last_time, &scan->last_node);
	scan->last_node = intern(scan, scan->last_node);
}

/* The row at (tableoid, ctid), in the step's snapshot; in CurrentMemoryContext. */
static char *
row_text(ConcordDigestScan *scan, Datum tableoid, Datum ctid)
{
	MemoryContext cxt = CurrentMemoryContext;
	Datum		values[2] = {tableoid, ctid};
	bool		isnull;
	char	   *json;

	if (SPI_execute_plan(scan->row_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read a row of the table");
	if (SPI_processed != 1)
		elog(ERROR, "a row of the table was not found again");
	MemoryContextSwitchTo(cxt);
	json = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return json;
}

static void
add_row(ConcordDigestScan *scan, HeapTuple tup, TupleDesc desc,
		ConcordDigestEmit emit, void *arg)
{
	bool		isnull;
	text	   *key = DatumGetTextPP(SPI_getbinval(tup, desc, 2, &isnull));
	TransactionId xid = DatumGetTransactionId(SPI_getbinval(tup, desc, 3, &isnull));
	Datum		row = SPI_getbinval(tup, desc, 1, &isnull);
	uint8		md5[16];
	int			bucket;
	const char *json;
	bool		is_settled;

	md5_utf8(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), md5);
	bucket = (int) (((uint32) md5[0] << 24 | (uint32) md5[1] << 16 |
					 (uint32) md5[2] << 8 | (uint32) md5[3]) % (uint32) scan->buckets);
	if (scan->only && !scan->only[bucket])
		return;
	if (scan->only)
		json = row_text(scan, SPI_getbinval(tup, desc, 4, &isnull),
						SPI_getbinval(tup, desc, 5, &isnull));
	else
		json = TextDatumGetCString(row);
	md5_utf8(json, strlen(json), md5);
	version_of(scan, xid);
	is_settled = settled(scan, scan->last_known, scan->last_time, scan->last_node);
	if (is_settled)
	{
		scan->count[bucket]++;
		scan->sum[2 * bucket] ^= be64(md5);
		scan->sum[2 * bucket + 1] ^= be64(md5 + 8);
	}
	else
		scan->in_flight[bucket]++;
	if (scan->list_rows)
	{
		ConcordDigestRow r;

		r.bucket = bucket;
		r.key = text_to_cstring(key);
		hex_encode((const char *) md5, 16, r.digest);
		r.digest[32] = '\0';
		r.known = scan->last_known;
		r.commit_time = scan->last_time;
		r.origin_node = scan->last_node;
		r.settled = is_settled;
		emit(&r, arg);
	}
}

/* A step's query: the rows of the blocks [$1, $2) of the tree, or all. */
static char *
range_sql(ConcordDigestScan *scan)
{
	char	   *rel = quote_qualified_identifier(get_namespace_name(get_rel_namespace(scan->relid)),
												 get_rel_name(scan->relid));

	return psprintf("SELECT %s, pg_catalog.jsonb_build_object(%s)::pg_catalog.text,"
					" t.xmin, t.tableoid, t.ctid FROM %s t%s",
					scan->only ? "NULL::pg_catalog.text" : "pg_catalog.to_jsonb(t.*)::pg_catalog.text",
					scan->key, rel,
					scan->whole ? "" : " WHERE t.ctid >= $1 AND t.ctid < $2");
}

/* Reads the blocks [from, to) of every table of the tree (or all its rows); returns their rows. */
static int64
read_range(ConcordDigestScan *scan, const char *sql, BlockNumber from,
		   BlockNumber to, MemoryContext rowcxt, ConcordDigestEmit emit,
		   void *arg)
{
	ItemPointerData lo;
	ItemPointerData hi;
	Oid			types[2] = {TIDOID, TIDOID};
	Datum		values[2];
	Portal		portal;
	int64		rows = 0;

	ItemPointerSet(&lo, from, 0);
	ItemPointerSet(&hi, to, 0);
	values[0] = PointerGetDatum(&lo);
	values[1] = PointerGetDatum(&hi);
	/* read-only: the rows and the rows looked up share the step's snapshot */
	portal = SPI_cursor_open_with_args(NULL, sql, scan->whole ? 0 : 2, types, values,
									   NULL, true, CURSOR_OPT_NO_SCROLL);
	for (;;)
	{
		SPITupleTable *tuptable;
		uint64		n;

		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(portal, true, DIGEST_FETCH);
		n = SPI_processed;
		tuptable = SPI_tuptable;
		if (n == 0)
			break;
		for (uint64 i = 0; i < n; i++)
		{
			MemoryContext old = MemoryContextSwitchTo(rowcxt);

			add_row(scan, tuptable->vals[i], tuptable->tupdesc, emit, arg);
			MemoryContextSwitchTo(old);
			MemoryContextReset(rowcxt);
		}
		rows += n;
		SPI_freetuptable(tuptable);
	}
	SPI_cursor_close(portal);
	return rows;
}

/*
 * Reads the table: all of it for a whole read, else ranges of blocks from
 * where the scan stopped until it has read max_rows rows or the end of
 * the table; listed rows go to emit.  Returns the next block to read, or
 * InvalidBlockNumber at the end.  Needs a transaction (and a snapshot),
 * as the role that began the scan.
 */
BlockNumber
concord_digest_step(ConcordDigestScan *scan, int64 max_rows,
					ConcordDigestEmit emit, void *arg)
{
	MemoryContext rowcxt;
	BlockNumber end = 0;
	int64		rows = 0;
	char	   *sql;

	if (GetUserId() != scan->userid)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the digest was begun by another role")));
	if (!scan->whole)
		end = tree_blocks(scan);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	sql = range_sql(scan);
	if (scan->only)
	{
		Oid			types[2] = {OIDOID, TIDOID};
		char	   *rel = quote_qualified_identifier(get_namespace_name(get_rel_namespace(scan->relid)),
													 get_rel_name(scan->relid));

		scan->row_plan = SPI_prepare(psprintf("SELECT pg_catalog.to_jsonb(t.*)::pg_catalog.text FROM %s t"
											  " WHERE t.tableoid = $1 AND t.ctid = $2", rel),
									 2, types);
		if (scan->row_plan == NULL)
			elog(ERROR, "could not prepare the read of a row");
	}
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "concord digest row",
								   ALLOCSET_DEFAULT_SIZES);
	if (scan->whole)
		(void) read_range(scan, sql, 0, 0, rowcxt, emit, arg);
	while (!scan->whole && scan->next_block < end && rows < max_rows)
	{
		double		want = (double) (max_rows - rows) / scan->rows_per_block;
		BlockNumber nblocks = (BlockNumber) Min(Max(want, 1.0), (double) (end - scan->next_block));
		int64		n = read_range(scan, sql, scan->next_block, scan->next_block + nblocks,
								   rowcxt, emit, arg);

		scan->next_block += nblocks;
		rows += n;
		/* the density of the last range with rows: empty ones change nothing */
		if (n > 0)
			scan->rows_per_block = Max((double) n / nblocks, 1.0);
	}
	scan->row_plan = NULL;		/* freed with SPI's memory */
	SPI_finish();
	return !scan->whole && scan->next_block < end ? scan->next_block : InvalidBlockNumber;
}

int
concord_digest_nbuckets(ConcordDigestScan *scan)
{
	return scan->buckets;
}

/*
 * A bucket's sums: its settled rows, the rows in flight and the digest
 * (32 hex digits and a NUL, into digest).
 */
void
concord_digest_buckets(ConcordDigestScan *scan, int bucket, int64 *row_count,
					   int64 *in_flight, char *digest)
{
	uint8		bytes[16];

	for (int half = 0; half < 2; half++)
		for (int i = 0; i < 8; i++)
			bytes[half * 8 + i] = (uint8) (scan->sum[2 * bucket + half] >> (56 - 8 * i));
	hex_encode((const char *) bytes, 16, digest);
	digest[32] = '\0';
	*row_count = scan->count[bucket];
	*in_flight = scan->in_flight[bucket];
}

void
concord_digest_end(ConcordDigestScan *scan)
{
	MemoryContextDelete(scan->cxt);
}
