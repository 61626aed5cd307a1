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

/*
 * The origins of this database's subscriptions, and the providers of
 * those (PathOrigin with id InvalidRepOriginId when the provider has no
 * origin yet), for the positions their workers keep.  Frees the position
 * entries of subscriptions that no longer exist.
 */
static List *
read_paths(const char *local_node)
{
	List	   *paths = NIL;
	List	   *subids = NIL;
	ListCell   *lc;

	InvalidateCatalogSnapshot();
	foreach(lc, concord_subscription_get_all())
	{
		ConcordSubscription *sub = lfirst(lc);
		ConcordNode *provider = concord_node_get_by_id(sub->provider_node_id);
		bool		provider_seen = false;
		ListCell   *lc2;

		subids = lappend_oid(subids, sub->id);
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
	}
	concord_position_prune(subids);
	return paths;
}

/* Where the subscription's worker stands in its provider's WAL, streaming. */
static XLogRecPtr
caught_up(Oid subid)
{
	ConcordSubState *st;
	XLogRecPtr	lsn = InvalidXLogRecPtr;

	LWLockAcquire(ConcordShmem->lock, LW_SHARED);
	st = concord_sub_state(MyDatabaseId, subid, false);
	if (st && st->phase == CONCORD_PHASE_REPLICATING)
		lsn = st->caught_up_lsn;
	LWLockRelease(ConcordShmem->lock);
	return lsn;
}

/*
 * What this node holds of each origin node its subscriptions bring, as
 * NodeHeld (upper and lower bounds).
 */
static List *
node_held(List *paths)
{
	List	   *held = NIL;
	ListCell   *lc;

	foreach(lc, paths)
	{
		PathOrigin *p = lfirst(lc);
		NodeHeld   *h = held_entry(&held, p->node);
		XLogRecPtr	progress = InvalidXLogRecPtr;
		ConcordPositionState pos;

		if (p->id != InvalidRepOriginId)
			progress = replorigin_get_progress(p->id, false);
		if (p->direct)
		{
			/* The provider's own LSNs: exact. */
			h->upper = Max(h->upper, progress);
			h->lower = Max(h->lower, Max(progress, caught_up(p->subid)));
			continue;
		}
		if (XLogRecPtrIsInvalid(progress))
			continue;			/* nothing applied through it */
		if (!concord_position_lookup(p->subid, p->node, &pos))
		{
			/* not recorded (no room, or applied before an upgrade) */
			h->upper_unknown = true;
			continue;
		}
		if (pos.live || pos.path_lsn == progress)
		{
			h->upper = Max(h->upper, pos.origin_lsn);
			h->lower = Max(h->lower, pos.origin_lsn);
		}
		else if (pos.path_lsn < progress)
		{
			/* newer ones applied after the save, before a crash */
			h->lower = Max(h->lower, pos.origin_lsn);
			h->upper_unknown = true;
		}
		else
			h->upper = Max(h->upper, pos.origin_lsn);	/* lost in a crash */
	}
	return held;
}

static char *
local_node_name(void)
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
	char	   *local = local_node_name();
	List	   *held = node_held(read_paths(local));
	NodeHeld   *self = held_entry(&held, local);
	StringInfoData out;
	ListCell   *lc;

	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a causal token cannot be taken during recovery")));
	/* Its sessions' newest commit; since a restart, all its WAL so far. */
	self->upper = concord_position_local_end();
	if (XLogRecPtrIsInvalid(self->upper))
		self->upper = GetXLogInsertRecPtr();
	self->upper_unknown = false;
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
					 errdetail("It receives that node's transactions forwarded, and the position of the last ones was lost in a crash or not recorded."),
					 errhint("Try again once a new transaction of node \"%s\" has been applied here.", h->node)));
		if (XLogRecPtrIsInvalid(h->upper))
			continue;
		if (out.len > 1)
			appendStringInfoString(&out, ", ");
		escape_json(&out, h->node);
		appendStringInfo(&out, ": \"%X/%X\"", LSN_FORMAT_ARGS(h->upper));
	}
	appendStringInfoChar(&out, '}');
	PG_RETURN_TEXT_P(cstring_to_text(out.data));
}

/* One entry of a token. */
typedef struct TokenEntry
{
	char	   *node;
	XLogRecPtr	lsn;
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
			e = palloc(sizeof(TokenEntry));
			e->node = key;
			e->lsn = token_lsn(pnstrdup(v.val.string.val, v.val.string.len));
			entries = lappend(entries, e);
		}
	}
	return entries;
}

/* Whether this node holds everything the token names. */
static bool
token_held(List *entries, List *held, const char *local)
{
	ListCell   *lc;

	foreach(lc, entries)
	{
		TokenEntry *e = lfirst(lc);
		NodeHeld   *h;

		if (strcmp(e->node, local) == 0)
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
	char	   *local = local_node_name();
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
			MemoryContextReset(paths_cxt);
			oldcxt = MemoryContextSwitchTo(paths_cxt);
			paths = read_paths(local);
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
