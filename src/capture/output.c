/*-------------------------------------------------------------------------
 *
 * output.c
 *		The "concord" logical decoding output plugin: what to send.
 *
 * Options, given by the subscriber at START_REPLICATION:
 *	proto_version		required; a version this build speaks
 *	replication_sets	comma-separated set names (default: default)
 *	forward_origins		'' (only changes written on this node), 'all',
 *						or comma-separated origin node names
 *	subscriber_node		the subscriber's node name: its own changes are
 *						never sent back to it
 *
 * A transaction's BEGIN is sent with its first shipped change, so that
 * transactions with nothing for this subscriber cost one progress update
 * and no traffic.  Each relation's metadata goes once per stream and again
 * after the relation or its membership changed.  Encoding is proto.c's job;
 * set membership and row filters are output_rel.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "port/pg_bswap.h"
#include "libpq/pqformat.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/output_plugin.h"
#include "replication/walsender_private.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/varlena.h"

#include "capture/output_rel.h"
#include "catalog/identity.h"
#include "catalog/origin.h"
#include "catalog/tables.h"
#include "concord.h"
#include "conflict/seen.h"
#include "proto/proto.h"

extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

typedef struct OutputData
{
	MemoryContext change_context;	/* reset after each callback */
	uint32		proto_version;
	List	   *set_names;
	bool		forward_all;
	List	   *forward_nodes;		/* names, when not all and not none */
	char	   *subscriber_node;
	char	   *local_node;		/* cached; reset by node invalidation */
	int32		local_priority;
	List	   *peers;			/* cached PeerPriority of forwarded origins */
	bool		peers_stale;
	bool		batch_open;		/* ctx->out holds messages not yet written */
	int			unreported;		/* changes decoded since the last progress */
} OutputData;

/*
 * A long stretch of changes that sends nothing (tables in no subscribed
 * set, rows the filter drops, another origin's transaction) must still let
 * the WAL sender answer the subscriber and send keepalives: PostgreSQL 15
 * does so only in OutputPluginUpdateProgress() and in writes.  Without it a
 * subscriber waiting concord.receive_timeout took the stream for dead, and
 * decoded the same stretch again after each reconnection, for ever.
 */
#define PROGRESS_EVERY	100

/*
 * From protocol version 2 on, the messages of a transaction travel
 * together, in one CopyData message per BATCH_BYTES (and one at the
 * commit): one send on the provider and one receive on the subscriber per
 * small transaction, where version 1 makes one of each per message.
 */
#define BATCH_BYTES		(64 * 1024)

typedef struct PeerPriority
{
	char		name[NAMEDATALEN];
	int32		priority;
} PeerPriority;

/* Per transaction, in txn->output_plugin_private. */
typedef struct OutputTxn
{
	bool		decided;		/* origin looked at */
	bool		skip;			/* origin not wanted by the subscriber */
	bool		begin_sent;
	char		origin_name[NAMEDATALEN];
	int32		origin_priority;
	char	   *seen;			/* SEEN payload waiting for the first change */
	Size		seen_len;
	XLogRecPtr	origin_lsn;		/* from apply's CONCORD_ORIGIN_LSN_PREFIX */
	bool		origin_lsn_set;
} OutputTxn;

static OutputData *CurrentOutput = NULL;

/* Before a message is written into ctx->out. */
static void
message_start(LogicalDecodingContext *ctx, bool last_write)
{
	OutputData *data = ctx->output_plugin_private;

	if (data->batch_open)
		return;
	OutputPluginPrepareWrite(ctx, last_write);
	data->batch_open = data->proto_version >= 2;
}

/*
 * After a message was written into ctx->out: sends it, unless it is
 * batched and neither the transaction's end nor BATCH_BYTES was reached.
 */
static void
message_end(LogicalDecodingContext *ctx, bool last_write, bool txn_end)
{
	OutputData *data = ctx->output_plugin_private;

	if (data->batch_open && !txn_end && ctx->out->len < BATCH_BYTES)
		return;
	OutputPluginWrite(ctx, last_write);
	data->batch_open = false;
}
static bool NodeCallbackRegistered = false;

static List *
split_names(const char *value, const char *option)
{
	char	   *copy = pstrdup(value);
	List	   *names = NIL;

	if (copy[0] != '\0' && !SplitIdentifierString(copy, ',', &names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in concord option \"%s\"", option)));
	return names;
}

static void
parse_proto_version(OutputData *data, DefElem *elem)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(strVal(elem->arg), &end, 10);
	if (errno != 0 || *end != '\0' || end == strVal(elem->arg) ||
		v < CONCORD_PROTO_VERSION_MIN || v > CONCORD_PROTO_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("concord protocol version %s is not supported by this provider",
						strVal(elem->arg)),
				 errdetail("This provider speaks versions %d to %d.",
						   CONCORD_PROTO_VERSION_MIN, CONCORD_PROTO_VERSION),
				 errhint("Upgrade concord on the older node.")));
	data->proto_version = (uint32) v;
}

static void
parse_options(OutputData *data, List *options)
{
	ListCell   *lc;

	data->set_names = list_make1(pstrdup("default"));
	foreach(lc, options)
	{
		DefElem    *elem = lfirst(lc);
		const char *value = elem->arg ? strVal(elem->arg) : "";

		if (strcmp(elem->defname, "proto_version") == 0 && elem->arg)
			parse_proto_version(data, elem);
		else if (strcmp(elem->defname, "replication_sets") == 0)
			data->set_names = split_names(value, elem->defname);
		else if (strcmp(elem->defname, "forward_origins") == 0)
		{
			data->forward_nodes = split_names(value, elem->defname);
			data->forward_all = list_length(data->forward_nodes) == 1 &&
				strcmp(linitial(data->forward_nodes), "all") == 0;
		}
		else if (strcmp(elem->defname, "subscriber_node") == 0)
			data->subscriber_node = pstrdup(value);
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown concord output plugin option \"%s\"",
							elem->defname)));
	}
	if (data->proto_version == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"proto_version\" is required by the concord output plugin")));
}

/*
 * Node API functions invalidate the relcache of concord.node.  Catalog
 * lookups are not safe inside an invalidation callback, so any relcache
 * invalidation drops the cached local node; it is read again at the next
 * transaction, which is cheap and rare.
 */
static void
node_cache_invalidate(Datum arg pg_attribute_unused(), Oid relid pg_attribute_unused())
{
	if (CurrentOutput != NULL)
	{
		CurrentOutput->local_node = NULL;
		CurrentOutput->peers_stale = true;
	}
}

static void
output_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt,
			   bool is_init)
{
	OutputData *data = MemoryContextAllocZero(ctx->context, sizeof(OutputData));
	MemoryContext oldcxt;

	data->change_context = AllocSetContextCreate(ctx->context,
												 "concord output change",
												 ALLOCSET_DEFAULT_SIZES);
	ctx->output_plugin_private = data;
	opt->output_type = OUTPUT_PLUGIN_BINARY_OUTPUT;
	opt->receive_rewrites = false;

	/* Slot creation passes no options; the stream must. */
	if (is_init)
		return;
	oldcxt = MemoryContextSwitchTo(ctx->context);
	parse_options(data, ctx->output_plugin_options);
	MemoryContextSwitchTo(oldcxt);
	concord_output_rel_init(data->set_names);
	if (!NodeCallbackRegistered)
	{
		CacheRegisterRelcacheCallback(node_cache_invalidate, (Datum) 0);
		NodeCallbackRegistered = true;
	}
	CurrentOutput = data;
}

static void
output_shutdown(LogicalDecodingContext *ctx pg_attribute_unused())
{
	CurrentOutput = NULL;
}

/*
 * Origins are looked at per transaction, where catalogs can be read: only
 * the cheap case (forward nothing) is decided here.
 */
static bool
output_filter_by_origin(LogicalDecodingContext *ctx, RepOriginId origin_id)
{
	OutputData *data = ctx->output_plugin_private;

	return origin_id != InvalidRepOriginId &&
		!data->forward_all && data->forward_nodes == NIL;
}

static void
load_local_node(OutputData *data)
{
	ConcordNode *node;
	MemoryContext oldcxt;
	char	   *why;

	if (data->local_node != NULL)
		return;
	node = concord_node_get_local(true);
	if (node == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the provider database is not a concord node"),
				 errhint("Run concord.create_node() on the provider.")));
	/* A copy of a node never ships its writes as that node's. */
	if (!concord_identity_check_marker(&why))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the provider database is a copy of node \"%s\", not that node", node->name),
				 errdetail("%s.", why),
				 errhint(COPY_HINT)));
	oldcxt = MemoryContextSwitchTo(GetMemoryChunkContext(data));
	data->local_node = pstrdup(node->name);
	MemoryContextSwitchTo(oldcxt);
	data->local_priority = node->priority;
}

/*
 * The priority of a forwarded transaction's origin node, as this node
 * knows it; looked up once per node, not per transaction.
 */
static int32
peer_priority(OutputData *data, const char *name)
{
	ListCell   *lc;
	ConcordNode *node;
	PeerPriority *peer;
	MemoryContext oldcxt;

	if (data->peers_stale)
	{
		list_free_deep(data->peers);
		data->peers = NIL;
		data->peers_stale = false;
	}
	foreach(lc, data->peers)
	{
		peer = lfirst(lc);
		if (strcmp(peer->name, name) == 0)
			return peer->priority;
	}
	node = concord_node_get_by_name(name);
	oldcxt = MemoryContextSwitchTo(GetMemoryChunkContext(data));
	peer = palloc(sizeof(PeerPriority));
	strlcpy(peer->name, name, NAMEDATALEN);
	peer->priority = node ? node->priority : 0;
	data->peers = lappend(data->peers, peer);
	MemoryContextSwitchTo(oldcxt);
	return peer->priority;
}

/*
 * Whether the subscriber takes what another node wrote first (origin),
 * forwarded by this one: never its own, else as forward_origins says.
 */
static bool
forwards_origin(OutputData *data, const char *origin)
{
	ListCell   *lc;

	if (data->subscriber_node && strcmp(origin, data->subscriber_node) == 0)
		return false;
	if (data->forward_all)
		return true;
	foreach(lc, data->forward_nodes)
		if (strcmp(lfirst(lc), origin) == 0)
			return true;
	return false;
}

/* Decides, once per transaction, where it came from and whether to ship it. */
static void
decide_origin(OutputData *data, ReorderBufferTXN *txn, OutputTxn *otxn)
{
	char	   *origin = NULL;

	otxn->decided = true;
	load_local_node(data);
	if (txn->origin_id == InvalidRepOriginId)
	{
		strlcpy(otxn->origin_name, data->local_node, NAMEDATALEN);
		otxn->origin_priority = data->local_priority;
		return;
	}
	origin = concord_origin_node_by_id(txn->origin_id);
	if (origin == NULL)
		origin = psprintf("origin_%u", txn->origin_id);
	strlcpy(otxn->origin_name, origin, NAMEDATALEN);
	otxn->origin_priority = peer_priority(data, otxn->origin_name);

	otxn->skip = !forwards_origin(data, origin);
}

/* Counts a decoded change; reports progress every PROGRESS_EVERY. */
static void
note_change(LogicalDecodingContext *ctx)
{
	OutputData *data = ctx->output_plugin_private;

	if (++data->unreported >= PROGRESS_EVERY)
	{
		data->unreported = 0;
		OutputPluginUpdateProgress(ctx, false);
	}
}

static void
output_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	txn->output_plugin_private = MemoryContextAllocZero(ctx->context,
														sizeof(OutputTxn));
}

static void
send_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, OutputTxn *otxn)
{
	ConcordBeginMsg msg;

	msg.commit_lsn = txn->final_lsn;
	msg.end_lsn = txn->end_lsn;
	msg.commit_time = txn->xact_time.commit_time;
	msg.xid = txn->xid;
	msg.origin_name = otxn->origin_name;
	msg.origin_priority = otxn->origin_priority;
	message_start(ctx, false);
	concord_write_begin(ctx->out, &msg);
	message_end(ctx, false, false);
	otxn->begin_sent = true;
}

/*
 * Makes sure BEGIN and the relation's metadata went out before a change;
 * false if the transaction is not for this subscriber.
 */
static bool
prepare_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			   Relation rel, ConcordOutputRel *entry)
{
	OutputData *data = ctx->output_plugin_private;
	OutputTxn  *otxn = txn->output_plugin_private;

	if (!otxn->decided)
		decide_origin(data, txn, otxn);
	if (otxn->skip)
		return false;
	if (!otxn->begin_sent)
	{
		send_begin(ctx, txn, otxn);
		if (otxn->seen)
		{
			message_start(ctx, false);
			concord_write_seen(ctx->out, otxn->seen, otxn->seen_len,
							   data->proto_version >= 2);
			message_end(ctx, false, false);
		}
	}
	if (!entry->meta_sent)
	{
		message_start(ctx, false);
		concord_write_relation(ctx->out, rel, entry->columns);
		message_end(ctx, false, false);
		entry->meta_sent = true;
	}
	return true;
}

/*
 * One change to ship: from WAL (send_change) or passed on unapplied
 * (output_unapplied).  unchanged: columns of the new tuple that go as
 * unchanged whatever they hold (attnums), NULL for none.
 */
typedef struct ShippedChange
{
	char		action;			/* CONCORD_MSG_INSERT, _UPDATE or _DELETE */
	HeapTuple	oldtuple;
	bool		old_is_key;		/* oldtuple is the key, not the whole row */
	HeapTuple	newtuple;
	Bitmapset  *unchanged;
} ShippedChange;

/*
 * An UPDATE moving a row into or out of the row filter becomes an INSERT
 * or a DELETE for the subscriber, so that it holds exactly the rows that
 * pass the filter.  The filter may only read key columns (or the table has
 * REPLICA IDENTITY FULL), so the old tuple or the new one's key decides.
 */
static void
send_update(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation rel,
			ConcordOutputRel *entry, const ShippedChange *sc)
{
	bool		new_match = concord_output_rel_filter(entry, sc->newtuple);
	bool		old_match = sc->oldtuple ?
		concord_output_rel_filter(entry, sc->oldtuple) : new_match;

	if ((!old_match && !new_match) || !prepare_change(ctx, txn, rel, entry))
		return;
	message_start(ctx, true);
	if (old_match && new_match)
		concord_write_update(ctx->out, rel, sc->oldtuple, sc->old_is_key,
							 sc->newtuple, entry->columns, sc->unchanged);
	else if (new_match)
		concord_write_insert(ctx->out, rel, sc->newtuple, entry->columns,
							 sc->unchanged);
	else
		concord_write_delete(ctx->out, rel, sc->oldtuple, sc->old_is_key,
							 entry->columns);
	message_end(ctx, true, false);
}

/* Ships one change of rel, if the set ships it. */
static void
send_tuples(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation rel,
			ConcordOutputRel *entry, const ShippedChange *sc)
{
	switch (sc->action)
	{
		case CONCORD_MSG_INSERT:
			if (!entry->ship_insert || sc->newtuple == NULL ||
				!concord_output_rel_filter(entry, sc->newtuple) ||
				!prepare_change(ctx, txn, rel, entry))
				return;
			message_start(ctx, true);
			concord_write_insert(ctx->out, rel, sc->newtuple, entry->columns,
								 sc->unchanged);
			message_end(ctx, true, false);
			break;
		case CONCORD_MSG_UPDATE:
			if (!entry->ship_update || sc->newtuple == NULL)
				return;
			send_update(ctx, txn, rel, entry, sc);
			break;
		case CONCORD_MSG_DELETE:
			if (!entry->ship_delete || sc->oldtuple == NULL ||
				!concord_output_rel_filter(entry, sc->oldtuple) ||
				!prepare_change(ctx, txn, rel, entry))
				return;
			message_start(ctx, true);
			concord_write_delete(ctx->out, rel, sc->oldtuple, sc->old_is_key,
								 entry->columns);
			message_end(ctx, true, false);
			break;
		default:
			break;
	}
}

static void
send_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation rel,
			ConcordOutputRel *entry, ReorderBufferChange *change)
{
	ShippedChange sc = {0};

	sc.oldtuple = change->data.tp.oldtuple ?
		&change->data.tp.oldtuple->tuple : NULL;
	sc.old_is_key = rel->rd_rel->relreplident != REPLICA_IDENTITY_FULL;
	sc.newtuple = change->data.tp.newtuple ?
		&change->data.tp.newtuple->tuple : NULL;
	switch (change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
			sc.action = CONCORD_MSG_INSERT;
			break;
		case REORDER_BUFFER_CHANGE_UPDATE:
			sc.action = CONCORD_MSG_UPDATE;
			break;
		case REORDER_BUFFER_CHANGE_DELETE:
			sc.action = CONCORD_MSG_DELETE;
			break;
		default:
			return;
	}
	send_tuples(ctx, txn, rel, entry, &sc);
}

static void
output_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			  Relation rel, ReorderBufferChange *change)
{
	OutputData *data = ctx->output_plugin_private;
	MemoryContext oldcxt;
	ConcordOutputRel *entry;

	note_change(ctx);
	oldcxt = MemoryContextSwitchTo(data->change_context);
	entry = concord_output_rel_get(rel);
	if (entry->replicated)
		send_change(ctx, txn, rel, entry, change);
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->change_context);
}

static void
output_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				int nrelations, Relation relations[],
				ReorderBufferChange *change)
{
	OutputData *data = ctx->output_plugin_private;
	MemoryContext oldcxt;
	Oid		   *relids;
	int			nrelids = 0;

	note_change(ctx);
	oldcxt = MemoryContextSwitchTo(data->change_context);
	relids = palloc(sizeof(Oid) * nrelations);

	for (int i = 0; i < nrelations; i++)
	{
		ConcordOutputRel *entry = concord_output_rel_get(relations[i]);

		if (!entry->replicated || !entry->ship_truncate ||
			!prepare_change(ctx, txn, relations[i], entry))
			continue;
		relids[nrelids++] = RelationGetRelid(relations[i]);
	}
	if (nrelids > 0)
	{
		message_start(ctx, true);
		concord_write_truncate(ctx->out, nrelids, relids,
							   change->data.truncate.cascade,
							   change->data.truncate.restart_seqs);
		message_end(ctx, true, false);
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->change_context);
}

/* A heap tuple of the payload, copied to be aligned. */
static void
read_heap_tuple(StringInfo in, Oid relid, HeapTuple tuple)
{
	uint32		len = pq_getmsgint(in, 4);

	tuple->t_len = len;
	tuple->t_tableOid = relid;
	ItemPointerSetInvalid(&tuple->t_self);
	tuple->t_data = palloc(len);
	memcpy(tuple->t_data, pq_getmsgbytes(in, len), len);
}

/*
 * A change that apply received here and did not apply (apply/forward.c):
 * shipped as a change of its transaction, whose origin is the change's
 * own, to the subscribers that take that origin, through the same row
 * filters and column lists as any change; the columns it did not carry go
 * as unchanged.
 */
static void
output_unapplied(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				 const char *message, Size message_size)
{
	OutputData *data = ctx->output_plugin_private;
	MemoryContext oldcxt = MemoryContextSwitchTo(data->change_context);
	StringInfoData in;
	Oid			relid;
	char		oldkind;
	HeapTupleData oldtuple;
	HeapTupleData newtuple;
	ShippedChange sc = {0};
	Relation	rel;

	in.data = (char *) message;
	in.len = in.maxlen = message_size;
	in.cursor = 0;
	relid = pq_getmsgint(&in, 4);
	sc.action = pq_getmsgbyte(&in);
	oldkind = pq_getmsgbyte(&in);
	if (oldkind != CONCORD_OLD_NONE)
	{
		read_heap_tuple(&in, relid, &oldtuple);
		sc.oldtuple = &oldtuple;
		sc.old_is_key = oldkind != CONCORD_OLD_FULL;
	}
	if (sc.action != CONCORD_MSG_DELETE)
	{
		int			n;

		read_heap_tuple(&in, relid, &newtuple);
		sc.newtuple = &newtuple;
		n = pq_getmsgint(&in, 2);
		for (int i = 0; i < n; i++)
			sc.unchanged = bms_add_member(sc.unchanged, pq_getmsgint(&in, 2));
	}
	rel = RelationIdGetRelation(relid);
	if (RelationIsValid(rel))
	{
		ConcordOutputRel *entry = concord_output_rel_get(rel);

		if (entry->replicated)
			send_tuples(ctx, txn, rel, entry, &sc);
		RelationClose(rel);
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->change_context);
}

/*
 * A MARK (version 3): a node's position, up to which everything it
 * committed was sent before (concord.causal_token() logs its own node's,
 * apply each one it receives).  Sent on as that node's transactions are:
 * never to the node itself, and another node's only where the subscriber
 * takes that node's changes (forward_origins).
 */
static void
send_mark(LogicalDecodingContext *ctx, const char *message, Size size)
{
	OutputData *data = ctx->output_plugin_private;
	char	   *node;
	XLogRecPtr	lsn;
	bool		own;

	/* No catalog access here: outside a transaction (no local node name). */
	if (data->proto_version < 3 ||
		!concord_decode_mark(message, size, &node, &lsn, &own))
		return;
	if (own ? (data->subscriber_node && strcmp(node, data->subscriber_node) == 0) :
		!forwards_origin(data, node))
	{
		pfree(node);
		return;
	}
	message_start(ctx, true);
	concord_write_mark(ctx->out, node, lsn);
	message_end(ctx, true, true);
	pfree(node);
}

/*
 * The writer's vector (seen.c) travels as a SEEN message.  Before the
 * transaction's first shipped change it waits (the last one logged
 * wins), so that a transaction with nothing for this subscriber costs
 * nothing; after it, it goes at once, before the changes that follow it.
 */
static void
output_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			   XLogRecPtr message_lsn pg_attribute_unused(), bool transactional,
			   const char *prefix, Size message_size, const char *message)
{
	OutputData *data = ctx->output_plugin_private;
	OutputTxn  *otxn;

	note_change(ctx);
	if (transactional && txn != NULL &&
		strcmp(prefix, CONCORD_UNAPPLIED_PREFIX) == 0)
	{
		output_unapplied(ctx, txn, message, message_size);
		return;
	}
	if (transactional && txn != NULL &&
		strcmp(prefix, CONCORD_ORIGIN_LSN_PREFIX) == 0 &&
		message_size == sizeof(uint64))
	{
		uint64		lsn;

		memcpy(&lsn, message, sizeof(uint64));
		otxn = txn->output_plugin_private;
		otxn->origin_lsn = pg_ntoh64(lsn);
		otxn->origin_lsn_set = true;
		return;
	}
	if (!transactional && strcmp(prefix, CONCORD_MARK_PREFIX) == 0)
	{
		send_mark(ctx, message, message_size);
		return;
	}
	if (!transactional || txn == NULL || strcmp(prefix, CONCORD_SEEN_PREFIX) != 0)
		return;
	otxn = txn->output_plugin_private;
	if (!otxn->decided)
		decide_origin(data, txn, otxn);
	if (otxn->skip)
		return;
	if (!otxn->begin_sent)
	{
		if (otxn->seen)
			pfree(otxn->seen);
		otxn->seen = MemoryContextAlloc(ctx->context, message_size);
		memcpy(otxn->seen, message, message_size);
		otxn->seen_len = message_size;
		return;
	}
	message_start(ctx, true);
	concord_write_seen(ctx->out, message, message_size,
						   data->proto_version >= 2);
	message_end(ctx, true, false);
}

/*
 * Whether commits here may wait for this walsender's subscriber: it is
 * listed in synchronous_standby_names (priority, or a quorum).  The
 * subscriber then reports each such transaction at once, where it would
 * report once a second (apply.c).
 */
static uint8
commit_flags(void)
{
	int			priority;

	if (MyWalSnd == NULL)
		return 0;
	SpinLockAcquire(&MyWalSnd->mutex);
	priority = MyWalSnd->sync_standby_priority;
	SpinLockRelease(&MyWalSnd->mutex);
	return priority > 0 ? CONCORD_COMMIT_SYNC : 0;
}

/*
 * The end LSN of the transaction's commit on its origin node, into *lsn:
 * its own here for a transaction written here; for an applied one, what
 * apply recorded (CONCORD_ORIGIN_LSN_PREFIX; 0 in an initial copy).  False
 * when not known (applied by an older library).
 */
static bool
origin_lsn_of(ReorderBufferTXN *txn, OutputTxn *otxn, XLogRecPtr *lsn)
{
	if (txn->origin_id == InvalidRepOriginId)
	{
		*lsn = txn->end_lsn;
		return true;
	}
	if (otxn == NULL || !otxn->origin_lsn_set)
		return false;
	*lsn = otxn->origin_lsn;
	return true;
}

static void
output_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			  XLogRecPtr commit_lsn)
{
	OutputData *data = ctx->output_plugin_private;
	OutputTxn  *otxn = txn->output_plugin_private;
	bool		sent = otxn != NULL && otxn->begin_sent;
	ConcordCommitMsg msg;
	bool		origin_lsn_known;

	msg.origin_lsn = InvalidXLogRecPtr;
	origin_lsn_known = origin_lsn_of(txn, otxn, &msg.origin_lsn);
	if (otxn)
	{
		if (otxn->seen)
			pfree(otxn->seen);
		pfree(otxn);
	}
	txn->output_plugin_private = NULL;

	/* Nothing was sent: let the walsender advance the slot anyway. */
	OutputPluginUpdateProgress(ctx, !sent);
	if (!sent)
		return;
	msg.flags = commit_flags();
	if (data->proto_version >= 3 && origin_lsn_known)
		msg.flags |= CONCORD_COMMIT_ORIGIN_LSN;
	msg.commit_lsn = commit_lsn;
	msg.end_lsn = txn->end_lsn;
	msg.commit_time = txn->xact_time.commit_time;
	message_start(ctx, true);
	concord_write_commit(ctx->out, &msg);
	message_end(ctx, true, true);
}

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = output_startup;
	cb->begin_cb = output_begin;
	cb->change_cb = output_change;
	cb->truncate_cb = output_truncate;
	cb->commit_cb = output_commit;
	cb->message_cb = output_message;
	cb->filter_by_origin_cb = output_filter_by_origin;
	cb->shutdown_cb = output_shutdown;
}
