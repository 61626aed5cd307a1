/*-------------------------------------------------------------------------
 *
 * repair.h
 *		Shared by concord.table_repair() (repair.c) and the per-node part
 *		it calls, concord.repair_row() (repair_row.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_REPAIR_H
#define CONCORD_REPAIR_H

#include "datatype/timestamp.h"
#include "fmgr.h"

#include "conflict/versions.h"

/* repair.c */
extern int64 concord_repair_run(int64 run_id, const char *source, bool dry_run,
								const char *local, bool only_local);

/* repair_row.c */
extern const char *concord_repair_key(const char *relation, Datum key,
									  Datum expected_json, Datum winner_json,
									  int64 run_id, const char *coordinator,
									  const char *local, const char *subscription);

#endif							/* CONCORD_REPAIR_H */
