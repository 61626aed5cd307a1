/*-------------------------------------------------------------------------
 *
 * output_rel.h
 *		What the output plugin ships of each relation, cached.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_OUTPUT_REL_H
#define CONCORD_OUTPUT_REL_H

#include "executor/executor.h"
#include "nodes/bitmapset.h"
#include "utils/relcache.h"

typedef struct ConcordOutputRel
{
	Oid			relid;			/* hash key */
	bool		valid;
	bool		replicated;		/* in one of the subscribed sets */
	bool		ship_insert;
	bool		ship_update;
	bool		ship_delete;
	bool		ship_truncate;
	Bitmapset  *columns;		/* attnums shipped; NULL: all */
	ExprState  *filter;			/* row filter; NULL: every row */
	EState	   *estate;			/* for evaluating filter */
	TupleTableSlot *slot;
	bool		meta_sent;		/* RELATION sent in this stream */
} ConcordOutputRel;

extern void concord_output_rel_init(List *set_names);
extern ConcordOutputRel *concord_output_rel_get(Relation rel);
extern bool concord_output_rel_filter(ConcordOutputRel *entry,
									  HeapTuple tuple);

#endif							/* CONCORD_OUTPUT_REL_H */
