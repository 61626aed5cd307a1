/*-------------------------------------------------------------------------
 *
 * conflict.h
 *		Conflict resolvers: the enum and its name table.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_CONFLICT_H
#define CONCORD_CONFLICT_H

#include "utils/guc.h"

typedef enum ConcordResolver
{
	CONCORD_RESOLVER_LAST_UPDATE_WINS,
	CONCORD_RESOLVER_FIRST_UPDATE_WINS,
	CONCORD_RESOLVER_REPLICA_PRIORITY,
	CONCORD_RESOLVER_KEEP_LOCAL,
	CONCORD_RESOLVER_APPLY_REMOTE,
	CONCORD_RESOLVER_SKIP,
	CONCORD_RESOLVER_ERROR,
	CONCORD_RESOLVER_CUSTOM
} ConcordResolver;

/* The conflict types of the SPEC (PostgreSQL 18's names, plus update_deleted). */
typedef enum ConcordConflictType
{
	CONCORD_CONFLICT_INSERT_EXISTS,
	CONCORD_CONFLICT_UPDATE_EXISTS,
	CONCORD_CONFLICT_UPDATE_ORIGIN_DIFFERS,
	CONCORD_CONFLICT_UPDATE_MISSING,
	CONCORD_CONFLICT_UPDATE_DELETED,
	CONCORD_CONFLICT_DELETE_ORIGIN_DIFFERS,
	CONCORD_CONFLICT_DELETE_MISSING,
	CONCORD_CONFLICT_MULTIPLE_UNIQUE_CONFLICTS
} ConcordConflictType;

/*
 * Values accepted by the GUC concord.conflict_resolver.  "custom" is not
 * among them: it needs a handler, which only set_conflict_resolver() gives.
 */
extern const struct config_enum_entry concord_resolver_guc_options[];

extern const char *concord_resolver_name(ConcordResolver resolver);
extern const char *concord_conflict_name(ConcordConflictType type);
extern void concord_conflict_error(ConcordConflictType type,
								   const char *relname, const char *key);

#endif							/* CONCORD_CONFLICT_H */
