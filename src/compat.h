/*-------------------------------------------------------------------------
 *
 * compat.h
 *		The one place for differences between PostgreSQL major versions.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_COMPAT_H
#define CONCORD_COMPAT_H

#include "fmgr.h"

/* fmgr.h declares _PG_init from PostgreSQL 16 on. */
#if PG_VERSION_NUM < 160000
extern PGDLLEXPORT void _PG_init(void);
#endif

#endif							/* CONCORD_COMPAT_H */
