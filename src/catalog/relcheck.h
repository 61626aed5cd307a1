/*-------------------------------------------------------------------------
 *
 * relcheck.h
 *		Checks that a table may be replicated by a replication set.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_RELCHECK_H
#define CONCORD_RELCHECK_H

#include "nodes/nodes.h"
#include "utils/array.h"
#include "utils/relcache.h"

#include "catalog/tables.h"

extern char *concord_relation_qualified_name(Relation rel);
extern bool concord_relation_is_system(Relation rel);
extern void concord_check_replication_target(Relation rel, const char *sub_name,
											 const char *qualname);
extern void concord_check_table_kind(Relation rel);
extern void concord_check_table_for_set(Relation rel, const ConcordSet *set,
										ArrayType *columns, Node *filter_expr,
										const char *filter_text);

#endif							/* CONCORD_RELCHECK_H */
