/*-------------------------------------------------------------------------
 *
 * sync_versions.c
 *		A joining node's copy: every row, and every tombstone, with the
 *		version it has on the peer.
 *
 * An initial copy is written as the common baseline, older than any
 * change (sync.c): right when the copier's tables and the provider's
 * were the only data.  A node joining a mesh that keeps writing copies
 * from one peer rows whose latest change may be concurrent with a change
 * still on its way from another member; to settle that conflict as every
 * other node does, the copy must keep each row's version: the commit
 * timestamp and origin node it has on the peer (concord.row_version()),
 * and the peer's tombstones, versioned alike.
 *
 * The peer sends the rows ordered by version; each run of one version is
 * written here in a transaction of its own, committed under this
 * subscription's replication origin for the version's node and with its
 * commit timestamp (the origin's progress left alone).  Versions the peer
 * itself counts as the baseline (unknown, or its own writes from before
 * its create_node) are written as the baseline here too.  The copy is no
 * longer one transaction: it starts by emptying the tables, so an attempt
 * cut short is simply made again (the subscription's sync_done, and with
 * it the members' subscriptions, moves only at the end, in sync.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/catalog.h"
#include "commands/copy.h"
#include "commands/tablecmds.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "pgstat.h"
#include "replication/origin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "apply/apply.h"
#include "apply/sync.h"
#include "catalog/origin.h"
#include "catalog/tables.h"
#include "conflict/conflict.h"
#include "conflict/seen.h"
#include "remote/remote.h"

/* A version: the commit timestamp (0: the baseline) and origin node. */
typedef struct Version
{
	TimestampTz ts;
	char		node[NAMEDATALEN];
} Version;

/* The stream of one COPY from the peer, a row at a time. */
typedef struct VersionStream
{
	PGconn	   *conn;
	char	   *row;			/* the row read ahead, without its version */
	int			len;
	Version		version;		/* of that row */
	bool		done;			/* the COPY ended */
	int			pos;			/* bytes of row already handed out */
	bool		in_group;		/* handing out rows of this version */
	Version		group;
	MemoryContext cxt;			/* holds row, reset per row */
} VersionStream;

static VersionStream Stream;

/* The subscription, for messages. */
static const char *SubName = NULL;

/* Microseconds since 1970 to a TimestampTz. */
#define UNIX_EPOCH_USECS \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC)

/* One field of a COPY text row, unescaped; *p moves past its tab. */
static char *
next_field(char **p, char *end, bool *isnull)
{
	StringInfoData buf;
	char	   *c = *p;

	initStringInfo(&buf);
	*isnull = (end - c >= 2 && c[0] == '\\' && c[1] == 'N' &&
			   (end - c == 2 || c[2] == '\t'));
	while (c < end && *c != '\t')
	{
		if (*c == '\\' && c + 1 < end)
		{
			c++;
			switch (*c)
			{
				case 't':
					appendStringInfoChar(&buf, '\t');
					break;
				case 'n':
					appendStringInfoChar(&buf, '\n');
					break;
				case 'r':
					appendStringInfoChar(&buf, '\r');
					break;
				default:
					appendStringInfoChar(&buf, *c);
			}
		}
		else
			appendStringInfoChar(&buf, *c);
		c++;
	}
	if (c >= end)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("a row of the peer's copy lacks its version")));
	*p = c + 1;
	return buf.data;
}

/* Reads the next row and its version; false at the end of the COPY. */
static bool
read_row(void)
{
	char	   *buf;
	int			len;
	char	   *p;
	char	   *ts;
	char	   *node;
	bool		isnull;

	MemoryContext oldcxt;

	/* CopyFrom calls us in contexts of its own, reset per row. */
	if (Stream.cxt == NULL)
		Stream.cxt = AllocSetContextCreate(TopMemoryContext, "concord join copy",
										   ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(Stream.cxt);
	Stream.row = NULL;
	oldcxt = MemoryContextSwitchTo(Stream.cxt);
	len = concord_remote_get_copy(Stream.conn, &buf, true);
	if (len < 0)
	{
		MemoryContextSwitchTo(oldcxt);
		Stream.done = true;
		return false;
	}
	p = buf;
	ts = next_field(&p, buf + len, &isnull);
	Stream.version.ts = isnull ? 0 : (TimestampTz) (strtoll(ts, NULL, 10) - UNIX_EPOCH_USECS);
	node = next_field(&p, buf + len, &isnull);
	strlcpy(Stream.version.node, node, NAMEDATALEN);
	Stream.len = len - (p - buf);
	Stream.row = palloc(Stream.len);
	memcpy(Stream.row, p, Stream.len);
	Stream.pos = 0;
	PQfreemem(buf);
	MemoryContextSwitchTo(oldcxt);
	return true;
}

static bool
same_version(const Version *a, const Version *b)
{
	return a->ts == b->ts && strcmp(a->node, b->node) == 0;
}

/* COPY FROM's data source: the rows of the current version. */
static int
group_read(void *outbuf, int minread, int maxread)
{
	int			bytes = 0;

	if (!Stream.in_group)
		return 0;

	while (bytes < minread)
	{
		int			avail;

		if (Stream.row == NULL || Stream.pos >= Stream.len)
		{
			if (!read_row() || !same_version(&Stream.version, &Stream.group))
			{
				Stream.in_group = false;
				break;
			}
		}
		avail = Min(Stream.len - Stream.pos, maxread - bytes);
		memcpy((char *) outbuf + bytes, Stream.row + Stream.pos, avail);
		Stream.pos += avail;
		bytes += avail;
	}
	return bytes;
}

/* The origins used so far, by node: most copies know a few nodes only. */
typedef struct KnownOrigin
{
	char		node[NAMEDATALEN];
	RepOriginId origin;
} KnownOrigin;

static List *KnownOrigins = NIL;	/* in TopMemoryContext */

static RepOriginId
origin_for(Oid subid, const char *node)
{
	ListCell   *lc;
	KnownOrigin *k;

	foreach(lc, KnownOrigins)
	{
		k = lfirst(lc);
		if (strcmp(k->node, node) == 0)
			return k->origin;
	}
	StartTransactionCommand();
	k = MemoryContextAllocZero(TopMemoryContext, sizeof(KnownOrigin));
	strlcpy(k->node, node, NAMEDATALEN);
	k->origin = concord_origin_ensure(subid, node);
	CommitTransactionCommand();
	KnownOrigins = lappend(KnownOrigins, k);
	return k->origin;
}

/* Commits what follows under the version's node and commit timestamp. */
static void
use_version(Oid subid, const Version *v)
{
	RepOriginId origin = origin_for(subid, v->node);

	if (origin != replorigin_session_origin)
	{
		if (replorigin_session_origin != InvalidRepOriginId)
			replorigin_session_reset();
		replorigin_session_setup(origin);
	}
	replorigin_session_origin = origin;
	replorigin_session_origin_lsn = InvalidXLogRecPtr;
	replorigin_session_origin_timestamp = v->ts != 0 ? v->ts : CONCORD_BASELINE_TS;
}

/* The same, for sync_merge.c: node's version at ts (0: the baseline). */
void
concord_sync_use_version(Oid subid, const char *node, TimestampTz ts)
{
	Version		v;

	v.ts = ts;
	strlcpy(v.node, node, NAMEDATALEN);
	use_version(subid, &v);
}

/*
 * The version columns of the peer's query: the commit time in microseconds
 * since 1970 (NULL: the baseline) and the origin node.
 */
static char *
version_columns(const char *provider, const char *created_at)
{
	return psprintf("CASE WHEN v.commit_time IS NULL "
					"OR (v.origin_node = %s AND v.commit_time < %s::pg_catalog.timestamptz) "
					"OR v.commit_time <= '2000-01-01 00:00:00.000001+00' THEN NULL "
					"ELSE (EXTRACT(epoch FROM v.commit_time) * 1000000)::pg_catalog.int8 END, "
					"COALESCE(v.origin_node::pg_catalog.text, %s)",
					quote_literal_cstr(provider), quote_literal_cstr(created_at),
					quote_literal_cstr(provider));
}

/* This node's name: versions of its own say nothing to SEEN. */
static char *LocalName = NULL;

/* The newest version copied of each node, for SEEN once the copy is done. */
static List *NewestCopied = NIL;	/* of Version, in TopMemoryContext */

static void
note_seen(const Version *v)
{
	ListCell   *lc;
	Version    *n;

	if (v->ts == 0 || (LocalName && strcmp(v->node, LocalName) == 0))
		return;
	foreach(lc, NewestCopied)
	{
		n = lfirst(lc);
		if (strcmp(n->node, v->node) == 0)
		{
			n->ts = Max(n->ts, v->ts);
			return;
		}
	}
	n = MemoryContextAlloc(TopMemoryContext, sizeof(Version));
	*n = *v;
	NewestCopied = lappend(NewestCopied, n);
}

/*
 * After the copy's last transaction: this node has seen every version it
 * copied, so its own later changes of those rows are not concurrent with
 * them (seen.c), whichever node wrote them, a departed one included.
 */
void
concord_sync_versions_seen(void)
{
	ListCell   *lc;

	foreach(lc, NewestCopied)
	{
		Version    *n = lfirst(lc);

		concord_seen_applied(n->node, n->ts);
	}
}

/* Copies one table's rows, a transaction per version. */
static void
copy_table_versions(PGconn *conn, Oid subid, SyncTable *t, const char *vcols)
{
	List	   *names = concord_sync_provider_columns(conn, t);
	StringInfoData sql;
	StringInfoData cols;
	StringInfoData outer;
	ListCell   *lc;

	initStringInfo(&cols);
	initStringInfo(&outer);
	foreach(lc, names)
	{
		const char *sep = foreach_current_index(lc) ? ", " : "";

		appendStringInfo(&cols, "%s%s", sep, quote_identifier(strVal(lfirst(lc))));
		appendStringInfo(&outer, "%ss.%s", sep, quote_identifier(strVal(lfirst(lc))));
	}
	/* The filter meets the table's columns only, in the inner query. */
	initStringInfo(&sql);
	appendStringInfo(&sql, "COPY (SELECT %s, %s FROM (SELECT %s, xmin AS \"concord xmin\" FROM %s%s",
					 vcols, outer.data, cols.data, t->partitioned ? "" : "ONLY ",
					 quote_qualified_identifier(t->nspname, t->relname));
	if (!t->unfiltered && t->filter.len > 0)
		appendStringInfo(&sql, " WHERE %s", t->filter.data);
	appendStringInfoString(&sql, ") s, LATERAL concord.row_version(s.\"concord xmin\") v "
						   "ORDER BY 1 NULLS FIRST, 2) TO STDOUT");
	PQclear(concord_remote_query(conn, sql.data, 0, NULL, PGRES_COPY_OUT));

	Stream.conn = conn;
	Stream.done = false;
	Stream.in_group = false;
	(void) read_row();
	while (!Stream.done)
	{
		Relation	rel;
		ParseState *pstate;
		CopyFromState cstate;
		ConcordAsOwner owner;

		Stream.group = Stream.version;
		Stream.in_group = true;
		use_version(subid, &Stream.group);
		StartTransactionCommand();
		concord_constraints_immediate();
		PushActiveSnapshot(GetTransactionSnapshot());
		rel = concord_sync_open_table(t);
		concord_sync_check_columns(rel, t, names);
		concord_become_table_owner(rel, ACL_INSERT, SubName, &owner);
		pstate = make_parsestate(NULL);
		(void) addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock,
											 NULL, false, false);
		cstate = BeginCopyFrom(pstate, rel, NULL, NULL, false, group_read, names, NIL);
		(void) CopyFrom(cstate);
		EndCopyFrom(cstate);
		concord_restore_user(&owner);
		table_close(rel, NoLock);
		/* A copy: no transaction of the origin's (shmem/position.c). */
		concord_apply_log_origin_lsn(InvalidXLogRecPtr);
		PopActiveSnapshot();
		CommitTransactionCommand();
		note_seen(&Stream.group);
		CHECK_FOR_INTERRUPTS();
	}
	concord_sync_end_copy(conn, t);
}

/* The copied tables, as a text[] literal of qualified names. */
static char *
tables_literal(List *tables)
{
	List	   *names = NIL;
	ListCell   *lc;

	foreach(lc, tables)
	{
		SyncTable  *t = lfirst(lc);

		names = lappend(names, (char *) quote_qualified_identifier(t->nspname, t->relname));
	}
	return concord_remote_text_array(names);
}

/*
 * Empties the tables, and their tombstones here, in one transaction
 * under the peer's origin (not sent on to this node's subscribers): the
 * start of every attempt.
 */
static void
empty_tables(Oid subid, const char *provider, List *tables)
{
	Version		v = {0};
	ListCell   *lc;

	strlcpy(v.node, provider, NAMEDATALEN);
	use_version(subid, &v);
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	foreach(lc, tables)
	{
		SyncTable  *t = lfirst(lc);
		Relation	rel = concord_sync_open_table(t);
		Oid			argtypes[1] = {OIDOID};
		Datum		args[1];

		concord_sync_empty(rel, SubName);
		args[0] = ObjectIdGetDatum(RelationGetRelid(rel));
		if (SPI_execute_with_args("DELETE FROM concord.tombstone WHERE relid IN "
								  "(SELECT relid FROM pg_catalog.pg_partition_tree($1))",
								  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not remove tombstones");
		table_close(rel, NoLock);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* The peer's tombstones of the copied tables, a transaction per version. */
static void
copy_tombstones(PGconn *conn, Oid subid, List *tables, const char *vcols)
{
	const char *params[1] = {tables_literal(tables)};
	char	   *sql = psprintf("SELECT %s, n.nspname, c.relname, tb.key::pg_catalog.text "
							   "FROM concord.tombstone tb "
							   "JOIN pg_catalog.pg_class c ON c.oid = tb.relid "
							   "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace, "
							   "LATERAL concord.row_version(tb.xmin) v "
							   "WHERE tb.relid IN (SELECT p.relid FROM pg_catalog.unnest($1::pg_catalog.text[]) q, "
							   "LATERAL pg_catalog.pg_partition_tree(q::pg_catalog.regclass) p) "
							   "ORDER BY 1 NULLS FIRST, 2",
							   vcols);
	PGresult   *res = concord_remote_query(conn, sql, 1, params, PGRES_TUPLES_OK);
	int			i = 0;

	while (i < PQntuples(res))
	{
		Version		v;

		v.ts = PQgetisnull(res, i, 0) ? 0 :
			(TimestampTz) (strtoll(PQgetvalue(res, i, 0), NULL, 10) - UNIX_EPOCH_USECS);
		strlcpy(v.node, PQgetvalue(res, i, 1), NAMEDATALEN);
		use_version(subid, &v);
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		for (; i < PQntuples(res); i++)
		{
			Oid			argtypes[2] = {TEXTOID, TEXTOID};
			Datum		args[2];
			TimestampTz ts = PQgetisnull(res, i, 0) ? 0 :
				(TimestampTz) (strtoll(PQgetvalue(res, i, 0), NULL, 10) - UNIX_EPOCH_USECS);

			if (ts != v.ts || strcmp(PQgetvalue(res, i, 1), v.node) != 0)
				break;
			args[0] = CStringGetTextDatum(quote_qualified_identifier(PQgetvalue(res, i, 2),
																	 PQgetvalue(res, i, 3)));
			args[1] = CStringGetTextDatum(PQgetvalue(res, i, 4));
			/* A partition missing here has no rows here to guard. */
			if (SPI_execute_with_args("INSERT INTO concord.tombstone (relid, key) "
									  "SELECT r, $2::pg_catalog.text[] FROM pg_catalog.to_regclass($1) r "
									  "WHERE r IS NOT NULL ON CONFLICT DO NOTHING",
									  2, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not copy a tombstone");
		}
		SPI_finish();
		concord_apply_log_origin_lsn(InvalidXLogRecPtr);
		PopActiveSnapshot();
		CommitTransactionCommand();
		note_seen(&v);
	}
	PQclear(res);
}

/*
 * The copy of a node joining a mesh, in the snapshot conn holds on the
 * peer (provider): the tables emptied, their rows and tombstones copied
 * with their versions.  Leaves the session under the peer's origin.
 */
void
concord_sync_copy_versions(PGconn *conn, Oid subid, const char *sub_name,
						   const char *provider, List *tables)
{
	PGresult   *res = concord_remote_query(conn,
										   "SELECT created_at::pg_catalog.text FROM concord.node WHERE is_local",
										   0, NULL, PGRES_TUPLES_OK);
	char	   *vcols;
	Version		v = {0};
	ListCell   *lc;

	if (PQntuples(res) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the peer is no concord node any more")));
	SubName = sub_name;
	vcols = version_columns(provider, PQgetvalue(res, 0, 0));
	StartTransactionCommand();
	LocalName = MemoryContextStrdup(TopMemoryContext, concord_node_get_local(false)->name);
	CommitTransactionCommand();
	/* A copy cut short is made again from the start: no need to wait. */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	PQclear(res);
	empty_tables(subid, provider, tables);
	foreach(lc, tables)
	{
		SyncTable  *t = lfirst(lc);

		pgstat_report_activity(STATE_RUNNING,
							   psprintf("copying %s", quote_qualified_identifier(t->nspname, t->relname)));
		copy_table_versions(conn, subid, t, vcols);
	}
	copy_tombstones(conn, subid, tables, vcols);
	strlcpy(v.node, provider, NAMEDATALEN);
	use_version(subid, &v);
}
