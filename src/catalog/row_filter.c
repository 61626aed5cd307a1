/*-------------------------------------------------------------------------
 *
 * row_filter.c
 *		A row filter: analysed once, stored as a tree, run as it was checked.
 *
 * A row filter is given as text and runs on the provider, as its
 * replication role: in the WAL sender, on every change of the table, and in
 * the initial copy's COPY.  So it is analysed once, when the table joins
 * the set, under the caller's settings, and stored analysed
 * (concord.replication_set_table.row_filter_expr, nodeToString), as
 * pg_publication_rel.prqual is (review #2):
 *
 * - its names are bound once: no search_path of a WAL sender or of a copy
 *   session later finds another function or operator than the one checked;
 * - nothing is parsed again in the WAL sender, which holds no lock on the
 *   table it decodes (review #17);
 * - the copy asks the provider for the filter's SQL, deparsed from the tree
 *   in the copy's own session (concord.row_filter_sql()), so that no
 *   difference of lexer settings (standard_conforming_strings) between the
 *   session that checked the text and the one that runs it can make it
 *   mean something else, such as a second statement; and the COPY is sent
 *   alone, in the extended protocol.
 *
 * The tree is stored as text (nodeToString), not as pg_node_tree: the
 * catalog is dumped by pg_dump, which could not restore a pg_node_tree.  A
 * restored database numbers its columns anew, so its trees are analysed
 * again from their text when it becomes a node (reclaim_node_identity);
 * until then it is a copy, which ships nothing.
 *
 * Only PostgreSQL's own types, operators, functions and collations may
 * appear, as in the built-in publications' row filters: a user's function
 * declared IMMUTABLE would run as the provider's replication role.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/attmap.h"
#include "access/table.h"
#include "access/transam.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "rewrite/rewriteManip.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"

#include "catalog/relcheck.h"
#include "catalog/row_filter.h"
#include "catalog/tables.h"

#define IS_BUILTIN(oid)	((oid) < FirstNormalObjectId)

/* What a row filter's error context names. */
typedef struct RowFilterContext
{
	const char *relname;
	const char *filter;
} RowFilterContext;

static void
row_filter_error_context(void *arg)
{
	RowFilterContext *ctx = arg;
	int			pos = geterrposition();

	/* Point a cursor into the filter text, not into the calling query. */
	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery(ctx->filter);
	}
	errcontext("row_filter \"%s\" of table \"%s\"", ctx->filter, ctx->relname);
}

/* Parses the filter text into one raw expression, refusing anything else. */
static Node *
row_filter_parse(const char *filter)
{
	List	   *raw = raw_parser(filter, RAW_PARSE_PLPGSQL_EXPR);
	SelectStmt *stmt;
	ResTarget  *target;

	if (list_length(raw) == 1 && IsA(linitial(raw), RawStmt))
	{
		stmt = (SelectStmt *) ((RawStmt *) linitial(raw))->stmt;
		if (IsA(stmt, SelectStmt) &&
			list_length(stmt->targetList) == 1 &&
			stmt->distinctClause == NIL && stmt->fromClause == NIL &&
			stmt->whereClause == NULL && stmt->groupClause == NIL &&
			stmt->havingClause == NULL && stmt->windowClause == NIL &&
			stmt->sortClause == NIL && stmt->limitCount == NULL &&
			stmt->limitOffset == NULL && stmt->lockingClause == NIL &&
			stmt->withClause == NULL && stmt->op == SETOP_NONE)
		{
			target = linitial_node(ResTarget, stmt->targetList);
			if (target->name == NULL)
				return target->val;
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_SYNTAX_ERROR),
			 errmsg("row_filter must be a single boolean expression")));
	return NULL;				/* keep compiler quiet */
}

static void
forbid(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("row_filter cannot use %s", what),
			 errdetail("A row filter may use only the table's columns, constants, and PostgreSQL's built-in types, operators, functions and collations: it runs on the provider, as its replication role.")));
}

static bool
user_function(Oid funcid, void *context pg_attribute_unused())
{
	return !IS_BUILTIN(funcid);
}

static void
check_operator(Oid opno)
{
	if (!IS_BUILTIN(opno))
		forbid("user-defined operators");
}

/* Refuses every node of the tree that is not PostgreSQL's own. */
static bool
builtin_walker(Node *node, void *context)
{
	ListCell   *lc;

	if (node == NULL)
		return false;
	/* A system column or the whole row: relcheck.c says what is wrong. */
	if (IsA(node, Var) && ((Var *) node)->varattno <= 0)
		return false;
	switch (nodeTag(node))
	{
		case T_List:
			return expression_tree_walker(node, builtin_walker, context);
		case T_Var:
		case T_Const:
		case T_BoolExpr:
		case T_NullTest:
		case T_BooleanTest:
		case T_RelabelType:
		case T_CoerceViaIO:
		case T_ArrayCoerceExpr:
		case T_ArrayExpr:
		case T_CaseExpr:
		case T_CaseWhen:
		case T_CaseTestExpr:
		case T_CoalesceExpr:
		case T_MinMaxExpr:
		case T_CollateExpr:
		case T_RowExpr:
		case T_FuncExpr:
			break;
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
			check_operator(((OpExpr *) node)->opno);
			break;
		case T_ScalarArrayOpExpr:
			check_operator(((ScalarArrayOpExpr *) node)->opno);
			break;
		case T_RowCompareExpr:
			foreach(lc, ((RowCompareExpr *) node)->opnos)
				check_operator(lfirst_oid(lc));
			break;
		default:
			forbid("this kind of expression");
	}
	if (!IS_BUILTIN(exprType(node)))
		forbid("user-defined types");
	if (!IS_BUILTIN(exprCollation(node)) || !IS_BUILTIN(exprInputCollation(node)))
		forbid("user-defined collations");
	if (check_functions_in_node(node, user_function, NULL))
		forbid("user-defined functions");
	return expression_tree_walker(node, builtin_walker, context);
}

/*
 * Analyses a row filter against a table, with the rules of a WHERE clause
 * (no aggregates, window or set-returning functions, no subqueries), into
 * an immutable boolean expression of built-in parts; errors out otherwise.
 */
Node *
concord_row_filter_analyse(Relation rel, const char *filter)
{
	RowFilterContext ctx;
	ErrorContextCallback errcb;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;
	Node	   *expr;

	ctx.relname = concord_relation_qualified_name(rel);
	ctx.filter = filter;
	errcb.callback = row_filter_error_context;
	errcb.arg = &ctx;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = filter;
	nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock,
										   NULL, false, false);
	addNSItemToQuery(pstate, nsitem, false, true, true);
	expr = transformExpr(pstate, row_filter_parse(filter), EXPR_KIND_WHERE);
	expr = coerce_to_boolean(pstate, expr, "row_filter");
	assign_expr_collations(pstate, expr);
	if (pstate->p_hasSubLinks || checkExprHasSubLink(expr))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("row_filter cannot use subqueries")));
	free_parsestate(pstate);

	if (contain_mutable_functions(expr))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("row_filter cannot use functions that are not immutable"),
				 errdetail("The filter is evaluated on the provider while changes are decoded, where only immutable functions give a stable answer.")));
	fix_opfuncids(expr);
	(void) builtin_walker(expr, NULL);
	error_context_stack = errcb.previous;
	return expr;
}

/*
 * The settings a filter's text is written and read back under, whatever
 * the session's: PostgreSQL's own names only, and constants in formats
 * that read back the same (a date written under DateStyle DMY and read
 * under MDY would change which rows the filter ships).  Returns the GUC
 * nest level to pass to AtEOXact_GUC(true, ...).
 */
static int
pin_settings(bool search_path_only)
{
	static const char *const settings[][2] = {
		{"search_path", "pg_catalog"},
		{"datestyle", "ISO, YMD"},
		{"intervalstyle", "postgres"},
		{"extra_float_digits", "3"},
		{"standard_conforming_strings", "on"},
		{"timezone", "UTC"},
	};
	int			nest = NewGUCNestLevel();

	for (size_t i = 0; i < (search_path_only ? 1 : lengthof(settings)); i++)
		(void) set_config_option(settings[i][0], settings[i][1], PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	return nest;
}

/*
 * The filter's SQL: column names as they are now, constants written under
 * the pinned settings (pin_settings), which read back the same in any
 * session.
 */
char *
concord_row_filter_deparse(Relation rel, Node *expr)
{
	List	   *dpcontext = deparse_context_for(RelationGetRelationName(rel),
												RelationGetRelid(rel));
	int			nest = pin_settings(false);
	char	   *sql = deparse_expression(expr, dpcontext, false, false);

	AtEOXact_GUC(true, nest);
	return sql;
}

/*
 * Analyses a filter's stored text, with the table locked as parse analysis
 * expects.  Text concord_row_filter_deparse wrote is read under the same
 * pinned settings; text stored before 0.3.0 (legacy) was deparsed under
 * the settings of the session that set it, which are not known: it is read
 * under the session's, with search_path pg_catalog only.
 */
Node *
concord_row_filter_analyse_stored(Relation rel, const char *filter, bool legacy)
{
	int			nest;
	Node	   *expr;

	LockRelationOid(RelationGetRelid(rel), AccessShareLock);
	nest = pin_settings(legacy);
	expr = concord_row_filter_analyse(rel, filter);
	AtEOXact_GUC(true, nest);
	return expr;
}

/* Refuses a stored filter whose columns the table no longer has as they were. */
static bool
check_vars_walker(Node *node, void *context)
{
	Relation	rel = (Relation) context;

	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		Var		   *var = (Var *) node;
		TupleDesc	desc = RelationGetDescr(rel);
		Form_pg_attribute att = var->varattno > 0 && var->varattno <= desc->natts ?
		TupleDescAttr(desc, var->varattno - 1) : NULL;

		if (att == NULL || att->attisdropped || att->atttypid != var->vartype ||
			att->atttypmod != var->vartypmod || att->attcollation != var->varcollid)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the row filter of table \"%s\" uses a column that was dropped or whose type changed",
							concord_relation_qualified_name(rel)),
					 errhint("Remove the table from its replication set and add it again with its row filter.")));
		return false;
	}
	return expression_tree_walker(node, check_vars_walker, context);
}

/*
 * A stored filter (nodeToString of an analysed one), for rel.  filter_relid
 * is the table the filter was set on: rel itself, or a partitioned ancestor
 * of it, whose column numbers are mapped onto rel's by name.  Parses
 * nothing and runs no user code: the WAL sender calls it for the tables it
 * decodes.
 */
Node *
concord_row_filter_load(Relation rel, Oid filter_relid, const char *stored)
{
	Node	   *expr = stringToNode(stored);

	if (filter_relid != RelationGetRelid(rel))
	{
		Relation	parent = RelationIdGetRelation(filter_relid);
		AttrMap    *map;
		bool		whole_row;

		if (!RelationIsValid(parent))
			elog(ERROR, "could not open relation with OID %u", filter_relid);
		map = build_attrmap_by_name(RelationGetDescr(rel), RelationGetDescr(parent));
		expr = map_variable_attnos(expr, 1, 0, map, InvalidOid, &whole_row);
		RelationClose(parent);
	}
	(void) check_vars_walker(expr, rel);
	return expr;
}

/*
 * Analyses again every row filter of this database from its text (as
 * deparsed when it was set: PostgreSQL's own names only), and stores the
 * result; legacy: text stored before 0.3.0 (concord_row_filter_analyse_stored).  For the update to 0.3.0 (filters
 * stored as text before), and for reclaim_node_identity(): a database
 * restored from a dump has the stored trees of another database, whose
 * tables may number their columns otherwise.
 */
void
concord_row_filter_reanalyse_all(bool legacy)
{
	ListCell   *lc;
	List	   *members = NIL;

	foreach(lc, concord_set_get_all())
		members = list_concat(members,
							  concord_set_table_get_by_set(((ConcordSet *) lfirst(lc))->id));
	foreach(lc, members)
	{
		ConcordSetTable *member = lfirst(lc);
		Relation	rel;
		Node	   *expr;

		if (member->row_filter == NULL)
			continue;
		rel = table_open(member->relid, AccessShareLock);
		expr = concord_row_filter_analyse_stored(rel, member->row_filter, legacy);
		member->row_filter = concord_row_filter_deparse(rel, expr);
		member->row_filter_expr = nodeToString(expr);
		concord_set_table_update_filter(member);
		table_close(rel, AccessShareLock);
	}
}
