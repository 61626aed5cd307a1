/*-------------------------------------------------------------------------
 *
 * handler.h
 *		User-defined conflict handlers (the custom resolver).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_HANDLER_H
#define CONCORD_HANDLER_H

#include "conflict/conflict.h"

extern void concord_handler_check(Oid relid, Oid handler);
extern bool concord_handler_call(ConcordConflict *c, TupleTableSlot *out);
extern bool concord_handler_error_skips(ErrorData *edata);

#endif							/* CONCORD_HANDLER_H */
