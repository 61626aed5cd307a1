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
 * objects, ...), under a GUC nest level that undoes whatever that code sets
 * (SET LOCAL and SET alike, closed as after an error), with search_path
 * pg_catalog, pg_temp: as PostgreSQL 16's own apply does with run_as_owner
 * = false.  A write that runs no code of a user's and nothing that reads
 * search_path skips the nest level, which costs a pass over every setting
 * (concord_write_runs_user_code).  concord's own writes made meanwhile (the
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

#include "access/genam.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/partcache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
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
 * Checks that rel's owner holds the privileges in mode (ACL_INSERT,
 * ACL_UPDATE, ACL_DELETE, ACL_TRUNCATE, or several), then switches to it
 * in a security-restricted operation.
 */
static void
switch_to_owner(Relation rel, AclMode mode, const char *sub_name,
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
	concord_become_checked_owner(rel, saved);
}

/*
 * Switches to rel's owner, in a security-restricted operation, for a write
 * whose privileges this remote transaction checked already: an executor
 * kept through the transaction (apply_exec.c) checks them at its table's
 * first change, as a statement checks them once for all its rows.
 */
void
concord_become_checked_owner(Relation rel, ConcordAsOwner *saved)
{
	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(rel->rd_rel->relowner, saved->sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	saved->nestlevel = 0;
}

/* Row-level security that binds the owner is refused, as the owner. */
static void
refuse_forced_rls(Relation rel, const char *sub_name)
{
	if (check_enable_rls(RelationGetRelid(rel), InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("subscription \"%s\": table %s has row-level security that binds its owner",
						sub_name, RelationGetRelationName(rel)),
				 errdetail("Replication writes a table as its owner and does not apply row-level security policies."),
				 errhint("Use ALTER TABLE ... NO FORCE ROW LEVEL SECURITY; the subscription retries the change.")));
}

/*
 * Switches to the owner of rel for a write needing the privileges in mode,
 * after checking that the owner has them and that no row-level security
 * binds it (apply bypasses policies, so a table whose policies bind its
 * owner is refused, as PostgreSQL's apply refuses it), under a GUC nest
 * level with search_path pg_catalog, pg_temp.  Undo with
 * concord_restore_user().
 */
void
concord_become_table_owner(Relation rel, AclMode mode, const char *sub_name,
						   ConcordAsOwner *saved)
{
	switch_to_owner(rel, mode, sub_name, saved);
	saved->nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	refuse_forced_rls(rel, sub_name);
}

/*
 * The same for a write that runs no code of a user's and nothing that
 * reads search_path (concord_write_runs_user_code() said so): no GUC nest
 * level, which costs a pass over every setting when it ends, and the
 * worker's own empty search_path.
 */
void
concord_become_table_owner_plain(Relation rel, AclMode mode, const char *sub_name,
								 ConcordAsOwner *saved)
{
	switch_to_owner(rel, mode, sub_name, saved);
	refuse_forced_rls(rel, sub_name);
}

/* A function a user made, or one whose result may depend on settings. */
static bool
user_function(Oid funcid, void *context pg_attribute_unused())
{
	return funcid >= FirstNormalObjectId || func_volatile(funcid) != PROVOLATILE_IMMUTABLE;
}

static bool
user_code_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	/*
	 * A domain's checks are a user's expressions; CURRENT_SCHEMA,
	 * CURRENT_USER and the like read settings, nextval() a sequence.
	 */
	if (IsA(node, CoerceToDomain) || IsA(node, SQLValueFunction) ||
		IsA(node, NextValueExpr) || check_functions_in_node(node, user_function, NULL))
		return true;
	return expression_tree_walker(node, user_code_walker, context);
}

/*
 * A type a user made, or one whose input may read search_path: reg*, and
 * composite types (catalogs' row types hold regproc columns).
 */
static bool
user_type(Oid typid)
{
	Oid			elem = get_element_type(typid);

	if (OidIsValid(elem))
		typid = elem;
	if (get_typtype(typid) == TYPTYPE_COMPOSITE)
		return true;
	switch (typid)
	{
		case REGPROCOID:
		case REGPROCEDUREOID:
		case REGOPEROID:
		case REGOPERATOROID:
		case REGCLASSOID:
		case REGTYPEOID:
		case REGCONFIGOID:
		case REGDICTIONARYOID:
		case REGNAMESPACEOID:
		case REGROLEOID:
		case REGCOLLATIONOID:
			return true;
		default:
			return typid >= FirstNormalObjectId;
	}
}

/* An index whose upkeep or unique checks may run a user's code. */
static bool
index_runs_user_code(Oid indexid)
{
	Relation	irel = index_open(indexid, AccessShareLock);
	bool		user = irel->rd_rel->relam >= FirstNormalObjectId ||
		irel->rd_index->indisexclusion ||
		user_code_walker((Node *) RelationGetIndexExpressions(irel), NULL) ||
		user_code_walker((Node *) RelationGetIndexPredicate(irel), NULL);

	for (int k = 0; k < IndexRelationGetNumberOfKeyAttributes(irel) && !user; k++)
		user = irel->rd_opfamily[k] >= FirstNormalObjectId;
	index_close(irel, AccessShareLock);
	return user;
}

/*
 * Whether apply's write of a row of rel (an INSERT, UPDATE or DELETE, the
 * values read from their text, the row found by its key) may run code that
 * a user wrote, or built-in code that reads search_path: a trigger that
 * fires in apply (enabled ALWAYS or REPLICA), a column of a type a user
 * made (a domain's checks, a type's input function) or of a reg* type, a
 * CHECK constraint or an index expression or predicate calling a function
 * a user made or one that is not immutable, an index of a user's access
 * method or operator family, an exclusion constraint, a stored generated
 * column, a default (of the columns in not_sent, which the provider does
 * not send), a partition's constraint (its parents' partition keys) with
 * such a function, CURRENT_SCHEMA and its kind.  If not, the write needs no GUC
 * nest level (concord_become_table_owner_plain).  Conservative: false only
 * when every part is known.
 */
bool
concord_write_runs_user_code(Relation rel, Bitmapset *not_sent)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TupleConstr *constr = desc->constr;
	TriggerDesc *trigdesc = rel->trigdesc;
	List	   *indexes;
	ListCell   *lc;

	if (rel->rd_rel->relkind != RELKIND_RELATION || !bms_is_empty(not_sent))
		return true;
	/* A partition's constraint holds its parents' partition keys. */
	if (rel->rd_rel->relispartition &&
		user_code_walker((Node *) RelationGetPartitionQual(rel), NULL))
		return true;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && (user_type(att->atttypid) || att->attgenerated))
			return true;
	}
	for (int i = 0; constr != NULL && i < constr->num_check; i++)
		if (user_code_walker(stringToNode(constr->check[i].ccbin), NULL))
			return true;
	for (int i = 0; trigdesc != NULL && i < trigdesc->numtriggers; i++)
		if (trigdesc->triggers[i].tgenabled == TRIGGER_FIRES_ALWAYS ||
			trigdesc->triggers[i].tgenabled == TRIGGER_FIRES_ON_REPLICA)
			return true;
	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
		if (index_runs_user_code(lfirst_oid(lc)))
			return true;
	list_free(indexes);
	return false;
}

/* Back to the user (and settings) of before concord_become_table_owner(). */
void
concord_restore_user(ConcordAsOwner *saved)
{
	/* as after an error: what the owner's code set, SET LOCAL or SET, goes */
	if (saved->nestlevel > 0)
		AtEOXact_GUC(false, saved->nestlevel);
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
	AtEOXact_GUC(false, nestlevel);	/* as concord_restore_user() */
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
