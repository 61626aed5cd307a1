/*-------------------------------------------------------------------------
 *
 * origin.c
 *		concord's replication origins: one per (subscription, origin node).
 *
 * An applied transaction commits under the replication origin named
 * "concord_<subscription id>_<origin node name>", with the provider's end
 * LSN of its commit as progress.  The name carries the node where the
 * transaction was first written, so a provider that forwards it (rings,
 * stars) can still tell its subscribers where it came from, and nobody
 * ever sends a change back to its origin.  The subscription's position in
 * its provider's WAL is the highest progress among its origins: the
 * provider streams in commit order, so that is the end of the last
 * transaction applied.  Progress is flushed with the local commit, so it
 * survives a crash exactly when the applied transaction does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_replication_origin.h"
#include "utils/builtins.h"
#include "utils/rel.h"

#include "catalog/origin.h"

#define ORIGIN_PREFIX	"concord_"

char *
concord_origin_prefix(Oid subid)
{
	return psprintf(ORIGIN_PREFIX "%u_", subid);
}

char *
concord_origin_name(Oid subid, const char *node_name)
{
	return psprintf(ORIGIN_PREFIX "%u_%s", subid, node_name);
}

/*
 * The origin node's name inside one of our origin names, or NULL when the
 * origin is not concord's.
 */
const char *
concord_origin_node_name(const char *origin_name)
{
	const char *p;

	if (strncmp(origin_name, ORIGIN_PREFIX, strlen(ORIGIN_PREFIX)) != 0)
		return NULL;
	p = origin_name + strlen(ORIGIN_PREFIX);
	if (!isdigit((unsigned char) *p))
		return NULL;
	while (isdigit((unsigned char) *p))
		p++;
	if (*p != '_' || p[1] == '\0')
		return NULL;
	return p + 1;
}

/*
 * The node name a local origin stands for; for an origin that is not
 * concord's, its own name.  Needs a transaction (reads the origin catalog).
 */
char *
concord_origin_node_by_id(RepOriginId origin)
{
	char	   *origin_name;
	const char *node;

	if (!replorigin_by_oid(origin, true, &origin_name))
		return NULL;
	node = concord_origin_node_name(origin_name);
	return pstrdup(node ? node : origin_name);
}

/* Returns the origin for (subscription, node), creating it if needed. */
RepOriginId
concord_origin_ensure(Oid subid, const char *node_name)
{
	char	   *name = concord_origin_name(subid, node_name);
	RepOriginId origin = replorigin_by_name(name, true);

	if (origin == InvalidRepOriginId)
		origin = replorigin_create(name);
	pfree(name);
	return origin;
}

typedef struct SubOrigin
{
	RepOriginId id;
	char	   *name;
} SubOrigin;

/* The origins of one subscription, read from pg_replication_origin. */
static List *
sub_origins(Oid subid)
{
	char	   *prefix = concord_origin_prefix(subid);
	Relation	rel = table_open(ReplicationOriginRelationId, AccessShareLock);
	SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	HeapTuple	tup;
	List	   *found = NIL;

	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_replication_origin form = (Form_pg_replication_origin) GETSTRUCT(tup);
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_replication_origin_roname,
									 RelationGetDescr(rel), &isnull);
		char	   *name = TextDatumGetCString(d);

		if (strncmp(name, prefix, strlen(prefix)) == 0)
		{
			SubOrigin  *o = palloc(sizeof(SubOrigin));

			o->id = form->roident;
			o->name = name;
			found = lappend(found, o);
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/* How many origins the subscription has (one per node it received from). */
int
concord_origin_count(Oid subid)
{
	return list_length(sub_origins(subid));
}

/* Whether the subscription has the origin of node_name. */
bool
concord_origin_exists(Oid subid, const char *node_name)
{
	return replorigin_by_name(concord_origin_name(subid, node_name), true) !=
		InvalidRepOriginId;
}

/*
 * Whether any replication origin of the server, in any database, belongs to
 * subscription id subid: origins are shared by every database, so a
 * subscription id must be unique server-wide.
 */
bool
concord_origin_sub_id_in_use(Oid subid)
{
	return sub_origins(subid) != NIL;
}

/* The end of the last provider transaction applied by the subscription. */
XLogRecPtr
concord_origin_sub_progress(Oid subid)
{
	XLogRecPtr	max = InvalidXLogRecPtr;
	ListCell   *lc;

	foreach(lc, sub_origins(subid))
	{
		XLogRecPtr	lsn = replorigin_get_progress(((SubOrigin *) lfirst(lc))->id,
												  false);

		if (lsn > max)
			max = lsn;
	}
	return max;
}

void
concord_origin_drop_all(Oid subid)
{
	ListCell   *lc;

	foreach(lc, sub_origins(subid))
		replorigin_drop_by_name(((SubOrigin *) lfirst(lc))->name, true, false);
}
