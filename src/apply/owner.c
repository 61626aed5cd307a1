/*-------------------------------------------------------------------------
 *
 * owner.c
 *		Writes of apply and of the initial copy run as the table's owner.
 *
 * A write runs code that the table's owner controls: triggers enabled
 * ALWAYS or REPLICA, column defaults, CHECK constraints and domain checks,
 * index expressions and predicates.  The workers connect as the bootstrap
 * superuser; run as that, such code would make any table owner a
 * superuser on every subscriber.  So every write switches to the table's
 * owner, in a security-restricted operation (no SET ROLE, no new temporary
 * objects, ...), under a GUC nest level that undoes whatever that code sets,
 * with search_path pg_catalog, pg_temp: as PostgreSQL 16's own apply does
 * with run_as_owner = false.  concord's own writes made meanwhile (the
 * conflict history, tombstones) switch to the owner of concord's catalogs
 * themselves.
 *
 * Deferred constraint triggers would fire at commit, after the switch back:
 * the workers' transactions make every constraint immediate
 * (concord_constraints_immediate), so that they fire at the end of each
 * write, as the owner.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"

#include "apply/apply.h"
#include "catalog/tables.h"

static const char *
privilege_name(AclMode bit)
{
	switch (bit)
	{
		case ACL_INSERT:
			return "INSERT";
		case ACL_UPDATE:
			return "UPDATE";
		case ACL_DELETE:
			return "DELETE";
		default:
			return "TRUNCATE";
	}
}

/*
 * Switches to the owner of rel for a write needing the privileges in mode
 * (ACL_INSERT, ACL_UPDATE, ACL_DELETE, ACL_TRUNCATE, or several), after
 * checking that the owner has them and that no row-level security binds
 * it (apply bypasses policies, so a table whose policies bind its owner is
 * refused, as PostgreSQL's apply refuses it).  Undo with
 * concord_restore_user().
 */
void
concord_become_table_owner(Relation rel, AclMode mode, const char *sub_name,
						   ConcordAsOwner *saved)
{
	Oid			owner = rel->rd_rel->relowner;
	Oid			relid = RelationGetRelid(rel);
	AclMode		bits[] = {ACL_INSERT, ACL_UPDATE, ACL_DELETE, ACL_TRUNCATE};

	for (int i = 0; i < (int) lengthof(bits); i++)
		if ((mode & bits[i]) && pg_class_aclcheck(relid, owner, bits[i]) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("subscription \"%s\": the owner of table %s, role %s, lacks the %s privilege on it",
							sub_name, RelationGetRelationName(rel),
							GetUserNameFromId(owner, false), privilege_name(bits[i])),
					 errdetail("Replication writes a table as its owner."),
					 errhint("Grant the privilege back to the table's owner; the subscription retries the change.")));
	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(owner, saved->sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	saved->nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	if (check_enable_rls(relid, InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("subscription \"%s\": table %s has row-level security that binds its owner",
						sub_name, RelationGetRelationName(rel)),
				 errdetail("Replication writes a table as its owner and does not apply row-level security policies."),
				 errhint("Use ALTER TABLE ... NO FORCE ROW LEVEL SECURITY; the subscription retries the change.")));
}

/* Back to the user (and settings) of before concord_become_table_owner(). */
void
concord_restore_user(ConcordAsOwner *saved)
{
	AtEOXact_GUC(true, saved->nestlevel);
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}

/*
 * SET CONSTRAINTS ALL IMMEDIATE, for the worker's transaction: deferred
 * constraint triggers fire at the end of each write, while it runs as the
 * table's owner, not at commit as the worker's superuser.
 */
void
concord_constraints_immediate(void)
{
	ConstraintsSetStmt *stmt = makeNode(ConstraintsSetStmt);

	stmt->constraints = NIL;
	stmt->deferred = false;
	AfterTriggerSetState(stmt);
}

/* The settings of concord.table_digest_keys(), which made the rows' jsonb. */
static const char *const pinned[][2] = {
	{"TimeZone", "UTC"},
	{"DateStyle", "ISO, YMD"},
	{"IntervalStyle", "postgres"},
	{"lc_monetary", "C"},
};

/*
 * Runs a statement under the settings pinned above, replica role
 * (only ENABLE REPLICA and ALWAYS triggers fire) and no row security, as
 * user (InvalidOid: the current one) in a security-restricted operation;
 * arg is its $1 (jsonb).  With SPI connected.
 */
static int
run_pinned(Oid user, const char *sql, Datum arg, bool read_only)
{
	Oid			saved_user;
	int			saved_context;
	int			nestlevel;
	Oid			types[1] = {JSONBOID};
	Datum		values[1] = {arg};
	int			ret;

	GetUserIdAndSecContext(&saved_user, &saved_context);
	if (OidIsValid(user))
		SetUserIdAndSecContext(user, saved_context | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("session_replication_role", "replica", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("row_security", "off", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	/* the row's values read back as the digest functions wrote them */
	for (int i = 0; i < (int) lengthof(pinned); i++)
		(void) set_config_option(pinned[i][0], pinned[i][1], PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	ret = SPI_execute_with_args(sql, 1, types, values, NULL, read_only, 0);
	AtEOXact_GUC(true, nestlevel);
	SetUserIdAndSecContext(saved_user, saved_context);
	return ret;
}

/*
 * Runs a statement on the table as its owner, as apply writes (see
 * run_pinned): a repair (antientropy/repair_row.c) and a
 * resynchronization's merge (sync_groups.c) write so.
 */
int
concord_spi_as_owner(Oid relid, const char *sql, Datum arg, bool read_only)
{
	return run_pinned(concord_rel_owner(relid), sql, arg, read_only);
}

/* The same as the current user: rows of the provider's read back here. */
int
concord_spi_pinned(const char *sql, Datum arg)
{
	return run_pinned(InvalidOid, sql, arg, false);
}
