/*-------------------------------------------------------------------------
 *
 * conflict.c
 *		Conflict resolvers: names and the GUC's accepted values.
 *
 * Detection, resolution and the history arrive here with the conflict
 * handling work; this file is their single home.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "conflict.h"

static const char *const resolver_names[] = {
	[CONCORD_RESOLVER_LAST_UPDATE_WINS] = "last_update_wins",
	[CONCORD_RESOLVER_FIRST_UPDATE_WINS] = "first_update_wins",
	[CONCORD_RESOLVER_REPLICA_PRIORITY] = "replica_priority",
	[CONCORD_RESOLVER_KEEP_LOCAL] = "keep_local",
	[CONCORD_RESOLVER_APPLY_REMOTE] = "apply_remote",
	[CONCORD_RESOLVER_SKIP] = "skip",
	[CONCORD_RESOLVER_ERROR] = "error",
	[CONCORD_RESOLVER_CUSTOM] = "custom",
};

const struct config_enum_entry concord_resolver_guc_options[] = {
	{"last_update_wins", CONCORD_RESOLVER_LAST_UPDATE_WINS, false},
	{"first_update_wins", CONCORD_RESOLVER_FIRST_UPDATE_WINS, false},
	{"replica_priority", CONCORD_RESOLVER_REPLICA_PRIORITY, false},
	{"keep_local", CONCORD_RESOLVER_KEEP_LOCAL, false},
	{"apply_remote", CONCORD_RESOLVER_APPLY_REMOTE, false},
	{"skip", CONCORD_RESOLVER_SKIP, false},
	{"error", CONCORD_RESOLVER_ERROR, false},
	{NULL, 0, false}
};

const char *
concord_resolver_name(ConcordResolver resolver)
{
	if ((int) resolver < 0 || (int) resolver >= (int) lengthof(resolver_names))
		elog(ERROR, "unknown concord resolver %d", (int) resolver);
	return resolver_names[resolver];
}
