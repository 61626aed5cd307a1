/*-------------------------------------------------------------------------
 *
 * identity.c
 *		Which database of which server is this node, and which are copies.
 *
 * A node is one database of one server.  A copy of it (pg_basebackup, a
 * restored backup, a pg_dump restore, a promoted standby) holds the same
 * catalogs, so the same node name, subscriptions and slot names: left
 * alone, it would stream from the original's slots on its peers and
 * confirm changes the original never received.  So create_node records,
 * in concord.node_identity (not dumped):
 *
 *	- the server's system identifier (a pg_dump restore into another server
 *	  has another one) and the database's OID (another database has
 *	  another one);
 *	- the name of a marker: a physical replication slot of this server,
 *	  created with no WAL reserved, so that it retains nothing, and named
 *	  concord_node_<database OID>_<random>.  pg_basebackup does not copy
 *	  slots, nor does a standby have its primary's, so a physical copy of
 *	  the server lacks it.
 *
 * A database where the three do not match is a copy: its workers do not
 * start, its subscriptions show down saying so, create_subscription is
 * refused, and drop_subscription leaves the providers' slots (the
 * original's) alone.  Where the operator knows it is the node (after
 * pg_upgrade, which does not keep slots, or a failover to a standby),
 * concord.reclaim_node_identity() records it again.
 *
 * Slots are not transactional, the identity row is.  So a marker is made
 * before the row that names it, and never dropped while a transaction that
 * could roll back may still need it: the markers of this database that the
 * row does not name are dropped by the manager (concord_identity_sweep,
 * which does nothing while a transaction changing the row is under way),
 * woken once such a transaction has committed or rolled back (create_node,
 * drop_node, reclaim: api/node_api.c); DROP EXTENSION, after which no
 * manager runs, drops them just before its commit; the launcher drops
 * those of dropped databases.  A transaction that changes the identity
 * cannot be prepared.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "replication/slot.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "catalog/identity.h"
#include "catalog/tables.h"

#define MARKER_PREFIX	"concord_node_"

static bool SweepAtCommit = false;
static bool SweepCallbackRegistered = false;

/* The name every marker of a database starts with. */
static char *
marker_prefix(Oid dboid)
{
	return psprintf(MARKER_PREFIX "%u_", dboid);
}

/* A new marker slot's name: this database's prefix and 64 random bits. */
static char *
new_marker_name(void)
{
	uint64		token;

	if (!pg_strong_random(&token, sizeof(token)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random node identity")));
	return psprintf("%s%016llx", marker_prefix(MyDatabaseId),
					(unsigned long long) token);
}

/* Creates a physical slot that reserves no WAL: it retains nothing. */
static void
create_marker(const char *name)
{
	CheckSlotRequirements();
	ReplicationSlotCreate(name, false, RS_PERSISTENT, false);
	ReplicationSlotRelease();
}

/* Whether this server has the slot name (a marker), held or not. */
bool
concord_identity_marker_present(const char *name)
{
	return SearchNamedReplicationSlot(name, true) != NULL;
}

/*
 * The names of this server's marker slots whose name starts with prefix,
 * whether a process holds them or not: a REPLICATION role may stream from
 * one (pg_receivewal --slot, a standby's primary_slot_name), which does
 * not make the node a copy.
 */
static List *
markers_with_prefix(const char *prefix)
{
	List	   *names = NIL;
	size_t		len = strlen(prefix);

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (int i = 0; i < max_replication_slots; i++)
	{
		ReplicationSlot *slot = &ReplicationSlotCtl->replication_slots[i];

		if (slot->in_use && SlotIsPhysical(slot) &&
			strncmp(NameStr(slot->data.name), prefix, len) == 0)
			names = lappend(names, pstrdup(NameStr(slot->data.name)));
	}
	LWLockRelease(ReplicationSlotControlLock);
	return names;
}

/* The process that holds the slot name, 0 if none (or no such slot). */
static int
marker_holder(const char *name)
{
	ReplicationSlot *slot;
	int			pid = 0;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(name, false);
	if (slot)
	{
		SpinLockAcquire(&slot->mutex);
		pid = slot->active_pid;
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);
	return pid;
}

/*
 * Drops a marker, unless a process holds it: then returns false, having
 * said so once per marker (the caller tries again later).  A marker taken
 * between the look and the drop still raises the drop's ERROR.
 */
#define WARNED_MARKERS	8

static bool
drop_marker(const char *name)
{
	static char warned[WARNED_MARKERS][NAMEDATALEN];
	static int	next_warned = 0;
	int			pid = marker_holder(name);
	bool		said = false;

	if (pid == 0)
	{
		ReplicationSlotDrop(name, true);
		return true;
	}
	for (int i = 0; i < WARNED_MARKERS; i++)
		said |= strcmp(warned[i], name) == 0;
	if (!said)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("concord cannot drop marker slot \"%s\" yet: it is in use by PID %d", name, pid),
				 errdetail("The slot is concord's, no longer this node's marker; a REPLICATION connection streams from it."),
				 errhint("Stop that process; concord drops the slot then.")));
		strlcpy(warned[next_warned], name, NAMEDATALEN);
		next_warned = (next_warned + 1) % WARNED_MARKERS;
	}
	return false;
}

/* Whether the SQL objects of node identities exist (0.3.0 on). */
static bool
identities_known(void)
{
	return OidIsValid(concord_catalog_relid(CATALOG_NODE_IDENTITY, true));
}

/*
 * The row of concord.node_identity; false when there is none.  Read like
 * every catalog here (tables.c), so also inside logical decoding.
 */
static bool
read_identity(char **sysid, Oid *dboid, char **marker)
{
	Relation	rel;
	CatalogScan cs;
	HeapTuple	tup;
	bool		found = false;

	if (!identities_known())
		return false;
	rel = table_open(concord_catalog_relid(CATALOG_NODE_IDENTITY, false),
					 AccessShareLock);
	concord_catalog_beginscan(&cs, rel, 0, NULL);
	if (HeapTupleIsValid(tup = systable_getnext(cs.sscan)))
	{
		bool		isnull;

		*sysid = TextDatumGetCString(heap_getattr(tup, Anum_identity_sysid,
												  RelationGetDescr(rel), &isnull));
		*dboid = DatumGetObjectId(heap_getattr(tup, Anum_identity_dboid,
											   RelationGetDescr(rel), &isnull));
		*marker = pstrdup(NameStr(*DatumGetName(heap_getattr(tup, Anum_identity_marker,
															 RelationGetDescr(rel), &isnull))));
		found = true;
	}
	concord_catalog_endscan(&cs);
	table_close(rel, AccessShareLock);
	return found;
}

static bool
matches_this_server(const char *sysid, Oid dboid)
{
	return strcmp(sysid, psprintf(UINT64_FORMAT, GetSystemIdentifier())) == 0 &&
		dboid == MyDatabaseId;
}

/*
 * Drops this database's markers that the identity row, as this
 * transaction sees it, does not name; false if a process holds one of
 * them (left for a later try).  At DROP EXTENSION (at_commit), after which
 * no one would try again, such a marker is an ERROR instead.
 */
static bool
drop_unnamed_markers(bool at_commit)
{
	char	   *sysid;
	Oid			dboid;
	char	   *keep = NULL;
	bool		all = true;
	ListCell   *lc;

	List	   *doomed = NIL;

	if (read_identity(&sysid, &dboid, &keep) && !matches_this_server(sysid, dboid))
		keep = NULL;
	foreach(lc, markers_with_prefix(marker_prefix(MyDatabaseId)))
		if (keep == NULL || strcmp(lfirst(lc), keep) != 0)
			doomed = lappend(doomed, lfirst(lc));
	/* Every holder first: DROP EXTENSION must fail before it drops any. */
	foreach(lc, at_commit ? doomed : NIL)
	{
		const char *name = lfirst(lc);
		int			pid = marker_holder(name);

		if (pid != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("cannot drop extension concord while its marker slot \"%s\" is in use by PID %d",
							name, pid),
					 errdetail("A REPLICATION connection streams from the slot; concord drops it with the extension."),
					 errhint("Stop that process, then try again.")));
	}
	foreach(lc, doomed)
		all &= drop_marker(lfirst(lc));
	return all;
}

static void
identity_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	if (event == XACT_EVENT_PRE_PREPARE && SweepAtCommit)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot prepare a transaction that drops extension concord")));
	if (event == XACT_EVENT_PRE_COMMIT && SweepAtCommit)
		(void) drop_unnamed_markers(true);
	if (event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_ABORT)
		SweepAtCommit = false;
}

/*
 * Just before this transaction commits, drops the markers of this database
 * that its identity row then does not name: for DROP EXTENSION, after
 * which no manager is left to do it.  (Should the commit still fail after
 * that, the node is left without its marker, and counts as a copy until
 * reclaim_node_identity().)
 */
void
concord_identity_sweep_at_commit(void)
{
	if (!SweepCallbackRegistered)
	{
		RegisterXactCallback(identity_xact_callback, NULL);
		SweepCallbackRegistered = true;
	}
	SweepAtCommit = true;
}

/*
 * Drops the markers that transactions which rolled back left: the manager
 * calls it in a transaction.  It waits for no one: while a transaction
 * that changes the identity is under way (it holds the table, and may have
 * made the marker it will name), it does nothing, and returns false: the
 * manager tries again (the transaction that woke it may not have released
 * the table yet: it asks at its end, before its locks go).  Also false
 * while a process holds one of the markers to drop.
 */
bool
concord_identity_sweep(void)
{
	if (!identities_known())
		return true;
	if (!ConditionalLockRelationOid(concord_catalog_relid(CATALOG_NODE_IDENTITY, false),
									ShareLock))
		return false;
	return drop_unnamed_markers(false);
}

/*
 * Drops the markers of databases that no longer exist (DROP DATABASE keeps
 * physical slots).  The launcher calls it, outside a transaction.  The
 * slots are listed before the databases are read: a marker is made after
 * its database, which a later read cannot miss.
 */
void
concord_identity_sweep_dropped(void)
{
	List	   *names = markers_with_prefix(MARKER_PREFIX);
	List	   *doomed = NIL;
	MemoryContext cxt = CurrentMemoryContext;
	ListCell   *lc;

	if (names == NIL)
		return;
	StartTransactionCommand();
	foreach(lc, names)
	{
		char	   *end;
		unsigned long dboid = strtoul((char *) lfirst(lc) + strlen(MARKER_PREFIX),
									  &end, 10);

		if (*end == '_' && dboid != 0 &&
			!SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum((Oid) dboid)))
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

			doomed = lappend(doomed, lfirst(lc));
			MemoryContextSwitchTo(oldcxt);
		}
	}
	CommitTransactionCommand();
	foreach(lc, doomed)
	{
		if (drop_marker(lfirst(lc)))
			ereport(LOG,
					(errmsg("concord dropped marker slot \"%s\" of a dropped database",
							(char *) lfirst(lc))));
	}
	list_free(doomed);
	list_free_deep(names);
}

/* Replaces the identity row (as the catalog's owner). */
static void
write_identity(const char *marker)
{
	Oid			saved_user;
	int			saved_context;
	Datum		values[3];
	Oid			types[3] = {TEXTOID, OIDOID, NAMEOID};

	values[0] = CStringGetTextDatum(psprintf(UINT64_FORMAT, GetSystemIdentifier()));
	values[1] = ObjectIdGetDatum(MyDatabaseId);
	values[2] = DirectFunctionCall1(namein, CStringGetDatum(marker));
	concord_catalog_become_owner(CATALOG_NODE_IDENTITY, &saved_user, &saved_context);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("DELETE FROM concord.node_identity", false, 0) != SPI_OK_DELETE ||
		SPI_execute_with_args("INSERT INTO concord.node_identity "
							  "(system_identifier, database_oid, marker_slot) "
							  "VALUES ($1, $2, $3)",
							  3, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the node's identity");
	SPI_finish();
	SetUserIdAndSecContext(saved_user, saved_context);
}

/*
 * Records this database of this server as the local node: a new marker
 * slot, then the identity row that names it.  The table is locked first,
 * so that the manager's sweep cannot take the new marker for one a
 * rolled-back transaction left.  The marker the row named before is
 * dropped by the manager after the commit.
 */
void
concord_identity_record(void)
{
	char	   *marker = new_marker_name();

	if (!identities_known())
		return;
	LockRelationOid(concord_catalog_relid(CATALOG_NODE_IDENTITY, false),
					RowExclusiveLock);
	create_marker(marker);
	write_identity(marker);
}

/*
 * Records this database of this server as the local node again
 * (reclaim_node_identity), with a marker of its own: a copy that reclaims
 * never shares the original's.
 */
void
concord_identity_reclaim(void)
{
	concord_identity_record();
}

/* Forgets the recorded identity; the manager drops its marker after commit. */
void
concord_identity_forget(void)
{
	Oid			saved_user;
	int			saved_context;

	if (!identities_known())
		return;
	concord_catalog_become_owner(CATALOG_NODE_IDENTITY, &saved_user, &saved_context);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("DELETE FROM concord.node_identity", false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not remove the node's identity");
	SPI_finish();
	SetUserIdAndSecContext(saved_user, saved_context);
}

/*
 * Whether this database of this server is the node recorded; if not, *why
 * says what differs.  Needs a transaction.  With SQL objects older than
 * node identities, every database is its node.
 */
bool
concord_identity_check(char **why)
{
	char	   *sysid;
	Oid			dboid;
	char	   *marker;

	if (!identities_known())
		return true;
	if (!read_identity(&sysid, &dboid, &marker))
		*why = pstrdup("No identity is recorded for this database (it was restored from a dump)");
	else if (strcmp(sysid, psprintf(UINT64_FORMAT, GetSystemIdentifier())) != 0)
		*why = psprintf("The node was created on the server of system identifier %s, this is server " UINT64_FORMAT,
						sysid, GetSystemIdentifier());
	else if (dboid != MyDatabaseId)
		*why = psprintf("The node was created in the database of OID %u, this is database %u",
						dboid, MyDatabaseId);
	else if (!concord_identity_marker_present(marker))
		*why = psprintf("This server lacks the node's marker slot %s: it is a physical copy of the node's server (pg_basebackup, a restored backup, a promoted standby) or was upgraded with pg_upgrade",
						marker);
	else
		return true;
	return false;
}

/*
 * Whether this database holds the identity row its node recorded: true
 * for the node and for its physical copies (a base backup, a promoted
 * standby, CREATE DATABASE ... TEMPLATE), whose catalogs are the node's,
 * column numbers included; false for a database restored from a dump,
 * which has none (the table is not dumped).
 */
bool
concord_identity_recorded(void)
{
	char	   *sysid;
	Oid			dboid;
	char	   *marker;

	return !identities_known() || read_identity(&sysid, &dboid, &marker);
}

/*
 * The name of the marker the identity row names, "" when there is no row
 * (or no such table, before 0.3.0): what the entries of the slot-drop
 * queue record, so that a drop is run only by the node it was left by.
 */
char *
concord_identity_marker(void)
{
	char	   *sysid;
	Oid			dboid;
	char	   *marker;

	if (!identities_known() || !read_identity(&sysid, &dboid, &marker))
		return pstrdup("");
	return marker;
}

/*
 * The check a WAL sender can make.  It reads the identity row with the
 * historic snapshot of the position it decodes, which may predate the
 * table (SQL objects older than 0.3.0: nothing to check), the row (inside
 * the transaction of create_node or of the update, which make the marker
 * first) or a later create_node or reclaim (whose new
 * marker replaced the one the old row names), so it asks only that this
 * server have a marker of this database: a physical copy of the server has
 * none, a copy of the database into another database (CREATE DATABASE ...
 * TEMPLATE, a restore) has none of its own.
 */
bool
concord_identity_check_marker(char **why)
{
	char	   *sysid;
	Oid			dboid;
	char	   *marker;

	if (!identities_known() ||
		markers_with_prefix(marker_prefix(MyDatabaseId)) != NIL)
		return true;
	if (!read_identity(&sysid, &dboid, &marker))
		*why = pstrdup("No identity is recorded for this database (it was restored from a dump)");
	else
		*why = psprintf("This server has no marker slot of this database (the node's was %s): it is a copy of the node",
						marker);
	return false;
}
