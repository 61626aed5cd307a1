/*-------------------------------------------------------------------------
 *
 * proto.h
 *		concord's wire protocol between the output plugin and apply.
 *
 * Every message starts with a type byte and a flags byte (reserved, zero
 * in version 1).  Integers are in network order (pqformat).  Column values
 * travel in their type's text form.  Writers and readers come in pairs; a
 * reader trusts nothing it reads: every count and length is checked.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_PROTO_H
#define CONCORD_PROTO_H

#include "access/htup.h"
#include "access/xlogdefs.h"
#include "lib/stringinfo.h"
#include "nodes/bitmapset.h"
#include "nodes/pg_list.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

/*
 * Versions this build speaks; a subscriber asks for one at START.
 * Version 3: COMMIT carries the transaction's LSN on its origin node
 * (CONCORD_COMMIT_ORIGIN_LSN), for causal tokens.  Version 2: a CopyData
 * message may hold several messages back to back (a transaction's,
 * batched by the output plugin), and SEEN carries the length of its
 * payload.  Version 1: one message per CopyData.
 */
#define CONCORD_PROTO_VERSION_MIN	1
#define CONCORD_PROTO_VERSION		3

/* Message types */
#define CONCORD_MSG_BEGIN		'B'
#define CONCORD_MSG_COMMIT		'C'
#define CONCORD_MSG_RELATION	'R'
#define CONCORD_MSG_INSERT		'I'
#define CONCORD_MSG_UPDATE		'U'
#define CONCORD_MSG_DELETE		'D'
#define CONCORD_MSG_TRUNCATE	'T'
#define CONCORD_MSG_SEEN		'S'	/* what the writer had applied */
#define CONCORD_MSG_MARK		'M'	/* version 3: a node's position, between
									 * transactions (causal tokens) */

/* Kinds of a column value in a tuple */
#define CONCORD_COL_NULL		'n'
#define CONCORD_COL_UNCHANGED	'u'	/* unchanged TOAST value, not sent */
#define CONCORD_COL_TEXT		't'

/* Kinds of old tuple in UPDATE and DELETE */
#define CONCORD_OLD_NONE		'N'
#define CONCORD_OLD_KEY			'K'	/* key columns only, others null */
#define CONCORD_OLD_FULL		'O'	/* every column (REPLICA IDENTITY FULL) */

/* Attribute flags in RELATION */
#define CONCORD_ATT_KEY			0x01

typedef struct ConcordBeginMsg
{
	XLogRecPtr	commit_lsn;		/* LSN of the commit record */
	XLogRecPtr	end_lsn;		/* end of the commit record */
	TimestampTz commit_time;	/* origin's commit timestamp */
	TransactionId xid;
	char	   *origin_name;	/* node where the transaction originated */
	int32		origin_priority;
} ConcordBeginMsg;

/*
 * COMMIT's flags.  CONCORD_COMMIT_SYNC: the provider's commits may wait for
 * this subscriber (synchronous_standby_names lists its walsender), so it
 * reports the transaction at once.  Older subscribers ignore the flags.
 * CONCORD_COMMIT_ORIGIN_LSN (version 3 on): the end LSN of the
 * transaction's commit on its origin node follows the commit time; 0 for
 * a transaction that holds none of its origin's (an initial copy).
 * Without the flag, the provider does not know it.
 */
#define CONCORD_COMMIT_SYNC		0x01
#define CONCORD_COMMIT_ORIGIN_LSN	0x02

/*
 * Prefix of the transactional logical message by which apply records, in
 * the transaction it commits, the origin LSN it received (8 bytes, network
 * order; 0 in an initial copy's), so that a provider forwarding the
 * transaction can send it on.
 */
#define CONCORD_ORIGIN_LSN_PREFIX	"concord.origin_lsn"

/*
 * Prefix of the non-transactional logical message of a MARK: a node's
 * name and a position in its WAL up to which everything it committed
 * is before the mark (1 byte: the logging node's own; 8 bytes, network
 * order; the name).  Logged by concord.causal_token() for its own node,
 * and again by apply for each mark it receives, so that forwarding
 * providers pass it on.
 */
#define CONCORD_MARK_PREFIX		"concord.mark"

typedef struct ConcordCommitMsg
{
	uint8		flags;
	XLogRecPtr	commit_lsn;
	XLogRecPtr	end_lsn;
	TimestampTz commit_time;
	XLogRecPtr	origin_lsn;		/* with CONCORD_COMMIT_ORIGIN_LSN: end LSN
								 * on the origin node, or 0 for a copy */
} ConcordCommitMsg;

typedef struct ConcordRelAttr
{
	char	   *name;
	Oid			typid;			/* provider's type OID, for messages only */
	int32		typmod;
	bool		is_key;
} ConcordRelAttr;

typedef struct ConcordRelationMsg
{
	Oid			remoteid;		/* provider's relation OID */
	char	   *nspname;
	char	   *relname;
	char		replident;
	int			natts;
	ConcordRelAttr *atts;
} ConcordRelationMsg;

typedef struct ConcordTuple
{
	int			ncols;
	char	   *kinds;			/* CONCORD_COL_* per column */
	StringInfoData *values;		/* text of CONCORD_COL_TEXT columns */
} ConcordTuple;

/* One entry of a SEEN message: origin node and commit timestamp. */
typedef struct ConcordSeenEntry
{
	char	   *origin;
	TimestampTz commit_ts;
} ConcordSeenEntry;

typedef struct ConcordTruncateMsg
{
	int			nrelids;
	Oid		   *relids;
	bool		cascade;
	bool		restart_seqs;
} ConcordTruncateMsg;

/* writers (output plugin) */
extern void concord_write_begin(StringInfo out, const ConcordBeginMsg *msg);
extern void concord_write_commit(StringInfo out, const ConcordCommitMsg *msg);
extern void concord_write_relation(StringInfo out, Relation rel,
								   Bitmapset *columns);
/* A change apply received and did not apply, logged for forwarding. */
#define CONCORD_UNAPPLIED_PREFIX	"concord.unapplied"

/* unchanged: attnums of the new tuple to send as unchanged (or NULL) */
extern void concord_write_insert(StringInfo out, Relation rel,
								 HeapTuple newtuple, Bitmapset *columns,
								 Bitmapset *unchanged);
extern void concord_write_update(StringInfo out, Relation rel,
								 HeapTuple oldtuple, bool old_is_key,
								 HeapTuple newtuple, Bitmapset *columns,
								 Bitmapset *unchanged);
extern void concord_write_delete(StringInfo out, Relation rel,
								 HeapTuple oldtuple, bool old_is_key,
								 Bitmapset *columns);
extern void concord_write_truncate(StringInfo out, int nrelids, Oid *relids,
								   bool cascade, bool restart_seqs);

extern void concord_encode_seen(StringInfo out, List *entries);
extern List *concord_decode_seen(StringInfo in);
extern void concord_write_mark(StringInfo out, const char *node, XLogRecPtr lsn);
extern void concord_read_mark(StringInfo in, char **node, XLogRecPtr *lsn);
extern void concord_encode_mark(StringInfo payload, const char *node, XLogRecPtr lsn,
								bool own);
extern bool concord_decode_mark(const char *payload, Size len, char **node,
								XLogRecPtr *lsn, bool *own);
extern void concord_write_seen(StringInfo out, const char *payload, int len,
							   bool framed);

/* readers (apply); the type byte has already been consumed */
extern void concord_read_begin(StringInfo in, ConcordBeginMsg *msg);
extern const char *concord_read_seen_payload(StringInfo in, bool framed,
											 int *len);
extern void concord_read_commit(StringInfo in, ConcordCommitMsg *msg);
extern ConcordRelationMsg *concord_read_relation(StringInfo in);
extern Oid	concord_read_insert(StringInfo in, ConcordTuple *newtup);
extern Oid	concord_read_update(StringInfo in, char *oldkind,
								ConcordTuple *oldtup, ConcordTuple *newtup);
extern Oid	concord_read_delete(StringInfo in, char *oldkind,
								ConcordTuple *oldtup);
extern Oid	concord_read_change(StringInfo in, char type, char *oldkind,
								ConcordTuple *oldtup, ConcordTuple *newtup);
extern void concord_read_truncate(StringInfo in, ConcordTruncateMsg *msg);


#endif							/* CONCORD_PROTO_H */
