/*-------------------------------------------------------------------------
 *
 * apply.h
 *		Shared between the apply worker's files.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_APPLY_H
#define CONCORD_APPLY_H

#include "access/xlogdefs.h"
#include "nodes/pg_list.h"
#include "storage/lockdefs.h"
#include "utils/acl.h"
#include "utils/relcache.h"

#include "conflict/conflict.h"
#include "fmgr.h"
#include "nodes/execnodes.h"
#include "proto/proto.h"

/* A provider relation and, once resolved, its local counterpart. */
typedef struct ApplyRel
{
	Oid			remoteid;		/* hash key: the provider's OID */
	MemoryContext cxt;			/* everything below; replaced at a re-send */
	ConcordRelationMsg *remote;
	bool		resolved;
	Oid			localid;
	char	   *qualname;		/* provider's schema.table, quoted */
	MemoryContext map_cxt;		/* the map below, made again at each resolve */
	AttrNumber *attmap;			/* remote column i -> local attnum */
	Oid		   *typinput;		/* per remote column, local input function */
	Oid		   *typioparam;
	FmgrInfo   *typinfmgr;		/* per remote column, typinput looked up */
	Bitmapset  *not_sent;		/* local columns the provider does not send
								 * (attnums; not dropped or generated) */
	struct KeyHash *keyhash;	/* key_lock.c's hash functions of the key
								 * columns, in map_cxt; NULL: not made yet */
	bool		had_tombstones; /* the table had tombstones when resolved */
	bool		user_code;		/* a write may run a user's code (owner.c) */
	ConcordResolver resolver[CONCORD_NUM_CONFLICT_TYPES];
	Oid			handler[CONCORD_NUM_CONFLICT_TYPES];	/* for custom */
	bool	   *rowkey;			/* per remote column: part of the row's key
								 * (see concord_apply_rowkey) */
	List	   *key_columns;	/* names of the rowkey columns */
	char	   *key_problem;	/* why this table's rows cannot be found by
								 * the provider's key; NULL: they can */
	bool		synced;			/* copied by a sync at sync_lsn */
	XLogRecPtr	sync_lsn;
} ApplyRel;

/* apply_rel.c */
extern void concord_apply_rel_init(const char *sub_name, List *synced);
extern void concord_apply_rel_store(StringInfo msg);
extern ApplyRel *concord_apply_rel_get(Oid remoteid, LOCKMODE lockmode);
extern void concord_apply_rel_forget_all(void);
extern bool concord_apply_rel_same_key(ApplyRel *arel, TupleTableSlot *a,
									   TupleTableSlot *b);

/* apply_row.c */
extern bool concord_apply_careful;
extern bool concord_apply_side_writes;
extern int	concord_apply_conflicts;
/* unsent.c: out-of-line values an UPDATE left unchanged */
extern bool concord_apply_tuple_complete(ConcordTuple *tup);
extern void concord_apply_unsent_from_old(ConcordTuple *newtup,
										  ConcordTuple *oldtup);
extern List *concord_apply_unsent_names(ApplyRel *arel, ConcordTuple *tup);
typedef enum ConcordUnsent
{
	CONCORD_UNSENT_READ,		/* the values were read */
	CONCORD_UNSENT_GONE,		/* the provider has no such row any more */
	CONCORD_UNSENT_UNREADABLE	/* no such table or column there, or no key
								 * to look the row up by */
} ConcordUnsent;
extern ConcordUnsent concord_apply_fetch_unsent(ApplyRel *arel,
												ConcordTuple *keytup,
												ConcordTuple *newtup,
												char **why);

/* key_lock.c */
extern bool concord_apply_lock_keys;
extern void concord_apply_key_locks_reset(void);
extern void concord_apply_lock_key(ApplyRel *arel, ConcordTuple *tup);
extern char *concord_apply_key_text(ApplyRel *arel, ConcordTuple *tup);
extern void concord_apply_insert(ApplyRel *arel, ConcordTuple *newtup);
extern void concord_apply_update(ApplyRel *arel, char oldkind,
								 ConcordTuple *oldtup, ConcordTuple *newtup);
extern void concord_apply_delete(ApplyRel *arel, char oldkind,
								 ConcordTuple *oldtup);

/* causal.c */
extern char *concord_apply_wait_for_cause(ApplyRel *arel, const char *key_text,
										  bool insert);

/* forward.c */
extern void concord_apply_forward(ApplyRel *arel, Relation rel, char action,
								  char oldkind, TupleTableSlot *oldslot,
								  TupleTableSlot *newslot, ConcordTuple *newtup,
								  bool keep_unsent);

/* collisions.c */
extern List *concord_apply_find_collisions(ResultRelInfo *rri, EState *estate,
										   TupleTableSlot *row,
										   TupleTableSlot *skip, bool with_key);

/* truncate.c */
extern void concord_apply_truncate(List *arels, bool restart_seqs);

/* owner.c: writes run as the table's owner */
typedef struct ConcordAsOwner
{
	Oid			userid;
	int			sec_context;
	int			nestlevel;
} ConcordAsOwner;

extern void concord_become_table_owner(Relation rel, AclMode mode,
									   const char *sub_name,
									   ConcordAsOwner *saved);
extern void concord_become_table_owner_plain(Relation rel, AclMode mode,
											 const char *sub_name,
											 ConcordAsOwner *saved);
extern void concord_become_checked_owner(Relation rel, ConcordAsOwner *saved);
extern bool concord_write_runs_user_code(Relation rel, Bitmapset *not_sent);
extern void concord_restore_user(ConcordAsOwner *saved);
extern void concord_constraints_immediate(void);
extern int	concord_spi_as_owner(Oid relid, const char *sql, Datum arg, bool read_only);
extern int	concord_spi_pinned(const char *sql, Datum arg);

/* The apply and sync workers' entry points (apply.c, sync.c) */
extern void concord_apply_log_origin_lsn(XLogRecPtr origin_lsn);
extern void concord_apply_settle_position(void);
extern PGDLLEXPORT void concord_apply_main(Datum main_arg);
extern PGDLLEXPORT void concord_sync_main(Datum main_arg);

#endif							/* CONCORD_APPLY_H */
