/*-------------------------------------------------------------------------
 *
 * tables.h
 *		Access to concord's own catalog tables (schema "concord").
 *
 * The Anum_ constants mirror the column order of sql/concord.sql; keep the
 * two in step.  All reads and writes of the catalogs go through tables.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONCORD_CATALOG_H
#define CONCORD_CATALOG_H

#include "nodes/pg_list.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "access/genam.h"
#include "utils/array.h"
#include "utils/snapshot.h"

#define CONCORD_SCHEMA		"concord"

/* concord.node */
#define CATALOG_NODE				"node"
#define Natts_node					6
#define Anum_node_id				1
#define Anum_node_name				2
#define Anum_node_dsn				3
#define Anum_node_priority			4
#define Anum_node_is_local			5
#define Anum_node_created_at		6

/* concord.node_identity (one row, or none) */
#define CATALOG_NODE_IDENTITY		"node_identity"
#define Anum_identity_sysid			1
#define Anum_identity_dboid			2
#define Anum_identity_marker		3

/* concord.replication_set */
#define CATALOG_SET					"replication_set"
#define Natts_set					7
#define Anum_set_id					1
#define Anum_set_name				2
#define Anum_set_insert				3
#define Anum_set_update				4
#define Anum_set_delete				5
#define Anum_set_truncate			6
#define Anum_set_capture			7

/* concord.replication_set_table */
#define CATALOG_SET_TABLE			"replication_set_table"
#define Natts_set_table				5
#define Anum_set_table_set_id		1
#define Anum_set_table_reloid		2
#define Anum_set_table_columns		3
#define Anum_set_table_row_filter	4
#define Anum_set_table_row_filter_expr 5	/* 0.3.0 on */

/* concord.subscription */
#define CATALOG_SUBSCRIPTION		"subscription"
#define Natts_sub					15
#define Anum_sub_id					1
#define Anum_sub_name				2
#define Anum_sub_provider_node_id	3
#define Anum_sub_provider_dsn		4
#define Anum_sub_slot_name			5
#define Anum_sub_replication_sets	6
#define Anum_sub_forward_origins	7
#define Anum_sub_synchronize_data	8
#define Anum_sub_apply_delay		9
#define Anum_sub_enabled			10
#define Anum_sub_sync_done			11
#define Anum_sub_created_at			12
#define Anum_sub_password_required	13	/* 0.3.0 on */
#define Anum_sub_join_copy_via		14	/* 0.3.0 on */
#define Anum_sub_join_start_lsn		15	/* 0.3.0 on */

/* concord.subscription_table */
#define CATALOG_SUB_TABLE			"subscription_table"
#define Natts_sub_table				4
#define Anum_sub_table_sub_id		1
#define Anum_sub_table_nspname		2
#define Anum_sub_table_relname		3
#define Anum_sub_table_sync_lsn		4

typedef struct ConcordNode
{
	Oid			id;
	char	   *name;
	char	   *dsn;
	int32		priority;
	bool		is_local;
	TimestampTz created_at;
} ConcordNode;

typedef struct ConcordSet
{
	Oid			id;
	char	   *name;
	bool		replicate_insert;
	bool		replicate_update;
	bool		replicate_delete;
	bool		replicate_truncate;
	char	   *capture;
} ConcordSet;

/* One membership row of concord.replication_set_table. */
typedef struct ConcordSetTable
{
	Oid			set_id;
	Oid			relid;
	ArrayType  *columns;		/* NULL: every column */
	char	   *row_filter;		/* NULL: every row; as deparsed when set */
	char	   *row_filter_expr;	/* the analysed filter (nodeToString) */
} ConcordSetTable;

/* concord.origin_history */
#define CATALOG_ORIGIN_HISTORY		"origin_history"
#define Natts_origin_history		3
#define Anum_origin_history_roident	1
#define Anum_origin_history_since	2
#define Anum_origin_history_node	3

/* One row of concord.origin_history. */
typedef struct ConcordOriginHolder
{
	Oid			roident;
	uint64		since;			/* a FullTransactionId's value */
	NameData	node;
} ConcordOriginHolder;

/* concord.conflict_resolver */
#define CATALOG_RESOLVER			"conflict_resolver"
#define Natts_resolver				4
#define Anum_resolver_reloid		1
#define Anum_resolver_type			2
#define Anum_resolver_name			3
#define Anum_resolver_handler		4

typedef struct ConcordResolverSetting
{
	Oid			relid;			/* InvalidOid: every table */
	char	   *conflict_type;	/* "": every type */
	char	   *resolver;
	Oid			handler;
} ConcordResolverSetting;

typedef struct ConcordSubscription
{
	Oid			id;
	char	   *name;
	Oid			provider_node_id;
	char	   *provider_dsn;
	char	   *slot_name;
	List	   *replication_sets;	/* of char * */
	List	   *forward_origins;	/* of char * */
	bool		synchronize_data;
	Interval	apply_delay;
	bool		enabled;
	bool		sync_done;
	bool		password_required;	/* connections must use the DSN's password */
	TimestampTz created_at;
	Oid			join_copy_via;	/* join_mesh: apply waits for this one's copy */
	XLogRecPtr	join_start_lsn; /* join_mesh: where the copy leaves off */
} ConcordSubscription;

/* One provider table a subscription copied, or is to copy. */
typedef struct ConcordSubTable
{
	Oid			sub_id;
	char	   *nspname;
	char	   *relname;
	bool		pending;		/* a copy is to be made */
	XLogRecPtr	sync_lsn;		/* provider LSN of the copy */
} ConcordSubTable;

/*
 * A scan of one of concord's catalogs: with the historic snapshot inside
 * logical decoding, else with the latest one.
 */
typedef struct CatalogScan
{
	SysScanDesc sscan;
	Snapshot	snapshot;
} CatalogScan;

extern void concord_catalog_beginscan(CatalogScan *cs, Relation rel, int nkeys,
									  ScanKey keys);
extern void concord_catalog_endscan(CatalogScan *cs);

/* For the catalog folder's readers and writers (tables.c, subscriptions.c). */
typedef void *(*ConcordFromTuple) (HeapTuple tup, TupleDesc desc);
extern Relation concord_catalog_open(const char *relname, LOCKMODE lockmode);
extern List *concord_catalog_collect(const char *relname, int nkeys, ScanKey keys,
									 ConcordFromTuple from_tuple);
extern void concord_scankey_oid(ScanKey key, AttrNumber attno, Oid value);
extern void concord_scankey_name(ScanKey key, AttrNumber attno, const char *value);
extern int	concord_catalog_delete_where_oid(const char *relname, AttrNumber attno,
											 Oid value);
extern Oid	concord_catalog_relid(const char *relname, bool missing_ok);
extern Oid	concord_rel_owner(Oid relid);

/* A column of a table, as a repair or a merge writes it. */
typedef struct ConcordColumn
{
	char	   *ident;			/* quoted identifier */
	char	   *literal;		/* its name as an SQL literal */
	bool		key;			/* one of concord.key_columns() */
	bool		generated;
	bool		always;			/* GENERATED ALWAYS AS IDENTITY */
} ConcordColumn;

extern List *concord_table_columns(Oid relid);
extern void concord_catalog_become_owner(const char *relname, Oid *saved_user,
										 int *saved_context);
extern void concord_catalog_lock(const char *relname);

extern ConcordNode *concord_node_get_local(bool missing_ok);
extern ConcordNode *concord_node_get_by_name(const char *name);
extern ConcordNode *concord_node_get_by_id(Oid node_id);
extern void concord_node_insert(const ConcordNode *node);
extern void concord_node_update(const ConcordNode *node);
extern void concord_node_delete(Oid node_id);
extern Oid	concord_node_id_for_name(const char *name);
extern void concord_node_learn(const char *name, int32 priority);

extern bool concord_subscription_exists(Oid provider_node_id);
extern ConcordSubscription *concord_subscription_get_by_name(const char *name);
extern ConcordSubscription *concord_subscription_get_by_id(Oid subid);
extern List *concord_subscription_get_all(void);
extern void concord_subscription_insert(const ConcordSubscription *sub);
extern void concord_subscription_update(const ConcordSubscription *sub);
extern void concord_subscription_delete(Oid subid);
extern List *concord_resolver_settings(Oid relid);
extern void concord_resolver_set(const ConcordResolverSetting *setting);
extern bool concord_resolver_unset(Oid relid, const char *conflict_type);
extern List *concord_sub_table_get(Oid subid);
extern void concord_sub_table_set(const ConcordSubTable *st);

extern ConcordSet *concord_set_get_by_name(const char *name);
extern Oid	concord_set_new_id(void);
extern List *concord_set_get_all(void);
extern void concord_set_insert(const ConcordSet *set);
extern void concord_set_update(const ConcordSet *set);
extern void concord_set_delete(Oid set_id);

extern List *concord_set_table_get_by_set(Oid set_id);
extern List *concord_set_table_get_by_relid(Oid relid);
extern bool concord_set_table_exists(Oid set_id, Oid relid);
extern void concord_set_table_insert(const ConcordSetTable *member);
extern bool concord_set_table_delete(Oid set_id, Oid relid);
extern void concord_set_table_update_filter(const ConcordSetTable *member);
extern int	concord_catalog_forget_relation(Oid relid);

extern void concord_origin_history_mark_dropped(Oid roident, uint64 since);
extern void concord_origin_history_set(Oid roident, uint64 since,
									   const char *node_name);
extern void concord_origin_history_insert(Oid roident, uint64 since,
										  const char *node_name);
extern List *concord_origin_history_all(void);

#endif							/* CONCORD_CATALOG_H */
