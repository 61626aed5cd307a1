/*-------------------------------------------------------------------------
 *
 * versions.c
 *		Which of two versions of a key wins, and a version as JSON: shared
 *		by the repair of a diff (antientropy/repair.c) and the merge of a
 *		resynchronized table (apply/sync_merge.c).
 *
 * The resolvers compared are those that decide alike on every node:
 * last_update_wins (the later commit time), first_update_wins (the
 * earlier) and replica_priority (the higher priority of the origin nodes,
 * then the later commit time); a version of unknown age counts as the
 * baseline's.  Ties go to the greater origin name, then to a row over a
 * delete, then to the greater digest, so that every node decides alike.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "catalog/tables.h"
#include "conflict/versions.h"

static int32
priority_of(const char *name)
{
	ConcordNode *node = name ? concord_node_get_by_name(name) : NULL;

	return node ? node->priority : 0;
}

/* >0 if version a beats version b under resolver; needs a transaction. */
int
concord_version_compare(ConcordResolver resolver, const ConcordRepairVersion *a,
						const ConcordRepairVersion *b)
{
	TimestampTz ta = a->known ? a->commit_time : CONCORD_BASELINE_TS;
	TimestampTz tb = b->known ? b->commit_time : CONCORD_BASELINE_TS;
	int			names;

	if (resolver == CONCORD_RESOLVER_REPLICA_PRIORITY &&
		priority_of(a->origin_node) != priority_of(b->origin_node))
		return priority_of(a->origin_node) > priority_of(b->origin_node) ? 1 : -1;
	if (ta != tb)
	{
		if (resolver == CONCORD_RESOLVER_FIRST_UPDATE_WINS)
			return ta < tb ? 1 : -1;
		return ta > tb ? 1 : -1;
	}
	names = strcmp(a->origin_node ? a->origin_node : "", b->origin_node ? b->origin_node : "");
	if (names != 0)
		return names;
	if (a->present != b->present)
		return a->present ? 1 : -1;
	return strcmp(a->digest ? a->digest : "", b->digest ? b->digest : "");
}

/* A version as concord.repair_row() reads it. */
char *
concord_version_json(const ConcordRepairVersion *v)
{
	StringInfoData out;

	initStringInfo(&out);
	appendStringInfo(&out, "{\"row\": %s, \"digest\": ", v->row ? v->row : "null");
	if (v->digest)
		escape_json(&out, v->digest);
	else
		appendStringInfoString(&out, "null");
	appendStringInfoString(&out, ", \"commit_time\": ");
	if (v->known)
		escape_json(&out, timestamptz_to_str(v->commit_time));
	else
		appendStringInfoString(&out, "null");
	appendStringInfoString(&out, ", \"origin_node\": ");
	if (v->origin_node)
		escape_json(&out, v->origin_node);
	else
		appendStringInfoString(&out, "null");
	appendStringInfo(&out, ", \"deleted\": %s}", v->deleted ? "true" : "false");
	return out.data;
}

/*
 * A version from the first columns of an SPI row: present, digest,
 * commit_time, origin_node, deleted, and, with with_row, the row's jsonb
 * (its text in SPI's memory, as SPI_getvalue() leaves it).
 */
void
concord_version_from_spi(HeapTuple tup, TupleDesc desc, bool with_row, ConcordRepairVersion *v)
{
	bool		isnull;

	v->present = DatumGetBool(SPI_getbinval(tup, desc, 1, &isnull)) && !isnull;
	v->digest = SPI_getvalue(tup, desc, 2);
	v->commit_time = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
	v->known = !isnull;
	v->origin_node = SPI_getvalue(tup, desc, 4);
	v->deleted = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull)) && !isnull;
	v->row = with_row ? SPI_getvalue(tup, desc, 6) : NULL;
}
