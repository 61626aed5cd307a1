/*-------------------------------------------------------------------------
 *
 * proto.c
 *		Encodes and decodes concord protocol messages.  Nothing else.
 *
 * What to send is decided by output.c, what to do with it by apply.c.
 * The readers run on data from a peer: they go through pqformat's
 * pq_getmsg* routines, which refuse to read past the message, and check
 * every count against the limits of a PostgreSQL tuple.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/sysattr.h"
#include "access/tupdesc.h"
#include "libpq/pqformat.h"
#include "port/pg_bswap.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "proto/proto.h"

#define FLAGS_NONE	0

/* Whether column attnum (1-based) is shipped. */
static bool
column_shipped(Form_pg_attribute att, Bitmapset *columns)
{
	if (att->attisdropped || att->attgenerated)
		return false;
	return columns == NULL || bms_is_member(att->attnum, columns);
}

static int
count_shipped(TupleDesc desc, Bitmapset *columns)
{
	int			n = 0;

	for (int i = 0; i < desc->natts; i++)
		if (column_shipped(TupleDescAttr(desc, i), columns))
			n++;
	return n;
}

void
concord_write_begin(StringInfo out, const ConcordBeginMsg *msg)
{
	pq_sendbyte(out, CONCORD_MSG_BEGIN);
	pq_sendbyte(out, FLAGS_NONE);
	pq_sendint64(out, msg->commit_lsn);
	pq_sendint64(out, msg->end_lsn);
	pq_sendint64(out, msg->commit_time);
	pq_sendint32(out, msg->xid);
	pq_sendstring(out, msg->origin_name);
	pq_sendint32(out, msg->origin_priority);
}

void
concord_read_begin(StringInfo in, ConcordBeginMsg *msg)
{
	(void) pq_getmsgbyte(in);
	msg->commit_lsn = pq_getmsgint64(in);
	msg->end_lsn = pq_getmsgint64(in);
	msg->commit_time = pq_getmsgint64(in);
	msg->xid = pq_getmsgint(in, 4);
	msg->origin_name = pstrdup(pq_getmsgstring(in));
	msg->origin_priority = pq_getmsgint(in, 4);
	if (msg->origin_name[0] == '\0' || strlen(msg->origin_name) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid origin node name in BEGIN message")));
}

void
concord_write_commit(StringInfo out, const ConcordCommitMsg *msg)
{
	pq_sendbyte(out, CONCORD_MSG_COMMIT);
	pq_sendbyte(out, msg->flags);
	pq_sendint64(out, msg->commit_lsn);
	pq_sendint64(out, msg->end_lsn);
	pq_sendint64(out, msg->commit_time);
	if (msg->flags & CONCORD_COMMIT_ORIGIN_LSN)
		pq_sendint64(out, msg->origin_lsn);
}

void
concord_read_commit(StringInfo in, ConcordCommitMsg *msg)
{
	msg->flags = pq_getmsgbyte(in);
	msg->commit_lsn = pq_getmsgint64(in);
	msg->end_lsn = pq_getmsgint64(in);
	msg->commit_time = pq_getmsgint64(in);
	msg->origin_lsn = InvalidXLogRecPtr;
	if (msg->flags & CONCORD_COMMIT_ORIGIN_LSN)
		msg->origin_lsn = pq_getmsgint64(in);
}

void
concord_write_relation(StringInfo out, Relation rel, Bitmapset *columns)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Bitmapset  *keys = NULL;

	if (rel->rd_rel->relreplident != REPLICA_IDENTITY_FULL)
		keys = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_IDENTITY_KEY);

	pq_sendbyte(out, CONCORD_MSG_RELATION);
	pq_sendbyte(out, FLAGS_NONE);
	pq_sendint32(out, RelationGetRelid(rel));
	pq_sendstring(out, get_namespace_name(RelationGetNamespace(rel)));
	pq_sendstring(out, RelationGetRelationName(rel));
	pq_sendbyte(out, rel->rd_rel->relreplident);
	pq_sendint16(out, count_shipped(desc, columns));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		uint8		flags = 0;

		if (!column_shipped(att, columns))
			continue;
		if (rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL ||
			bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, keys))
			flags |= CONCORD_ATT_KEY;
		pq_sendbyte(out, flags);
		pq_sendstring(out, NameStr(att->attname));
		pq_sendint32(out, att->atttypid);
		pq_sendint32(out, att->atttypmod);
	}
	bms_free(keys);
}

static char *
read_identifier(StringInfo in, const char *what)
{
	const char *s = pq_getmsgstring(in);

	if (s[0] == '\0' || strlen(s) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid %s name in RELATION message", what)));
	return pstrdup(s);
}

ConcordRelationMsg *
concord_read_relation(StringInfo in)
{
	ConcordRelationMsg *rel = palloc0(sizeof(ConcordRelationMsg));

	(void) pq_getmsgbyte(in);
	rel->remoteid = pq_getmsgint(in, 4);
	rel->nspname = read_identifier(in, "schema");
	rel->relname = read_identifier(in, "relation");
	rel->replident = pq_getmsgbyte(in);
	rel->natts = pq_getmsgint(in, 2);
	if (rel->natts < 0 || rel->natts > MaxTupleAttributeNumber)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid column count %d in RELATION message", rel->natts)));
	rel->atts = palloc0(sizeof(ConcordRelAttr) * Max(rel->natts, 1));
	for (int i = 0; i < rel->natts; i++)
	{
		ConcordRelAttr *att = &rel->atts[i];

		att->is_key = (pq_getmsgbyte(in) & CONCORD_ATT_KEY) != 0;
		att->name = read_identifier(in, "column");
		att->typid = pq_getmsgint(in, 4);
		att->typmod = pq_getmsgint(in, 4);
	}
	return rel;
}

/*
 * Writes the shipped columns of a tuple.  With key_only, columns outside
 * the replica identity go as NULL (the old key tuple of WAL has nothing
 * else).  An unchanged TOAST value, stored out of line and absent from
 * WAL, goes as "unchanged" so that apply keeps the local value; so do
 * the columns in unchanged (attnums; those a forwarded change did not
 * carry, capture/output.c).
 */
static void
write_tuple(StringInfo out, Relation rel, HeapTuple tuple, Bitmapset *columns,
			Bitmapset *unchanged)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Datum	   *values = palloc(sizeof(Datum) * desc->natts);
	bool	   *nulls = palloc(sizeof(bool) * desc->natts);

	heap_deform_tuple(tuple, desc, values, nulls);
	pq_sendint16(out, count_shipped(desc, columns));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Oid			typoutput;
		bool		typisvarlena;
		char	   *text;

		if (!column_shipped(att, columns))
			continue;
		if (bms_is_member(att->attnum, unchanged))
		{
			pq_sendbyte(out, CONCORD_COL_UNCHANGED);
			continue;
		}
		if (nulls[i])
		{
			pq_sendbyte(out, CONCORD_COL_NULL);
			continue;
		}
		if (att->attlen == -1 &&
			VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(values[i])))
		{
			pq_sendbyte(out, CONCORD_COL_UNCHANGED);
			continue;
		}
		getTypeOutputInfo(att->atttypid, &typoutput, &typisvarlena);
		text = OidOutputFunctionCall(typoutput, values[i]);
		pq_sendbyte(out, CONCORD_COL_TEXT);
		pq_sendcountedtext(out, text, strlen(text), false);
		pfree(text);
	}
	pfree(values);
	pfree(nulls);
}

static void
read_tuple(StringInfo in, ConcordTuple *tuple)
{
	int			ncols = pq_getmsgint(in, 2);

	if (ncols < 0 || ncols > MaxTupleAttributeNumber)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid column count %d in tuple", ncols)));
	tuple->ncols = ncols;
	tuple->kinds = palloc0(Max(ncols, 1));
	tuple->values = palloc0(sizeof(StringInfoData) * Max(ncols, 1));
	for (int i = 0; i < ncols; i++)
	{
		char		kind = pq_getmsgbyte(in);
		int			len;

		tuple->kinds[i] = kind;
		if (kind == CONCORD_COL_NULL || kind == CONCORD_COL_UNCHANGED)
			continue;
		if (kind != CONCORD_COL_TEXT)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("unknown column kind %d in tuple", kind)));
		len = pq_getmsgint(in, 4);
		if (len < 0 || len > in->len - in->cursor)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("invalid column length %d in tuple", len)));
		/* Exactly as long as the value: a tuple is read, never appended to. */
		tuple->values[i].data = palloc(len + 1);
		memcpy(tuple->values[i].data, pq_getmsgbytes(in, len), len);
		tuple->values[i].data[len] = '\0';
		tuple->values[i].len = len;
		tuple->values[i].maxlen = len + 1;
		tuple->values[i].cursor = 0;
	}
}

static void
write_change_header(StringInfo out, char type, Relation rel)
{
	pq_sendbyte(out, type);
	pq_sendbyte(out, FLAGS_NONE);
	pq_sendint32(out, RelationGetRelid(rel));
}

void
concord_write_insert(StringInfo out, Relation rel, HeapTuple newtuple,
					 Bitmapset *columns, Bitmapset *unchanged)
{
	write_change_header(out, CONCORD_MSG_INSERT, rel);
	write_tuple(out, rel, newtuple, columns, unchanged);
}

Oid
concord_read_insert(StringInfo in, ConcordTuple *newtup)
{
	Oid			relid;

	(void) pq_getmsgbyte(in);
	relid = pq_getmsgint(in, 4);
	read_tuple(in, newtup);
	return relid;
}

void
concord_write_update(StringInfo out, Relation rel, HeapTuple oldtuple,
					 bool old_is_key, HeapTuple newtuple, Bitmapset *columns,
					 Bitmapset *unchanged)
{
	write_change_header(out, CONCORD_MSG_UPDATE, rel);
	if (oldtuple == NULL)
		pq_sendbyte(out, CONCORD_OLD_NONE);
	else
	{
		pq_sendbyte(out, old_is_key ? CONCORD_OLD_KEY : CONCORD_OLD_FULL);
		write_tuple(out, rel, oldtuple, columns, NULL);
	}
	write_tuple(out, rel, newtuple, columns, unchanged);
}

static char
read_old_kind(StringInfo in)
{
	char		kind = pq_getmsgbyte(in);

	if (kind != CONCORD_OLD_NONE && kind != CONCORD_OLD_KEY &&
		kind != CONCORD_OLD_FULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("unknown old tuple kind %d", kind)));
	return kind;
}

Oid
concord_read_update(StringInfo in, char *oldkind, ConcordTuple *oldtup,
					ConcordTuple *newtup)
{
	Oid			relid;

	(void) pq_getmsgbyte(in);
	relid = pq_getmsgint(in, 4);
	*oldkind = read_old_kind(in);
	if (*oldkind != CONCORD_OLD_NONE)
		read_tuple(in, oldtup);
	read_tuple(in, newtup);
	return relid;
}

void
concord_write_delete(StringInfo out, Relation rel, HeapTuple oldtuple,
					 bool old_is_key, Bitmapset *columns)
{
	write_change_header(out, CONCORD_MSG_DELETE, rel);
	pq_sendbyte(out, old_is_key ? CONCORD_OLD_KEY : CONCORD_OLD_FULL);
	write_tuple(out, rel, oldtuple, columns, NULL);
}

Oid
concord_read_delete(StringInfo in, char *oldkind, ConcordTuple *oldtup)
{
	Oid			relid;

	(void) pq_getmsgbyte(in);
	relid = pq_getmsgint(in, 4);
	*oldkind = read_old_kind(in);
	if (*oldkind == CONCORD_OLD_NONE)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("DELETE message without old tuple")));
	read_tuple(in, oldtup);
	return relid;
}

/*
 * An INSERT, UPDATE or DELETE (type, already read): its relation, and
 * the tuples it has (oldkind CONCORD_OLD_NONE and no old tuple for an
 * INSERT or an UPDATE of the same key, no new tuple for a DELETE).
 */
Oid
concord_read_change(StringInfo in, char type, char *oldkind,
					ConcordTuple *oldtup, ConcordTuple *newtup)
{
	*oldkind = CONCORD_OLD_NONE;
	if (type == CONCORD_MSG_INSERT)
		return concord_read_insert(in, newtup);
	if (type == CONCORD_MSG_UPDATE)
		return concord_read_update(in, oldkind, oldtup, newtup);
	return concord_read_delete(in, oldkind, oldtup);
}

void
concord_write_truncate(StringInfo out, int nrelids, Oid *relids,
					   bool cascade, bool restart_seqs)
{
	pq_sendbyte(out, CONCORD_MSG_TRUNCATE);
	pq_sendbyte(out, FLAGS_NONE);
	pq_sendbyte(out, (cascade ? 1 : 0) | (restart_seqs ? 2 : 0));
	pq_sendint32(out, nrelids);
	for (int i = 0; i < nrelids; i++)
		pq_sendint32(out, relids[i]);
}

void
concord_read_truncate(StringInfo in, ConcordTruncateMsg *msg)
{
	uint8		options;

	(void) pq_getmsgbyte(in);
	options = pq_getmsgbyte(in);
	msg->cascade = (options & 1) != 0;
	msg->restart_seqs = (options & 2) != 0;
	msg->nrelids = pq_getmsgint(in, 4);
	if (msg->nrelids < 0 || msg->nrelids > (in->len - in->cursor) / 4)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid relation count %d in TRUNCATE message",
						msg->nrelids)));
	msg->relids = palloc(sizeof(Oid) * Max(msg->nrelids, 1));
	for (int i = 0; i < msg->nrelids; i++)
		msg->relids[i] = pq_getmsgint(in, 4);
}

/*
 * The vector of a SEEN message: a count, then (origin name, commit
 * timestamp) pairs.  The same bytes are the payload of the logical
 * decoding message that carries it in WAL, so forwarding copies them.
 */
void
concord_encode_seen(StringInfo out, List *entries)
{
	ListCell   *lc;

	pq_sendint16(out, list_length(entries));
	foreach(lc, entries)
	{
		ConcordSeenEntry *e = lfirst(lc);

		pq_sendstring(out, e->origin);
		pq_sendint64(out, e->commit_ts);
	}
}

List *
concord_decode_seen(StringInfo in)
{
	int			n = pq_getmsgint(in, 2);
	List	   *entries = NIL;

	for (int i = 0; i < n; i++)
	{
		ConcordSeenEntry *e = palloc(sizeof(ConcordSeenEntry));

		e->origin = pstrdup(pq_getmsgstring(in));
		if (e->origin[0] == '\0' || strlen(e->origin) >= NAMEDATALEN)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("invalid origin name in SEEN message")));
		e->commit_ts = pq_getmsgint64(in);
		entries = lappend(entries, e);
	}
	return entries;
}

void
concord_write_seen(StringInfo out, const char *payload, int len, bool framed)
{
	pq_sendbyte(out, CONCORD_MSG_SEEN);
	pq_sendbyte(out, FLAGS_NONE);
	if (framed)
		pq_sendint32(out, len);
	pq_sendbytes(out, payload, len);
}

/*
 * The payload of a SEEN message (concord_decode_seen() reads it): as long
 * as its length says (framed, version 2), or the rest of the message.
 */
const char *
concord_read_seen_payload(StringInfo in, bool framed, int *len)
{
	(void) pq_getmsgbyte(in);	/* flags */
	*len = framed ? (int) pq_getmsgint(in, 4) : in->len - in->cursor;
	if (*len < 0 || *len > in->len - in->cursor)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid length %d of a SEEN message", *len)));
	return pq_getmsgbytes(in, *len);
}

void
concord_write_mark(StringInfo out, const char *node, XLogRecPtr lsn)
{
	pq_sendbyte(out, CONCORD_MSG_MARK);
	pq_sendbyte(out, FLAGS_NONE);
	pq_sendint64(out, lsn);
	pq_sendstring(out, node);
}

void
concord_read_mark(StringInfo in, char **node, XLogRecPtr *lsn)
{
	const char *name;

	(void) pq_getmsgbyte(in);	/* flags */
	*lsn = pq_getmsgint64(in);
	name = pq_getmsgstring(in);
	if (name[0] == '\0' || strlen(name) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid node name in a MARK message")));
	*node = pstrdup(name);
}

/*
 * The payload of a CONCORD_MARK_PREFIX message: whether it is the logging
 * node's own (1 byte), the position, the node's name.
 */
void
concord_encode_mark(StringInfo payload, const char *node, XLogRecPtr lsn, bool own)
{
	pq_sendbyte(payload, own ? 1 : 0);
	pq_sendint64(payload, lsn);
	appendBinaryStringInfo(payload, node, strlen(node));
}

/* Reads a CONCORD_MARK_PREFIX payload; false if it is not one. */
bool
concord_decode_mark(const char *payload, Size len, char **node, XLogRecPtr *lsn,
					bool *own)
{
	uint64		n;
	Size		head = 1 + sizeof(uint64);

	if (len <= head || len - head >= NAMEDATALEN)
		return false;
	*own = payload[0] != 0;
	memcpy(&n, payload + 1, sizeof(uint64));
	*lsn = pg_ntoh64(n);
	*node = pnstrdup(payload + head, len - head);
	return true;
}
