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

static const char *const conflict_names[] = {
	[CONCORD_CONFLICT_INSERT_EXISTS] = "insert_exists",
	[CONCORD_CONFLICT_UPDATE_EXISTS] = "update_exists",
	[CONCORD_CONFLICT_UPDATE_ORIGIN_DIFFERS] = "update_origin_differs",
	[CONCORD_CONFLICT_UPDATE_MISSING] = "update_missing",
	[CONCORD_CONFLICT_UPDATE_DELETED] = "update_deleted",
	[CONCORD_CONFLICT_DELETE_ORIGIN_DIFFERS] = "delete_origin_differs",
	[CONCORD_CONFLICT_DELETE_MISSING] = "delete_missing",
	[CONCORD_CONFLICT_MULTIPLE_UNIQUE_CONFLICTS] = "multiple_unique_conflicts",
};

const char *
concord_conflict_name(ConcordConflictType type)
{
	if ((int) type < 0 || (int) type >= (int) lengthof(conflict_names))
		elog(ERROR, "unknown concord conflict type %d", (int) type);
	return conflict_names[type];
}

/*
 * The error resolver: stops the apply with an error that names the
 * conflict.  The subscription goes down, keeps its position and retries.
 */
void
concord_conflict_error(ConcordConflictType type, const char *relname,
					   const char *key)
{
	ereport(ERROR,
			(errcode(type == CONCORD_CONFLICT_INSERT_EXISTS ||
					 type == CONCORD_CONFLICT_UPDATE_EXISTS ||
					 type == CONCORD_CONFLICT_MULTIPLE_UNIQUE_CONFLICTS ?
					 ERRCODE_UNIQUE_VIOLATION : ERRCODE_NO_DATA_FOUND),
			 errmsg("conflict %s on relation \"%s\"",
					concord_conflict_name(type), relname),
			 key ? errdetail("Key %s.", key) : 0,
			 errhint("Fix the row on this node; the subscription retries the change.")));
}

const char *
concord_resolver_name(ConcordResolver resolver)
{
	if ((int) resolver < 0 || (int) resolver >= (int) lengthof(resolver_names))
		elog(ERROR, "unknown concord resolver %d", (int) resolver);
	return resolver_names[resolver];
}
