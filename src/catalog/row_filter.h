/*-------------------------------------------------------------------------
 *
 * row_filter.h
 *		Row filters: analysed once, stored as a tree, deparsed for a copy.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_ROW_FILTER_H
#define CONCORD_ROW_FILTER_H

#include "nodes/nodes.h"
#include "utils/relcache.h"

extern Node *concord_row_filter_analyse(Relation rel, const char *filter);
extern Node *concord_row_filter_analyse_stored(Relation rel, const char *filter,
												   bool legacy);
extern char *concord_row_filter_deparse(Relation rel, Node *expr);
extern Node *concord_row_filter_load(Relation rel, Oid filter_relid,
									 const char *stored);
extern void concord_row_filter_reanalyse_all(bool legacy);

#endif							/* CONCORD_ROW_FILTER_H */
