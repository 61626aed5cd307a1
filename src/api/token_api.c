/*-------------------------------------------------------------------------
 *
 * token_api.c
 *		Causal tokens: concord.causal_token() and concord.wait_for_token().
 *
 * A token names, per node, an end LSN in that node's own WAL: on the node
 * it is taken on, everything that node holds (its sessions' commits, and
 * what it applied of each origin node); waited for on another node, it is
 * satisfied once that node holds at least as much of each, whichever
 * subscription brought it (a provider's own transactions or ones it
 * forwards).  Written as a JSON object, node name to LSN:
 * {"paris": "0/1A2B3C8", "lyon": "0/19F0010"}.
 *
 * What a node holds of an origin node comes from shmem/position.c: the
 * progress of each subscription's origin for its provider (provider LSNs,
 * exact after a crash too), and for origins a subscription receives
 * forwarded, the origin LSN of the last such transaction.  A token must
 * name at least what the node holds (an upper bound: a reader passing it
 * on must find everything it saw); a wait must count only what is surely
 * held (a lower bound).  After a crash, the forwarded positions loaded
 * from the state file can be either; a token naming such an origin is
 * refused until a transaction of it arrives again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "replication/message.h"
#include "replication/origin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "api/api.h"
#include "catalog/origin.h"
#include "catalog/tables.h"
#include "concord.h"
#include "proto/proto.h"
#include "shmem/position.h"
#include "shmem/shmem.h"

#define TOKEN_POLL_MS		10
#define TOKEN_REREAD_TICKS	50	/* catalogs read again every 0.5 s */

PG_FUNCTION_INFO_V1(concord_causal_token);
PG_FUNCTION_INFO_V1(concord_wait_for_token);

/* What this node holds of one origin node. */
typedef struct NodeHeld
{
	char	   *node;
	XLogRecPtr	upper;			/* at most this */
	XLogRecPtr	lower;			/* at least this */
	bool		upper_unknown;
	bool		unrecorded;		/* a path's position is not kept here */
} NodeHeld;

/* One origin of one subscription, read from the catalogs. */
typedef struct PathOrigin
{
	Oid			subid;
	char	   *node;
	RepOriginId id;
	bool		direct;			/* the node is the subscription's provider */
} PathOrigin;

static NodeHeld *
held_entry(List **held, const char *node)
{
	ListCell   *lc;
	NodeHeld   *h;

	foreach(lc, *held)
	{
		h = lfirst(lc);
		if (strcmp(h->node, node) == 0)
			return h;
	}
	h = palloc0(sizeof(NodeHeld));
	h->node = pstrdup(node);
	*held = lappend(*held, h);
	return h;
}

static bool
path_listed(List *paths, Oid subid, const char *node)
{
	ListCell   *lc;

	foreach(lc, paths)
	{
		PathOrigin *p = lfirst(lc);

		if (p->subid == subid && strcmp(p->node, node) == 0)
			return true;
	}
	return false;
}

/*
 * The origins of this database's subscriptions, and the providers of
 * those (PathOrigin with id InvalidRepOriginId when the provider has no
 * origin yet), for the positions their workers keep.
 */
static List *
read_paths(const char *local_node)
{
	List	   *paths = NIL;
	ListCell   *lc;

	InvalidateCatalogSnapshot();
	foreach(lc, concord_subscription_get_all())
	{
		ConcordSubscription *sub = lfirst(lc);
		ConcordNode *provider = concord_node_get_by_id(sub->provider_node_id);
		bool		provider_seen = false;
		ListCell   *lc2;

		foreach(lc2, concord_origin_sub_list(sub->id))
		{
			ConcordSubOrigin *o = lfirst(lc2);
			PathOrigin *p;

			if (strcmp(o->node, local_node) == 0)
				continue;
			p = palloc(sizeof(PathOrigin));
			p->subid = sub->id;
			p->node = o->node;
			p->id = o->id;
			p->direct = provider != NULL && strcmp(provider->name, o->node) == 0;
			provider_seen |= p->direct;
			paths = lappend(paths, p);
		}
		if (provider != NULL && !provider_seen)
		{
			PathOrigin *p = palloc(sizeof(PathOrigin));

			p->subid = sub->id;
			p->node = provider->name;
			p->id = InvalidRepOriginId;
			p->direct = true;
			paths = lappend(paths, p);
		}
		/* Forwarded nodes only marks came of (no origin here yet). */
		foreach(lc2, concord_position_origins(sub->id))
		{
			char	   *node = lfirst(lc2);
			PathOrigin *p;

			if (strcmp(node, local_node) == 0 ||
				(provider != NULL && strcmp(node, provider->name) == 0) ||
				path_listed(paths, sub->id, node))
				continue;
			p = palloc(sizeof(PathOrigin));
			p->subid = sub->id;
			p->node = node;
			p->id = InvalidRepOriginId;
			p->direct = false;
			paths = lappend(paths, p);
		}
	}
	return paths;
}

/*
 * At least how far this node applied its provider's WAL through the
 * subscription: with its apply worker there, what the worker published
 * after its commits (the origin's progress moves before a commit is
 * visible); without one, the origin's progress.
 */
static XLogRecPtr
direct_lower(Oid subid, XLogRecPtr progress)
{
	ConcordSubState *st;
	XLogRecPtr	lsn = progress;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	st = concord_sub_state(MyDatabaseId, subid, false);
	if (st && st->apply_pid > 0)
		lsn = st->phase == CONCORD_PHASE_REPLICATING ? st->caught_up_lsn : InvalidXLogRecPtr;
	LWLockRelease(ConcordShmem->lock);
	return lsn;
}

/* What one path holds of a node: bounds, as position.c's entry says. */
typedef struct PathHeld
{
	XLogRecPtr	upper;
	XLogRecPtr	lower;
	bool		upper_unknown;
	bool		unrecorded;		/* no entry: not recorded here */
} PathHeld;

/*
 * The bounds of a forwarded path whose origin's progress is progress
 * (> 0), from its entry.  A live entry is exact at its last commit, or at
 * the one being committed once the progress reached it; a loaded one only
 * while the progress is where it was saved (a crash may have moved it).
 */
static PathHeld
forwarded_held(PathOrigin *p, XLogRecPtr progress)
{
	PathHeld	r = {InvalidXLogRecPtr, InvalidXLogRecPtr, false, false};
	ConcordPositionState e;
	XLogRecPtr	known_lsn;

	if (!concord_position_lookup(p->subid, p->node, &e))
	{
		r.upper_unknown = r.unrecorded = !XLogRecPtrIsInvalid(progress);
		return r;
	}
	if (XLogRecPtrIsInvalid(progress))
	{
		/* none of its transactions came this way yet; its marks may have */
		r.lower = e.mark_lsn;
		return r;
	}
	known_lsn = e.origin_known ? e.origin_lsn : InvalidXLogRecPtr;
	if (!XLogRecPtrIsInvalid(e.pending_path_lsn) && e.pending_path_lsn == progress)
	{
		/* committed, not recorded yet: the one before, if it was exact */
		r.upper = e.pending_origin_lsn;
		r.upper_unknown = !e.pending_known;
		r.lower = e.live ? known_lsn : InvalidXLogRecPtr;
	}
	else if (e.path_lsn == progress)
	{
		r.upper = r.lower = known_lsn;
		r.upper_unknown = !e.origin_known;
	}
	else if (e.path_lsn < progress)
	{
		/* newer ones committed since: after the save, before a crash */
		r.lower = known_lsn;
		r.upper_unknown = true;
	}
	else
	{
		/* the saved one was lost in a crash: it will come again */
		r.upper = known_lsn;
		r.upper_unknown = !e.origin_known;
	}
	/* a MARK came after every commit before it (since startup only) */
	r.lower = Max(r.lower, e.mark_lsn);
	return r;
}

/*
 * What this node holds of each origin node its subscriptions bring, as
 * NodeHeld: at most the largest of the paths' upper bounds, at least the
 * smallest of their lower ones (an origin that two subscriptions bring,
 * each with some of its transactions, is held up to where both are).
 */
static List *
node_held(List *paths)
{
	List	   *held = NIL;
	List	   *counted = NIL;	/* NodeHeld with a lower bound set */
	ListCell   *lc;

	foreach(lc, paths)
	{
		PathOrigin *p = lfirst(lc);
		NodeHeld   *h = held_entry(&held, p->node);
		XLogRecPtr	progress = InvalidXLogRecPtr;
		PathHeld	r;

		if (p->id != InvalidRepOriginId)
			progress = replorigin_get_progress(p->id, false);
		if (p->direct)
		{
			/* the provider's own LSNs: progress is exact */
			r.upper = progress;
			r.lower = direct_lower(p->subid, progress);
			r.upper_unknown = r.unrecorded = false;
		}
		else
		{
			r = forwarded_held(p, progress);
			/* nothing came through it, not even a mark */
			if (XLogRecPtrIsInvalid(progress) && XLogRecPtrIsInvalid(r.lower))
				continue;
		}
		h->upper = Max(h->upper, r.upper);
		h->upper_unknown |= r.upper_unknown;
		h->unrecorded |= r.unrecorded;
		if (!list_member_ptr(counted, h))
		{
			h->lower = r.lower;
			counted = lappend(counted, h);
		}
		else
			h->lower = Min(h->lower, r.lower);
	}
	return held;
}

/*
 * Logs a MARK of this node at lsn (proto.h): every subscriber that takes
 * this node's changes, directly or forwarded, then knows that it holds
 * them up to lsn once the mark reaches it, even if the commit at lsn
 * ships nothing to it (a table in no set, a row filter).
 */
void
concord_token_mark(const char *local, XLogRecPtr lsn)
{
	StringInfoData payload;

	if (!concord_position_mark_due(lsn))
		return;
	initStringInfo(&payload);
	concord_encode_mark(&payload, local, lsn, true);
	/* Decoding reads flushed WAL: have the WAL writer flush it soon. */
	XLogSetAsyncXactLSN(LogLogicalMessage(CONCORD_MARK_PREFIX, payload.data,
										  payload.len, false));
	pfree(payload.data);
}

/* One entry of a token, "node": "LSN", appended to out. */
void
concord_token_append(StringInfo out, const char *node, XLogRecPtr lsn)
{
	escape_json(out, node);
	appendStringInfo(out, ": \"%X/%X\"", LSN_FORMAT_ARGS(lsn));
}

char *
concord_token_local_node(void)
{
	ConcordNode *local = concord_node_get_local(true);

	if (local == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this database is no concord node"),
				 errhint("Create the local node with concord.create_node().")));
	return local->name;
}

static void *
departed_from_tuple(HeapTuple tup pg_attribute_unused(),
					TupleDesc desc pg_attribute_unused())
{
	return (void *) 1;
}

/*
 * Whether the node left the cluster (concord.departed_node): nothing more
 * of it will arrive, and what arrived is all there is.
 */
static bool
node_departed(const char *node)
{
	ScanKeyData key;

	if (!OidIsValid(concord_catalog_relid("departed_node", true)))
		return false;
	concord_scankey_name(&key, 1, node);
	return concord_catalog_collect("departed_node", 1, &key,
								   departed_from_tuple) != NIL;
}

static int
held_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp(((NodeHeld *) lfirst(a))->node, ((NodeHeld *) lfirst(b))->node);
}

/*
 * concord.causal_token() RETURNS text: what this node holds, for
 * wait_for_token() on another node.
 */
Datum
concord_causal_token(PG_FUNCTION_ARGS)
{
	char	   *local;
	List	   *held;
	NodeHeld   *self;
	StringInfoData out;
	ListCell   *lc;

	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a causal token cannot be taken during recovery")));
	local = concord_token_local_node();
	held = node_held(read_paths(local));
	self = held_entry(&held, local);
	/* Its sessions' newest commit (position.c says when it is unknown). */
	self->upper = concord_position_local_end();
	self->upper_unknown = self->unrecorded = false;
	concord_token_mark(local, self->upper);
	list_sort(held, held_cmp);

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	foreach(lc, held)
	{
		NodeHeld   *h = lfirst(lc);

		if (h->upper_unknown && !node_departed(h->node))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("this node does not know what it holds of node \"%s\"", h->node),
					 h->unrecorded ?
					 errdetail("It receives that node's transactions forwarded, and keeps no position of them: they were applied by an older library, or before a crash that came before the position was saved, or there is no room left (%d positions per max_worker_processes).",
							   CONCORD_POSITIONS_PER_ENTRY) :
					 errdetail("It receives that node's transactions forwarded, and the position of the last ones was lost in a crash, or not sent by an older provider."),
					 errhint("Try again once a new transaction of node \"%s\" has been applied here%s.", h->node,
							 h->unrecorded ? "; if it keeps failing, raise max_worker_processes" : "")));
		if (XLogRecPtrIsInvalid(h->upper))
			continue;
		if (out.len > 1)
			appendStringInfoString(&out, ", ");
		concord_token_append(&out, h->node, h->upper);
	}
	appendStringInfoChar(&out, '}');
	PG_RETURN_TEXT_P(cstring_to_text(out.data));
}

/* One entry of a token. */
typedef struct TokenEntry
{
	char	   *node;
	XLogRecPtr	lsn;
	bool		departed;		/* listed in concord.departed_node */
} TokenEntry;

static void
bad_token(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid causal token"),
			 errdetail("%s", detail),
			 errhint("Pass a token returned by concord.causal_token().")));
}

static XLogRecPtr
token_lsn(const char *text)
{
	XLogRecPtr	lsn;
	bool		have_error = false;

	lsn = pg_lsn_in_internal(text, &have_error);
	if (have_error)
		bad_token(psprintf("\"%s\" is no WAL position.", text));
	return lsn;
}

/* The token's entries, as TokenEntry. */
static List *
parse_token(const char *token)
{
	JsonLexContext *lex;
	JsonParseErrorType err;
	Jsonb	   *jb;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	List	   *entries = NIL;
	char	   *key = NULL;

	/* Checked first, so a malformed token gets this function's error. */
	lex = makeJsonLexContextCstringLen(pstrdup(token), strlen(token),
									   GetDatabaseEncoding(), true);
	err = pg_parse_json(lex, &nullSemAction);
	if (err != JSON_SUCCESS)
		bad_token("It is not JSON.");
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(token)));
	if (!JB_ROOT_IS_OBJECT(jb))
		bad_token("It is not a JSON object.");
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE)
		{
			TokenEntry *e;

			if (v.type != jbvString)
				bad_token(psprintf("The position of node \"%s\" is not a string.", key));
			e = palloc0(sizeof(TokenEntry));
			e->node = key;
			e->lsn = token_lsn(pnstrdup(v.val.string.val, v.val.string.len));
			entries = lappend(entries, e);
		}
	}
	return entries;
}

/*
 * Whether this node holds everything the token names: of itself, and of
 * a node that left the cluster (what of it was to arrive has arrived, or
 * never will), everything.
 */
static bool
token_held(List *entries, List *held, const char *local)
{
	ListCell   *lc;

	foreach(lc, entries)
	{
		TokenEntry *e = lfirst(lc);
		NodeHeld   *h;

		if (strcmp(e->node, local) == 0 || e->departed)
			continue;
		h = held_entry(&held, e->node);
		if (h->lower < e->lsn)
			return false;
	}
	return true;
}

/*
 * concord.wait_for_token(token text, timeout interval DEFAULT '10s')
 * RETURNS boolean: true once this node holds everything the token names;
 * false once the timeout passed (NULL: none).
 */
Datum
concord_wait_for_token(PG_FUNCTION_ARGS)
{
	char	   *token = text_to_cstring(DatumGetTextPP(concord_required_arg(fcinfo, 0, "token")));
	TimestampTz deadline = concord_deadline_from(fcinfo, 1);
	char	   *local = concord_token_local_node();
	List	   *entries = parse_token(token);
	List	   *paths = NIL;
	MemoryContext tick_cxt;
	MemoryContext paths_cxt;
	MemoryContext oldcxt;
	bool		held = false;

	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("concord.wait_for_token() cannot be used in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errdetail("The transaction's snapshot was taken before the wait, so it would not see what the wait waited for."),
				 errhint("Call it in a transaction of its own, or at READ COMMITTED, before the one that reads.")));
	tick_cxt = AllocSetContextCreate(CurrentMemoryContext, "concord token wait",
									 ALLOCSET_SMALL_SIZES);
	paths_cxt = AllocSetContextCreate(CurrentMemoryContext, "concord token paths",
									  ALLOCSET_SMALL_SIZES);
	for (int tick = 0;; tick++)
	{
		if (tick % TOKEN_REREAD_TICKS == 0)
		{
			ListCell   *lc;

			MemoryContextReset(paths_cxt);
			oldcxt = MemoryContextSwitchTo(paths_cxt);
			paths = read_paths(local);
			foreach(lc, entries)
			{
				TokenEntry *e = lfirst(lc);

				e->departed = node_departed(e->node);
			}
			MemoryContextSwitchTo(oldcxt);
		}
		oldcxt = MemoryContextSwitchTo(tick_cxt);
		held = token_held(entries, node_held(paths), local);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(tick_cxt);
		if (held)
			break;
		if (deadline != 0 && GetCurrentTimestamp() >= deadline)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 TOKEN_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	MemoryContextDelete(tick_cxt);
	MemoryContextDelete(paths_cxt);
	PG_RETURN_BOOL(held);
}
