/*-------------------------------------------------------------------------
 *
 * tombstone.c
 *		Tombstones: what remains of a replicated DELETE.
 *
 * Without a record of a delete, an UPDATE racing a DELETE diverges: the
 * node that deleted finds no row and cannot tell a deleted row from one
 * that never existed.  Every replicated DELETE therefore leaves a row in
 * concord.tombstone, keyed by the table and the deleted key (the text of
 * the key columns of the replica identity index).  Its version is the one
 * of its own xmin, as for any row: the commit timestamp and origin of the
 * DELETE's transaction (for an applied DELETE, the origin's).  Local
 * deletes are caught by an AFTER DELETE trigger (concord.tombstone_trigger,
 * created when a table joins a set that ships DELETE; it does not fire in
 * apply, which runs as session_replication_role = replica); apply records
 * its own deletes here.  Writing is an upsert, so the latest delete of a
 * key is the one kept.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/heapam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "access/table.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "storage/bufmgr.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "catalog/relcheck.h"
#include "catalog/tables.h"
#include "conflict/conflict.h"
#include "conflict/tombstone.h"
#include "shmem/shmem.h"

PG_FUNCTION_INFO_V1(concord_tombstone_trigger);

static SPIPlanPtr UpsertPlan = NULL;
static SPIPlanPtr FindPlan = NULL;

/*
 * Whether a key type's text is the same under any session settings
 * (DateStyle, TimeZone, extra_float_digits, bytea_output, ...): then the
 * settings need not be fixed while it is made, which costs more than the
 * rest for a row of a big DELETE.
 */
static bool
key_type_text_fixed(Oid typid)
{
	switch (typid)
	{
		case BOOLOID:
		case CHAROID:
		case NAMEOID:
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
		case NUMERICOID:
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
		case UUIDOID:
			return true;
		default:
			return false;
	}
}

static void
fix_output_settings(void)
{
	static const char *const settings[][2] = {
		{"datestyle", "ISO"},
		{"intervalstyle", "postgres"},
		{"timezone", "UTC"},
		{"extra_float_digits", "3"},
		{"bytea_output", "hex"},
	};

	for (size_t i = 0; i < lengthof(settings); i++)
		(void) set_config_option(settings[i][0], settings[i][1], PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

/*
 * The text of the slot's key columns; NULL if the table has no key index.
 * The text does not depend on the session: the settings that change a
 * type's output are fixed while it is made.
 */
static Datum
key_of(Relation rel, TupleTableSlot *slot, bool *found)
{
	Oid			idxoid = RelationGetReplicaIndex(rel);
	Relation	idx;
	Datum	   *elems;
	int			nkeys;
	int			nestlevel = -1;
	Datum		result;

	if (!OidIsValid(idxoid))
		idxoid = RelationGetPrimaryKeyIndex(rel);
	*found = OidIsValid(idxoid);
	if (!*found)
		return (Datum) 0;
	idx = index_open(idxoid, AccessShareLock);
	nkeys = idx->rd_index->indnkeyatts;
	for (int i = 0; i < nkeys && nestlevel < 0; i++)
	{
		AttrNumber	attnum = idx->rd_index->indkey.values[i];

		if (!key_type_text_fixed(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid))
		{
			nestlevel = NewGUCNestLevel();
			fix_output_settings();
		}
	}
	elems = palloc(sizeof(Datum) * nkeys);
	for (int i = 0; i < nkeys; i++)
	{
		AttrNumber	attnum = idx->rd_index->indkey.values[i];
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
		bool		isnull;
		Datum		value = slot_getattr(slot, attnum, &isnull);
		Oid			typoutput;
		bool		varlena;

		getTypeOutputInfo(att->atttypid, &typoutput, &varlena);
		elems[i] = CStringGetTextDatum(isnull ? "" :
									   OidOutputFunctionCall(typoutput, value));
	}
	index_close(idx, AccessShareLock);
	result = PointerGetDatum(construct_array(elems, nkeys, TEXTOID, -1, false,
											  TYPALIGN_INT));
	if (nestlevel >= 0)
		AtEOXact_GUC(true, nestlevel);
	return result;
}

/*
 * Tombstones are written by whoever deletes, who needs no privilege on
 * concord's schema, and read by apply while it runs as a table's owner:
 * both run as the owner of concord.tombstone, in a restricted security
 * context.
 */
static void
become_owner(Oid *saved_user, int *saved_context)
{
	concord_catalog_become_owner("tombstone", saved_user, saved_context);
}

static SPIPlanPtr
prepare_kept(const char *sql)
{
	Oid			types[2] = {OIDOID, TEXTARRAYOID};
	SPIPlanPtr	plan = SPI_prepare(sql, 2, types);

	if (plan == NULL || SPI_keepplan(plan) != 0)
		elog(ERROR, "could not prepare \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	return plan;
}

static pg_atomic_uint32 *
tombstoned_slot(Oid relid)
{
	return &ConcordShmem->tombstoned[relid % CONCORD_TOMBSTONE_SLOTS];
}

/*
 * Whether a table may have tombstones, so that a remote INSERT must look
 * for one (most tables see no deletes, and their inserts cost nothing
 * more).  *known caches, per apply worker and table, whether it had some
 * when first asked; since then, writers of tombstones mark the table (by a
 * hash of its OID, so a mark may cover other tables too: that only costs
 * a look-up).
 */
bool
concord_tombstone_possible(Oid relid, bool *known)
{
	if (pg_atomic_read_u32(tombstoned_slot(relid)) > 0 || *known)
		return true;
	return false;
}

/* Records (or renews) the tombstone of the row in slot, deleted now. */
void
concord_tombstone_record(Relation rel, TupleTableSlot *slot)
{
	Datum		values[2];
	bool		found;
	int			ret;
	Oid			saved_user;
	int			saved_context;

	values[1] = key_of(rel, slot, &found);
	if (!found)
		return;
	if (pg_atomic_read_u32(tombstoned_slot(RelationGetRelid(rel))) == 0)
		pg_atomic_fetch_add_u32(tombstoned_slot(RelationGetRelid(rel)), 1);
	values[0] = ObjectIdGetDatum(RelationGetRelid(rel));
	become_owner(&saved_user, &saved_context);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (UpsertPlan == NULL)
		UpsertPlan = prepare_kept("INSERT INTO concord.tombstone (relid, key) VALUES ($1, $2) "
								  "ON CONFLICT (relid, key) DO UPDATE SET key = EXCLUDED.key");
	ret = SPI_execute_plan(UpsertPlan, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not record a tombstone: %s", SPI_result_code_string(ret));
	SPI_finish();
	SetUserIdAndSecContext(saved_user, saved_context);
}

/*
 * True if the tombstone found (columns 2 and 3 of row: its ctid and
 * tableoid) is frozen: its raw xmin may name another transaction by now
 * (conflict.c, concord_xmin_version_xid).  SQL shows only the raw xmin,
 * so the tuple's header is read.
 */
static bool
tombstone_frozen(HeapTuple row, TupleDesc desc)
{
	bool		isnull;
	ItemPointer tid = (ItemPointer) DatumGetPointer(SPI_getbinval(row, desc, 2, &isnull));
	Oid			relid = DatumGetObjectId(SPI_getbinval(row, desc, 3, &isnull));
	HeapTupleData tuple;
	Buffer		buffer;
	Relation	rel;
	bool		frozen = false;

	rel = table_open(relid, AccessShareLock);
	tuple.t_self = *tid;
	if (heap_fetch(rel, SnapshotAny, &tuple, &buffer, false))
	{
		frozen = TransactionIdIsValid(HeapTupleHeaderGetRawXmin(tuple.t_data)) &&
			!TransactionIdIsValid(concord_xmin_version_xid(tuple.t_data));
		ReleaseBuffer(buffer);
	}
	table_close(rel, AccessShareLock);
	return frozen;
}

/*
 * Looks for the tombstone of the key in slot; on success *xmin is the
 * transaction that wrote it, whose commit timestamp and origin are the
 * delete's, or InvalidTransactionId when that is no longer known (the
 * tombstone was frozen: an old delete).
 */
bool
concord_tombstone_find(Relation rel, TupleTableSlot *slot, TransactionId *xmin)
{
	Datum		values[2];
	bool		found;
	int			ret;
	Oid			saved_user;
	int			saved_context;

	values[1] = key_of(rel, slot, &found);
	if (!found)
		return false;
	values[0] = ObjectIdGetDatum(RelationGetRelid(rel));
	become_owner(&saved_user, &saved_context);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (FindPlan == NULL)
		FindPlan = prepare_kept("SELECT xmin, ctid, tableoid FROM concord.tombstone WHERE relid = $1 AND key = $2");
	/* Not read-only: a fresh snapshot sees a delete committed meanwhile. */
	ret = SPI_execute_plan(FindPlan, values, NULL, false, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read tombstones: %s", SPI_result_code_string(ret));
	found = SPI_processed == 1;
	if (found)
	{
		bool		isnull;

		*xmin = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 1,
													&isnull));
		/* Before the first wraparound a frozen xmin is still exact. */
		if (concord_xids_wrapped() &&
			tombstone_frozen(SPI_tuptable->vals[0], SPI_tuptable->tupdesc))
			*xmin = InvalidTransactionId;
	}
	SPI_finish();
	SetUserIdAndSecContext(saved_user, saved_context);
	return found;
}

/* True if the table has tombstones now (asked once per table and worker). */
bool
concord_tombstone_any(Oid relid)
{
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	Oid			types[1] = {OIDOID};
	bool		any;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT 1 FROM concord.tombstone WHERE relid = $1 LIMIT 1",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read tombstones");
	any = SPI_processed > 0;
	SPI_finish();
	return any;
}

/* AFTER DELETE FOR EACH ROW on replicated tables: a local delete. */
Datum
concord_tombstone_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleTableSlot *slot;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BY_DELETE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("concord.tombstone_trigger() must be fired AFTER DELETE FOR EACH ROW")));
	slot = trigdata->tg_trigslot;
	concord_tombstone_record(trigdata->tg_relation, slot);
	return PointerGetDatum(NULL);
}

/* Creates the tombstone trigger of a table, unless it has it already. */
void
concord_tombstone_trigger_create(Relation rel)
{
	char	   *relname = concord_relation_qualified_name(rel);
	int			ret;

	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute(psprintf("SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = %u "
							   "AND tgname = 'concord_tombstone'", RelationGetRelid(rel)),
					  true, 1);
	if (ret == SPI_OK_SELECT && SPI_processed == 0)
		ret = SPI_execute(psprintf("CREATE TRIGGER concord_tombstone AFTER DELETE ON %s "
								   "FOR EACH ROW EXECUTE FUNCTION concord.tombstone_trigger()",
								   relname), false, 0);
	if (ret != SPI_OK_SELECT && ret != SPI_OK_UTILITY)
		elog(ERROR, "could not create the tombstone trigger of %s: %s", relname,
			 SPI_result_code_string(ret));
	SPI_finish();
}
