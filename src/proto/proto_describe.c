/*-------------------------------------------------------------------------
 *
 * proto_describe.c
 *		concord.protocol_describe(bytea): a protocol message as text.
 *
 * A debugging aid, and how the regression tests read the output plugin:
 * it decodes with the same readers apply uses, so a test of it tests both
 * sides of the wire.  LSNs, XIDs and timestamps are left out so that the
 * text is stable from run to run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "proto/proto.h"

PG_FUNCTION_INFO_V1(concord_protocol_describe);

static void
describe_tuple(StringInfo buf, const ConcordTuple *tuple)
{
	appendStringInfoChar(buf, '(');
	for (int i = 0; i < tuple->ncols; i++)
	{
		if (i > 0)
			appendStringInfoString(buf, ", ");
		if (tuple->kinds[i] == CONCORD_COL_NULL)
			appendStringInfoString(buf, "null");
		else if (tuple->kinds[i] == CONCORD_COL_UNCHANGED)
			appendStringInfoString(buf, "unchanged-toast");
		else
			appendStringInfoString(buf, quote_literal_cstr(tuple->values[i].data));
	}
	appendStringInfoChar(buf, ')');
}

static const char *
relid_name(Oid relid)
{
	char	   *name = get_rel_name(relid);

	return name ? name : psprintf("%u", relid);
}

static void
describe_relation(StringInfo buf, StringInfo in)
{
	ConcordRelationMsg *rel = concord_read_relation(in);

	appendStringInfo(buf, "RELATION %s.%s replident %c (",
					 rel->nspname, rel->relname, rel->replident);
	for (int i = 0; i < rel->natts; i++)
		appendStringInfo(buf, "%s%s %s%s", i > 0 ? ", " : "",
						 rel->atts[i].name,
						 format_type_with_typemod(rel->atts[i].typid,
												  rel->atts[i].typmod),
						 rel->atts[i].is_key ? " key" : "");
	appendStringInfoChar(buf, ')');
}

static void
describe_change(StringInfo buf, StringInfo in, char type)
{
	ConcordTuple oldtup;
	ConcordTuple newtup;
	char		oldkind;
	Oid			relid;

	switch (type)
	{
		case CONCORD_MSG_INSERT:
			relid = concord_read_insert(in, &newtup);
			appendStringInfo(buf, "INSERT %s new ", relid_name(relid));
			describe_tuple(buf, &newtup);
			break;
		case CONCORD_MSG_UPDATE:
			relid = concord_read_update(in, &oldkind, &oldtup, &newtup);
			appendStringInfo(buf, "UPDATE %s", relid_name(relid));
			if (oldkind != CONCORD_OLD_NONE)
			{
				appendStringInfoString(buf, oldkind == CONCORD_OLD_KEY ?
									   " old-key " : " old ");
				describe_tuple(buf, &oldtup);
			}
			appendStringInfoString(buf, " new ");
			describe_tuple(buf, &newtup);
			break;
		case CONCORD_MSG_DELETE:
			relid = concord_read_delete(in, &oldkind, &oldtup);
			appendStringInfo(buf, "DELETE %s %s ", relid_name(relid),
							 oldkind == CONCORD_OLD_KEY ? "old-key" : "old");
			describe_tuple(buf, &oldtup);
			break;
	}
}

/* Appends the description of the message at in's cursor to buf. */
static void
describe_message(StringInfo buf, StringInfo in, int version)
{
	char		type = pq_getmsgbyte(in);

	switch (type)
	{
		case CONCORD_MSG_BEGIN:
			{
				ConcordBeginMsg msg;

				concord_read_begin(in, &msg);
				appendStringInfo(buf, "BEGIN origin %s priority %d",
								 msg.origin_name, msg.origin_priority);
				break;
			}
		case CONCORD_MSG_COMMIT:
			{
				ConcordCommitMsg msg;

				concord_read_commit(in, &msg);
				appendStringInfoString(buf, "COMMIT");
				if (msg.flags & CONCORD_COMMIT_SYNC)
					appendStringInfoString(buf, " sync");
				if (msg.flags & CONCORD_COMMIT_ORIGIN_LSN)
					appendStringInfo(buf, " origin-lsn %X/%X",
									 LSN_FORMAT_ARGS(msg.origin_lsn));
				break;
			}
		case CONCORD_MSG_RELATION:
			describe_relation(buf, in);
			break;
		case CONCORD_MSG_INSERT:
		case CONCORD_MSG_UPDATE:
		case CONCORD_MSG_DELETE:
			describe_change(buf, in, type);
			break;
		case CONCORD_MSG_TRUNCATE:
			{
				ConcordTruncateMsg msg;

				concord_read_truncate(in, &msg);
				appendStringInfoString(buf, "TRUNCATE");
				for (int i = 0; i < msg.nrelids; i++)
					appendStringInfo(buf, " %s", relid_name(msg.relids[i]));
				if (msg.cascade)
					appendStringInfoString(buf, " cascade");
				if (msg.restart_seqs)
					appendStringInfoString(buf, " restart-identity");
				break;
			}
		case CONCORD_MSG_SEEN:
			{
				List	   *entries;
				StringInfoData payload;
				int			len;

				payload.data = (char *) concord_read_seen_payload(in, version >= 2, &len);
				payload.len = payload.maxlen = len;
				payload.cursor = 0;
				entries = concord_decode_seen(&payload);
				pq_getmsgend(&payload);
				appendStringInfo(buf, "SEEN %d origin(s)", list_length(entries));
				break;
			}
		case CONCORD_MSG_MARK:
			{
				char	   *node;
				XLogRecPtr	lsn;

				concord_read_mark(in, &node, &lsn);
				appendStringInfo(buf, "MARK %s at %X/%X", node, LSN_FORMAT_ARGS(lsn));
				break;
			}
		default:
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("unknown concord message type %d", type)));
	}
}

/*
 * concord.protocol_describe(message bytea, proto_version int DEFAULT 1):
 * what the output plugin wrote in one CopyData message, as text, one line
 * per message (version 2 batches a transaction's messages).
 */
Datum
concord_protocol_describe(PG_FUNCTION_ARGS)
{
	bytea	   *data = PG_GETARG_BYTEA_PP(0);
	/* A database still holding the one-argument declaration passes one. */
	int32		version = PG_NARGS() > 1 ? PG_GETARG_INT32(1) : 1;
	StringInfoData in;
	StringInfoData buf;

	if (version < CONCORD_PROTO_VERSION_MIN || version > CONCORD_PROTO_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("concord protocol version %d is not supported", version),
				 errhint("Versions %d to %d are.", CONCORD_PROTO_VERSION_MIN,
						 CONCORD_PROTO_VERSION)));
	/*
	 * A copy ending in a NUL, as libpq's buffers do: reading a string runs
	 * strlen() before it checks the length left, and must not run past the
	 * datum (review #20).
	 */
	initStringInfo(&in);
	appendBinaryStringInfo(&in, VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data));
	initStringInfo(&buf);
	do
	{
		if (buf.len > 0)
			appendStringInfoChar(&buf, '\n');
		describe_message(&buf, &in, version);
	} while (version >= 2 && in.cursor < in.len);
	pq_getmsgend(&in);
	PG_RETURN_TEXT_P(cstring_to_text(buf.data));
}
